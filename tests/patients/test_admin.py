"""Admin for the trigger records, the organization's webhook token action, and renewals."""

import hashlib
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from patients.models import Lead, Order, Organization, Subscription, Task
from tests.factories import (
    AppointmentFactory,
    CartFactory,
    LeadFactory,
    OrganizationFactory,
    PatientFactory,
    PrescriptionFactory,
    QuestionnaireSubmissionFactory,
    RequisitionFactory,
    StaffMembershipFactory,
    SubscriptionFactory,
    TaskFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db

RECORDS = [
    "subscription",
    "appointment",
    "cart",
    "questionnairesubmission",
    "prescription",
    "requisition",
    "lead",
    "task",
]


def _populate(organization: Organization, count: int) -> None:
    for _ in range(count):
        patient = PatientFactory(organization=organization)
        SubscriptionFactory(patient=patient)
        AppointmentFactory(patient=patient)
        CartFactory(patient=patient, checked_out_at=timezone.now())
        QuestionnaireSubmissionFactory(patient=patient)
        PrescriptionFactory(patient=patient)
        RequisitionFactory(patient=patient)
        LeadFactory(
            organization=organization, status=Lead.Status.CONVERTED, converted_patient=patient
        )
        TaskFactory(organization=organization, patient=patient)


def _queries(client: Client, url: str) -> int:
    client.get(url)  # warm per-process caches
    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(context.captured_queries)


def _superuser_client() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


def _staff_client(organization: Organization, *codenames: str) -> Client:
    membership = StaffMembershipFactory(organization=organization)
    membership.user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="patients", codename__in=codenames)
    )
    client = Client()
    client.force_login(membership.user)
    return client


@pytest.mark.parametrize("model", [*RECORDS, "organization"])
def test_changelist_query_count_is_constant(model: str) -> None:
    organization = OrganizationFactory()
    client = _superuser_client()
    url = reverse(f"admin:patients_{model}_changelist")
    _populate(organization, 2)
    few = _queries(client, url)
    _populate(organization, 8)
    _populate(OrganizationFactory(), 2)
    assert _queries(client, url) == few, f"{model} makes a query per row"


@pytest.mark.parametrize("model", RECORDS)
def test_add_and_change_pages_render(model: str) -> None:
    _populate(OrganizationFactory(), 1)
    client = _superuser_client()
    assert client.get(reverse(f"admin:patients_{model}_add")).status_code == 200
    record = client.get(reverse(f"admin:patients_{model}_changelist")).context["cl"].result_list[0]
    assert client.get(reverse(f"admin:patients_{model}_change", args=[record.pk])).status_code == (
        200
    )


@pytest.mark.parametrize("model", RECORDS)
def test_clinic_staff_see_only_their_clinics_records(model: str) -> None:
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    _populate(mine, 1)
    _populate(theirs, 2)
    client = _staff_client(mine, f"view_{model}")
    response = client.get(reverse(f"admin:patients_{model}_changelist"))
    assert response.status_code == 200
    shown = list(response.context["cl"].queryset)
    assert len(shown) == 1
    assert all(record.organization_id == mine.pk for record in shown)


def test_staff_adding_a_subscription_cannot_pick_another_clinics_patient() -> None:
    mine = OrganizationFactory()
    stranger = PatientFactory()
    client = _staff_client(mine, "add_subscription", "view_subscription")
    response = client.post(
        reverse("admin:patients_subscription_add"),
        {
            "organization": mine.pk,
            "patient": stranger.pk,
            "product_id": "p1",
            "product_name": "Vitamin D",
            "price": "10.00",
            "interval_days": 30,
            "status": "active",
            "current_cycle": 1,
        },
    )
    assert response.status_code == 200  # the form again, with an error
    assert "patient" in response.context["adminform"].form.errors
    assert not Subscription.objects.exists()


def test_staff_adding_a_task_records_task_created() -> None:
    from workflows.models import Event

    mine = OrganizationFactory()
    client = _staff_client(mine, "add_task", "view_task")
    response = client.post(
        reverse("admin:patients_task_add"),
        {"organization": mine.pk, "title": "Call back", "status": "open"},
    )
    assert response.status_code == 302
    task = Task.objects.get()
    assert Event.objects.get(type="task.created").subject_id == str(task.pk)


def test_a_converted_lead_without_a_patient_is_refused_in_the_form() -> None:
    mine = OrganizationFactory()
    client = _staff_client(mine, "add_lead", "view_lead")
    response = client.post(
        reverse("admin:patients_lead_add"),
        {"organization": mine.pk, "first_name": "Sam", "status": "converted"},
    )
    assert response.status_code == 200
    assert "A converted lead needs the patient it became." in response.content.decode()
    assert not Lead.objects.exists()


# --- webhook token -------------------------------------------------------------------------


def _issue(client: Client, *organizations: Organization) -> Any:
    return client.post(
        reverse("admin:patients_organization_changelist"),
        {"action": "issue_webhook_token", "_selected_action": [o.pk for o in organizations]},
    )


def test_issuing_a_token_shows_it_once_and_stores_only_its_hash() -> None:
    organization = OrganizationFactory()
    response = _issue(_superuser_client(), organization)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = response.context["token"]
    html = response.content.decode()
    assert token in html and "shown only this once" in html
    endpoint = f"http://testserver/webhooks/events/{organization.uuid}/"
    assert endpoint in html
    organization.refresh_from_db()
    assert organization.webhook_token_hash == hashlib.sha256(token.encode()).hexdigest()
    # Never in the change page afterwards.
    change = _superuser_client().get(
        reverse("admin:patients_organization_change", args=[organization.pk])
    )
    assert token not in change.content.decode()
    assert organization.webhook_token_hash not in change.content.decode()
    assert f"/webhooks/events/{organization.uuid}/" in change.content.decode()


def test_issuing_rotates_the_token() -> None:
    organization = OrganizationFactory()
    client = _superuser_client()
    first = _issue(client, organization).context["token"]
    second = _issue(client, organization).context["token"]
    assert first != second
    organization.refresh_from_db()
    assert organization.webhook_token_hash == hashlib.sha256(second.encode()).hexdigest()


def test_issuing_needs_exactly_one_organization() -> None:
    a, b = OrganizationFactory(), OrganizationFactory()
    response = _issue(_superuser_client(), a, b)
    assert response.status_code == 302
    assert not Organization.objects.exclude(webhook_token_hash="").exists()


def test_clinic_staff_issue_a_token_only_for_their_own_clinic() -> None:
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    client = _staff_client(mine, "view_organization", "change_organization")
    _issue(client, theirs)
    theirs.refresh_from_db()
    assert theirs.webhook_token_hash == ""
    assert _issue(client, mine).status_code == 200


def test_staff_without_change_permission_cannot_issue() -> None:
    mine = OrganizationFactory()
    client = _staff_client(mine, "view_organization")
    _issue(client, mine)
    mine.refresh_from_db()
    assert mine.webhook_token_hash == ""


# --- renew action ----------------------------------------------------------------------------


def test_renew_action_renews_active_and_explains_the_rest() -> None:
    active = SubscriptionFactory()
    paused = SubscriptionFactory(status=Subscription.Status.PAUSED)
    client = _superuser_client()
    response = client.post(
        reverse("admin:patients_subscription_changelist"),
        {"action": "renew", "_selected_action": [active.pk, paused.pk]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert "Renewed 1 subscription(s)." in messages
    assert any("Only active subscriptions renew" in m for m in messages)
    assert Order.objects.filter(subscription=active).count() == 1
    assert not Order.objects.filter(subscription=paused).exists()
