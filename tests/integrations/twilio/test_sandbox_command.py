"""`manage.py twilio_sandbox` reads accounts from TWILIO_SANDBOX_ACCOUNTS too (careflow_up
passes Auth Tokens that way, off the command line)."""

import pytest
from django.core.management import CommandError, call_command

from integrations.management.commands.twilio_sandbox import ACCOUNTS_VARIABLE


def test_a_malformed_account_in_the_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ACCOUNTS_VARIABLE, "AC" + "1" * 32 + ":token:+15005550006\nnot-an-account")

    with pytest.raises(CommandError, match=f"{ACCOUNTS_VARIABLE}: expected SID:TOKEN"):
        call_command("twilio_sandbox", "--port", "0")
