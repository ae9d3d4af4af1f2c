"""Organization.uuid is backfilled with distinct values for clinics that existed before it;
the roles' migration creates the role groups on a fresh database; the migrations reverse."""

import importlib

from django.contrib.auth.models import Group, Permission
from django.db import DEFAULT_DB_ALIAS, connection

from patients.roles import roles_post_migrate
from tests.patients.conftest import latest_migrations, migrate

BEFORE_UUID = [("patients", "0001_initial")]
UUID_NULLABLE = [("patients", "0002_organization_webhook_credentials")]
BEFORE_ROLES = [("patients", "0006_audit_trail")]
BEFORE_RECORD_WRITES = [("patients", "0010_consent_channels_registered")]
ROLES_MIGRATION = importlib.import_module("patients.migrations.0007_roles")


def test_existing_clinics_get_distinct_uuids(migrated_back: None) -> None:
    old_apps = migrate(UUID_NULLABLE)
    Organization = old_apps.get_model("patients", "Organization")
    for n in range(3):
        Organization.objects.create(name=f"Clinic {n}", slug=f"c{n}", timezone="UTC")
    assert set(Organization.objects.values_list("uuid", flat=True)) == {None}

    new_apps = migrate(latest_migrations())
    uuids = list(
        new_apps.get_model("patients", "Organization").objects.values_list("uuid", flat=True)
    )
    assert len(uuids) == 3 and None not in uuids
    assert len(set(uuids)) == 3


def test_the_migrations_reverse_cleanly(migrated_back: None) -> None:
    migrate(latest_migrations())
    old_apps = migrate(BEFORE_UUID)
    Organization = old_apps.get_model("patients", "Organization")
    assert "uuid" not in {f.name for f in Organization._meta.get_fields()}
    Organization.objects.create(name="Clinic", slug="c", timezone="UTC")
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    assert "patients_subscription" not in tables
    new_apps = migrate(latest_migrations())
    assert new_apps.get_model("patients", "Organization").objects.get().uuid is not None


def test_a_reschedule_request_migrates_back_as_booked(migrated_back: None) -> None:
    new_apps = migrate(latest_migrations())
    Organization = new_apps.get_model("patients", "Organization")
    Patient = new_apps.get_model("patients", "Patient")
    Appointment = new_apps.get_model("patients", "Appointment")
    clinic = Organization.objects.create(name="Clinic", slug="c", timezone="UTC")
    patient = Patient.objects.create(organization=clinic, first_name="Ann")
    for status in ("reschedule_requested", "confirmed"):
        Appointment.objects.create(
            organization=clinic, patient=patient, starts_at="2027-01-05T09:00Z", status=status
        )
    old_apps = migrate(BEFORE_RECORD_WRITES)
    statuses = old_apps.get_model("patients", "Appointment").objects.values_list(
        "status", flat=True
    )
    assert sorted(statuses) == ["booked", "confirmed"]
    with connection.cursor() as cursor:
        tables = connection.introspection.table_names(cursor)
    assert "patients_patientnote" not in tables and "patients_recordwrite" not in tables


def _groups() -> dict[str, set[str]]:
    return {
        group.name: {
            f"{p.content_type.app_label}.{p.codename}"
            for p in group.permissions.select_related("content_type")
        }
        for group in Group.objects.filter(name__in=ROLES_MIGRATION.ROLES)
    }


def test_the_roles_migration_creates_the_groups_on_a_fresh_database(migrated_back: None) -> None:
    old_apps = migrate(BEFORE_ROLES)
    assert _groups() == {}
    assert not Permission.objects.filter(codename="view_all_organizations").exists()
    # Before its migration there are no roles to keep in step: migrate back runs post_migrate.
    roles_post_migrate(sender=None, apps=old_apps, using=DEFAULT_DB_ALIAS)
    assert _groups() == {}
    # As on a fresh database, where Django creates permissions only after migrate.
    Permission.objects.all().delete()

    migrate(latest_migrations())  # the executor alone: no post_migrate

    assert _groups() == {name: set(perms) for name, perms in ROLES_MIGRATION.ROLES.items()}
