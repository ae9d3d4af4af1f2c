"""TwilioTransport against the sandbox over HTTP: what each of Twilio's answers means to the
messaging core (accepted, refused: opted out / retryable / permanent, or ambiguous)."""

from typing import Any

import pytest
from django.utils import timezone

from integrations.messaging import Accepted, Ambiguous, Refused, transport_get
from integrations.models import OutboundMessage
from integrations.sending import message_prepare
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from integrations.twilio.transport import TwilioTransport, message_sid_mismatch
from tests.conftest import sandbox_account, wait_for
from tests.factories import IntegrationFactory, PatientFactory
from tests.integrations.segment_cases import FAMILY

pytestmark = pytest.mark.django_db
SID = "SM" + "a" * 32


@pytest.fixture
def message(sandbox: SandboxServer) -> OutboundMessage:
    integration = sandbox_account(sandbox, IntegrationFactory())
    patient = PatientFactory(organization=integration.organization, phone="+14155550123")
    return message_prepare(
        organization=integration.organization,
        integration=integration,
        idempotency_key="transport:1",
        to="+14155550123",
        from_number="+15005550006",
        body="Your order shipped",
        purpose="transactional",
        patient=patient,
    )


def _send(message: OutboundMessage, to: str | None = None) -> Accepted:
    if to is not None:
        message.to = to
    return TwilioTransport().send(message)


def test_twilio_is_the_transport_of_the_twilio_adapter() -> None:
    assert isinstance(transport_get("twilio"), TwilioTransport)
    assert transport_get("twilio").channel == "sms"


def test_an_accepted_message_has_twilios_sid_status_and_segments(
    message: OutboundMessage, sandbox: SandboxServer
) -> None:
    accepted = _send(message)
    assert accepted.provider_id == sandbox.messages()[0]["sid"]
    assert accepted.provider_status == "queued"
    assert accepted.units == 1


def test_21610_is_an_opt_out(message: OutboundMessage) -> None:
    with pytest.raises(Refused) as refused:
        _send(message, to="+15005550004")
    assert (refused.value.code, refused.value.opted_out, refused.value.retryable) == (
        "21610",
        True,
        False,
    )


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (400, 21611)])
def test_throttling_refusals_are_retryable(
    message: OutboundMessage, sandbox: SandboxServer, status: int, code: int
) -> None:
    sandbox.add_fault({"kind": "error", "status": status, "code": code, "count": 1})
    with pytest.raises(Refused) as refused:
        _send(message)
    assert (refused.value.code, refused.value.retryable) == (str(code), True)
    assert sandbox.messages() == []


def test_other_refusals_are_permanent(message: OutboundMessage) -> None:
    with pytest.raises(Refused) as refused:
        _send(message, to="+15005550001")  # the sandbox's invalid number
    assert not refused.value.retryable and not refused.value.opted_out
    assert refused.value.code and refused.value.message


def test_a_5xx_is_ambiguous(message: OutboundMessage, sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "error", "status": 500, "code": 20500, "count": 1})
    with pytest.raises(Ambiguous) as ambiguous:
        _send(message)
    assert ambiguous.value.code == "20500"


def test_no_connection_is_retryable(message: OutboundMessage, settings: Any) -> None:
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens: refused at once
    with pytest.raises(Refused) as refused:
        _send(message)
    assert (refused.value.code, refused.value.retryable) == ("network", True)


def test_no_answer_after_the_request_is_ambiguous(
    message: OutboundMessage, sandbox: SandboxServer
) -> None:
    sandbox.add_fault({"kind": "accept_then_drop"})
    with pytest.raises(Ambiguous) as ambiguous:
        _send(message)
    assert ambiguous.value.code == "network"


def test_lookup_finds_an_attempt_twilio_accepted(
    message: OutboundMessage, sandbox: SandboxServer
) -> None:
    sandbox.add_fault({"kind": "accept_then_drop"})
    started = timezone.now()
    with pytest.raises(Ambiguous):
        _send(message)
    wait_for(lambda: len(sandbox.messages()) == 1, what="the sandbox to store the message")
    found = TwilioTransport().lookup(message, since=started)
    assert found is not None
    assert found.provider_id == sandbox.messages()[0]["sid"]
    assert found.accepted_at is not None


def test_lookup_of_a_message_twilio_never_had_is_none(message: OutboundMessage) -> None:
    assert TwilioTransport().lookup(message, since=timezone.now()) is None


def test_lookup_that_cannot_reach_twilio_is_ambiguous(
    message: OutboundMessage, settings: Any
) -> None:
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"
    with pytest.raises(Ambiguous):
        TwilioTransport().lookup(message, since=timezone.now())


def test_lookup_by_an_unknown_sid_is_ambiguous_not_absent(message: OutboundMessage) -> None:
    message.provider_sid = SID  # Twilio answers 404: never read as "not accepted"
    with pytest.raises(Ambiguous):
        TwilioTransport().lookup(message, since=timezone.now())


def test_the_throttle_is_per_account_and_sender(message: OutboundMessage) -> None:
    key, rate = TwilioTransport().throttle(message)
    assert twilio_account(message.integration).account_sid in key
    assert key.endswith(":+15005550006")
    assert rate == 1000.0  # the factory's explicit rate
    assert TwilioTransport().units(message) == 1


def test_the_next_send_after_an_edit_uses_the_new_token_and_rate(
    message: OutboundMessage, sandbox: SandboxServer
) -> None:
    """Nothing a process keeps outlives an edit of the integration: a send of a message read
    after support staff rotate the Auth Token or change the rate goes by the new values."""
    _send(message)
    integration = message.integration
    account = twilio_account(integration)
    sandbox.add_account(account.account_sid, "rotated-token", numbers=integration.senders)

    def reread() -> OutboundMessage:
        return OutboundMessage.objects.select_related("integration").get(pk=message.pk)

    with pytest.raises(Refused):  # Twilio now takes only the rotated token
        _send(reread())
    integration.secrets = {"auth_token": "rotated-token"}
    integration.settings = {**integration.settings, "segments_per_second": 5.0}
    integration.save()
    again = reread()
    assert _send(again).provider_id == sandbox.messages()[-1]["sid"]
    assert TwilioTransport().throttle(again)[1] == 5.0


def test_sender_and_recipient_checks(message: OutboundMessage) -> None:
    transport = TwilioTransport()
    assert transport.sender_check(message) == (True, "+15005550006")
    message.from_number = "+15005550009"
    assert transport.sender_check(message)[0] is False
    message.from_number = ""
    assert transport.sender_check(message) == (
        False,
        "no sender: the message has no From number",
    )
    assert transport.recipient_check(message) == (True, "valid E.164 number")
    message.to = "someone@example.com"
    assert transport.recipient_check(message)[0] is False


def test_sids_and_explanations() -> None:
    transport = TwilioTransport()
    assert transport.provider_id_valid(SID)
    assert not transport.provider_id_valid("0123")
    assert not transport.provider_id_valid("SM" + "a" * 31)
    assert "STOP" in transport.explain_error("21610")
    assert transport.explain_error("99999") == ""


def test_a_report_with_another_messages_sid_is_not_about_this_one(
    message: OutboundMessage,
) -> None:
    assert message_sid_mismatch(message=message, sid="nonsense")
    assert message_sid_mismatch(message=message, sid=SID) is None  # may fill the missing SID
    OutboundMessage.objects.filter(pk=message.pk).update(provider_sid=SID)
    message.refresh_from_db()
    assert message_sid_mismatch(message=message, sid="SM" + "b" * 32)


@pytest.mark.parametrize(
    "body",
    ["a" * 152 + "€" + "a" * 152, "😀" * 67, "’" * 62 + FAMILY + "’" * 61],
    ids=["euro at the boundary", "67 emoji", "ZWJ family at the boundary"],
)
def test_the_segments_careflow_logs_are_those_twilio_reports(
    sandbox: SandboxServer, body: str
) -> None:
    """What the message log shows and the throttle reserves is what Twilio will bill: the
    sandbox counts with its own model of Twilio, not careflow's counter."""
    integration = sandbox_account(sandbox, IntegrationFactory())
    message = message_prepare(
        organization=integration.organization,
        integration=integration,
        idempotency_key="transport:segments",
        to="+14155550123",
        from_number="+15005550006",
        body=body,
        purpose="transactional",
    )
    accepted = TwilioTransport().send(message)
    assert message.segments == 3
    assert accepted.units == 3
    assert sandbox.messages()[0]["num_segments"] == 3


MG = "MG" + "1" * 32


@pytest.mark.parametrize(
    ("approved_service", "numbers", "from_number", "service", "verdict"),
    [
        # a Messaging Service: the clinic's own only, whatever the number
        (MG, [], "", MG, (True, MG)),
        (MG, ["+15005550006"], "+15005550006", MG, (True, "+15005550006")),
        (
            MG,
            [],
            "",
            "MG" + "2" * 32,
            (False, "messaging service is not the clinic's approved one"),
        ),
        ("", [], "", MG, (False, "messaging service is not the clinic's approved one")),
        (
            MG,
            ["+15005550006"],
            "+15005550006",
            "MG" + "2" * 32,
            (False, "messaging service is not the clinic's approved one"),
        ),
        # a number: one of the clinic's approved ones
        ("", ["+15005550006"], "+15005550006", "", (True, "+15005550006")),
        (MG, ["+15005550006"], "+15005550006", "", (True, "+15005550006")),
        (
            "",
            ["+15005550006"],
            "+14155550000",
            "",
            (False, "sender +14155550000 is not an approved number for this clinic"),
        ),
        (
            "",
            [],
            "+15005550006",
            "",
            (False, "sender +15005550006 is not an approved number for this clinic"),
        ),
        ("", ["+15005550006"], "", "", (False, "no sender: the message has no From number")),
    ],
)
def test_the_approved_sender_rule_for_numbers_and_messaging_services(
    approved_service: str,
    numbers: list[str],
    from_number: str,
    service: str,
    verdict: tuple[bool, str],
) -> None:
    integration = IntegrationFactory(messaging_service_sid=approved_service, senders=numbers)
    message = OutboundMessage(
        organization=integration.organization,
        integration=integration,
        to="+14155550123",
        from_number=from_number,
        messaging_service_sid=service,
        body="hi",
    )
    assert TwilioTransport().sender_check(message) == verdict
