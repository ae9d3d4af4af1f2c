"""A workflow's goal end to end, with a real worker process and its beat: the appointment
is confirmed during the reminder's delay, so the reminder never goes out, and the run ends
early, converted."""

import time
from datetime import datetime

import pytest

from integrations.models import OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import Appointment
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    AppointmentFactory,
    ConsentFactory,
    IntegrationFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import Event, Run, StepRun

pytestmark = pytest.mark.integration


def test_an_appointment_confirmed_during_the_delay_gets_no_reminder_and_converts(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = WorkflowFactory(
        organization=integration.organization,
        trigger="appointment.booked",
        goal_event="appointment.confirmed",
    )
    SmsStepFactory(
        workflow=workflow,
        position=1,
        type="delay",
        adapter="",
        function="",
        parameters={"kind": "duration", "seconds": 60},
    )
    SmsStepFactory(
        workflow=workflow,
        position=2,
        parameters={
            "message": "Please confirm your appointment, {{customer.firstName}}",
            "to": "{{customer.phone}}",
            "from": "+15005550006",
        },
    )
    patient = PatientFactory(
        organization=integration.organization, first_name="Ann", phone="+14155550171"
    )
    ConsentFactory(patient=patient)
    appointment = AppointmentFactory(patient=patient)

    run = wait_for(
        lambda: Run.objects.filter(workflow=workflow, status=Run.Status.WAITING).first(),
        what="the run waiting in its delay",
    )
    appointment.status = Appointment.Status.CONFIRMED
    appointment.save()  # the worker dispatches appointment.confirmed

    wait_for(
        lambda: Run.objects.filter(pk=run.pk, status=Run.Status.EXITED).exists(),
        what="the goal to end the run",
    )
    run.refresh_from_db()
    goal = Event.objects.get(type="appointment.confirmed")
    assert run.exit_reason == "goal reached: appointment.confirmed"
    assert run.goal_event_id == goal.pk and run.goal_reached_at == goal.created_at
    delay = StepRun.objects.get(run=run, index=0)
    assert delay.status == StepRun.Status.CANCELLED
    # The delay's minute passes, with the beat sweeping: still no reminder.
    until = datetime.fromisoformat(delay.result["until"])
    assert run.finished_at is not None
    time.sleep(max(0.0, (until - run.finished_at).total_seconds()) + 5)
    assert sandbox.messages() == [] and not OutboundMessage.objects.exists()
    run.refresh_from_db()
    assert run.status == Run.Status.EXITED
    assert not StepRun.objects.filter(run=run, index=1).exists()
