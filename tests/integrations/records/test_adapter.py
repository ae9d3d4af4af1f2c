"""integrations.records.adapter: the "Update record" step as the builder, save-time validation,
the engine, the dry run and test runs see it."""

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from integrations.records.adapter import RecordsAdapter
from patients.models import Appointment, AuditEntry, PatientNote, RecordWrite, Task
from tests.factories import AppointmentFactory, PatientFactory, WorkflowFactory
from workflows.adapters import REGISTRY, StepContext
from workflows.builder import builder_schema
from workflows.dry_run import workflow_dry_run
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, Run, Step, StepRun, Workflow
from workflows.validation import workflow_validate

pytestmark = pytest.mark.django_db


def _step(function: str, **parameters: str) -> dict[str, Any]:
    return {"type": "adapter", "adapter": "records", "function": function, "parameters": parameters}


def _workflow(trigger: str, *steps: dict[str, Any], **kwargs: Any) -> Workflow:
    workflow = WorkflowFactory(trigger=trigger, name="Reminder replies", **kwargs)
    for position, step in enumerate(steps, start=1):
        Step.objects.create(
            workflow=workflow,
            position=position,
            type="adapter",
            adapter="records",
            function=step["function"],
            parameters=step["parameters"],
        )
    return workflow


def _run_for(event: Event) -> Run:
    (run_id,) = event_dispatch(event_id=event.pk)
    run = run_advance(run_id=run_id)
    assert run is not None
    return run


def test_it_is_registered_and_offered_by_the_builder_with_no_setup() -> None:
    adapter = REGISTRY["records"]
    assert isinstance(adapter, RecordsAdapter)
    assert adapter.label == "careflow records"
    schema = builder_schema()
    (records,) = [a for a in schema["adapters"] if a["name"] == "records"]
    functions = {f["name"]: f for f in records["functions"]}
    assert list(functions) == ["setAppointmentStatus", "addNote", "createTask", "setField"]
    assert not any(f["sendOptions"] for f in functions.values())  # no consent, no quiet hours
    status = {p["name"]: p for p in functions["setAppointmentStatus"]["parameters"]}["status"]
    assert status["widget"] == "select"
    assert [c[0] for c in status["choices"]] == ["confirmed", "cancelled", "reschedule_requested"]
    field = {p["name"]: p for p in functions["setField"]["parameters"]}["field"]
    assert "patient.phone" not in [c[0] for c in field["choices"]]
    assert adapter.setup_problem(PatientFactory().organization) == ""


def test_the_builder_and_enable_pages_need_nothing_set_up_for_it(admin_client: Client) -> None:
    workflow = _workflow(
        "appointment.booked", _step("createTask", title="Call back"), enabled=False
    )
    change = admin_client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
    assert change.status_code == 200
    enable = admin_client.get(reverse("admin:workflows_workflow_enable", args=[workflow.pk]))
    assert enable.status_code == 200
    page = enable.content.decode()
    assert "steps will fail" not in page and "Enable" in page


def test_save_time_validation_accepts_a_good_step_and_names_bad_literals() -> None:
    good = workflow_validate(
        trigger="appointment.reminder",
        filter={},
        steps=[
            _step("setAppointmentStatus", appointment="{{appointment.id}}", status="confirmed"),
            _step("createTask", title="Call {{customer.firstName}}", due_in_hours="4"),
        ],
    )
    assert good.ok, good.as_dict()
    bad = workflow_validate(
        trigger="order.shipped",
        filter={},
        steps=[
            _step("setAppointmentStatus", appointment="{{appointment.id}}", status="confirmed"),
            _step("setAppointmentStatus", appointment="tomorrow", status="confirmed"),
            _step("createTask", title="Call", due_in_hours="soon"),
        ],
    )
    assert "{{appointment.id}} is not a variable of order.shipped" in bad.steps[0]["appointment"][0]
    assert bad.steps[1]["appointment"] == [
        "write a record id (a UUID) or a {{variable}} such as {{appointment.id}}"
    ]
    assert bad.steps[2]["due_in_hours"] == ["“soon” is not a number of hours"]


def test_a_run_confirms_the_triggers_appointment_and_the_audit_trail_names_the_run() -> None:
    workflow = _workflow(
        "appointment.booked",
        _step("setAppointmentStatus", appointment="{{appointment.id}}", status="confirmed"),
        _step("addNote", text="Confirmed by {{customer.firstName}} by text."),
    )
    patient = PatientFactory(organization=workflow.organization, first_name="Ann")
    appointment = AppointmentFactory(patient=patient)
    run = _run_for(Event.objects.get(type="appointment.booked"))
    assert run.status == Run.Status.SUCCEEDED, run.error
    appointment.refresh_from_db()
    assert appointment.status == Appointment.Status.CONFIRMED
    actor = f"workflow “Reminder replies” run {run.pk}"
    entry = AuditEntry.objects.get(model="patients.Appointment", action="updated")
    assert entry.actor_repr == actor
    note = PatientNote.objects.get()
    assert (note.text, note.written_by) == ("Confirmed by Ann by text.", actor)
    first, second = StepRun.objects.filter(run=run).order_by("index")
    assert first.result["after"] == "confirmed" and second.result["record"] == "note"
    assert set(RecordWrite.objects.values_list("idempotency_key", flat=True)) == {
        f"run:{run.pk}:step:0",
        f"run:{run.pk}:step:1",
    }
    # the status change is an event of its own, which other workflows may start from
    assert Event.objects.filter(type="appointment.confirmed", subject_id=str(appointment.pk))


def test_a_step_executed_again_after_a_lost_worker_writes_nothing_new() -> None:
    workflow = _workflow("appointment.booked", _step("createTask", title="Call back"))
    AppointmentFactory(patient=PatientFactory(organization=workflow.organization))
    run = _run_for(Event.objects.get(type="appointment.booked"))
    step_run = StepRun.objects.get(run=run)
    # as if the worker died after the write, before recording the step: the run is taken
    # over and the step executed again, with the same idempotency key
    StepRun.objects.filter(pk=step_run.pk).update(status=StepRun.Status.RUNNING)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.PENDING, next_index=0)
    again = run_advance(run_id=run.pk)
    assert again is not None and again.status == Run.Status.SUCCEEDED
    assert Task.objects.count() == 1
    step_run.refresh_from_db()
    assert step_run.attempts == 2
    assert step_run.result["id"] == str(Task.objects.get().uuid)


def test_a_missing_template_variable_fails_the_step_before_anything_is_written() -> None:
    workflow = _workflow(
        "appointment.booked", _step("addNote", text="Visit at {{appointment.location}}")
    )
    AppointmentFactory(patient=PatientFactory(organization=workflow.organization), location="")
    run = _run_for(Event.objects.get(type="appointment.booked"))
    assert run.status == Run.Status.FAILED
    assert "could not fill in text: appointment.location is empty" in run.error
    assert not PatientNote.objects.exists()
    assert not RecordWrite.objects.exists()


def test_another_clinics_appointment_named_by_a_template_fails_the_run() -> None:
    theirs = AppointmentFactory()
    workflow = _workflow(
        "appointment.booked",
        _step("setAppointmentStatus", appointment=str(theirs.uuid), status="cancelled"),
    )
    AppointmentFactory(patient=PatientFactory(organization=workflow.organization))
    run = _run_for(Event.objects.get(type="appointment.booked", organization=workflow.organization))
    assert run.status == Run.Status.FAILED
    assert run.error == f"step 1: no appointment {theirs.uuid} in this clinic"
    assert Appointment.objects.get(pk=theirs.pk).status == "booked"


def test_the_dry_run_says_what_would_be_written_and_writes_nothing() -> None:
    workflow = _workflow(
        "appointment.booked",
        _step("setAppointmentStatus", appointment="{{appointment.id}}", status="confirmed"),
        _step("createTask", title="Call {{customer.firstName}}", due_in_hours="2"),
        _step("setField", field="patient.timezone", value="Nowhere/Land"),
    )
    patient = PatientFactory(organization=workflow.organization, first_name="Ann")
    AppointmentFactory(patient=patient)
    events = Event.objects.count()
    report = workflow_dry_run(workflow=workflow, patient=patient)
    status, task, field = report.steps
    assert (status.outcome, status.title) == ("send", "careflow records → Set appointment status")
    assert status.detail.startswith("would set the appointment of ")
    assert status.detail.endswith(" to confirmed")
    assert task.outcome == "send" and task.detail.startswith(
        "would create the task “Call Ann” due "
    )
    assert field.outcome == "error"
    assert field.detail.startswith("would fail: Patient: time zone: “Nowhere/Land”")
    assert Appointment.objects.get().status == "booked"
    assert not Task.objects.exists() and not RecordWrite.objects.exists()
    assert Event.objects.count() == events


def test_a_dry_run_with_no_upcoming_appointment_says_it_would_fail() -> None:
    workflow = _workflow("appointment.booked", _step("setAppointmentStatus", status="confirmed"))
    patient = PatientFactory(organization=workflow.organization)
    report = workflow_dry_run(workflow=workflow, patient=patient)
    assert (report.steps[0].outcome, report.steps[0].detail) == (
        "error",
        "would fail: the patient has no upcoming appointment",
    )


def _context(**kwargs: Any) -> StepContext:
    patient = kwargs.pop("patient")
    return StepContext(
        organization=patient.organization,
        idempotency_key="run:1:step:0",
        inputs={"title": "Call back"},
        purpose="transactional",
        patient=patient,
        **kwargs,
    )


def test_a_test_run_writes_only_to_a_test_patients_records() -> None:
    adapter = RecordsAdapter()
    real = adapter.execute(
        function="createTask", context=_context(patient=PatientFactory(), is_test=True)
    )
    assert (real.status, real.reason) == (
        "skipped",
        "test run: only a test patient's records are written",
    )
    assert not Task.objects.exists()
    tester = PatientFactory(is_test=True)
    test = adapter.execute(function="createTask", context=_context(patient=tester, is_test=True))
    assert test.status == "succeeded"
    assert Task.objects.get().patient == tester


def test_no_patient_or_an_unknown_function_fails_clearly() -> None:
    adapter = RecordsAdapter()
    patient = PatientFactory()
    context = _context(patient=patient)
    no_patient = StepContext(
        organization=patient.organization,
        idempotency_key="k",
        inputs={},
        purpose="transactional",
    )
    assert adapter.execute(function="createTask", context=no_patient).reason == (
        "this run has no patient of this clinic to write to"
    )
    assert adapter.execute(function="deleteEverything", context=context).reason == (
        "careflow records has no function 'deleteEverything'"
    )
