"""Short links end to end, with a real worker and the loopback Twilio sandbox: a workflow's
text reaches Twilio with a short link on the clinic's domain, the patient's click redirects to
the original link and records message.link_clicked, the worker dispatches it and the run's goal
("clicked within 2 days") is reached: the reminder after the delay never goes out."""

import re
from typing import Any

import pytest
from django.test import Client

from integrations.models import LinkClick, MessagingPolicy, OutboundMessage
from integrations.short_links import CLICK_EVENT
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import Run

pytestmark = pytest.mark.integration

SANDBOX_FROM = "+15005550006"
TARGET = "https://sunrise.example/review?order=1&utm_source=sms"
SHORT = re.compile(r"https://go\.sunrise\.example(/l/[A-Za-z0-9]+)")
DELAY: dict[str, Any] = {
    "type": "delay",
    "adapter": "",
    "function": "",
    "parameters": {"kind": "duration", "seconds": 3600},
}


def test_a_click_on_a_sent_short_link_reaches_the_workflows_goal(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    MessagingPolicy.objects.update_or_create(
        organization=integration.organization,
        defaults={"short_links_enabled": True, "short_link_domain": "https://go.sunrise.example"},
    )
    workflow = WorkflowFactory(
        organization=integration.organization,
        trigger="order.shipped",
        goal_event=CLICK_EVENT,
        goal_window_hours=48,
    )
    sms = {"to": "{{customer.phone}}", "from": SANDBOX_FROM}
    SmsStepFactory(
        workflow=workflow,
        position=1,
        parameters={"message": f"How was it? {TARGET} Thank you!", **sms},
    )
    SmsStepFactory(workflow=workflow, position=2, **DELAY)
    SmsStepFactory(workflow=workflow, position=3, parameters={"message": "Reminder", **sms})
    patient = PatientFactory(organization=integration.organization, phone="+14155550181")
    ConsentFactory(patient=patient)

    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()

    sent = wait_for(lambda: sandbox.messages(), timeout=30, what="the text at the sandbox")
    body = sent[0]["body"]
    match = SHORT.search(body)
    assert match and TARGET not in body and body.endswith(" Thank you!")
    message = OutboundMessage.objects.get()
    assert message.body == body  # logged as sent
    run = wait_for(
        lambda: Run.objects.filter(workflow=workflow, status=Run.Status.WAITING).first(),
        timeout=30,
        what="the run waiting at the delay",
    )

    response = Client().get(match.group(1), HTTP_USER_AGENT="Mozilla/5.0 (iPhone)")
    assert (response.status_code, response["Location"]) == (302, TARGET)
    assert LinkClick.objects.count() == 1

    ended = wait_for(
        lambda: Run.objects.filter(pk=run.pk, goal_reached_at__isnull=False).first(),
        timeout=30,
        what="the run's goal reached by the click",
    )
    assert ended.status == Run.Status.EXITED
    assert ended.exit_reason == f"goal reached: {CLICK_EVENT}"
    assert len(sandbox.messages()) == 1  # the reminder never goes out
