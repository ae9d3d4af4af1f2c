"""The email integration's admin form: sender addresses, write-only secrets, stored values."""

import json
from typing import Any

import pytest

from integrations.email import forms as email_forms
from integrations.email.account import EmailAccount
from integrations.email.forms import EmailIntegrationForm, webhook_url
from integrations.models import Integration
from tests.factories import IntegrationFactory, OrganizationFactory

pytestmark = pytest.mark.django_db


def data(**overrides: Any) -> dict[str, Any]:
    return {
        "organization": OrganizationFactory().pk,
        "name": "Clinic email",
        "enabled": "on",
        "esp": "postmark",
        "server_token": "token-1",
        "webhook_secret": "a-long-webhook-secret",
        "message_stream": "",
        "send_rate": "",
        "sender_addresses": "Clinic@Example.com\n\nclinic@example.com\nfront@example.com",
        **overrides,
    }


def test_a_new_integration_needs_both_secrets_and_a_sender() -> None:
    form = EmailIntegrationForm(
        data=data(server_token="", webhook_secret="", sender_addresses="\n")
    )
    assert not form.is_valid()
    assert set(form.errors) >= {"server_token", "webhook_secret", "sender_addresses"}


def test_values_to_store() -> None:
    form = EmailIntegrationForm(data=data(send_rate="5"))
    assert form.is_valid(), form.errors
    values = form.email_values()
    assert values["senders"] == ["clinic@example.com", "front@example.com"]
    assert values["settings"] == {"esp": "postmark", "message_stream": "outbound", "send_rate": 5.0}
    assert json.loads(values["secrets"]) == {
        "server_token": "token-1",
        "webhook_secret": "a-long-webhook-secret",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sender_addresses", "not-an-address"),
        ("sender_addresses", "a@localhost"),
        ("webhook_secret", "short"),
        ("webhook_secret", "has:a-colon-in-the-middle"),
        ("esp", "carrier-pigeon"),
        ("send_rate", "0"),
    ],
)
def test_bad_values_are_refused(field: str, value: str) -> None:
    form = EmailIntegrationForm(data=data(**{field: value}))
    assert not form.is_valid()
    assert field in form.errors


def test_blank_secrets_keep_the_stored_ones_and_are_never_rendered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    integration: Integration = IntegrationFactory(adapter="email")
    account = EmailAccount(
        esp="postmark",
        server_token="stored-token",
        webhook_auth="postmark:stored-webhook-secret",
        message_stream="outbound",
        senders=("clinic@example.com",),
        send_rate=None,
    )
    monkeypatch.setattr(email_forms, "email_account", lambda integration: account)
    form = EmailIntegrationForm(
        instance=integration,
        data=data(organization=integration.organization_id, server_token="", webhook_secret=""),
    )
    assert form.is_valid(), form.errors
    assert json.loads(form.email_values()["secrets"]) == {
        "server_token": "stored-token",
        "webhook_secret": "stored-webhook-secret",
    }
    page = str(EmailIntegrationForm(instance=integration))
    assert "stored-token" not in page and "stored-webhook-secret" not in page
    assert "clinic@example.com" in page


@pytest.mark.urls("config.urls")
def test_webhook_url_shows_where_postmark_posts(settings: Any) -> None:
    settings.CAREFLOW_PUBLIC_URL = "https://careflow.example/"
    integration: Integration = IntegrationFactory(adapter="email")
    assert webhook_url(integration) == (
        f"https://postmark:SECRET@careflow.example/webhooks/email/{integration.uuid}/events/"
    )
