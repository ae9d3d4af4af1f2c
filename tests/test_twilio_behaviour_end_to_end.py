"""End to end, through a real Celery worker, where the sandbox answers as real Twilio does
(issue 21): a status-callback URL Twilio cannot reach (21609), a Messaging Service's send
(accepted, then a queued callback naming the sender), and a full sender queue (21611)."""

from collections.abc import Iterator
from typing import Any

import pytest

from integrations.models import Integration, OutboundMessage
from integrations.sending import message_prepare, sent_messages_reconcile
from integrations.tasks import message_send
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order, Patient
from tests.conftest import sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)

pytestmark = pytest.mark.integration
Status = OutboundMessage.Status
QUEUE_FULL_FROM = "+15005550008"  # Twilio's magic From: 21611, the sender's queue is full
SERVICE_SID = "MG" + "7" * 32


@pytest.fixture
def twilio_as_in_production(sandbox: SandboxServer) -> Iterator[SandboxServer]:
    """The sandbox not told it is a local run: the worker's callback URL (the test's live
    server on 127.0.0.1) is refused as real Twilio refuses it."""
    sandbox.local_callbacks = False
    try:
        yield sandbox
    finally:
        sandbox.local_callbacks = True


def _patient(integration: Integration) -> Patient:
    patient = PatientFactory(
        organization=integration.organization, first_name="Ann", phone="+14155550123"
    )
    ConsentFactory(patient=patient)
    return patient


def _ship(integration: Integration, *, sender: str = "+15005550006") -> None:
    SmsStepFactory(
        workflow=WorkflowFactory(organization=integration.organization, trigger="order.shipped"),
        parameters={
            "message": "Hi {{customer.firstName}}, order {{order.number}} has shipped!",
            "to": "{{customer.phone}}",
            "from": sender,
        },
    )
    order = OrderFactory(
        patient=_patient(integration), number="5001", status=Order.Status.AWAITING_SHIPMENT
    )
    order.status = Order.Status.SHIPPED
    order.save()


def test_21609_sends_again_without_a_callback_and_polling_settles_it(
    worker: Any, twilio_as_in_production: SandboxServer, settings: Any
) -> None:
    sandbox = twilio_as_in_production
    integration = sandbox_account(sandbox, IntegrationFactory())
    _ship(integration)

    message = wait_for(
        lambda: OutboundMessage.objects.filter(status=Status.SENT).first(),
        what="the message sent without a callback",
    )

    # The create with the unreachable StatusCallback was refused (nothing sent); the second,
    # without one, was accepted: the patient gets one text.
    assert sandbox.stats() == {"creates": 2, "accepted": 1, "errors": 1, "dropped": 0}
    (received,) = sandbox.messages()
    assert received["status_callback"] is None
    assert message.provider_sid == received["sid"]
    assert message.error_code == ""
    wait_for(lambda: sandbox.messages()[0]["status"] == "delivered", what="Twilio to deliver")
    assert OutboundMessage.objects.get().status == Status.SENT  # no callback will say so
    # Polling settles it: the look-up of messages still "sent" after the grace period.
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 0

    assert sent_messages_reconcile() == 1

    settled = OutboundMessage.objects.get()
    assert settled.status == Status.DELIVERED
    assert settled.delivered_at is not None


def test_messaging_service_send_keeps_its_segments_and_records_the_sender(
    worker: Any, sandbox: SandboxServer
) -> None:
    """Twilio answers a Messaging Service send with status "accepted", from null and
    num_segments "0"; the queued callback then names the number the service chose."""
    integration = sandbox_account(
        sandbox,
        IntegrationFactory(messaging_service_sid=SERVICE_SID, senders=["+15551230001"]),
    )
    assert twilio_account(integration).messaging_service_sid == SERVICE_SID
    patient = _patient(integration)
    message = message_prepare(
        organization=integration.organization,
        integration=integration,
        idempotency_key="service:1",
        to=patient.phone,
        messaging_service_sid=SERVICE_SID,
        body="Your results are ready. " * 8,  # 192 GSM-7 characters: two segments
        purpose="transactional",
        patient=patient,
    )
    assert (message.segments, message.from_number) == (2, "")

    message_send.delay(message.pk)

    delivered = wait_for(
        lambda: OutboundMessage.objects.filter(pk=message.pk, status=Status.DELIVERED).first(),
        what="the service's message delivered",
    )
    assert delivered.segments == 2  # Twilio's "0" never replaced careflow's count
    assert delivered.from_number == "+15551230001"  # the service's choice, from the callback
    assert delivered.messaging_service_sid == SERVICE_SID
    wait_for(lambda: len(sandbox.messages()[0]["callbacks"]) == 3, what="three callbacks")
    (received,) = sandbox.messages()
    assert [(c["status"], c.get("http_status")) for c in received["callbacks"]] == [
        ("queued", 204),
        ("sent", 204),
        ("delivered", 204),
    ]


def test_a_full_sender_queue_21611_is_retried_not_failed(
    worker: Any, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory(senders=[QUEUE_FULL_FROM]))
    _ship(integration, sender=QUEUE_FULL_FROM)

    message = wait_for(
        lambda: OutboundMessage.objects.filter(error_code="21611").first(),
        what="the refused attempt",
    )

    assert message.status == Status.PENDING  # to be tried again later
    assert message.next_attempt_at is not None
    assert message.attempts >= 1
    assert "exceeded the maximum number of queued messages" in message.error_message
    assert sandbox.messages() == []  # nothing accepted, so nothing can go out twice
    assert sandbox.stats()["errors"] >= 1
