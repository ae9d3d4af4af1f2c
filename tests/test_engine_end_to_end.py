"""The engine's recipes end to end, with a real worker process and its beat: time-based
triggers from the periodic scan, durable delays, and conditions on current data."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from integrations.models import Integration, OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order, Subscription
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    SubscriptionFactory,
    WorkflowFactory,
)
from workflows.models import Run, StepRun

pytestmark = pytest.mark.integration
Status = OutboundMessage.Status


@pytest.fixture
def clinic(worker: WorkerProcess, sandbox: SandboxServer) -> Integration:
    return sandbox_account(sandbox, IntegrationFactory())


def _workflow(integration: Integration, trigger: str, *steps: dict[str, Any]) -> None:
    workflow = WorkflowFactory(organization=integration.organization, trigger=trigger)
    for position, step in enumerate(steps, start=1):
        SmsStepFactory(workflow=workflow, position=position, **step)


def _delay(seconds: int) -> dict[str, Any]:
    return {
        "type": "delay",
        "adapter": "",
        "function": "",
        "parameters": {"kind": "duration", "seconds": seconds},
    }


def _sms(message: str) -> dict[str, Any]:
    return {"parameters": {"message": message, "to": "{{customer.phone}}", "from": "+15005550006"}}


def _consented(integration: Integration, name: str, phone: str) -> Any:
    patient = PatientFactory(organization=integration.organization, first_name=name, phone=phone)
    ConsentFactory(patient=patient)
    return patient


def test_renewal_reminder_recipe_texts_only_subscriptions_still_active(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _workflow(
        clinic,
        "subscription.upcoming_renewal",
        _delay(3),
        {
            "type": "condition",
            "adapter": "",
            "function": "",
            "parameters": {"query": {"subscription.status": "active"}},
        },
        _sms(
            "Hi {{customer.firstName}}, your {{subscription.product.name}} renews on "
            '{{subscription.nextCycleDate | date:"%b %-d"}}.'
        ),
    )
    renews = timezone.localdate() + timedelta(days=3)
    stays = SubscriptionFactory(
        patient=_consented(clinic, "Ann", "+14155550111"),
        next_cycle_date=renews,
        product_name="Vitamin D",
    )
    leaves = SubscriptionFactory(
        patient=_consented(clinic, "Bob", "+14155550112"), next_cycle_date=renews
    )
    # beat's scan records the events; the worker starts both runs, which then wait
    wait_for(
        lambda: Run.objects.filter(status=Run.Status.WAITING).count() == 2,
        what="both renewal runs to wait",
    )
    leaves.status = Subscription.Status.CANCELLED
    leaves.save()
    wait_for(
        lambda: Run.objects.filter(status=Run.Status.SUCCEEDED).count() == 2,
        timeout=30,
        what="both runs to finish after the delay",
    )
    assert [(m["to"], m["body"]) for m in sandbox.messages()] == [
        ("+14155550111", f"Hi Ann, your Vitamin D renews on {renews:%b} {renews.day}.")
    ]
    bob_condition = StepRun.objects.get(run__event__subject_id=str(leaves.pk), index=1)
    assert bob_condition.result == {"matched": False, "then": "end"}
    assert StepRun.objects.get(run__event__subject_id=str(leaves.pk), index=2).skip_reason == (
        "not reached: the condition at step 2 was false"
    )
    assert stays.pk != leaves.pk


def test_a_delay_survives_the_worker_being_killed(
    clinic: Integration, sandbox: SandboxServer, worker: WorkerProcess
) -> None:
    _workflow(clinic, "order.shipped", _delay(4), _sms("Your order {{order.number}} is on its way"))
    order = OrderFactory(
        patient=_consented(clinic, "Cy", "+14155550113"),
        number="D-1",
        status=Order.Status.AWAITING_SHIPMENT,
    )
    order.status = Order.Status.SHIPPED
    order.save()
    wait_for(lambda: Run.objects.filter(status=Run.Status.WAITING).exists(), what="the wait")
    worker.stop(kill=True)  # SIGKILL the worker and its beat while the run waits
    assert not worker.alive()
    worker.start()
    message = wait_for(
        lambda: OutboundMessage.objects.filter(status__in=[Status.SENT, Status.DELIVERED]).first(),
        timeout=30,
        what="the SMS after the restart",
    )
    assert message.body == "Your order D-1 is on its way"
    assert sandbox.stats()["accepted"] == 1
    wait_for(lambda: Run.objects.get().status == Run.Status.SUCCEEDED, what="the run to finish")
