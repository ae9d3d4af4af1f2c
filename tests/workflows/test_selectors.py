"""The engine's reads: the message a waiting run waits on, the runs disabling a workflow would
cancel, and a run's patient as its event recorded them."""

import pytest

from tests.factories import OrganizationFactory, PatientFactory, WorkflowFactory
from workflows.models import Event, Run, StepRun, Workflow
from workflows.selectors import run_patient, run_waiting_message, workflow_waiting_runs

pytestmark = pytest.mark.django_db


def _run(workflow: Workflow, *, customer: dict[str, str] | None = None, **fields: object) -> Run:
    event = Event.objects.create(
        organization=workflow.organization,
        type="order.shipped",
        payload={} if customer is None else {"customer": customer},
        dedupe_key=f"e{Event.objects.count()}",
    )
    return Run.objects.create(workflow=workflow, event=event, **fields)


def test_a_waiting_run_waits_on_the_message_its_current_step_recorded() -> None:
    run = _run(WorkflowFactory(), status=Run.Status.WAITING, next_index=1)
    StepRun.objects.create(run=run, index=0, result={"message_id": 5})  # an earlier step
    StepRun.objects.create(
        run=run, index=1, status=StepRun.Status.WAITING, result={"message_id": 42}
    )
    assert run_waiting_message(run=run) == 42


def test_a_run_waiting_on_a_delay_or_with_no_step_run_waits_on_no_message() -> None:
    run = _run(WorkflowFactory(), status=Run.Status.WAITING)
    assert run_waiting_message(run=run) is None
    StepRun.objects.create(run=run, index=0, status=StepRun.Status.WAITING, result={})
    assert run_waiting_message(run=run) is None


def test_disabling_would_cancel_the_unfinished_runs_only() -> None:
    workflow = WorkflowFactory()
    for status in Run.Status:
        _run(workflow, status=status)
    _run(WorkflowFactory(organization=workflow.organization), status=Run.Status.PENDING)
    assert workflow_waiting_runs(workflow=workflow) == 3  # pending, waiting, running


def test_a_runs_patient_is_found_in_its_own_clinic_only() -> None:
    workflow = WorkflowFactory()
    patient = PatientFactory(organization=workflow.organization)
    elsewhere = PatientFactory(organization=OrganizationFactory())
    assert run_patient(_run(workflow, customer={"id": str(patient.uuid)})) == patient
    assert run_patient(_run(workflow, customer={"id": str(elsewhere.uuid)})) is None


@pytest.mark.parametrize("customer", [None, {}, {"id": "not-a-uuid"}, {"id": ""}])
def test_a_run_without_a_readable_patient_id_has_no_patient(
    customer: dict[str, str] | None,
) -> None:
    assert run_patient(_run(WorkflowFactory(), customer=customer)) is None


# --- a run's status (for the API) -----------------------------------------------------------


def test_run_status_says_where_the_run_is_without_patient_data() -> None:
    import json
    from datetime import timedelta

    from django.utils import timezone

    from workflows.selectors import run_status

    workflow = WorkflowFactory(name="Kit in")
    now = timezone.now()
    steps = [
        {"type": "adapter", "adapter": "twilio", "function": "sendSMS", "parameters": {}},
        {"type": "delay", "parameters": {"kind": "duration", "seconds": 60}},
        {"type": "adapter", "adapter": "twilio", "function": "sendSMS", "parameters": {}},
    ]
    run = _run(
        workflow,
        customer={"id": "p-1", "firstName": "Ann", "phone": "+14155550123"},
        status=Run.Status.WAITING,
        next_index=1,
        started_at=now,
        due_at=now + timedelta(minutes=1),
        definition={"version": 3, "name": "Kit in", "steps": steps},
    )
    StepRun.objects.create(
        run=run,
        index=0,
        status=StepRun.Status.SKIPPED,
        skip_reason="no SMS consent",
        error="+14155550123 is not reachable",
        started_at=now,
        finished_at=now,
        inputs={"to": "+14155550123", "message": "Hi Ann"},
    )
    StepRun.objects.create(run=run, index=1, status=StepRun.Status.WAITING, started_at=now)
    status = run_status(run=run)
    assert status["id"] == str(run.uuid)
    assert status["workflow"] == {"id": str(workflow.uuid), "name": "Kit in", "version": 3}
    assert (status["status"], status["nextStep"], status["test"]) == ("waiting", 2, False)
    assert status["dueAt"] == run.due_at.isoformat()
    assert status["finishedAt"] is None
    assert [(s["number"], s["type"], s["status"]) for s in status["steps"]] == [
        (1, "adapter", "skipped"),
        (2, "delay", "waiting"),
        (3, "adapter", "not_started"),
    ]
    assert status["steps"][0]["skipReason"] == "no SMS consent"
    assert status["steps"][0]["action"] == "twilio.sendSMS"
    assert (status["exitReason"], status["goalReached"], status["goalReachedAt"]) == (
        "",
        False,
        None,
    )
    text = json.dumps(status)  # JSON-ready as it is
    for patient_data in ("Ann", "+14155550123", "p-1"):
        assert patient_data not in text


def test_run_status_of_an_ended_run_has_no_next_step_and_says_why_it_ended() -> None:
    from django.utils import timezone

    from workflows.selectors import run_status

    now = timezone.now()
    run = _run(
        WorkflowFactory(),
        status=Run.Status.EXITED,
        next_index=0,
        finished_at=now,
        exit_reason="goal reached: order.created",
        goal_reached_at=now,
        definition={"version": 1, "steps": [{"type": "delay"}]},
    )
    status = run_status(run=run)
    assert (status["nextStep"], status["dueAt"]) == (None, None)
    assert status["exitReason"] == "goal reached: order.created"
    assert status["goalReached"] is True and status["goalReachedAt"] == now.isoformat()
    assert status["finishedAt"] == now.isoformat()
