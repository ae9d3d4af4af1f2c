"""Short links end to end, with a real worker and the loopback Twilio sandbox: a workflow's
text reaches Twilio with a short link on the clinic's domain, the patient's click redirects to
the original link and records message.link_clicked, the worker dispatches it and the run's goal
("clicked within 2 days") is reached: the reminder after the delay never goes out."""

import pytest
from django.test import Client

from integrations.models import LinkClick, OutboundMessage
from integrations.short_links import CLICK_EVENT
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import ConsentFactory, IntegrationFactory, OrderFactory, PatientFactory
from tests.integrations.test_link_goal import SHORT, TARGET, link_goal_workflow
from workflows.models import Run

pytestmark = pytest.mark.integration


def test_a_click_on_a_sent_short_link_reaches_the_workflows_goal(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    workflow = link_goal_workflow(sandbox_account(sandbox, IntegrationFactory()))
    patient = PatientFactory(organization=workflow.organization, phone="+14155550181")
    ConsentFactory(patient=patient)

    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()

    sent = wait_for(lambda: sandbox.messages(), timeout=30, what="the text at the sandbox")
    body = sent[0]["body"]
    match = SHORT.search(body)
    assert match and TARGET not in body and body.endswith(" Thanks!")
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
