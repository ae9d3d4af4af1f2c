"""The transport registry, the protocol's neutral defaults, and the messaging core driven by
a transport that is not Twilio (an email-like channel)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.messaging import (
    Accepted,
    Ambiguous,
    Found,
    Refused,
    Transport,
    transport_get,
)
from integrations.models import OutboundMessage
from integrations.sending import message_prepare, message_send, message_status_apply
from patients.models import ConsentRecord
from tests.factories import ConsentFactory, PatientFactory
from tests.integrations.fake_transport import FakeTransport, fake_integration, fake_transport

pytestmark = pytest.mark.django_db
Status = OutboundMessage.Status
__all__ = ["fake_transport"]  # the fixture, used by name


def _message(channel_consent: bool = True) -> OutboundMessage:
    integration = fake_integration()
    patient = PatientFactory(organization=integration.organization, timezone="UTC")
    ConsentFactory(patient=patient)  # SMS
    if channel_consent:
        ConsentFactory(patient=patient, channel="email")
    return message_prepare(
        organization=integration.organization,
        integration=integration,
        idempotency_key=f"letters:{patient.pk}",
        to=patient.email,
        from_number="clinic@letters.test",
        body="Your results are ready",
        purpose="transactional",
        patient=patient,
        channel="email",
        content={"subject": "Results"},
        urgent=True,  # quiet hours aside
    )


def test_an_unregistered_adapter_has_no_transport() -> None:
    with pytest.raises(LookupError):
        transport_get("no-such-adapter")


def test_the_base_transport_is_neutral() -> None:
    transport = Transport()
    message = OutboundMessage(to="someone@example.com", from_number="x")
    assert transport.throttle(message) is None
    assert transport.units(message) == 1
    assert transport.explain_error("123") == ""
    assert transport.provider_id_valid("abc") and not transport.provider_id_valid("x" * 256)
    assert not transport.provider_id_valid("")
    with pytest.raises(Ambiguous):
        transport.lookup(message, since=timezone.now())
    with pytest.raises(NotImplementedError):
        transport.send(message)


def test_a_message_is_sent_through_its_adapters_transport(fake_transport: FakeTransport) -> None:
    message = _message()
    assert (message.channel, message.content) == ("email", {"subject": "Results"})
    sent = message_send(message_id=message.pk)
    assert (sent.status, sent.provider_status) == (Status.SENT, "accepted")
    assert sent.provider_sid == f"<{message.uuid}@letters.test>"
    assert message_send(message_id=message.pk).status == Status.SENT
    assert fake_transport.sent == [message.pk]


def test_consent_is_by_channel(fake_transport: FakeTransport) -> None:
    message = _message(channel_consent=False)  # an SMS opt-in only
    skipped = message_send(message_id=message.pk)
    assert skipped.status == Status.SKIPPED
    assert fake_transport.sent == []


def test_a_provider_status_is_applied_through_the_transports_words(
    fake_transport: FakeTransport,
) -> None:
    message = message_send(message_id=_message().pk)
    assert message_status_apply(message=message, provider_status="delivered")
    assert not message_status_apply(message=message, provider_status="accepted")  # backwards
    assert not message_status_apply(message=message, provider_status="queued")  # not its word
    message.refresh_from_db()
    assert message.status == Status.DELIVERED


def test_an_opt_out_refusal_records_an_opt_out_on_the_messages_channel(
    fake_transport: FakeTransport,
) -> None:
    fake_transport.outcome = Refused("hard_bounce", "no such mailbox", opted_out=True)
    message = message_send(message_id=_message().pk)
    assert (message.status, message.error_code) == (Status.FAILED, "hard_bounce")
    opt_outs = ConsentRecord.objects.filter(patient=message.patient, action="opt_out")
    assert {(c.channel, c.purpose) for c in opt_outs} == {
        ("email", "transactional"),
        ("email", "marketing"),
    }
    assert opt_outs[0].evidence["error_code"] == "hard_bounce"


def test_a_retryable_refusal_is_retried(fake_transport: FakeTransport) -> None:
    fake_transport.outcome = Refused("busy", "slow down", retryable=True)
    message = message_send(message_id=_message().pk)
    assert (message.status, message.error_code) == (Status.PENDING, "busy")
    assert message.next_attempt_at is not None


def test_an_ambiguous_send_is_looked_up_before_any_resend(
    fake_transport: FakeTransport,
) -> None:
    fake_transport.outcome = Ambiguous("timeout", "no answer")
    message = message_send(message_id=_message().pk)
    assert message.status == Status.UNKNOWN
    fake_transport.found = Found(provider_id="<found@letters.test>", provider_status="delivered")
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    found = message_send(message_id=message.pk)
    assert (found.status, found.provider_sid) == (Status.DELIVERED, "<found@letters.test>")
    assert fake_transport.sent == [message.pk]


def test_a_status_report_during_an_ambiguous_send_is_not_undone(
    fake_transport: FakeTransport,
) -> None:
    message = _message()
    original_send = fake_transport.send

    def delivered_then_no_answer(sending: OutboundMessage) -> Accepted:
        # The provider accepted it and reported delivery before our request timed out.
        original_send(sending)
        row = OutboundMessage.objects.get(pk=sending.pk)
        assert message_status_apply(
            message=row, provider_status="delivered", sid=f"<{sending.uuid}@letters.test>"
        )
        raise Ambiguous("timeout", "no answer")

    fake_transport.send = delivered_then_no_answer  # type: ignore[method-assign]
    sent = message_send(message_id=message.pk)
    assert sent.status == Status.DELIVERED
    assert OutboundMessage.objects.get(pk=message.pk).status == Status.DELIVERED


def test_without_lookup_an_ambiguous_send_stays_unknown_and_is_never_resent(
    fake_transport: FakeTransport,
) -> None:
    fake_transport.can_lookup = False
    fake_transport.outcome = Ambiguous("timeout", "no answer")
    message = message_send(message_id=_message().pk)
    assert message.status == Status.UNKNOWN
    OutboundMessage.objects.filter(pk=message.pk).update(
        next_attempt_at=timezone.now(), sending_started_at=timezone.now() - timedelta(hours=1)
    )
    fake_transport.outcome = None
    again = message_send(message_id=message.pk)
    assert (again.status, again.next_attempt_at) == (Status.UNKNOWN, None)
    assert message_send(message_id=message.pk).status == Status.UNKNOWN
    assert fake_transport.sent == [message.pk]
