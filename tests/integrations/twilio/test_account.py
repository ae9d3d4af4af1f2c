import pytest
from django.core.exceptions import ValidationError

from integrations.twilio.account import (
    TwilioAccount,
    twilio_account,
    twilio_settings,
    twilio_settings_validate,
    twilio_sid_normal,
)
from tests.factories import IntegrationFactory


@pytest.mark.parametrize(
    "sid",
    [
        "",
        "AC123",
        "ac" + "0" * 32,
        "AC" + "g" * 32,
        "AC" + "0" * 33,
        "SK" + "0" * 32,
        "AC" + "G" * 32,
        "AC" + "é" * 32,
    ],
)
def test_account_sid_must_be_ac_and_32_hex(sid: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        twilio_settings_validate(twilio_settings(account_sid=sid))
    assert "account_sid" in excinfo.value.message_dict


def test_valid_account_sid_and_numbers_pass() -> None:
    twilio_settings_validate(
        twilio_settings(account_sid="AC" + "0123456789abcdef" * 2), ["+14155550123"]
    )


def test_sids_with_upper_case_hex_are_accepted_and_stored_in_lower_case() -> None:
    # Twilio's own pattern is ^AC[0-9a-fA-F]{32}$; its Console and API write lower case.
    settings = twilio_settings(
        account_sid="  AC" + "0123456789ABCDEF" * 2 + " ",
        messaging_service_sid="MG" + "ABCDEF0123456789" * 2,
    )
    twilio_settings_validate(settings)
    assert settings["account_sid"] == "AC" + "0123456789abcdef" * 2
    assert settings["messaging_service_sid"] == "MG" + "abcdef0123456789" * 2
    assert twilio_sid_normal(" not a sid ") == "not a sid"


@pytest.mark.parametrize("sid", ["MG" + "G" * 32, "mg" + "0" * 32, "MG" + "0" * 31])
def test_messaging_service_sid_must_be_mg_and_32_hex(sid: str) -> None:
    settings = twilio_settings(account_sid="AC" + "0" * 32, messaging_service_sid=sid)
    with pytest.raises(ValidationError) as excinfo:
        twilio_settings_validate(settings)
    assert "messaging_service_sid" in excinfo.value.message_dict


@pytest.mark.parametrize("numbers", [["4155550123"], ["not a number"], "+14155550123", [1]])
def test_sending_numbers_must_be_e164(numbers: object) -> None:
    with pytest.raises(ValidationError) as excinfo:
        twilio_settings_validate(twilio_settings(account_sid="AC" + "0" * 32), numbers)
    assert "sending_numbers" in excinfo.value.message_dict


@pytest.mark.parametrize(
    ("name", "value"),
    [("sender_type", "carrier-pigeon"), ("segments_per_second", 0), ("segments_per_second", "1")],
)
def test_sender_type_and_rate_are_checked(name: str, value: object) -> None:
    settings = {**twilio_settings(account_sid="AC" + "0" * 32), name: value}
    with pytest.raises(ValidationError) as excinfo:
        twilio_settings_validate(settings)
    assert name in excinfo.value.message_dict


def test_masked_account_sid_hides_most_of_it() -> None:
    account = TwilioAccount(account_sid="AC" + "ab12" * 7 + "cdef", auth_token="x")
    assert account.masked_account_sid() == "ACab12…cdef"
    assert TwilioAccount(account_sid="", auth_token="x").masked_account_sid() == "…"


def test_the_token_is_not_in_the_repr() -> None:
    account = TwilioAccount(account_sid="AC" + "0" * 32, auth_token="tok-secret-123")
    assert "tok-secret-123" not in repr(account)


@pytest.mark.parametrize(
    ("sender_type", "rate", "sender", "expected"),
    [
        ("auto", None, "+14155550123", 1.0),
        ("auto", None, "+18005550123", 3.0),
        ("short_code", None, "+14155550123", 100.0),
        ("ten_dlc", None, "+14155550123", 12.0),
        ("ten_dlc", 40.0, "+14155550123", 40.0),
        ("no-longer-offered", None, "+18885550123", 3.0),
    ],
)
def test_send_rate(sender_type: str, rate: float | None, sender: str, expected: float) -> None:
    account = TwilioAccount(
        account_sid="AC" + "0" * 32,
        auth_token="x",
        sender_type=sender_type,
        segments_per_second=rate,
    )
    assert account.send_rate(sender) == expected


@pytest.mark.django_db
def test_twilio_account_reads_settings_and_secrets() -> None:
    integration = IntegrationFactory.build(
        account_sid="AC" + "1" * 32,
        auth_token="tok",
        messaging_service_sid="MG" + "2" * 32,
        sender_type="toll_free",
        segments_per_second=5,
        organization=None,
    )
    assert twilio_account(integration) == TwilioAccount(
        account_sid="AC" + "1" * 32,
        auth_token="tok",
        messaging_service_sid="MG" + "2" * 32,
        sender_type="toll_free",
        segments_per_second=5.0,
    )


@pytest.mark.django_db
def test_missing_or_bad_values_read_as_empty() -> None:
    integration = IntegrationFactory.build(
        settings={"segments_per_second": "fast"}, secrets={}, organization=None
    )
    account = twilio_account(integration)
    assert (account.account_sid, account.auth_token, account.segments_per_second) == ("", "", None)
    assert account.sender_type == "auto"
