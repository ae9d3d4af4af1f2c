"""integrations.records.writes: what an "Update record" step writes, through the models, once.

Every write is checked to be the run's patient's in the run's clinic, goes through the
model's save (so the catalogue's events are recorded and the audit trail names the run), and
is made once per idempotency key, also when two workers run the same step at the same time.
"""

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections
from django.db.models.signals import post_save
from django.utils import timezone

from integrations.records.writes import record_write, write_plan
from patients.models import (
    Appointment,
    AuditEntry,
    Patient,
    PatientNote,
    RecordWrite,
    Subscription,
    Task,
)
from tests.conftest import wait_for
from tests.factories import AppointmentFactory, PatientFactory, SubscriptionFactory
from workflows.adapters import Outcome
from workflows.models import Event

pytestmark = pytest.mark.django_db

ACTOR = "workflow “Reminder” run 7"


def _write(action: str, patient: Patient, key: str = "run:7:step:1", **inputs: str) -> Outcome:
    return record_write(
        action,
        organization=patient.organization,
        patient=patient,
        inputs=inputs,
        idempotency_key=key,
        actor=ACTOR,
    )


def _events(kind: str) -> list[Event]:
    return list(Event.objects.filter(type=kind))


def _nothing_written() -> None:
    assert not RecordWrite.objects.exists()
    assert not AuditEntry.objects.filter(actor_repr=ACTOR).exists()


# --- setAppointmentStatus ---------------------------------------------------------------------


def test_confirming_an_appointment_saves_it_records_its_event_and_audits_the_run() -> None:
    appointment = AppointmentFactory()
    outcome = _write(
        "setAppointmentStatus",
        appointment.patient,
        appointment=str(appointment.uuid),
        status="confirmed",
    )
    assert outcome.status == "succeeded", outcome.reason
    appointment.refresh_from_db()
    assert appointment.status == Appointment.Status.CONFIRMED
    assert outcome.result | {"summary": ""} == {
        "action": "setAppointmentStatus",
        "record": "appointment",
        "id": str(appointment.uuid),
        "changed": True,
        "field": "status",
        "before": "booked",
        "after": "confirmed",
        "summary": "",
    }
    assert outcome.result["summary"].startswith("set the appointment of ")
    # the receivers saw a real status change: the catalogue's event, with the appointment
    (event,) = _events("appointment.confirmed")
    assert event.payload["appointment"]["id"] == str(appointment.uuid)
    # the audit trail says the workflow run did it, and what changed
    entry = AuditEntry.objects.get(model="patients.Appointment", action="updated")
    assert entry.actor_repr == ACTOR and entry.actor is None
    assert entry.changes["status"] == ["booked", "confirmed"]
    assert entry.organization_id == appointment.organization_id
    ledger = RecordWrite.objects.get()
    assert (ledger.model, ledger.object_id, ledger.result) == (
        "appointment",
        str(appointment.uuid),
        outcome.result,
    )


def test_a_reschedule_request_has_its_own_status_and_event() -> None:
    appointment = AppointmentFactory(status=Appointment.Status.CONFIRMED)
    outcome = _write(
        "setAppointmentStatus",
        appointment.patient,
        appointment=str(appointment.uuid),
        status="reschedule_requested",
    )
    assert outcome.status == "succeeded", outcome.reason
    appointment.refresh_from_db()
    assert appointment.status == "reschedule_requested"
    assert len(_events("appointment.reschedule_requested")) == 1


def test_blank_means_the_patients_next_upcoming_appointment() -> None:
    patient = PatientFactory()
    now = timezone.now()
    AppointmentFactory(patient=patient, starts_at=now - timedelta(days=1))  # over
    AppointmentFactory(
        patient=patient, starts_at=now + timedelta(hours=1), status=Appointment.Status.CANCELLED
    )
    later = AppointmentFactory(patient=patient, starts_at=now + timedelta(days=9))
    soonest = AppointmentFactory(patient=patient, starts_at=now + timedelta(days=2))
    AppointmentFactory(starts_at=now + timedelta(hours=2))  # someone else's
    outcome = _write("setAppointmentStatus", patient, appointment="", status="cancelled")
    assert outcome.result["id"] == str(soonest.uuid)
    assert Appointment.objects.get(pk=soonest.pk).status == "cancelled"
    assert Appointment.objects.get(pk=later.pk).status == "booked"


def test_no_upcoming_appointment_fails_clearly() -> None:
    patient = PatientFactory()
    outcome = _write("setAppointmentStatus", patient, appointment="", status="confirmed")
    assert (outcome.status, outcome.reason) == (
        "failed",
        "the patient has no upcoming appointment",
    )
    _nothing_written()


def test_an_unknown_appointment_fails_and_writes_nothing() -> None:
    appointment = AppointmentFactory()
    outcome = _write(
        "setAppointmentStatus",
        appointment.patient,
        appointment="6f1c0d1e-0000-4000-8000-000000000000",
        status="confirmed",
    )
    assert outcome.status == "failed"
    assert outcome.reason == "no appointment 6f1c0d1e-0000-4000-8000-000000000000 in this clinic"
    _nothing_written()


def test_another_clinics_appointment_reads_as_unknown_and_is_not_touched() -> None:
    ours = PatientFactory()
    theirs = AppointmentFactory()  # another clinic's patient
    assert theirs.organization_id != ours.organization_id
    outcome = _write("setAppointmentStatus", ours, appointment=str(theirs.uuid), status="cancelled")
    assert (outcome.status, outcome.reason) == (
        "failed",
        f"no appointment {theirs.uuid} in this clinic",
    )
    theirs.refresh_from_db()
    assert theirs.status == "booked"
    assert not _events("appointment.cancelled")
    _nothing_written()


def test_another_patients_appointment_in_the_same_clinic_is_refused() -> None:
    ours = PatientFactory()
    neighbour = AppointmentFactory(patient=PatientFactory(organization=ours.organization))
    outcome = _write(
        "setAppointmentStatus", ours, appointment=str(neighbour.uuid), status="cancelled"
    )
    assert outcome.status == "failed"
    assert "another patient's" in outcome.reason
    assert Appointment.objects.get(pk=neighbour.pk).status == "booked"
    _nothing_written()


@pytest.mark.parametrize(
    ("appointment", "status", "problem"),
    [
        ("not-a-uuid", "confirmed", "“not-a-uuid” is not an appointment id"),
        ("", "completed", "“completed” is not a status this step sets"),
        ("", "", "“” is not a status this step sets"),
    ],
)
def test_bad_input_fails_with_a_specific_reason(
    appointment: str, status: str, problem: str
) -> None:
    booked = AppointmentFactory()
    outcome = _write("setAppointmentStatus", booked.patient, appointment=appointment, status=status)
    assert outcome.status == "failed"
    assert outcome.reason.startswith(problem)
    assert Appointment.objects.get(pk=booked.pk).status == "booked"
    _nothing_written()


@pytest.mark.parametrize("status", ["cancelled", "completed", "no_show"])
def test_an_appointment_that_is_over_is_not_brought_back(status: str) -> None:
    appointment = AppointmentFactory(status=status)
    outcome = _write(
        "setAppointmentStatus",
        appointment.patient,
        appointment=str(appointment.uuid),
        status="confirmed",
    )
    assert outcome.status == "skipped"
    assert outcome.reason.endswith(f"is {appointment.get_status_display().lower()}: not changed")
    assert Appointment.objects.get(pk=appointment.pk).status == status
    assert not _events("appointment.confirmed")
    _nothing_written()


def test_an_appointment_already_in_that_status_is_not_saved_again() -> None:
    appointment = AppointmentFactory(status=Appointment.Status.CONFIRMED)
    events = Event.objects.count()
    outcome = _write(
        "setAppointmentStatus",
        appointment.patient,
        appointment=str(appointment.uuid),
        status="confirmed",
    )
    assert outcome.status == "succeeded"
    assert outcome.result["changed"] is False
    assert Event.objects.count() == events
    assert not AuditEntry.objects.filter(actor_repr=ACTOR).exists()


# --- addNote, createTask ----------------------------------------------------------------------


def test_a_note_is_written_for_the_patient_by_the_run() -> None:
    patient = PatientFactory()
    outcome = _write("addNote", patient, text="  Replied C to the reminder.  ")
    assert outcome.status == "succeeded", outcome.reason
    note = PatientNote.objects.get()
    assert (note.patient, note.organization, note.text, note.written_by) == (
        patient,
        patient.organization,
        "Replied C to the reminder.",
        ACTOR,
    )
    assert outcome.result["id"] == str(note.uuid) and outcome.result["changed"] is True
    created = AuditEntry.objects.get(model="patients.PatientNote")
    assert (created.action, created.actor_repr) == ("created", ACTOR)


@pytest.mark.parametrize(
    ("text", "problem"),
    [("   ", "the note is empty"), ("x" * 4001, "the note is 4001 characters; at most 4000")],
)
def test_a_note_must_say_something_and_fit(text: str, problem: str) -> None:
    outcome = _write("addNote", PatientFactory(), text=text)
    assert (outcome.status, outcome.reason) == ("failed", problem)
    assert not PatientNote.objects.exists()
    _nothing_written()


def test_a_task_for_the_patients_clinic_records_task_created() -> None:
    patient = PatientFactory()
    before = timezone.now()
    outcome = _write("createTask", patient, title="Call  Ann to reschedule", due_in_hours="24")
    assert outcome.status == "succeeded", outcome.reason
    task = Task.objects.get()
    assert (task.organization, task.patient, task.title, task.status) == (
        patient.organization,
        patient,
        "Call Ann to reschedule",
        "open",
    )
    assert task.due_at is not None
    assert before + timedelta(hours=24) <= task.due_at <= timezone.now() + timedelta(hours=24)
    assert len(_events("task.created")) == 1
    assert AuditEntry.objects.get(model="patients.Task").actor_repr == ACTOR


def test_a_task_without_due_time_has_none() -> None:
    outcome = _write("createTask", PatientFactory(), title="Call back", due_in_hours="")
    assert outcome.status == "succeeded"
    assert Task.objects.get().due_at is None


@pytest.mark.parametrize(
    ("title", "hours", "problem"),
    [
        ("", "", "the task has no title"),
        ("Call", "soon", "“soon” is not a number of hours"),
        ("Call", "-1", "due in must be between 0 and 8784 hours"),
        ("x" * 201, "", "the title is 201 characters; at most 200"),
    ],
)
def test_a_bad_task_fails_with_a_specific_reason(title: str, hours: str, problem: str) -> None:
    outcome = _write("createTask", PatientFactory(), title=title, due_in_hours=hours)
    assert (outcome.status, outcome.reason) == ("failed", problem)
    assert not Task.objects.exists()


# --- setField ---------------------------------------------------------------------------------


def test_setting_an_allowed_patient_field_goes_through_the_model() -> None:
    patient = PatientFactory(timezone="")
    outcome = _write("setField", patient, field="patient.timezone", value="America/Chicago")
    assert outcome.status == "succeeded", outcome.reason
    patient.refresh_from_db()
    assert patient.timezone == "America/Chicago"
    assert (outcome.result["before"], outcome.result["after"]) == ("", "America/Chicago")
    (event,) = _events("customer.updated")  # ChangeTracked saw the change
    assert event.payload["changedFields"] == ["timezone"]
    entry = AuditEntry.objects.get(model="patients.Patient", action="updated")
    assert entry.actor_repr == ACTOR
    assert entry.changes["timezone"] == ["", "America/Chicago"]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("patient.timezone", "Mars/Olympus", "Patient: time zone: “Mars/Olympus” is not a time"),
        ("patient.email", "not an email", "Patient: email: Enter a valid email address."),
        ("patient.phone", "+14155550100", "“patient.phone” is not a field this step may set"),
        ("patient.is_test", "true", "“patient.is_test” is not a field this step may set"),
        ("appointment.status", "gone", "Appointment: status: Value 'gone' is not a valid choice"),
        ("subscription.next_cycle_date", "next week", "Subscription: renewal date: "),
    ],
)
def test_a_value_the_model_refuses_or_a_field_not_allowed_writes_nothing(
    field: str, value: str, problem: str
) -> None:
    patient = PatientFactory(email="ann@example.com", timezone="")
    AppointmentFactory(patient=patient)
    SubscriptionFactory(patient=patient)
    changed = patient.profile_version
    outcome = _write("setField", patient, field=field, value=value)
    assert outcome.status == "failed"
    assert outcome.reason.startswith(problem), outcome.reason
    patient.refresh_from_db()
    assert (patient.email, patient.timezone, patient.profile_version) == (
        "ann@example.com",
        "",
        changed,
    )
    assert Appointment.objects.get().status == "booked"
    _nothing_written()


def test_setting_a_field_of_the_patients_subscription() -> None:
    subscription = SubscriptionFactory()
    outcome = _write(
        "setField",
        subscription.patient,
        field="subscription.status",
        value="paused",
        record="",  # their one active subscription
    )
    assert outcome.status == "succeeded", outcome.reason
    assert Subscription.objects.get().status == "paused"
    assert len(_events("subscription.paused")) == 1


def test_setting_a_field_of_another_clinics_record_fails() -> None:
    ours = PatientFactory()
    theirs = AppointmentFactory(location="Main St")
    outcome = _write(
        "setField",
        ours,
        field="appointment.location",
        value="Elsewhere",
        record=str(theirs.uuid),
    )
    assert (outcome.status, outcome.reason) == (
        "failed",
        f"no appointment {theirs.uuid} in this clinic",
    )
    assert Appointment.objects.get(pk=theirs.pk).location == "Main St"


# --- the dry run's plan -------------------------------------------------------------------------


def test_the_plan_writes_nothing_and_leaves_the_callers_patient_alone() -> None:
    patient = PatientFactory(timezone="")
    appointment = AppointmentFactory(patient=patient)
    plan = write_plan(
        "setAppointmentStatus",
        organization=patient.organization,
        patient=patient,
        inputs={"appointment": str(appointment.uuid), "status": "confirmed"},
    )
    assert plan.summary.startswith("set the appointment of ") and plan.changed
    field = write_plan(
        "setField",
        organization=patient.organization,
        patient=patient,
        inputs={"field": "patient.timezone", "value": "America/Chicago"},
    )
    assert field.summary == "set the patient's time zone to “America/Chicago”"
    assert patient.timezone == ""
    assert Appointment.objects.get().status == "booked"
    assert Patient.objects.get().timezone == ""
    assert not AuditEntry.objects.filter(actor_repr=ACTOR).exists()


# --- exactly once -------------------------------------------------------------------------------


def test_a_retried_step_returns_the_first_outcome_and_writes_nothing_again() -> None:
    patient = PatientFactory()
    first = _write("addNote", patient, key="run:9:step:2", text="Replied YES")
    again = _write("addNote", patient, key="run:9:step:2", text="Replied YES")
    assert first.status == again.status == "succeeded"
    assert again.result == first.result
    assert PatientNote.objects.count() == 1
    assert RecordWrite.objects.count() == 1
    assert AuditEntry.objects.filter(model="patients.PatientNote").count() == 1
    # another step (or a retry of a failed run: a new generation) is another key
    other = _write("addNote", patient, key="run:9:step:2:retry:1", text="Replied YES")
    assert other.result["id"] != first.result["id"]
    assert PatientNote.objects.count() == 2


def test_a_redelivered_status_change_records_one_event() -> None:
    appointment = AppointmentFactory()
    for _ in range(2):
        _write(
            "setAppointmentStatus",
            appointment.patient,
            appointment=str(appointment.uuid),
            status="confirmed",
        )
    assert len(_events("appointment.confirmed")) == 1
    assert AuditEntry.objects.filter(model="patients.Appointment", action="updated").count() == 1


def _lock_waiters() -> int:
    with connection.cursor() as cursor:
        # Inside a transaction the statistics views are a snapshot, unless cleared.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_two_workers_running_the_same_step_at_once_write_once() -> None:
    """The first worker holds its transaction open (its write made, not committed) until the
    second is seen waiting on a lock; then both finish with the same outcome and one write."""
    appointment = AppointmentFactory()
    patient = appointment.patient
    outcomes: dict[str, Outcome] = {}
    written = threading.Event()

    def hold_first(sender: Any, instance: Appointment, **kwargs: Any) -> None:
        if threading.current_thread().name == "first":
            written.set()
            wait_for(lambda: _lock_waiters() >= 1, timeout=15, what="the second worker to wait")

    def work() -> None:
        try:
            outcomes[threading.current_thread().name] = _write(
                "setAppointmentStatus",
                patient,
                key="run:3:step:0",
                appointment=str(appointment.uuid),
                status="confirmed",
            )
        finally:
            connections.close_all()

    post_save.connect(hold_first, sender=Appointment, dispatch_uid="test-hold-first")
    try:
        first = threading.Thread(target=work, name="first")
        first.start()
        assert written.wait(15), "the first worker never wrote"
        second = threading.Thread(target=work, name="second")
        second.start()
        first.join(30)
        second.join(30)
    finally:
        post_save.disconnect(sender=Appointment, dispatch_uid="test-hold-first")
    assert set(outcomes) == {"first", "second"}
    assert outcomes["first"].status == outcomes["second"].status == "succeeded"
    assert outcomes["second"].result == outcomes["first"].result
    assert RecordWrite.objects.count() == 1
    assert len(_events("appointment.confirmed")) == 1
    assert AuditEntry.objects.filter(model="patients.Appointment", action="updated").count() == 1
    assert Appointment.objects.get().status_version == appointment.status_version + 1
