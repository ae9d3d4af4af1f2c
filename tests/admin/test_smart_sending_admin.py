"""Smart sending on the messaging policy page: a clinic admin turns it on, a bad N gets one
specific error and saves nothing, support staff only read it, and another clinic's policy
stays out of reach."""

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from integrations.models import MessagingPolicy
from patients.roles import CLINIC_ADMIN, SUPPORT_STAFF
from tests.factories import OrganizationFactory, StaffMembershipFactory

pytestmark = pytest.mark.django_db
CAPS = (
    "transactional_per_day",
    "transactional_per_week",
    "marketing_per_day",
    "marketing_per_week",
)


def _client(organization: Any, role: str = CLINIC_ADMIN) -> Client:
    user = StaffMembershipFactory(organization=organization).user
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def _url(policy: MessagingPolicy) -> str:
    return reverse("admin:integrations_messagingpolicy_change", args=[policy.pk])


def _form(policy: MessagingPolicy, hours: str) -> dict[str, str]:
    data = {
        "organization": str(policy.organization_id),
        "quiet_hours_start": "08:00",
        "quiet_hours_end": "21:00",
        "marketing_per_day": "1",
        "marketing_per_week": "3",
        "transactional_per_day": "",
        "transactional_per_week": "",
        "smart_sending_hours": hours,
        "help_text_reply": policy.help_text_reply,
    }
    for channel in ("email", "sms"):
        data[f"{channel}__quiet_hours"] = "on"
        for cap in CAPS:
            data[f"{channel}__{cap}"] = ""
    return data


def test_a_clinic_admin_turns_smart_sending_on() -> None:
    policy = OrganizationFactory().messaging_policy
    client = _client(policy.organization)
    page = client.get(_url(policy)).content.decode()
    assert "Smart sending" in page and 'name="smart_sending_hours"' in page
    response = client.post(_url(policy), _form(policy, "24"))
    assert response.status_code == 302, response.content.decode()[:2000]
    policy.refresh_from_db()
    assert policy.smart_sending_hours == 24


@pytest.mark.parametrize("hours", ["169", "-5", "two"])
def test_a_bad_n_is_a_form_error_and_saves_nothing(hours: str) -> None:
    policy = OrganizationFactory().messaging_policy
    response = _client(policy.organization).post(_url(policy), _form(policy, hours))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["smart_sending_hours"]
    assert errors in (
        ["Smart sending looks back 1 to 168 hours (a week); leave it blank to turn it off."],
        ["Enter a whole number."],
    )
    policy.refresh_from_db()
    assert policy.smart_sending_hours is None


def test_support_staff_see_the_setting_but_cannot_change_it() -> None:
    policy = OrganizationFactory().messaging_policy
    MessagingPolicy.objects.filter(pk=policy.pk).update(smart_sending_hours=12)
    client = _client(policy.organization, SUPPORT_STAFF)
    page = client.get(_url(policy))
    assert page.status_code == 200 and "Smart sending" in page.content.decode()
    client.post(_url(policy), _form(policy, "48"))
    policy.refresh_from_db()
    assert policy.smart_sending_hours == 12


def test_another_clinics_policy_is_out_of_reach() -> None:
    mine = OrganizationFactory().messaging_policy
    theirs = OrganizationFactory().messaging_policy
    client = _client(mine.organization)
    assert client.get(_url(theirs)).status_code in (302, 404)
    client.post(_url(theirs), _form(theirs, "24"))
    theirs.refresh_from_db()
    assert theirs.smart_sending_hours is None
