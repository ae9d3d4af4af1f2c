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
    # The k-th message may leave k / RATE after the first token at the earliest. Arrivals carry
    # jitter (the first send of each of the two fresh worker children also opens its HTTP
    # connection: 0.13-0.18 s seen), so the schedule is anchored at the median offset rather
    # than at one arrival: no message may be ahead of it by more than the jitter. A throttle
    # that let the burst through would put the last message (BURST - 1) / RATE ahead of it.
    offsets = sorted(at - k / RATE for k, at in enumerate(received))
    anchor = offsets[len(offsets) // 2]
    ahead = [anchor - (at - k / RATE) for k, at in enumerate(received)]
    assert max(ahead) < 0.15, ahead
    # Nor does shaping hold the burst back much beyond what the rate needs.
    assert received[-1] - received[0] <= (BURST - 1) / RATE + 1.0
    assert sandbox.stats()["errors"] == 0
