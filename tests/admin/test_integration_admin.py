"""Support staff enter Twilio credentials; the Auth Token is write-only."""

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from integrations.forms import INTEGRATION_FORMS, IntegrationForm
from integrations.models import Integration
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
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


def test_the_add_page_defaults_to_the_only_provider(admin_client_: Client) -> None:
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
