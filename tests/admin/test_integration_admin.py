"""Support staff enter Twilio credentials; the Auth Token is write-only."""

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from integrations.email.sandbox import SandboxServer as EmailSandbox
from integrations.forms import INTEGRATION_FORMS, IntegrationForm
from integrations.models import Integration
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import AuditEntry
from patients.roles import CLINIC_ADMIN
from tests.conftest import sandbox_account
from tests.factories import (
    IntegrationFactory,
    OrganizationFactory,
    StaffMembershipFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db
SID = "AC" + "0123456789abcdef" * 2


@pytest.fixture
def admin_client_() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


def _form(org: Any, **overrides: str) -> dict[str, Any]:
    return {
        "organization": org.pk,
        "name": "Twilio",
        "adapter": "twilio",
        "account_sid": SID,
        "auth_token": "tok-secret-123",
        "sending_numbers": "(415) 555-0123\n+15005550006",
        "sender_type": "auto",
        "segments_per_second": "",
        "messaging_service_sid": "",
        "enabled": "on",
        **overrides,
    }


def test_create_normalises_numbers_and_encrypts(admin_client_: Client) -> None:
    org = OrganizationFactory()
    response = admin_client_.post(reverse("admin:integrations_integration_add"), _form(org))
    assert response.status_code == 302
    integration = Integration.objects.get()
    assert integration.senders == ["+14155550123", "+15005550006"]
    assert twilio_account(integration).auth_token == "tok-secret-123"


def test_token_is_never_rendered_back(admin_client_: Client) -> None:
    integration = IntegrationFactory(auth_token="tok-secret-123")
    page = admin_client_.get(
        reverse("admin:integrations_integration_change", args=[integration.pk])
    ).content.decode()
    assert "tok-secret-123" not in page
    assert "Leave blank to keep the current token" in page


def test_blank_token_keeps_the_stored_one(admin_client_: Client) -> None:
    integration = IntegrationFactory(auth_token="tok-secret-123")
    response = admin_client_.post(
        reverse("admin:integrations_integration_change", args=[integration.pk]),
        _form(integration.organization, auth_token="", name="Renamed"),
    )
    assert response.status_code == 302
    integration.refresh_from_db()
    assert (integration.name, twilio_account(integration).auth_token) == (
        "Renamed",
        "tok-secret-123",
    )


def test_new_token_replaces_the_stored_one(admin_client_: Client) -> None:
    integration = IntegrationFactory(auth_token="old")
    admin_client_.post(
        reverse("admin:integrations_integration_change", args=[integration.pk]),
        _form(integration.organization, auth_token="new-token"),
    )
    integration.refresh_from_db()
    assert twilio_account(integration).auth_token == "new-token"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("account_sid", "AC123", "32 hexadecimal characters"),
        ("sending_numbers", "call me maybe", "is not a phone number"),
        ("sending_numbers", "+1 555 555 0123", "is not a valid phone number"),
        ("auth_token", "", "This field is required"),
    ],
)
def test_bad_input_gets_a_specific_error_and_saves_nothing(
    admin_client_: Client, field: str, value: str, message: str
) -> None:
    org = OrganizationFactory()
    response = admin_client_.post(
        reverse("admin:integrations_integration_add"), _form(org, **{field: value})
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Integration.objects.exists()


def test_second_enabled_twilio_integration_is_refused(admin_client_: Client) -> None:
    existing = IntegrationFactory()
    response = admin_client_.post(
        reverse("admin:integrations_integration_add"), _form(existing.organization)
    )
    assert response.status_code == 200
    assert "already has an enabled integration" in response.content.decode()


def test_check_credentials_action_reports_each_outcome(
    admin_client_: Client, sandbox: SandboxServer
) -> None:
    good = sandbox_account(sandbox, IntegrationFactory(name="Good"))
    bad = IntegrationFactory(name="Bad")  # not known to the sandbox: 20003
    response = admin_client_.post(
        reverse("admin:integrations_integration_changelist"),
        {"action": "check_credentials", "_selected_action": [good.pk, bad.pk]},
        follow=True,
    )
    text = response.content.decode()
    assert "credentials accepted" in text
    assert "Twilio error 20003" in text and "check the Account SID and Auth Token" in text
    assert str(twilio_account(bad).auth_token) not in text


def test_the_add_page_defaults_to_the_only_provider(
    admin_client_: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        "integrations.admin.INTEGRATION_FORMS", {"twilio": INTEGRATION_FORMS["twilio"]}
    )
    page = admin_client_.get(reverse("admin:integrations_integration_add")).content.decode()
    assert "Account SID" in page and "Leave blank" not in page


def test_the_add_page_asks_for_the_provider_when_there_are_several(
    admin_client_: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    class OtherForm(IntegrationForm):
        adapter_name = "other"
        adapter_label = "Other provider"

    monkeypatch.setitem(INTEGRATION_FORMS, "other", OtherForm)
    url = reverse("admin:integrations_integration_add")
    page = admin_client_.get(url).content.decode()
    assert "which provider?" in page and "Account SID" not in page
    assert 'href="?adapter=twilio"' in page and 'href="?adapter=other"' in page
    assert 'href="?adapter=email"' in page
    assert "Account SID" in admin_client_.get(url + "?adapter=twilio").content.decode()
    unknown = admin_client_.get(url + "?adapter=nope").content.decode()
    assert "No provider named “nope”" in unknown


def test_a_read_only_page_shows_the_settings_but_not_the_token() -> None:
    integration = IntegrationFactory(auth_token="tok-secret-123", messaging_service_sid="")
    user = StaffMembershipFactory(organization=integration.organization).user
    user.groups.add(Group.objects.get(name=CLINIC_ADMIN))
    client = Client()
    client.force_login(user)
    page = client.get(
        reverse("admin:integrations_integration_change", args=[integration.pk])
    ).content.decode()
    assert twilio_account(integration).account_sid in page
    assert "tok-secret-123" not in page and 'name="auth_token"' not in page
    assert f"/webhooks/twilio/{integration.uuid}/inbound/" in page


def test_checking_an_integration_of_no_known_provider_says_so(admin_client_: Client) -> None:
    stray = IntegrationFactory(adapter="gone", name="Stray")
    response = admin_client_.post(
        reverse("admin:integrations_integration_changelist"),
        {"action": "check_credentials", "_selected_action": [stray.pk]},
        follow=True,
    )
    assert "no provider named “gone”" in response.content.decode()


# --- email ---------------------------------------------------------------------------------

EMAIL_TOKEN = "pm-server-token-secret"
EMAIL_HOOK = "pm-webhook-secret-0123"


def _email_form(org: Any, **overrides: str) -> dict[str, Any]:
    return {
        "organization": org.pk,
        "name": "Clinic email",
        "esp": "postmark",
        "server_token": EMAIL_TOKEN,
        "webhook_secret": EMAIL_HOOK,
        "message_stream": "outbound",
        "send_rate": "",
        "sender_addresses": "Care@Sunrise.example\nfront@sunrise.example",
        "enabled": "on",
        **overrides,
    }


def _email_integration(org: Any = None) -> Integration:
    integration: Integration = IntegrationFactory(
        adapter="email",
        name="Email",
        organization=org or OrganizationFactory(),
        senders=["care@sunrise.example"],
        settings={"esp": "postmark", "message_stream": "outbound"},
        secrets={"server_token": EMAIL_TOKEN, "webhook_secret": EMAIL_HOOK},
    )
    return integration


def test_an_email_integration_is_added_through_the_admin(admin_client_: Client) -> None:
    org = OrganizationFactory()
    url = reverse("admin:integrations_integration_add") + "?adapter=email"
    page = admin_client_.get(url).content.decode()
    assert "Verified sender addresses" in page and "Account SID" not in page
    response = admin_client_.post(url, _email_form(org))
    assert response.status_code == 302, response.content.decode()[:3000]
    integration = Integration.objects.get()
    assert (integration.adapter, integration.organization) == ("email", org)
    assert integration.senders == ["care@sunrise.example", "front@sunrise.example"]
    assert integration.secrets == {"server_token": EMAIL_TOKEN, "webhook_secret": EMAIL_HOOK}
    listing = admin_client_.get(reverse("admin:integrations_integration_changelist"))
    text = listing.content.decode()
    assert "Postmark, stream “outbound”" in text and "care@sunrise.example" in text
    assert EMAIL_TOKEN not in text and EMAIL_HOOK not in text


def test_email_secrets_are_never_rendered_nor_in_history_or_audit(
    admin_client_: Client,
) -> None:
    integration = _email_integration()
    change = reverse("admin:integrations_integration_change", args=[integration.pk])
    page = admin_client_.get(change).content.decode()
    assert EMAIL_TOKEN not in page and EMAIL_HOOK not in page
    assert "Leave blank to keep the current token" in page
    assert f"/webhooks/email/{integration.uuid}/events/" in page
    response = admin_client_.post(
        change, _email_form(integration.organization, server_token="pm-new-token-secret")
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    integration.refresh_from_db()
    assert integration.secrets["server_token"] == "pm-new-token-secret"
    entry = LogEntry.objects.get(object_id=str(integration.pk))
    audit = AuditEntry.objects.filter(model="integrations.Integration", object_id=integration.pk)
    assert audit.exists()
    pages = [
        admin_client_.get(
            reverse("admin:integrations_integration_history", args=[integration.pk])
        ).content.decode(),
        *(
            admin_client_.get(
                reverse("admin:patients_auditentry_change", args=[a.pk])
            ).content.decode()
            for a in audit
        ),
    ]
    for text in [entry.change_message, repr(list(audit.values())), *pages]:
        for secret in (EMAIL_TOKEN, EMAIL_HOOK, "pm-new-token-secret"):
            assert secret not in text


def test_blank_email_secrets_keep_the_stored_ones(admin_client_: Client) -> None:
    integration = _email_integration()
    response = admin_client_.post(
        reverse("admin:integrations_integration_change", args=[integration.pk]),
        _email_form(integration.organization, server_token="", webhook_secret="", name="Mail"),
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    integration.refresh_from_db()
    assert integration.name == "Mail"
    assert integration.secrets == {"server_token": EMAIL_TOKEN, "webhook_secret": EMAIL_HOOK}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("sender_addresses", "front desk", "“front desk” is not a valid email address."),
        ("sender_addresses", "care@localhost", "“care@localhost” is not a valid email address."),
        ("sender_addresses", "ok@sunrise.example\nno-at-sign", "“no-at-sign” is not a valid"),
        ("webhook_secret", "short", "Use at least 16 characters."),
        ("server_token", "", "This field is required"),
    ],
)
def test_bad_email_input_gets_a_specific_error_and_saves_nothing(
    admin_client_: Client, field: str, value: str, message: str
) -> None:
    org = OrganizationFactory()
    response = admin_client_.post(
        reverse("admin:integrations_integration_add") + "?adapter=email",
        _email_form(org, **{field: value}),
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Integration.objects.exists()


def test_check_credentials_of_an_email_integration(admin_client_: Client, settings: Any) -> None:
    good = _email_integration()
    bad = _email_integration()
    bad.secrets = {"server_token": "pm-wrong-token", "webhook_secret": EMAIL_HOOK}
    bad.save()
    with EmailSandbox(servers={EMAIL_TOKEN: {"senders": good.senders}}) as sandbox:
        settings.CAREFLOW_POSTMARK_API_URL = sandbox.url
        response = admin_client_.post(
            reverse("admin:integrations_integration_changelist"),
            {"action": "check_credentials", "_selected_action": [good.pk, bad.pk]},
            follow=True,
        )
    text = response.content.decode()
    assert "credentials accepted (server: Sandbox server)" in text
    assert "Postmark error 10: Postmark refused the server token" in text
    assert EMAIL_TOKEN not in text and "pm-wrong-token" not in text


MAILGUN_KEY = "0123456789abcdef0123456789abcdef-0a1b2c3d-4e5f6a7b"
MAILGUN_SIGNING_KEY = "mailgun-signing-key-0123"


def _mailgun_form(org: Any, **overrides: str) -> dict[str, Any]:
    mailgun = {
        "esp": "mailgun",
        "server_token": "",
        "webhook_secret": "",
        "mailgun_api_key": MAILGUN_KEY,
        "mailgun_domain": "mg.sunrise.example",
        "mailgun_region": "us",
        "mailgun_webhook_signing_key": MAILGUN_SIGNING_KEY,
    }
    return _email_form(org, **{**mailgun, **overrides})


def test_a_mailgun_integration_is_added_and_shows_the_webhook_url_for_mailgun(
    admin_client_: Client, settings: Any
) -> None:
    settings.CAREFLOW_PUBLIC_URL = "https://careflow.example"
    org = OrganizationFactory()
    url = reverse("admin:integrations_integration_add") + "?adapter=email"
    page = admin_client_.get(url).content.decode()
    # every ESP's fields, and the script that shows only the chosen one's
    assert "Mailgun: private API key" in page and "Server API token" in page
    assert "integrations/email_esp_fields" in page and "data-esp-fields" in page
    response = admin_client_.post(url, _mailgun_form(org))
    assert response.status_code == 302, response.content.decode()[:3000]
    integration = Integration.objects.get()
    assert integration.settings == {
        "esp": "mailgun",
        "mailgun_domain": "mg.sunrise.example",
        "mailgun_region": "us",
    }
    assert integration.secrets == {
        "mailgun_api_key": MAILGUN_KEY,
        "mailgun_webhook_signing_key": MAILGUN_SIGNING_KEY,
    }
    change = reverse("admin:integrations_integration_change", args=[integration.pk])
    page = admin_client_.get(change).content.decode()
    assert f"https://careflow.example/webhooks/email/{integration.uuid}/events/" in page
    assert MAILGUN_KEY not in page and MAILGUN_SIGNING_KEY not in page
    listing = admin_client_.get(reverse("admin:integrations_integration_changelist"))
    assert "Mailgun, domain “mg.sunrise.example” (US)" in listing.content.decode()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mailgun_api_key", "my-api-key", "This is not a Mailgun private API key"),
        ("mailgun_domain", "https://mg.sunrise.example", "Enter a domain name such as"),
        ("mailgun_domain", "sunrise", "Enter a domain name such as"),
        ("mailgun_webhook_signing_key", "", "This field is required"),
    ],
)
def test_bad_mailgun_input_gets_a_specific_error_and_saves_nothing(
    admin_client_: Client, field: str, value: str, message: str
) -> None:
    response = admin_client_.post(
        reverse("admin:integrations_integration_add") + "?adapter=email",
        _mailgun_form(OrganizationFactory(), **{field: value}),
    )
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Integration.objects.exists()
