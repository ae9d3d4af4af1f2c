from typing import Any

import pytest

from integrations.forms import INTEGRATION_FORMS, integration_form_get
from integrations.twilio.account import twilio_account
from integrations.twilio.forms import TwilioIntegrationForm
from tests.factories import IntegrationFactory, OrganizationFactory

pytestmark = pytest.mark.django_db


def _data(**overrides: str) -> dict[str, Any]:
    return {
        "organization": OrganizationFactory().pk,
        "name": "Twilio",
        "account_sid": "AC" + "0123456789abcdef" * 2,
        "auth_token": "tok-secret-123",
        "sending_numbers": "+15005550006",
        "sender_type": "auto",
        "messaging_service_sid": "",
        "segments_per_second": "",
        "enabled": "on",
        **overrides,
    }


def test_twilio_registers_its_form() -> None:
    assert integration_form_get("twilio") is TwilioIntegrationForm
    assert INTEGRATION_FORMS["twilio"].secret_fields == ("auth_token",)


def test_the_integration_form_takes_an_upper_case_sid_and_stores_it_lower_case() -> None:
    upper = "AC" + "0123456789ABCDEF" * 2
    form = TwilioIntegrationForm(
        data=_data(account_sid=upper, messaging_service_sid="MG" + "ABCDEF0123456789" * 2)
    )
    assert form.is_valid(), form.errors
    integration = form.save()
    integration.refresh_from_db()
    account = twilio_account(integration)
    assert account.account_sid == upper.lower().replace("ac", "AC", 1)
    assert account.messaging_service_sid == "MG" + "abcdef0123456789" * 2


def test_the_form_maps_to_settings_secrets_and_senders() -> None:
    form = TwilioIntegrationForm(
        data=_data(
            sending_numbers="(415) 555-0123\n+15005550006\n+15005550006",
            sender_type="ten_dlc",
            segments_per_second="40",
        )
    )
    assert form.is_valid(), form.errors
    integration = form.save()
    integration.refresh_from_db()
    assert integration.adapter == "twilio"
    assert integration.senders == ["+14155550123", "+15005550006"]
    assert integration.settings == {
        "account_sid": "AC" + "0123456789abcdef" * 2,
        "messaging_service_sid": "",
        "sender_type": "ten_dlc",
        "segments_per_second": 40.0,
    }
    assert integration.secrets == {"auth_token": "tok-secret-123"}


def test_an_edit_form_shows_the_settings_but_never_the_token() -> None:
    integration = IntegrationFactory(auth_token="tok-secret-123", senders=["+15005550006"])
    form = TwilioIntegrationForm(instance=integration)
    assert form.initial["account_sid"] == twilio_account(integration).account_sid
    assert form.initial["sending_numbers"] == "+15005550006"
    assert form.initial["auth_token"] == ""
    assert "tok-secret-123" not in form.as_p()


def test_a_blank_token_keeps_the_stored_one_and_a_new_one_replaces_it() -> None:
    integration = IntegrationFactory(auth_token="old-token")
    data = _data(organization=str(integration.organization_id), auth_token="")
    form = TwilioIntegrationForm(data=data, instance=integration)
    assert form.is_valid(), form.errors
    assert twilio_account(form.save()).auth_token == "old-token"
    form = TwilioIntegrationForm(data={**data, "auth_token": "new-token"}, instance=integration)
    assert form.is_valid(), form.errors
    assert twilio_account(form.save()).auth_token == "new-token"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("account_sid", "AC123"),
        ("messaging_service_sid", "MG123"),
        ("sending_numbers", "call me maybe"),
        ("sending_numbers", "  \n "),
        ("sender_type", "carrier-pigeon"),
        ("segments_per_second", "0"),
        ("segments_per_second", "5000"),
        ("auth_token", ""),
    ],
)
def test_bad_input_is_refused_on_its_field(field: str, value: str) -> None:
    form = TwilioIntegrationForm(data=_data(**{field: value}))
    assert not form.is_valid()
    assert field in form.errors


def test_list_summaries() -> None:
    integration = IntegrationFactory(
        account_sid="AC" + "ab12" * 7 + "cdef",
        senders=["+14155550123", "+18005550123"],
        segments_per_second=None,
        messaging_service_sid="MG" + "0" * 32,
    )
    assert TwilioIntegrationForm.account_display(integration) == "ACab12…cdef"
    assert TwilioIntegrationForm.rates_display(integration) == "1, 3"
    assert [s for s, _ in TwilioIntegrationForm.backlog_keys(integration)] == [
        "+14155550123",
        "+18005550123",
        "MG" + "0" * 32,
    ]
    assert str(integration.uuid) in TwilioIntegrationForm.inbound_webhook_path(integration)


def test_every_problem_is_said_at_once() -> None:
    form = TwilioIntegrationForm(
        data=_data(account_sid="AC123", sending_numbers="call me maybe", sender_type="nope")
    )
    assert not form.is_valid()
    assert {"account_sid", "sending_numbers", "sender_type"} <= set(form.errors)


def test_a_field_that_failed_is_not_blamed_twice() -> None:
    form = TwilioIntegrationForm(data=_data(account_sid="AC" + "0" * 40))
    assert not form.is_valid()
    assert len(form.errors["account_sid"]) == 1
