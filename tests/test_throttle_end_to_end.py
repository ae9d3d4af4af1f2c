"""A burst from one sending number goes out at the sender's rate, through a real worker
process (two prefork children sharing the bucket in Redis), with no 429 at the sandbox."""

import pytest

from integrations.models import OutboundMessage
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

pytestmark = pytest.mark.integration
RATE, BURST = 5.0, 10


def test_a_burst_is_shaped_to_the_senders_rate(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory(segments_per_second=RATE))
    SmsStepFactory(workflow=WorkflowFactory(organization=integration.organization))
    orders = []
    for n in range(BURST):
        patient = PatientFactory(organization=integration.organization, phone=f"+1415555{n:04d}")
        ConsentFactory(patient=patient)
        orders.append(OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT))
    for order in orders:  # a burst: all at once
        order.status = Order.Status.SHIPPED
        order.save()
    wait_for(
        lambda: OutboundMessage.objects.filter(provider_sid__isnull=False).count() == BURST,
        timeout=30,
        what="every message of the burst",
    )
    received = sorted(m["received_at"] for m in sandbox.messages())
    assert len(received) == BURST
    # Never ahead of the schedule the rate allows (arrival jitter of a connection setup or
    # a scheduling hiccup aside), and the burst as a whole takes as long as the rate says.
    ahead = [(k / RATE) - (at - received[0]) for k, at in enumerate(received)]
    assert max(ahead) < 0.1, ahead
    assert received[-1] - received[0] >= (BURST - 1) / RATE - 0.1
    assert sandbox.stats()["errors"] == 0
