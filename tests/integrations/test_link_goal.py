"""A click on a short link as a workflow goal ("clicked within N days": the goal
message.link_clicked with a window of N days), in-process on PostgreSQL with the Twilio
sandbox over HTTP: the text goes out with a short link, the click records the event, its
dispatch converts the run and ends it, and the reminder after the delay never goes out."""

import re
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from integrations.models import Integration, MessagingPolicy, OutboundMessage
from integrations.policy import messaging_policy_forget
from integrations.short_links import CLICK_EVENT
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order
from tests.conftest import sandbox_account
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, Run, StepRun, Workflow

pytestmark = pytest.mark.django_db
SENDER = "+15005550006"
TARGET = "https://sunrise.example/review?order=1"
DELAY: dict[str, Any] = {
    "type": "delay",
    "adapter": "",
    "function": "",
    "parameters": {"kind": "duration", "seconds": 3600},
}
SHORT = re.compile(r"https://go\.sunrise\.example(/l/[A-Za-z0-9]+)")


def link_goal_workflow(integration: Integration) -> Workflow:
    """order.shipped: text a link, wait an hour, remind; the goal is a click within 2 days
    (short links on https://go.sunrise.example)."""
    MessagingPolicy.objects.update_or_create(
        organization=integration.organization,
        defaults={"short_links_enabled": True, "short_link_domain": "https://go.sunrise.example"},
    )
    messaging_policy_forget()
    workflow: Workflow = WorkflowFactory(
        organization=integration.organization,
        trigger="order.shipped",
        goal_event=CLICK_EVENT,
        goal_window_hours=48,
    )
    sms = {"to": "{{customer.phone}}", "from": SENDER}
    SmsStepFactory(
        workflow=workflow, position=1, parameters={"message": f"Review: {TARGET} Thanks!", **sms}
    )
    SmsStepFactory(workflow=workflow, position=2, **DELAY)
    SmsStepFactory(workflow=workflow, position=3, parameters={"message": "Reminder", **sms})
    return workflow


@pytest.fixture
def workflow(sandbox: SandboxServer) -> Workflow:
    return link_goal_workflow(sandbox_account(sandbox, IntegrationFactory()))


def _shipped_run(workflow: Workflow) -> Run:
    patient = PatientFactory(organization=workflow.organization, phone="+14155550171")
    ConsentFactory(patient=patient)
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()
    event = Event.objects.filter(type="order.shipped").latest("id")
    (run_id,) = event_dispatch(event_id=event.pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.WAITING, run.error
    return run


def test_a_click_reaches_the_goal_and_the_reminder_never_goes_out(
    workflow: Workflow, sandbox: SandboxServer
) -> None:
    run = _shipped_run(workflow)
    (sent,) = sandbox.messages()
    match = SHORT.search(sent["body"])
    assert match and TARGET not in sent["body"]

    response = Client().get(match.group(1), HTTP_USER_AGENT="Mozilla/5.0 (iPhone)")
    assert (response.status_code, response["Location"]) == (302, TARGET)
    click = Event.objects.get(type=CLICK_EVENT)
    message = OutboundMessage.objects.get()
    assert click.payload["message"]["id"] == str(message.uuid)
    event_dispatch(event_id=click.pk)

    run.refresh_from_db()
    assert run.status == Run.Status.EXITED
    assert run.exit_reason == f"goal reached: {CLICK_EVENT}"
    assert run.goal_event_id == click.pk and run.goal_reached_at is not None
    # The delay's minute passes: nothing more is sent.
    past = timezone.now() - timedelta(seconds=1)
    Run.objects.filter(pk=run.pk).update(due_at=past)
    run_advance(run_id=run.pk)
    assert len(sandbox.messages()) == 1
    assert StepRun.objects.filter(run=run, index=2).count() == 0


def test_a_link_preview_is_not_a_goal(workflow: Workflow, sandbox: SandboxServer) -> None:
    run = _shipped_run(workflow)
    match = SHORT.search(sandbox.messages()[0]["body"])
    assert match
    Client().get(match.group(1), HTTP_USER_AGENT="facebookexternalhit/1.1 Facebot Twitterbot/1.0")
    assert not Event.objects.filter(type=CLICK_EVENT).exists()
    run.refresh_from_db()
    assert run.status == Run.Status.WAITING and run.goal_reached_at is None


@pytest.mark.parametrize(("pattern", "reached"), [("/review", True), ("/book", False)])
def test_a_goal_filter_narrows_it_to_one_link(
    workflow: Workflow, sandbox: SandboxServer, pattern: str, reached: bool
) -> None:
    """ "Clicked the review link": a click on another link is not the goal."""
    Workflow.objects.filter(pk=workflow.pk).update(goal_filter={"link.url": {"$regex": pattern}})
    workflow.refresh_from_db()
    run = _shipped_run(workflow)
    match = SHORT.search(sandbox.messages()[0]["body"])
    assert match
    Client().get(match.group(1), HTTP_USER_AGENT="Mozilla/5.0 (iPhone)")
    event_dispatch(event_id=Event.objects.get(type=CLICK_EVENT).pk)
    run.refresh_from_db()
    assert (run.goal_reached_at is not None) is reached
    assert run.status == (Run.Status.EXITED if reached else Run.Status.WAITING)
