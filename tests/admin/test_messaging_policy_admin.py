"""A clinic admin edits the default messaging rules and each channel's own rules; bad input
gets a specific error and saves nothing."""

import re
from datetime import time
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from integrations.messaging import TRANSPORTS
from integrations.models import MessagingPolicy
from integrations.policy import messaging_policy_forget
from patients.models import AuditEntry, Organization
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.factories import OrganizationFactory, StaffMembershipFactory

pytestmark = pytest.mark.django_db
CHANNELS = ("email", "sms")
CAPS = (
    "transactional_per_day",
    "transactional_per_week",
    "marketing_per_day",
    "marketing_per_week",
)


@pytest.fixture
def email_not_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Email's transport says the rules for texts and calls do not bind it."""
    for transport in list(TRANSPORTS.values()):
        if transport.channel == "email":
            monkeypatch.setattr(transport, "phone_rules", False)


def _client(organization: Any, role: str = CLINIC_ADMIN) -> Client:
    user = StaffMembershipFactory(organization=organization).user
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def _url(policy: MessagingPolicy) -> str:
    return reverse("admin:integrations_messagingpolicy_change", args=[policy.pk])


def _form(policy: MessagingPolicy, **overrides: str) -> dict[str, str]:
    data = {
        "organization": str(policy.organization_id),
        "quiet_hours_start": "08:00",
        "quiet_hours_end": "21:00",
        "transactional_per_day": "",
        "transactional_per_week": "",
        "marketing_per_day": "1",
        "marketing_per_week": "3",
        "help_text_reply": policy.help_text_reply,
    }
    for channel in CHANNELS:
        data[f"{channel}__quiet_hours"] = "on"
        for cap in CAPS:
            data[f"{channel}__{cap}"] = ""
    data.update(overrides)
    return {key: value for key, value in data.items() if value != "off"}


def test_email_gets_rules_of_its_own_and_sms_keeps_the_defaults(email_not_bound: None) -> None:
    policy = OrganizationFactory().messaging_policy
    page = _client(policy.organization).get(_url(policy)).content.decode()
    assert "Email rules" in page and "SMS rules" in page
    assert "No state rule for texts and calls binds this channel" in page

    response = _client(policy.organization).post(
        _url(policy),
        _form(
            policy,
            email__own="on",
            email__quiet_hours="off",
            email__marketing_per_week="2",
        ),
    )
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.channel_rules == {
        "email": {
            "quiet_hours": False,
            "transactional_per_day": None,
            "transactional_per_week": None,
            "marketing_per_day": None,
            "marketing_per_week": 2,
        }
    }
    # who changed a channel's rules, and from what, is in the audit trail
    entry = AuditEntry.objects.filter(model="integrations.MessagingPolicy").first()
    assert entry is not None and entry.actor is not None
    assert entry.changes["channel_rules"] == [{}, policy.channel_rules]
    messaging_policy_forget()
    email, sms = policy.rules("email"), policy.rules("sms")
    assert (email.own, email.quiet_hours, email.cap("marketing", "week")) == (True, False, 2)
    assert (sms.own, sms.quiet_hours, sms.cap("marketing", "week")) == (False, True, 3)

    # the form shows what is stored; unticking "own rules" puts email back on the defaults
    page = _client(policy.organization).get(_url(policy)).content.decode()
    assert 'name="email__own" checked' in page.replace(' id="id_email__own"', "")
    _client(policy.organization).post(_url(policy), _form(policy))
    policy.refresh_from_db()
    assert policy.channel_rules == {}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"email__own": "on", "email__marketing_per_week": "-1"}, "greater than or equal to 0"),
        ({"marketing_per_day": "-2"}, "greater than or equal to 0"),
        ({"sms__own": "on", "sms__marketing_per_day": "two"}, "Enter a whole number"),
        (
            {"sms__own": "on", "sms__quiet_hours": "off"},
            "Quiet hours cannot be switched off for sms",
        ),
        (
            {"quiet_hours_start": "21:00", "quiet_hours_end": "08:00"},
            "“Sending allowed from” must be before “until”.",
        ),
        (
            {"quiet_hours_start": "09:00", "quiet_hours_end": "09:00"},
            "“Sending allowed from” must be before “until”.",
        ),
    ],
)
def test_bad_rules_get_a_specific_error_and_save_nothing(
    overrides: dict[str, str], message: str
) -> None:
    policy = OrganizationFactory().messaging_policy
    before = MessagingPolicy.objects.values().get(pk=policy.pk)
    response = _client(policy.organization).post(_url(policy), _form(policy, **overrides))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert MessagingPolicy.objects.values().get(pk=policy.pk) == before


def test_a_channel_that_does_not_exist_cannot_be_given_rules() -> None:
    policy = OrganizationFactory().messaging_policy
    MessagingPolicy.objects.filter(pk=policy.pk).update(
        channel_rules={"fax": {"quiet_hours": False}}
    )
    response = _client(policy.organization).post(
        _url(policy), _form(policy, fax__own="on", fax__quiet_hours="off")
    )
    assert response.status_code == 302
    policy.refresh_from_db()
    # no field for it; rules stored for it (they could not apply) are dropped
    assert policy.channel_rules == {}
    assert policy.quiet_hours_start == time(8, 0)


def test_read_only_support_staff_see_each_channels_rules_and_no_fields() -> None:
    policy = OrganizationFactory().messaging_policy
    MessagingPolicy.objects.filter(pk=policy.pk).update(
        channel_rules={
            "email": {
                "quiet_hours": True,
                "transactional_per_day": None,
                "transactional_per_week": None,
                "marketing_per_day": 0,
                "marketing_per_week": 2,
            }
        }
    )
    page = _client(policy.organization, SUPPORT_STAFF).get(_url(policy)).content.decode()
    assert "email: quiet hours apply; transactional per day no cap" in page
    assert "marketing per week 2" in page
    assert 'name="email__own"' not in page
    listing = _client(policy.organization).get(
        reverse("admin:integrations_messagingpolicy_changelist")
    )
    assert "Own rules" in listing.content.decode()


def test_a_clinic_admin_cannot_open_another_clinics_policy() -> None:
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    response = _client(mine).get(_url(theirs.messaging_policy))
    assert response.status_code in (302, 404)
    response = _client(mine).post(
        _url(theirs.messaging_policy), _form(theirs.messaging_policy, email__own="on")
    )
    assert response.status_code in (302, 404)
    theirs.messaging_policy.refresh_from_db()
    assert theirs.messaging_policy.channel_rules == {}


# --- first contact and keyword replies -------------------------------------------------------

FIRST_CONTACT = {
    "first_contact_enabled": "on",
    "brand_name": "Sunrise Telehealth",
    "brand_prefix": "on",
    "opt_out_wording": "Reply STOP to opt out.",
    "first_contact_every_days": "90",
    "stop_confirmation_reply": "{clinic}: unsubscribed. Reply START to resubscribe.",
}


def test_a_clinic_admin_sets_the_first_contact_wording_and_keyword_replies() -> None:
    policy = OrganizationFactory().messaging_policy
    client = _client(policy.organization)
    page = client.get(_url(policy)).content.decode()
    assert "First contact (texts)" in page and 'name="brand_name"' in page
    assert 'name="stop_confirmation_reply"' in page
    response = client.post(_url(policy), _form(policy, **FIRST_CONTACT))
    assert response.status_code == 302
    policy.refresh_from_db()
    assert (policy.first_contact_enabled, policy.brand_name, policy.first_contact_every_days) == (
        True,
        "Sunrise Telehealth",
        90,
    )
    assert policy.stop_confirmation_reply.startswith("{clinic}: unsubscribed")


def test_a_blank_opt_out_confirmation_keeps_the_default_wording() -> None:
    policy = OrganizationFactory().messaging_policy
    response = _client(policy.organization).post(
        _url(policy), _form(policy, stop_confirmation_reply="  ")
    )
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.stop_confirmation_reply.startswith("{clinic}: you are unsubscribed")


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("opt_out_wording", "Text NO to quit.", "must name the keyword STOP"),
        ("brand_name", "Sunrise {clinic}", "cannot contain braces"),
        ("first_contact_every_days", "0", "greater than or equal to 1"),
        ("first_contact_every_days", "soon", "Enter a whole number"),
    ],
)
def test_bad_first_contact_wording_gets_a_specific_error_and_saves_nothing(
    field: str, value: str, error: str
) -> None:
    policy = OrganizationFactory().messaging_policy
    response = _client(policy.organization).post(
        _url(policy), _form(policy, **{**FIRST_CONTACT, field: value})
    )
    assert response.status_code == 200
    assert error in response.content.decode()
    policy.refresh_from_db()
    assert policy.first_contact_enabled is False


def test_read_only_roles_see_the_first_contact_wording_without_fields() -> None:
    policy = OrganizationFactory().messaging_policy
    MessagingPolicy.objects.filter(pk=policy.pk).update(
        first_contact_enabled=True, brand_name="Sunrise Telehealth"
    )
    page = _client(policy.organization, SUPPORT_STAFF).get(_url(policy)).content.decode()
    assert "First contact (texts)" in page and "Sunrise Telehealth" in page
    assert 'name="brand_name"' not in page


def test_another_clinics_admin_cannot_change_its_wording() -> None:
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    response = _client(mine).post(
        _url(theirs.messaging_policy), _form(theirs.messaging_policy, **FIRST_CONTACT)
    )
    assert response.status_code in (302, 404)
    theirs.messaging_policy.refresh_from_db()
    assert theirs.messaging_policy.first_contact_enabled is False


# --- short links -------------------------------------------------------------------------------

SHORT_LINKS = {
    "short_links_enabled": "on",
    "short_link_domain": "https://go.sunrise.example",
    "short_link_days": "14",
}


def test_a_clinic_admin_turns_short_links_on(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["testserver", "go.sunrise.example"]
    policy = OrganizationFactory().messaging_policy
    client = _client(policy.organization)
    page = client.get(_url(policy)).content.decode()
    assert "Short links (texts)" in page and 'name="short_link_domain"' in page
    response = client.post(_url(policy), _form(policy, **SHORT_LINKS), follow=True)
    assert response.redirect_chain[0][1] == 302
    assert "does not serve yet" not in response.content.decode()
    policy.refresh_from_db()
    assert (policy.short_links_enabled, policy.short_link_domain, policy.short_link_days) == (
        True,
        "https://go.sunrise.example",
        14,
    )


def test_a_blank_link_lifetime_is_the_default() -> None:
    policy = OrganizationFactory().messaging_policy
    response = _client(policy.organization).post(
        _url(policy), _form(policy, **{**SHORT_LINKS, "short_link_days": ""})
    )
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.short_link_days == 30


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("short_link_domain", "http://go.sunrise.example", "Use an https:// address"),
        ("short_link_domain", "https://go.sunrise.example/links", "no path"),
        ("short_link_domain", "not a domain", "Enter a valid URL"),
        ("short_link_days", "0", "greater than or equal to 1"),
        ("short_link_days", "366", "less than or equal to 365"),
        ("short_link_days", "forever", "Enter a whole number"),
    ],
)
def test_bad_short_link_settings_get_a_specific_error_and_save_nothing(
    field: str, value: str, error: str
) -> None:
    policy = OrganizationFactory().messaging_policy
    response = _client(policy.organization).post(
        _url(policy), _form(policy, **{**SHORT_LINKS, field: value})
    )
    assert response.status_code == 200
    assert error in response.content.decode()
    policy.refresh_from_db()
    assert policy.short_links_enabled is False


def test_read_only_roles_see_the_short_links_without_fields() -> None:
    policy = OrganizationFactory().messaging_policy
    MessagingPolicy.objects.filter(pk=policy.pk).update(
        short_links_enabled=True, short_link_domain="https://go.sunrise.example"
    )
    page = _client(policy.organization, SUPPORT_STAFF).get(_url(policy)).content.decode()
    assert "Short links (texts)" in page and "https://go.sunrise.example" in page
    assert 'name="short_link_domain"' not in page


def test_another_clinics_admin_cannot_change_its_short_links() -> None:
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    response = _client(mine).post(
        _url(theirs.messaging_policy), _form(theirs.messaging_policy, **SHORT_LINKS)
    )
    assert response.status_code in (302, 404)
    theirs.messaging_policy.refresh_from_db()
    assert theirs.messaging_policy.short_links_enabled is False


def test_a_bare_link_domain_is_taken_as_https() -> None:
    policy = OrganizationFactory().messaging_policy
    response = _client(policy.organization).post(
        _url(policy), _form(policy, **{**SHORT_LINKS, "short_link_domain": "go.sunrise.example"})
    )
    assert response.status_code == 302
    policy.refresh_from_db()
    assert policy.short_link_domain == "https://go.sunrise.example"


def test_a_link_domain_careflow_does_not_serve_is_saved_with_a_warning(settings: Any) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    policy = OrganizationFactory().messaging_policy
    response = _client(policy.organization).post(
        _url(policy), _form(policy, **SHORT_LINKS), follow=True
    )
    assert "Short links will use go.sunrise.example, which careflow does not serve yet" in (
        response.content.decode()
    )
    policy.refresh_from_db()
    assert policy.short_links_enabled is True


# --- languages (stored on the clinic, edited here) ---------------------------------------


def test_a_clinic_admin_enables_spanish_and_the_page_shows_it() -> None:
    policy = OrganizationFactory().messaging_policy
    client = _client(policy.organization)
    page = client.get(_url(policy)).content.decode()
    assert "Fallback language" in page and "Other languages" in page
    response = client.post(_url(policy), _form(policy, languages=["es", "vi"]))
    assert response.status_code == 302, response.content.decode()[-3000:]
    organization = Organization.objects.get(pk=policy.organization_id)
    assert organization.languages == ["es", "vi"]
    assert organization.enabled_languages == ("en", "es", "vi")
    page = client.get(_url(policy)).content.decode()
    checked = re.findall(r'<input[^>]*name="languages"[^>]*value="(\w+)"[^>]*checked', page)
    assert checked == ["es", "vi"]


def test_the_fallback_is_never_listed_twice() -> None:
    policy = OrganizationFactory().messaging_policy
    client = _client(policy.organization)
    response = client.post(
        _url(policy), _form(policy, fallback_language="es", languages=["es", "en"])
    )
    assert response.status_code == 302
    organization = Organization.objects.get(pk=policy.organization_id)
    assert (organization.fallback_language, organization.languages) == ("es", ["en"])


@pytest.mark.parametrize(
    "overrides",
    [{"languages": ["xx"]}, {"fallback_language": "klingon"}],
)
def test_an_unknown_language_is_a_form_error_and_saves_nothing(overrides: dict[str, Any]) -> None:
    policy = OrganizationFactory().messaging_policy
    response = _client(policy.organization).post(_url(policy), _form(policy, **overrides))
    assert response.status_code == 200
    assert "is not one of the available choices" in response.content.decode()
    organization = Organization.objects.get(pk=policy.organization_id)
    assert (organization.fallback_language, organization.languages) == ("en", [])


def test_support_staff_see_the_languages_and_clinic_staff_not_even_that() -> None:
    policy = OrganizationFactory(languages=["es"]).messaging_policy
    support = _client(OrganizationFactory(), SUPPORT_STAFF)
    response = support.get(_url(policy))
    assert response.status_code == 200
    assert "English (fallback), Spanish" in response.content.decode()
    assert support.post(_url(policy), _form(policy, languages=[])).status_code == 403
    staff = _client(policy.organization, CLINIC_STAFF)
    assert staff.get(_url(policy)).status_code == 403
    assert staff.post(_url(policy), _form(policy, languages=[])).status_code == 403
    assert Organization.objects.get(pk=policy.organization_id).languages == ["es"]


def test_another_clinics_admin_cannot_change_its_languages() -> None:
    policy = OrganizationFactory().messaging_policy
    stranger = _client(OrganizationFactory())
    response = stranger.post(_url(policy), _form(policy, languages=["es"]))
    assert response.status_code in (302, 404)
    assert Organization.objects.get(pk=policy.organization_id).languages == []
