"""Who may run admin actions and manage what no clinic owns.

Every action of every registered ModelAdmin, found rather than listed, declares the
permission it needs, and a user who may only view (every model, every clinic) can run none
of them: nothing changes and nothing leaves the process. Memberships are managed by support
staff and superusers only; accounts, groups and Celery's task results by superusers only,
whatever model permissions a user has been given.
"""

from typing import Any

import pytest
import requests
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Group, Permission
from django.db import models
from django.test import Client
from django.urls import reverse

from patients.models import StaffMembership
from patients.roles import CLINIC_ADMIN, SUPPORT_STAFF, VIEW_ALL_ORGANIZATIONS
from tests.admin.test_roles import clinic  # noqa: F401 — the fixture: one object of every model
from tests.factories import OrganizationFactory, StaffMembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def _actions() -> list[tuple[str, Any, str, Any]]:
    """(model label, ModelAdmin, action name, function) for every action of every admin."""
    found = []
    for model, model_admin in admin.site._registry.items():
        for func, name, _ in model_admin._get_base_actions():
            found.append((model._meta.label_lower, model_admin, name, func))
    return found


def _snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of every model: what an action could have changed."""
    rows = {}
    for model in apps.get_models():
        if model._meta.managed and not model._meta.proxy:
            rows[model._meta.label_lower] = list(
                model._default_manager.order_by("pk").values()  # type: ignore[misc]
            )
    return rows


def _run_action(client: Client, world: dict[str, Any], label: str, name: str) -> Any:
    """POST the action on the fixture's object, confirmed (as delete's "Yes, I'm sure")."""
    url = reverse(f"admin:{label.replace('.', '_')}_changelist")
    data = {
        "action": name,
        "index": 0,
        "_selected_action": [world["objects"][label].pk],
        "post": "yes",
    }
    return client.post(url, data, follow=True)


def _choices(response: Any) -> set[str]:
    form = response.context.get("action_form") if response.context else None
    return {value for value, _ in form.fields["action"].choices if value} if form else set()


def test_the_action_walk_would_see_an_action_run(clinic: dict[str, Any]) -> None:  # noqa: F811
    """The control: posted as the walk posts it, by a user who may, an action acts."""
    root = _client(UserFactory(is_superuser=True))
    before = _snapshot()
    _run_action(root, clinic, "integrations.inboundmessage", "mark_reviewed")
    assert _snapshot()["integrations.inboundmessage"] != before["integrations.inboundmessage"]
    _run_action(root, clinic, "patients.lead", "delete_selected")
    assert not _snapshot()["patients.lead"]


# Actions that only read (a download of what the user can already see): viewing is enough.
READ_ONLY_ACTIONS = {("workflows.workflow", "export_workflows")}


def test_every_admin_action_declares_the_permission_it_needs() -> None:
    actions = _actions()
    assert any(name == "check_credentials" for _, _, name, _ in actions)
    undeclared = [
        f"{label}: {name}"
        for label, _, name, func in actions
        if not getattr(func, "allowed_permissions", None)
    ]
    assert not undeclared, "Actions without permissions=[...]:\n" + "\n".join(undeclared)
    # Viewing is never enough to act.
    view_only = [
        f"{label}: {name}"
        for label, _, name, func in actions
        if set(func.allowed_permissions) <= {"view"} and (label, name) not in READ_ONLY_ACTIONS
    ]
    assert not view_only, "Actions a view-only user could run:\n" + "\n".join(view_only)


def test_a_view_only_user_can_run_no_action(
    clinic: dict[str, Any],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user with every view permission in every clinic POSTs every action of every
    admin: each is refused, no row changes and no HTTP request leaves (Twilio, webhooks)."""
    requests_sent: list[str] = []

    def no_network(session: Any, request: Any, **kwargs: Any) -> Any:
        requests_sent.append(request.url)
        raise requests.ConnectionError("the test allows no network call")

    monkeypatch.setattr(requests.Session, "send", no_network)
    viewer = UserFactory()
    app_label, codename = VIEW_ALL_ORGANIZATIONS.split(".")
    viewer.user_permissions.set(
        Permission.objects.filter(codename__startswith="view_")
        | Permission.objects.filter(content_type__app_label=app_label, codename=codename)
    )
    client = Client()
    client.force_login(viewer)
    before = _snapshot()
    offered = []
    for label, name in {(label, name) for label, _, name, _ in _actions()}:
        response = _run_action(client, clinic, label, name)
        if name in _choices(response) and (label, name) not in READ_ONLY_ACTIONS:
            offered.append(f"{label}: {name}")
    assert not offered, "A view-only user is offered:\n" + "\n".join(offered)
    assert not requests_sent
    after = _snapshot()
    changed = [label for label in before if before[label] != after[label]]
    assert not changed, f"rows changed by refused actions: {changed}"
    assert LogEntry.objects.count() == 0


# --- memberships, accounts, groups, task results ------------------------------------------

SUPERUSER_ONLY = [
    "auth.user",
    "auth.group",
    "django_celery_results.taskresult",
    "django_celery_results.groupresult",
    "axes.accessattempt",
    "axes.accesslog",
    "axes.accessfailurelog",
    "otp_totp.totpdevice",
]


@pytest.fixture
def hand_made_admin() -> Any:
    """A clinic admin given, by a hand-made group, every permission on memberships, users,
    groups and task results, but not the right to work in every clinic."""
    sunrise = OrganizationFactory(name="Sunrise")
    user = StaffMembershipFactory(organization=sunrise).user
    group = Group.objects.create(name="Too generous")
    group.permissions.set(
        Permission.objects.filter(
            content_type__app_label__in=["auth", "django_celery_results", "axes", "otp_totp"]
        ).exclude(codename="view_all_organizations")
        | Permission.objects.filter(content_type__model="staffmembership")
    )
    user.groups.add(group, Group.objects.get(name=CLINIC_ADMIN))
    return user


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _membership_form(membership: StaffMembership, organization: Any) -> dict[str, Any]:
    return {"user": membership.user_id, "organization": organization.pk}


def test_a_clinic_user_with_membership_permissions_cannot_see_or_move_memberships(
    hand_made_admin: Any,
) -> None:
    harbor = OrganizationFactory(name="Harbor")
    other = StaffMembershipFactory(organization=harbor)
    mine = hand_made_admin.membership
    client = _client(hand_made_admin)

    assert client.get(reverse("admin:patients_staffmembership_changelist")).status_code == 403
    assert client.get(reverse("admin:patients_staffmembership_add")).status_code == 403
    for membership in (mine, other):
        url = reverse("admin:patients_staffmembership_change", args=[membership.pk])
        assert client.get(url).status_code == 403
        # Moving themselves (or anyone) into another clinic.
        assert client.post(url, _membership_form(membership, harbor)).status_code == 403
    response = client.post(
        reverse("admin:patients_staffmembership_changelist"),
        {"action": "delete_selected", "_selected_action": [other.pk], "post": "yes"},
    )
    assert response.status_code == 403
    mine.refresh_from_db()
    assert mine.organization.name == "Sunrise"
    assert StaffMembership.objects.filter(pk=other.pk).exists()
    # Nor can they add a membership for a new account.
    response = client.post(
        reverse("admin:patients_staffmembership_add"),
        {"user": UserFactory().pk, "organization": harbor.pk},
    )
    assert response.status_code == 403


@pytest.mark.parametrize("label", SUPERUSER_ONLY)
def test_accounts_groups_and_task_results_are_superuser_only_whatever_the_permissions(
    hand_made_admin: Any,
    clinic: dict[str, Any],  # noqa: F811
    label: str,
) -> None:
    obj = clinic["objects"][label]
    prefix = f"admin:{label.replace('.', '_')}"
    support = UserFactory()
    support.groups.add(Group.objects.get(name=SUPPORT_STAFF))
    for user in (hand_made_admin, support):
        client = _client(user)
        for url in (
            reverse(f"{prefix}_changelist"),
            reverse(f"{prefix}_add"),
            reverse(f"{prefix}_change", args=[obj.pk]),
            reverse(f"{prefix}_delete", args=[obj.pk]),
        ):
            assert client.get(url).status_code == 403, (user, url)
    root = _client(UserFactory(is_superuser=True))
    assert root.get(reverse(f"{prefix}_changelist")).status_code == 200
    assert root.get(reverse(f"{prefix}_change", args=[obj.pk])).status_code == 200


def test_a_user_with_user_permissions_cannot_make_themselves_superuser(
    hand_made_admin: Any,
) -> None:
    client = _client(hand_made_admin)
    url = reverse("admin:auth_user_change", args=[hand_made_admin.pk])
    response = client.post(
        url,
        {
            "username": hand_made_admin.username,
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 403
    hand_made_admin.refresh_from_db()
    assert not hand_made_admin.is_superuser


def test_support_staff_manage_every_clinics_memberships_but_no_superuser() -> None:
    sunrise, harbor = OrganizationFactory(name="Sunrise"), OrganizationFactory(name="Harbor")
    nurse = StaffMembershipFactory(organization=sunrise)
    root = UserFactory(is_superuser=True, username="root-user")
    root_membership = StaffMembershipFactory(user=root, organization=sunrise)
    support = UserFactory()
    support.groups.add(Group.objects.get(name=SUPPORT_STAFF))
    client = _client(support)

    page = client.get(reverse("admin:patients_staffmembership_changelist"))
    assert page.status_code == 200
    assert str(nurse.user) in page.content.decode()
    assert "root-user" not in page.content.decode()

    url = reverse("admin:patients_staffmembership_change", args=[nurse.pk])
    assert client.post(url, _membership_form(nurse, harbor)).status_code == 302
    nurse.refresh_from_db()
    assert nurse.organization == harbor

    # A superuser's account is not theirs to place: not listed, not choosable.
    url = reverse("admin:patients_staffmembership_change", args=[root_membership.pk])
    assert client.get(url).status_code == 302  # the admin's "does not exist"
    newcomer = UserFactory()
    response = client.post(
        reverse("admin:patients_staffmembership_add"), {"user": root.pk, "organization": harbor.pk}
    )
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    add = client.post(
        reverse("admin:patients_staffmembership_add"),
        {"user": newcomer.pk, "organization": harbor.pk},
    )
    assert add.status_code == 302
    assert StaffMembership.objects.get(user=newcomer).organization == harbor
    root_membership.refresh_from_db()
    assert root_membership.organization == sunrise


def test_models_outside_any_clinic_are_each_scoped() -> None:
    """Every registered model no clinic owns is named here with who manages it: a new one
    must be decided on."""
    unowned = {
        model._meta.label_lower
        for model in admin.site._registry
        if not any(
            f.name == "organization"
            for f in model._meta.get_fields()
            if isinstance(f, models.Field)
        )
        and model._meta.label_lower != "patients.organization"
    }
    decided = {*SUPERUSER_ONLY, "patients.staffmembership"}
    assert unowned <= decided | _through_a_clinic_owned_parent(), sorted(
        unowned - decided - _through_a_clinic_owned_parent()
    )


def _through_a_clinic_owned_parent() -> set[str]:
    # Owned by a clinic through their patient, workflow or run (scoped by their admins).
    return {
        "patients.order",
        "patients.consentrecord",
        "patients.subscription",
        "patients.appointment",
        "patients.cart",
        "patients.questionnairesubmission",
        "patients.prescription",
        "patients.requisition",
        "workflows.run",
        "workflows.steprun",
        "workflows.enrollmentskip",
    }
