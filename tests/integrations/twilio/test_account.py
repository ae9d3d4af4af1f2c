"""twilio_account: a Twilio integration's settings, read in one place."""

import pytest

from integrations.twilio.account import TwilioAccount, twilio_account
from tests.factories import IntegrationFactory

pytestmark = pytest.mark.django_db


def _account(**fields: object) -> TwilioAccount:
    values: dict = {
        "account_sid": "AC" + "0" * 32,
        "auth_token": "secret-token",
        "messaging_service_sid": "",
        "sender_type": "auto",
        "segments_per_second": None,
    }
    return TwilioAccount(**{**values, **fields})


def test_it_reads_the_integrations_settings() -> None:
    integration = IntegrationFactory()
    account = twilio_account(integration)
    assert account.account_sid == integration.account_sid
    assert account.auth_token == integration.auth_token
    assert account.messaging_service_sid == integration.messaging_service_sid


@pytest.mark.parametrize(
    ("sender_type", "sender", "rate"),
    [
        ("auto", "+14155550123", 1.0),
        ("auto", "+18005550123", 3.0),
        ("ten_dlc", "+14155550123", 12.0),
        ("short_code", "12345", 100.0),
    ],
)
def test_send_rate_by_kind_of_sender(sender_type: str, sender: str, rate: float) -> None:
    assert _account(sender_type=sender_type).send_rate(sender) == rate


def test_an_explicit_rate_wins() -> None:
    assert _account(sender_type="toll_free", segments_per_second=7.5).send_rate("+1800") == 7.5


def test_the_token_never_shows() -> None:
    account = _account()
    assert "secret-token" not in repr(account)
    assert account.masked_account_sid() == "AC0000…0000"
