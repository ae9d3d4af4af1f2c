"""A clinic's languages (on its messaging policy page) and a patient's preferred language, in
the admin, for each role that may open them."""

import re
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from integrations.models import MessagingPolicy
from patients.models import Organization
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.factories import OrganizationFactory, PatientFactory, StaffMembershipFactory

pytestmark = pytest.mark.django_db


def _client(organization: Organization, role: str) -> Client:
    user = StaffMembershipFactory(organization=organization).user
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def _url(policy: MessagingPolicy) -> str:
    return reverse("admin:integrations_messagingpolicy_change", args=[policy.pk])


def _form(policy: MessagingPolicy, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "organization": str(policy.organization_id),
        "quiet_hours_start": "08:00",
        "quiet_hours_end": "21:00",
        "marketing_per_day": "1",
        "marketing_per_week": "3",
        "help_text_reply": policy.help_text_reply,
        "opt_out_wording": policy.opt_out_wording,
        "fallback_language": "en",
    }
    for channel in ("email", "sms"):
        data[f"{channel}__quiet_hours"] = "on"
    data.update(overrides)
    return data


def test_a_clinic_admin_enables_spanish_and_the_page_shows_it() -> None:
    policy = OrganizationFactory().messaging_policy
    client = _client(policy.organization, CLINIC_ADMIN)
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
    client = _client(policy.organization, CLINIC_ADMIN)
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
    response = _client(policy.organization, CLINIC_ADMIN).post(
        _url(policy), _form(policy, **overrides)
    )
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
    stranger = _client(OrganizationFactory(), CLINIC_ADMIN)
    response = stranger.post(_url(policy), _form(policy, languages=["es"]))
    assert response.status_code in (302, 404)
    assert Organization.objects.get(pk=policy.organization_id).languages == []


@pytest.mark.parametrize("role", [CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF])
def test_the_patient_page_offers_the_preferred_language(role: str) -> None:
    patient = PatientFactory(language="es")
    response = _client(patient.organization, role).get(
        reverse("admin:patients_patient_change", args=[patient.pk])
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Preferred language" in page and "Spanish" in page
