"""The roles as data (`patients.roles`): every database has one group per role holding exactly
the module's permissions, a group edited by hand is brought back by the next migrate, and a
role naming a permission that does not exist fails loudly."""

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command

from patients import roles
from patients.roles import CLINIC_STAFF, ROLES, SUPPORT_STAFF, role_groups_sync

pytestmark = pytest.mark.django_db


def _held(name: str) -> set[str]:
    permissions = Group.objects.get(name=name).permissions.select_related("content_type")
    return {f"{p.content_type.app_label}.{p.codename}" for p in permissions}


def test_every_role_group_holds_exactly_the_modules_permissions() -> None:
    assert set(ROLES) == {"Support staff", "Clinic admins", "Clinic staff"}
    for name, permissions in ROLES.items():
        assert _held(name) == set(permissions), name


def test_the_roles_differ_where_the_issue_says() -> None:
    support, admin, staff = (ROLES[name] for name in roles.ROLES)
    assert roles.VIEW_ALL_ORGANIZATIONS in support
    assert roles.VIEW_ALL_ORGANIZATIONS not in admin | staff
    assert {"integrations.add_integration", "integrations.change_integration"} <= support
    assert not {"integrations.add_integration", "integrations.change_integration"} & (admin | staff)
    assert "integrations.change_messagingpolicy" in admin
    assert not {p for p in staff if p.split(".")[1].startswith(("change_", "delete_"))}
    assert {"patients.add_consentrecord", roles.REVIEW_INBOUND} <= staff
    # Consent history is never edited, by anyone.
    everything = support | admin | staff
    assert not {"patients.change_consentrecord", "patients.delete_consentrecord"} & everything


def test_a_role_group_edited_by_hand_is_restored_by_the_next_migrate() -> None:
    Group.objects.get(name=CLINIC_STAFF).permissions.add(
        Permission.objects.get(codename="change_workflow")
    )
    Group.objects.get(name=SUPPORT_STAFF).delete()

    call_command("migrate", verbosity=0)

    assert "workflows.change_workflow" not in _held(CLINIC_STAFF)
    assert _held(CLINIC_STAFF) == set(ROLES[CLINIC_STAFF])
    assert _held(SUPPORT_STAFF) == set(ROLES[SUPPORT_STAFF])


@pytest.mark.django_db(transaction=True)
def test_the_roles_survive_a_flush() -> None:
    # What every transactional test's teardown does to the database, and `manage.py flush`.
    call_command("flush", interactive=False, verbosity=0)
    for name, permissions in ROLES.items():
        assert _held(name) == set(permissions), name


def test_a_role_naming_an_unknown_permission_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(ROLES, CLINIC_STAFF, frozenset({"patients.view_patinet"}))
    with pytest.raises(LookupError, match="view_patinet"):
        role_groups_sync()
    assert _held(CLINIC_STAFF) != {"patients.view_patinet"}
