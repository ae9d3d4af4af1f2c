"""`manage.py twilio_sandbox` reads accounts from TWILIO_SANDBOX_ACCOUNTS too (careflow_up
passes Auth Tokens that way, off the command line)."""

import re

import pytest
from django.core.management import CommandError, call_command

from integrations.management.commands.twilio_sandbox import ACCOUNTS_VARIABLE, parse_account


def test_a_malformed_account_in_the_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ACCOUNTS_VARIABLE, "AC" + "1" * 32 + ":token:+15005550006\nnot-an-account")

    with pytest.raises(CommandError, match=f"{ACCOUNTS_VARIABLE}: expected SID:TOKEN"):
        call_command("twilio_sandbox", "--port", "0")


def test_an_account_spec_ends_with_its_inbound_url_colons_and_all() -> None:
    url = "http://127.0.0.1:8000/webhooks/twilio/0b5c/inbound/"

    spec = parse_account(f"{'AC' + '1' * 32}:token:+15005550006,+15551230000::{url}")

    assert spec["numbers"] == ["+15005550006", "+15551230000"]
    assert spec["messaging_service_sids"] == []
    assert spec["inbound_url"] == url
    assert parse_account("AC1:token")["inbound_url"] is None


def test_an_inbound_url_off_this_machine_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ACCOUNTS_VARIABLE, "AC" + "1" * 32 + ":token:::https://example.com/in")

    with pytest.raises(
        CommandError, match=re.escape("inbound_url must be an http(s) URL on a loopback host")
    ):
        call_command("twilio_sandbox", "--port", "0")
