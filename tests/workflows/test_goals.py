"""Goals and exit conditions (workflows.goals), in-process on PostgreSQL with the Twilio
sandbox over HTTP: a goal ends the patient's runs in progress and converts them within the
window, an exit ends them without converting, and a goal recorded but not yet dispatched
stops the send."""

import threading
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.models import OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import Appointment, Patient
from tests.conftest import sandbox_account
from tests.factories import (
    AppointmentFactory,
    ConsentFactory,
    IntegrationFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
    clinic_integration,
)
from tests.workflows.test_engine import STATEMENTS_PER_EVENT
from workflows.engine import event_dispatch, run_advance
from workflows.goals import endings_apply
from workflows.models import Event, ReplyWait, Run, StepRun, Workflow

pytestmark = pytest.mark.django_db
SENDER = "+15005550006"
DELAY = {
    "type": "delay",
    "adapter": "",
    "function": "",
    "parameters": {"kind": "duration", "seconds": 60},
}


def _sms(message: str = "See you soon, {{customer.firstName}}") -> dict[str, Any]:
    return {"parameters": {"message": message, "to": "{{customer.phone}}", "from": SENDER}}


@pytest.fixture
def clinic(sandbox: SandboxServer) -> Workflow:
    """appointment.booked: wait a minute, then text; the goal is appointment.confirmed."""
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = WorkflowFactory(
        organization=integration.organization,
        trigger="appointment.booked",
        goal_event="appointment.confirmed",
    )
    SmsStepFactory(workflow=workflow, position=1, **DELAY)
    SmsStepFactory(workflow=workflow, position=2, **_sms())
    return workflow


def _patient(workflow: Workflow, phone: str = "+14155550161") -> Patient:
    patient = PatientFactory(organization=workflow.organization, first_name="Ann", phone=phone)
    ConsentFactory(patient=patient)
    return patient


def _event(kind: str, appointment: Appointment) -> Event:
    return Event.objects.filter(type=kind, subject_id=str(appointment.pk)).latest("id")


def _book(workflow: Workflow, patient: Patient) -> tuple[Appointment, Run]:
    """Book an appointment and advance its run to the delay: it waits."""
    appointment = AppointmentFactory(patient=patient)
    (run_id,) = event_dispatch(event_id=_event("appointment.booked", appointment).pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.WAITING, run.error
    return appointment, run


def _set_status(appointment: Appointment, status: str) -> Event:
    appointment.status = status
    appointment.save()
    return _event(f"appointment.{status}", appointment)


def _due_now(run: Run) -> None:
    """The delay's minute is up."""
    past = timezone.now() - timedelta(seconds=1)
    Run.objects.filter(pk=run.pk).update(due_at=past)
    StepRun.objects.filter(run=run, index=0, status=StepRun.Status.WAITING).update(
        due_at=past, result={"until": past.isoformat()}
    )


def test_the_goal_ends_the_waiting_run_converts_it_and_the_sms_never_goes_out(
    clinic: Workflow, sandbox: SandboxServer
) -> None:
    appointment, run = _book(clinic, _patient(clinic))
    goal = _set_status(appointment, Appointment.Status.CONFIRMED)

    event_dispatch(event_id=goal.pk)

    run.refresh_from_db()
    assert run.status == Run.Status.EXITED
    assert run.exit_reason == "goal reached: appointment.confirmed"
    assert run.goal_event_id == goal.pk and run.goal_reached_at == goal.created_at
    assert run.finished_at is not None and run.due_at is None
    delay = StepRun.objects.get(run=run, index=0)
    assert delay.status == StepRun.Status.CANCELLED
    assert "goal reached: appointment.confirmed" in delay.skip_reason
    _due_now(run)  # the delay's time comes: nothing resumes it
    assert run_advance(run_id=run.pk) is None
    assert sandbox.messages() == [] and not OutboundMessage.objects.exists()


def test_a_goal_dispatched_twice_or_reached_twice_converts_once(clinic: Workflow) -> None:
    patient = _patient(clinic)
    appointment, run = _book(clinic, patient)
    goal = _set_status(appointment, Appointment.Status.CONFIRMED)
    event_dispatch(event_id=goal.pk)
    assert event_dispatch(event_id=goal.pk) == []  # dispatched already: nothing again
    # The goal reached again (another appointment of the patient confirmed): still the first.
    again = _set_status(AppointmentFactory(patient=patient), Appointment.Status.CONFIRMED)
    event_dispatch(event_id=again.pk)
    run.refresh_from_db()
    assert run.goal_event_id == goal.pk
    assert Run.objects.filter(goal_reached_at__isnull=False).count() == 1


def test_a_finished_run_still_converts_within_the_window_but_not_after_it(
    clinic: Workflow,
) -> None:
    patient = _patient(clinic)
    appointment, run = _book(clinic, patient)
    Run.objects.filter(pk=run.pk).update(status=Run.Status.SUCCEEDED, finished_at=timezone.now())
    _, late = _book(clinic, patient)
    # Created long ago: the goal comes after its window (168 h).
    Run.objects.filter(pk=late.pk).update(
        status=Run.Status.SUCCEEDED, created_at=timezone.now() - timedelta(hours=169)
    )
    Event.objects.filter(pk=late.event_id).update(created_at=timezone.now() - timedelta(hours=170))

    event_dispatch(event_id=_set_status(appointment, Appointment.Status.CONFIRMED).pk)

    run.refresh_from_db()
    late.refresh_from_db()
    assert run.status == Run.Status.SUCCEEDED and run.goal_reached_at is not None
    assert run.exit_reason == ""  # finished already: converted, not ended
    assert late.goal_reached_at is None and late.status == Run.Status.SUCCEEDED


def test_a_waiting_run_past_its_window_is_ended_by_the_goal_without_converting(
    clinic: Workflow, sandbox: SandboxServer
) -> None:
    appointment, run = _book(clinic, _patient(clinic))
    Run.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(hours=200))
    Event.objects.filter(pk=run.event_id).update(created_at=timezone.now() - timedelta(hours=200))
    event_dispatch(event_id=_set_status(appointment, Appointment.Status.CONFIRMED).pk)
    run.refresh_from_db()
    assert run.status == Run.Status.EXITED and run.goal_reached_at is None


def test_patient_scope_ends_the_patients_runs_and_no_one_elses(clinic: Workflow) -> None:
    ann = _patient(clinic)
    first, ann_run = _book(clinic, ann)
    _, ann_other = _book(clinic, ann)  # another appointment of Ann's
    _, bob_run = _book(clinic, _patient(clinic, phone="+14155550162"))
    event_dispatch(event_id=_set_status(first, Appointment.Status.CONFIRMED).pk)
    statuses = dict(Run.objects.values_list("id", "status"))
    assert statuses[ann_run.pk] == statuses[ann_other.pk] == Run.Status.EXITED
    assert statuses[bob_run.pk] == Run.Status.WAITING


def test_record_scope_ends_only_the_run_of_that_record(clinic: Workflow) -> None:
    Workflow.objects.filter(pk=clinic.pk).update(goal_scope=Workflow.Scope.RECORD)
    ann = _patient(clinic)
    first, first_run = _book(clinic, ann)
    _, second_run = _book(clinic, ann)
    event_dispatch(event_id=_set_status(first, Appointment.Status.CONFIRMED).pk)
    first_run.refresh_from_db()
    second_run.refresh_from_db()
    assert first_run.status == Run.Status.EXITED and first_run.goal_reached_at is not None
    assert second_run.status == Run.Status.WAITING and second_run.goal_reached_at is None


def test_the_goal_filter_decides_which_events_count(clinic: Workflow) -> None:
    Workflow.objects.filter(pk=clinic.pk).update(
        goal_filter={"appointment.providerName": "Dr. Someone Else"}
    )
    appointment, run = _book(clinic, _patient(clinic))
    event_dispatch(event_id=_set_status(appointment, Appointment.Status.CONFIRMED).pk)
    run.refresh_from_db()
    assert run.status == Run.Status.WAITING and run.goal_reached_at is None
    Workflow.objects.filter(pk=clinic.pk).update(
        goal_filter={"appointment.providerName": "Dr. Maria Gomez"}
    )
    appointment.status = Appointment.Status.BOOKED
    appointment.save()
    event_dispatch(event_id=_set_status(appointment, Appointment.Status.CONFIRMED).pk)
    run.refresh_from_db()
    assert run.status == Run.Status.EXITED and run.goal_reached_at is not None


def test_an_exit_ends_the_run_without_converting_and_sends_nothing(
    clinic: Workflow, sandbox: SandboxServer
) -> None:
    Workflow.objects.filter(pk=clinic.pk).update(
        exits=[{"event": "appointment.cancelled", "filter": {}, "scope": "record"}]
    )
    appointment, run = _book(clinic, _patient(clinic))
    event_dispatch(event_id=_set_status(appointment, Appointment.Status.CANCELLED).pk)
    run.refresh_from_db()
    assert run.status == Run.Status.EXITED
    assert run.exit_reason == "exit: appointment.cancelled"
    assert run.goal_reached_at is None and run.goal_event is None
    # The goal reached afterwards does not convert a run an exit ended.
    appointment.status = Appointment.Status.BOOKED
    appointment.save()
    event_dispatch(event_id=_set_status(appointment, Appointment.Status.CONFIRMED).pk)
    run.refresh_from_db()
    assert run.goal_reached_at is None and run.exit_reason == "exit: appointment.cancelled"
    _due_now(run)
    assert run_advance(run_id=run.pk) is None and sandbox.messages() == []


def test_a_goal_recorded_but_not_dispatched_stops_the_send(
    clinic: Workflow, sandbox: SandboxServer
) -> None:
    appointment, run = _book(clinic, _patient(clinic))
    goal = _set_status(appointment, Appointment.Status.CONFIRMED)  # the relay has not run
    _due_now(run)

    run = run_advance(run_id=run.pk)

    assert run is not None and run.status == Run.Status.EXITED
    assert run.goal_event_id == goal.pk and run.goal_reached_at is not None
    sms = StepRun.objects.get(run=run, index=1)
    assert sms.status == StepRun.Status.SKIPPED
    assert sms.skip_reason == "not sent: goal reached: appointment.confirmed before this step"
    assert sandbox.messages() == [] and not OutboundMessage.objects.exists()
    # Its dispatch later changes nothing: converted and ended once.
    event_dispatch(event_id=goal.pk)
    run.refresh_from_db()
    assert run.goal_event_id == goal.pk and run.status == Run.Status.EXITED


def test_a_goal_recorded_before_the_trigger_does_not_stop_the_send(
    clinic: Workflow, sandbox: SandboxServer
) -> None:
    patient = _patient(clinic)
    _set_status(AppointmentFactory(patient=patient), Appointment.Status.CONFIRMED)
    _, run = _book(clinic, patient)
    _due_now(run)
    run = run_advance(run_id=run.pk)
    assert run is not None and run.status == Run.Status.SUCCEEDED
    assert run.goal_reached_at is None and len(sandbox.messages()) == 1


def test_the_goal_ends_the_waits_for_a_reply_of_the_runs_it_ends(
    clinic: Workflow, sandbox: SandboxServer
) -> None:
    clinic.steps.all().delete()
    SmsStepFactory(workflow=clinic, position=1, **_sms("Reply C to confirm"))
    SmsStepFactory(
        workflow=clinic,
        position=2,
        type="reply",
        adapter="",
        function="",
        parameters={
            "kind": "duration",
            "seconds": "3600",
            "branches": [{"label": "C", "match": "keywords", "keywords": ["c"], "goto": "end"}],
            "otherwise": {"goto": "end"},
            "no_reply": {"goto": "end"},
        },
    )
    appointment, run = _book(clinic, _patient(clinic))
    assert ReplyWait.objects.get(run=run).state == ReplyWait.State.WAITING
    event_dispatch(event_id=_set_status(appointment, Appointment.Status.CONFIRMED).pk)
    wait = ReplyWait.objects.get(run=run)
    assert wait.state == ReplyWait.State.CANCELLED
    assert wait.reason == "run ended early: goal reached: appointment.confirmed"


def test_booked_and_confirmed_in_one_batch_never_text(
    clinic: Workflow, sandbox: SandboxServer
) -> None:
    from workflows.tasks import events_dispatch

    clinic.steps.all().delete()
    SmsStepFactory(workflow=clinic, position=1, **_sms())  # no delay: it would text at once
    appointment = AppointmentFactory(patient=_patient(clinic))
    booked = _event("appointment.booked", appointment)
    confirmed = _set_status(appointment, Appointment.Status.CONFIRMED)
    events_dispatch([booked.pk, confirmed.pk])
    run = Run.objects.get()
    assert run.status == Run.Status.EXITED and run.goal_event_id == confirmed.pk
    assert sandbox.messages() == []


def test_a_workflow_without_goals_costs_no_statement_more(
    clinic: Workflow, sandbox: SandboxServer
) -> None:
    """The goal read rides on the dispatch's read of workflows; the send-time check only
    runs for workflows with a goal or exits."""
    from workflows.tasks import events_dispatch

    Workflow.objects.filter(pk=clinic.pk).update(goal_event="")
    clinic.steps.filter(position=1).delete()
    booked = _event("appointment.booked", AppointmentFactory(patient=_patient(clinic)))
    with CaptureQueriesContext(connection) as queries:
        events_dispatch([booked.pk])
    assert len(sandbox.messages()) == 1
    sql = [q["sql"] for q in queries.captured_queries]
    assert not any('"workflows_event"."type" IN' in s for s in sql)
    assert sum('FROM "workflows_workflow"' in s for s in sql) == 1
    assert not any(s.startswith('UPDATE "workflows_run"') and "exit_reason" in s for s in sql)
    # And the hot path's own bound (tests/workflows/test_engine.py) still holds.
    statements = [s for s in sql if not s.startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    assert len(statements) <= STATEMENTS_PER_EVENT, "\n".join(s[:100] for s in statements)


def test_the_send_time_check_is_one_query_on_the_patient_index(clinic: Workflow) -> None:
    from workflows.goals import run_ending_recorded

    _, run = _book(clinic, _patient(clinic))
    run = Run.objects.select_related("event", "workflow").get(pk=run.pk)
    with CaptureQueriesContext(connection) as queries:
        assert run_ending_recorded(run=run) is None
    (query,) = queries.captured_queries
    # The query filters on the index's leading expression (on a near-empty test table the
    # planner is free to prefer another index, so the plan itself is not what is checked).
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'event_patient_type'")
        (definition,) = cursor.fetchone()
    expression = "(payload #>> '{customer,id}'::text[])"
    assert f"(({expression}), type, created_at)" in definition
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + query["sql"])
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert f"{expression} = " in plan


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_worker")
def test_two_goal_events_dispatched_at_once_convert_and_end_each_run_once(
    clinic: Workflow,
) -> None:
    """Two of the patient's appointments confirmed in the same instant, dispatched by two
    workers at once: each run converts once, to one of them, and is ended once."""
    ann = _patient(clinic)
    first, first_run = _book(clinic, ann)
    second, second_run = _book(clinic, ann)
    goals = [_set_status(a, Appointment.Status.CONFIRMED) for a in (first, second)]
    barrier = threading.Barrier(len(goals))
    errors: list[BaseException] = []
    ended: list[set[int]] = []

    def dispatch(event: Event) -> None:
        # What events_dispatch does with the goal, in its transaction: who ended which run.
        try:
            barrier.wait()
            with transaction.atomic():
                ended.append(endings_apply(events=[event], workflows=[clinic], now=timezone.now()))
        except BaseException as exc:  # noqa: BLE001 — reported by the test below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=dispatch, args=(goal,)) for goal in goals]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(run_id for found in ended for run_id in found) == [first_run.pk, second_run.pk]
    for run in (first_run, second_run):
        run.refresh_from_db()
        assert run.status == Run.Status.EXITED
        assert run.goal_event_id in {goal.pk for goal in goals}
        assert run.goal_reached_at == Event.objects.get(pk=run.goal_event_id).created_at
    assert StepRun.objects.filter(status=StepRun.Status.CANCELLED).count() == 2


def test_a_message_deferred_by_quiet_hours_is_skipped_when_the_goal_ends_its_run(
    clinic: Workflow, sandbox: SandboxServer
) -> None:
    """The SMS step ran at night: its message waits for the morning. The appointment is
    confirmed before then: the message is skipped and never sent."""
    from integrations.sending import message_send

    patient = _patient(clinic)
    appointment, run = _book(clinic, patient)
    step_run = StepRun.objects.create(run=run, index=1, status=StepRun.Status.WAITING)
    message = OutboundMessage.objects.create(
        organization=clinic.organization,
        integration=clinic_integration(clinic.organization),
        step_run=step_run,
        patient=patient,
        idempotency_key=f"run:{run.pk}:step:1",
        purpose="transactional",
        to=patient.phone,
        from_number=SENDER,
        body="See you soon, Ann",
        next_attempt_at=timezone.now() + timedelta(hours=8),
    )
    event_dispatch(event_id=_set_status(appointment, Appointment.Status.CONFIRMED).pk)
    message.refresh_from_db()
    assert message.status == OutboundMessage.Status.SKIPPED
    assert message.skip_reason == "the run ended early: goal reached: appointment.confirmed"
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=None)
    assert message_send(message_id=message.pk).status == OutboundMessage.Status.SKIPPED
    assert sandbox.messages() == []
