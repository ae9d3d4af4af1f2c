"""The email integration's admin form: sender addresses, write-only secrets, stored values."""

from typing import Any

import pytest

from integrations.email.account import email_account
from integrations.email.forms import EmailIntegrationForm, webhook_url
from integrations.email.sandbox import SandboxServer
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
    integration = form.save()
    assert integration.adapter == "email" and integration.name == "Clinic email"
    assert integration.senders == ["clinic@example.com", "front@example.com"]
    assert integration.settings == {
        "esp": "postmark",
        "message_stream": "outbound",
        "send_rate": 5.0,
    }
    assert integration.secrets == {
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


def test_blank_secrets_keep_the_stored_ones_and_are_never_rendered() -> None:
    integration: Integration = IntegrationFactory(
        adapter="email",
        name="Email",
        senders=["clinic@example.com"],
        settings={"esp": "postmark", "message_stream": "outbound"},
        secrets={"server_token": "stored-token", "webhook_secret": "stored-webhook-secret"},
    )
    form = EmailIntegrationForm(
        instance=integration,
        data=data(organization=integration.organization_id, server_token="", webhook_secret=""),
    )
    assert form.is_valid(), form.errors
    saved = form.save()
    saved.refresh_from_db()
    assert saved.secrets == {
        "server_token": "stored-token",
        "webhook_secret": "stored-webhook-secret",
    }
    page = str(EmailIntegrationForm(instance=saved))
    assert "stored-token" not in page and "stored-webhook-secret" not in page
    assert "clinic@example.com" in page and "front@example.com" in page


def test_a_new_secret_replaces_only_its_own() -> None:
    integration: Integration = IntegrationFactory(
        adapter="email",
        secrets={"server_token": "stored-token", "webhook_secret": "stored-webhook-secret"},
    )
    form = EmailIntegrationForm(
        instance=integration,
        data=data(
            organization=integration.organization_id, server_token="new-token", webhook_secret=""
        ),
    )
    assert form.is_valid(), form.errors
    integration = form.save()
    integration.refresh_from_db()
    assert email_account(integration).server_token == "new-token"
    assert integration.secrets["webhook_secret"] == "stored-webhook-secret"


def test_summaries_for_the_admin_list() -> None:
    integration: Integration = IntegrationFactory(
        adapter="email", settings={"esp": "postmark", "message_stream": "broadcast"}
    )
    assert EmailIntegrationForm.account_display(integration) == "Postmark, stream “broadcast”"
    assert EmailIntegrationForm.rates_display(integration) == "no limit"
    assert EmailIntegrationForm.backlog_keys(integration) == []
    integration.settings["send_rate"] = 2.5
    assert EmailIntegrationForm.rates_display(integration) == "2.5"
    assert EmailIntegrationForm.backlog_keys(integration) == [
        ("all senders", f"email:{integration.uuid}")
    ]


@pytest.mark.urls("config.urls")
def test_the_events_webhook_path_carries_no_secret() -> None:
    integration: Integration = IntegrationFactory(
        adapter="email", secrets={"server_token": "t", "webhook_secret": "stored-webhook-secret"}
    )
    path = EmailIntegrationForm.inbound_webhook_path(integration)
    assert path == f"/webhooks/email/{integration.uuid}/events/"


def test_credentials_check_asks_the_provider(settings: Any) -> None:
    with SandboxServer(servers={"good-token": {"senders": ["clinic@example.com"]}}) as sandbox:
        settings.CAREFLOW_POSTMARK_API_URL = sandbox.url
        good: Integration = IntegrationFactory(
            adapter="email", secrets={"server_token": "good-token", "webhook_secret": "w" * 16}
        )
        bad: Integration = IntegrationFactory(
            adapter="email", secrets={"server_token": "bad-token", "webhook_secret": "w" * 16}
        )
        accepted, said = EmailIntegrationForm.credentials_check(good)
        assert accepted and said.startswith("credentials accepted")
        accepted, said = EmailIntegrationForm.credentials_check(bad)
        assert not accepted and "Postmark error 10" in said and "token" in said
        assert "bad-token" not in said
    accepted, said = EmailIntegrationForm.credentials_check(good)  # the sandbox is gone
    assert not accepted and said.startswith("could not reach the email provider")


@pytest.mark.urls("config.urls")
def test_webhook_url_shows_where_postmark_posts(settings: Any) -> None:
    settings.CAREFLOW_PUBLIC_URL = "https://careflow.example/"
    integration: Integration = IntegrationFactory(adapter="email")
    assert webhook_url(integration) == (
        f"https://postmark:SECRET@careflow.example/webhooks/email/{integration.uuid}/events/"
    )
