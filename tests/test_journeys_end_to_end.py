"""Issue 17's "done means", end to end through a real worker and the Twilio sandbox: one
appointment reminder that enrolls a patient at most once per 30 days, splits patients A/B,
and has a goal (the appointment confirmed). Two patients in different variants each get
their variant's text; a second booking within the 30 days is skipped with its reason; one
patient confirms, which ends that run early and counts as a conversion, while the other run
keeps waiting. The workflow's analytics then count exactly that."""

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from integrations.analytics import Period, workflow_analytics
from integrations.models import Integration, OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import Appointment
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    AppointmentFactory,
    IntegrationFactory,
    SmsStepFactory,
    WorkflowFactory,
    patient_in_branch,
)
from workflows.models import EnrollmentSkip, Event, Run, Workflow
from workflows.splits import split_seed

pytestmark = pytest.mark.integration

SPLIT = {
    "branches": [
        {"label": "Plain", "percent": 50, "goto": "next"},
        {"label": "Warm", "percent": 50, "goto": 4},
    ]
}
UTC_ZONE = ZoneInfo("UTC")
HOUR = {"kind": "duration", "seconds": 3600}


def _sms(message: str) -> dict[str, Any]:
    return {"parameters": {"message": message, "to": "{{customer.phone}}", "from": "+15005550006"}}


def _delay() -> dict[str, Any]:
    return {"type": "delay", "adapter": "", "function": "", "parameters": HOUR}


def _reminder(integration: Integration) -> Workflow:
    workflow = WorkflowFactory(
        organization=integration.organization,
        trigger="appointment.booked",
        enrollment=Workflow.Enrollment.PERIOD,
        enrollment_days=30,
        goal_event="appointment.confirmed",
    )
    steps = [
        {"type": "split", "adapter": "", "function": "", "parameters": SPLIT},
        _sms("Your visit is booked. Reply C to confirm."),
        _delay(),
        _sms("Hi {{customer.firstName}}, we look forward to seeing you! Reply C to confirm."),
        _delay(),
    ]
    for position, step in enumerate(steps, start=1):
        SmsStepFactory(workflow=workflow, position=position, **step)
    return workflow


def test_once_per_30_days_a_goal_and_an_ab_split_through_a_real_worker(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = _reminder(integration)
    seed = split_seed(SPLIT, default=str(workflow.uuid))
    plain = patient_in_branch(
        integration.organization, SPLIT, seed=seed, label="Plain", phone="+14155550181"
    )
    warm = patient_in_branch(
        integration.organization, SPLIT, seed=seed, label="Warm", phone="+14155550182"
    )

    # Both book: each run texts its variant's words, then waits an hour.
    first = AppointmentFactory(patient=plain)
    AppointmentFactory(patient=warm)
    wait_for(
        lambda: Run.objects.filter(workflow=workflow, status=Run.Status.WAITING).count() == 2,
        timeout=60,
        what="both runs waiting after their text",
    )
    assert sorted((m["to"], m["body"]) for m in sandbox.messages()) == [
        ("+14155550181", "Your visit is booked. Reply C to confirm."),
        (
            "+14155550182",
            f"Hi {warm.first_name}, we look forward to seeing you! Reply C to confirm.",
        ),
    ]
    runs = {run.patient_key: run for run in Run.objects.filter(workflow=workflow)}
    assert runs[str(plain.uuid)].variant == "Plain"
    assert runs[str(warm.uuid)].variant == "Warm"

    # A second booking of the same patient within 30 days: skipped, with the reason.
    AppointmentFactory(patient=plain)
    skip = wait_for(lambda: EnrollmentSkip.objects.filter(workflow=workflow).first(), what="skip")
    assert skip.reason == EnrollmentSkip.Reason.PERIOD
    assert f"(run {runs[str(plain.uuid)].pk}); at most once per 30 days" in skip.detail

    # The first patient confirms: the goal ends that run early, converted.
    first.status = Appointment.Status.CONFIRMED
    first.save()
    converted = wait_for(
        lambda: Run.objects.filter(workflow=workflow, status=Run.Status.EXITED).first(),
        timeout=60,
        what="the goal to end the run",
    )
    goal = Event.objects.get(type="appointment.confirmed")
    assert converted.pk == runs[str(plain.uuid)].pk
    assert converted.goal_event_id == goal.pk and converted.goal_reached_at is not None
    assert converted.exit_reason == "goal reached: appointment.confirmed"
    waiting = Run.objects.get(pk=runs[str(warm.uuid)].pk)
    assert waiting.status == Run.Status.WAITING and waiting.goal_reached_at is None
    assert Run.objects.filter(workflow=workflow).count() == 2
    assert OutboundMessage.objects.count() == 2 and len(sandbox.messages()) == 2

    # What the workflow's analytics page counts for this history.
    now = timezone.now()
    period = Period(start=now - timedelta(hours=1), end=now + timedelta(minutes=1), zone=UTC_ZONE)
    figures = workflow_analytics(workflow=workflow, period=period)
    assert figures.enrolled == 2 and figures.conversions == 1
    assert figures.skipped_by_reason == {EnrollmentSkip.Reason.PERIOD: 1}
    assert figures.runs_by_status == {Run.Status.EXITED: 1, Run.Status.WAITING: 1}
    sent = {status: n for status, n in figures.messages_by_status.items() if n}
    assert sum(sent.values()) == 2 and set(sent) <= {"sent", "delivered"}
    assert {(v.label, v.enrolled, v.conversions) for v in figures.variants} == {
        ("Plain", 1, 1),
        ("Warm", 1, 0),
    }
