"""The demo's logins: one per role, each in exactly the group its role names (created by the
migrations, not by the demo), clinic roles linked to Sunrise, support staff to no clinic."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from integrations.management.commands.careflow_demo import demo_user
from integrations.models import Integration
from patients.models import ConsentRecord, Organization, Patient, StaffMembership
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from workflows.models import Event, Workflow

pytestmark = pytest.mark.django_db


def test_every_role_has_a_demo_login() -> None:
    call_command("careflow_demo", stdout=StringIO())
    sunrise = Organization.objects.get(slug="sunrise")
    logins = {
        "admin": demo_user("admin", superuser=True),
        "support": demo_user("support", role=SUPPORT_STAFF),
        "clinic": demo_user("clinic", role=CLINIC_ADMIN, organization=sunrise),
        "staff": demo_user("staff", role=CLINIC_STAFF, organization=sunrise),
    }
    users = {user.username: user for user in get_user_model().objects.all()}
    roles = {name: [g.name for g in users[name].groups.all()] for name in logins}
    assert roles == {
        "admin": [],
        "support": [SUPPORT_STAFF],
        "clinic": [CLINIC_ADMIN],
        "staff": [CLINIC_STAFF],
    }
    assert [name for name, user in users.items() if user.is_superuser] == ["admin"]
    memberships = dict(StaffMembership.objects.values_list("user__username", "organization"))
    assert memberships == {"clinic": sunrise.pk, "staff": sunrise.pk}
    for name, password in logins.items():
        client = Client()
        assert client.login(username=name, password=password), name
        assert client.get(reverse("admin:index")).status_code == 200, name


def test_a_demo_login_is_reset_to_its_one_role_on_every_start() -> None:
    sunrise = Organization.objects.create(name="Sunrise", slug="sunrise")
    demo_user("clinic", role=CLINIC_ADMIN, organization=sunrise)
    demo_user("clinic", role=CLINIC_STAFF, organization=sunrise)
    user = get_user_model().objects.get(username="clinic")
    assert [g.name for g in user.groups.all()] == [CLINIC_STAFF]
    demo_user("clinic", role=SUPPORT_STAFF)
    assert not StaffMembership.objects.filter(user=user).exists()


def test_an_unknown_role_is_refused() -> None:
    with pytest.raises(ValueError, match="No role named 'Clinic admin'"):
        demo_user("clinic", role="Clinic admin")
    assert not get_user_model().objects.filter(username="clinic").exists()


def test_the_demo_clinic_has_an_email_channel_and_running_it_again_adds_nothing() -> None:
    call_command("careflow_demo", stdout=StringIO())
    call_command("careflow_demo", stdout=StringIO())
    sunrise = Organization.objects.get(slug="sunrise")
    email = Integration.objects.get(organization=sunrise, adapter="email")
    assert email.enabled and email.senders == ["care@sunrise.example"]
    assert set(email.secrets) == {"server_token", "webhook_secret"}
    welcome = Workflow.objects.get(organization=sunrise, name="Welcome email")
    assert (welcome.trigger, welcome.enabled) == ("customer.signup", True)
    (step,) = welcome.steps.all()
    assert (step.adapter, step.function) == ("email", "sendEmail")
    assert "{{customer.firstName" in step.parameters["subject"]
    assert step.parameters["to"] == "{{customer.email}}"
    assert step.parameters["from"] in email.senders
    consents = ConsentRecord.objects.filter(patient__organization=sunrise)
    by_channel = {
        channel: sorted(
            consents.filter(channel=channel).values_list("patient__first_name", flat=True)
        )
        for channel in ("sms", "email")
    }
    assert by_channel == {
        "sms": ["James", "Maria", "Test"],
        "email": ["James", "Maria", "Test"],
    }
    assert all(p.email for p in Patient.objects.filter(organization=sunrise))
    assert Integration.objects.filter(organization=sunrise).count() == 2
    # seeded patients are not signing up now: no welcome email goes to them
    signups = Event.objects.filter(organization=sunrise, type="customer.signup")
    assert signups.count() == 4 and not signups.filter(dispatched_at__isnull=True).exists()
