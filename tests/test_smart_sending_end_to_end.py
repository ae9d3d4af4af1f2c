"""Smart sending through a real worker: a marketing text that follows a transactional text to
the same patient within the clinic's N hours is skipped, with the reason, and never sent;
the same workflow for a clinic without smart sending sends both."""

from typing import Any

import pytest

from integrations.models import Integration, MessagingPolicy, OutboundMessage
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
from workflows.models import Run, StepRun

pytestmark = pytest.mark.integration
Status = OutboundMessage.Status


def _clinic(sandbox: SandboxServer, smart_hours: int | None) -> Integration:
    integration = sandbox_account(sandbox, IntegrationFactory())
    MessagingPolicy.objects.filter(organization=integration.organization).update(
        smart_sending_hours=smart_hours
    )
    workflow = WorkflowFactory(organization=integration.organization, trigger="order.shipped")
    sms = {"to": "{{customer.phone}}", "from": "+15005550006"}
    SmsStepFactory(
        workflow=workflow,
        position=1,
        parameters={**sms, "message": "Order {{order.number}} shipped."},
    )
    SmsStepFactory(
        workflow=workflow,
        position=2,
        purpose="marketing",
        parameters={**sms, "message": "20% off your next order!"},
    )
    return integration


def _ship(integration: Integration, phone: str, number: str) -> Any:
    patient = PatientFactory(organization=integration.organization, phone=phone)
    ConsentFactory(patient=patient)
    ConsentFactory(
        patient=patient,
        purpose="marketing",
        consent_text="Yes, send me offers. Reply STOP to opt out.",
    )
    order = OrderFactory(patient=patient, number=number, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()
    return patient


def test_a_marketing_text_right_after_a_transactional_one_is_skipped_with_the_reason(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    smart = _clinic(sandbox, 24)
    plain = _clinic(sandbox, None)
    ann = _ship(smart, "+14155550131", "A-1")
    bob = _ship(plain, "+14155550132", "B-1")

    wait_for(
        lambda: Run.objects.filter(status__in=["succeeded", "failed", "skipped"]).count() == 2,
        timeout=30,
        what="both runs to finish",
    )
    wait_for(lambda: len(sandbox.messages()) == 3, what="the three texts sent")
    assert sorted((m["to"], m["body"]) for m in sandbox.messages()) == [
        ("+14155550131", "Order A-1 shipped."),
        ("+14155550132", "20% off your next order!"),
        ("+14155550132", "Order B-1 shipped."),
    ]
    skipped = OutboundMessage.objects.get(patient=ann, purpose="marketing")
    assert skipped.status == Status.SKIPPED and skipped.provider_sid in ("", None)
    assert skipped.skip_reason.startswith("smart sending: this patient was sent a message ")
    assert skipped.skip_reason.endswith("within the clinic's 24 hours for marketing messages")
    decision = skipped.decision
    assert decision["allowed"] is False
    assert [c["check"] for c in decision["checks"]][-1] == "smart sending"
    # The step says so too, and the run page lists it as skipped (not failed, not retried).
    step = StepRun.objects.get(run__patient_key=str(ann.uuid), index=1)
    assert step.status == StepRun.Status.SKIPPED and "smart sending" in step.skip_reason
    assert OutboundMessage.objects.get(patient=bob, purpose="marketing").status in (
        Status.SENT,
        Status.DELIVERED,
    )
