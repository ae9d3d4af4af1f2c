"""The outbound webhook end to end: a model change, the outbox, a real worker process, and a
POST to a loopback receiver; a receiver that is down at first gets the post on a later try."""

import json

import pytest

from patients.models import Order
from tests.conftest import Answer, WebhookReceiver, WorkerProcess, wait_for
from tests.factories import OrderFactory, PatientFactory, WorkflowFactory
from workflows.models import Run, Step, StepRun

pytestmark = pytest.mark.integration


def test_a_shipped_order_is_posted_to_the_clinics_webhook(
    worker: WorkerProcess, webhook_receiver: WebhookReceiver
) -> None:
    # given a workflow posting shipped orders, and a receiver that fails once
    workflow = WorkflowFactory(trigger="order.shipped")
    Step.objects.create(
        workflow=workflow,
        adapter="webhook",
        function="postJSON",
        parameters={
            "url": f"{webhook_receiver.url}/careflow",
            "body": '{"order": "{{order.number}}", "customer": {"name": "{{customer.firstName}}"}}',
        },
    )
    webhook_receiver.queued = [Answer(500, "oops")]
    patient = PatientFactory(organization=workflow.organization, first_name='Zoë "Z"')
    order = OrderFactory(patient=patient, number="W-1", status=Order.Status.AWAITING_SHIPMENT)
    # when the order ships
    order.status = Order.Status.SHIPPED
    order.save()
    # then the worker posts, is told to come back, and posts again with the same key
    run = wait_for(
        lambda: Run.objects.filter(status=Run.Status.SUCCEEDED).first(),
        timeout=30,
        what="the webhook run to succeed",
    )
    first, second = webhook_receiver.requests
    assert first.body == second.body
    assert json.loads(second.body) == {"order": "W-1", "customer": {"name": 'Zoë "Z"'}}
    key = f"run:{run.pk}:step:0"
    assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"] == key
    step_run = StepRun.objects.get(run=run)
    assert (step_run.attempts, step_run.result) == (2, {"status": 200, "body": '{"ok": true}'})
