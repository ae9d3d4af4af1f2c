"""Clinic staff see and edit only their clinic; superusers and support staff see all."""

from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission
from django.test import Client
from django.urls import reverse

from integrations.models import Integration, OutboundMessage
from patients.models import Order, Patient
from patients.roles import CLINIC_ADMIN, SUPPORT_STAFF
from tests.factories import (
    IntegrationFactory,
    OrganizationFactory,
    PatientFactory,
    StaffMembershipFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows.models import Workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_clinics() -> dict[str, Any]:
    mine, theirs = OrganizationFactory(name="Mine"), OrganizationFactory(name="Theirs")
    return {
        "mine": mine,
        "theirs": theirs,
        "my_patient": PatientFactory(organization=mine, last_name="Mine-patient"),
        "their_patient": PatientFactory(organization=theirs, last_name="Their-patient"),
    }


def test_staff_changelist_shows_only_their_clinic(two_clinics: dict[str, Any]) -> None:
    client = clinic_client(two_clinics["mine"], "view_patient")
    page = client.get(reverse("admin:patients_patient_changelist")).content.decode()
    assert "Mine-patient" in page
    assert "Their-patient" not in page


def test_staff_cannot_open_another_clinics_record(two_clinics: dict[str, Any]) -> None:
    client = clinic_client(two_clinics["mine"], "view_patient", "change_patient")
    url = reverse("admin:patients_patient_change", args=[two_clinics["their_patient"].pk])
    response = client.get(url)
    assert response.status_code == 302  # the admin redirects: "doesn't exist"
    assert (
        client.get(
            reverse("admin:patients_patient_change", args=[two_clinics["my_patient"].pk])
        ).status_code
        == 200
    )


def test_staff_cannot_create_records_in_another_clinic(two_clinics: dict[str, Any]) -> None:
    client = clinic_client(two_clinics["mine"], "add_order", "view_order")
    response = client.post(
        reverse("admin:patients_order_add"),
        {
            "organization": two_clinics["theirs"].pk,
            "patient": two_clinics["their_patient"].pk,
            "number": "X1",
            "status": "processing",
            "total_amount": "1",
            "discount_amount": "0",
            "line_items": "[]",
            "shipping_address": "{}",
        },
    )
    assert response.status_code == 200  # the form is shown again with errors
    assert "Select a valid choice" in response.content.decode()
    assert not Order.objects.filter(number="X1").exists()


def test_staff_without_a_clinic_sees_nothing(two_clinics: dict[str, Any]) -> None:
    user = UserFactory()
    user.user_permissions.set(Permission.objects.filter(codename="view_patient"))
    client = Client()
    client.force_login(user)
    page = client.get(reverse("admin:patients_patient_changelist")).content.decode()
    assert "Mine-patient" not in page and "Their-patient" not in page


def test_superuser_sees_every_clinic(two_clinics: dict[str, Any]) -> None:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    page = client.get(reverse("admin:patients_patient_changelist")).content.decode()
    assert "Mine-patient" in page and "Their-patient" in page


def test_support_staff_see_every_clinic_without_being_superusers(
    two_clinics: dict[str, Any],
) -> None:
    user = UserFactory()  # neither a superuser nor linked to a clinic
    user.groups.add(Group.objects.get(name=SUPPORT_STAFF))
    client = Client()
    client.force_login(user)
    page = client.get(reverse("admin:patients_patient_changelist")).content.decode()
    assert "Mine-patient" in page and "Their-patient" in page
    # They enter any clinic's Twilio credentials: every clinic is a choice, none preselected.
    add = reverse("admin:integrations_integration_add") + "?adapter=twilio"
    form = client.get(add).context["adminform"].form
    choices = {str(label) for _, label in form.fields["organization"].choices}
    assert {"Mine", "Theirs"} <= choices
    assert form.fields["organization"].initial is None


def test_a_clinic_admin_picks_only_their_own_clinic(two_clinics: dict[str, Any]) -> None:
    user = StaffMembershipFactory(organization=two_clinics["mine"]).user
    user.groups.add(Group.objects.get(name=CLINIC_ADMIN))
    client = Client()
    client.force_login(user)
    form = client.get(reverse("admin:patients_order_add")).context["adminform"].form
    assert [str(label) for _, label in form.fields["organization"].choices] == ["Mine"]
    assert form.fields["organization"].initial == two_clinics["mine"].pk


def test_staff_sees_only_their_messages_workflows_and_integrations(
    two_clinics: dict[str, Any],
) -> None:
    for org in (two_clinics["mine"], two_clinics["theirs"]):
        integration = IntegrationFactory(organization=org, name=f"Twilio {org.name}")
        WorkflowFactory(organization=org, name=f"Flow {org.name}")
        OutboundMessage.objects.create(
            organization=org,
            integration=integration,
            idempotency_key=f"k-{org.pk}",
            purpose="transactional",
            to="+14155550100",
            body=f"Body for {org.name}",
        )
    client = clinic_client(
        two_clinics["mine"], "view_outboundmessage", "view_workflow", "view_integration"
    )
    for name, mine, theirs in [
        ("integrations_outboundmessage", "Body for Mine", "Body for Theirs"),
        ("workflows_workflow", "Flow Mine", "Flow Theirs"),
        ("integrations_integration", "Twilio Mine", "Twilio Theirs"),
    ]:
        page = client.get(reverse(f"admin:{name}_changelist")).content.decode()
        assert mine in page and theirs not in page, name
    assert Workflow.objects.count() == 2 and Integration.objects.count() == 2


def test_patient_autocomplete_is_scoped(two_clinics: dict[str, Any]) -> None:
    client = clinic_client(two_clinics["mine"], "view_patient", "view_order", "add_order")
    response = client.get(
        reverse("admin:autocomplete"),
        {"app_label": "patients", "model_name": "order", "field_name": "patient", "term": ""},
    )
    names = [r["text"] for r in response.json()["results"]]
    assert any("Mine-patient" in n for n in names)
    assert not any("Their-patient" in n for n in names)
    assert Patient.objects.count() == 2
