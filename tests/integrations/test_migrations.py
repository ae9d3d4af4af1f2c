"""Integration settings per provider (0007): Twilio's columns are carried into `settings` and
the encrypted `secrets`, and back; on a database the demo populated, integrations, messages
and consent history come through a migration back and forth unchanged."""

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography.fernet import Fernet, MultiFernet
from django.conf import settings
from django.db import connection

from integrations.models import MessagingPolicy
from tests.patients import conftest as migration_helpers
from tests.patients.conftest import migrate

# The test database, migrated back to the latest state after each test here.
migrated_back = migration_helpers.migrated_back

SETTINGS_MIGRATION = importlib.import_module("integrations.migrations.0007_integration_settings")
AFTER = [("integrations", "0007_integration_settings")]
# The migration before it, whatever it is chained to.
BEFORE = [dep for dep in SETTINGS_MIGRATION.Migration.dependencies if dep[0] == "integrations"]
ROOT = Path(__file__).resolve().parents[2]

SID = "AC" + "0123456789abcdef" * 2
SERVICE = "MG" + "fedcba9876543210" * 2
TOKEN = "0ld70ken0ld70ken0ld70ken0ld70ken"


def _raw(column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM integrations_integration WHERE id = %s", [pk])  # noqa: S608 — a column name of ours
        return str(cursor.fetchone()[0])


def _decrypt(ciphertext: str) -> str:
    keys = MultiFernet([Fernet(key) for key in settings.CAREFLOW_ENCRYPTION_KEYS])
    return keys.decrypt(ciphertext.encode()).decode()


def _organization(apps: Any) -> Any:
    return apps.get_model("patients", "Organization").objects.create(
        name="Clinic", slug="clinic", timezone="UTC"
    )


@pytest.mark.usefixtures("migrated_back")
def test_twilio_columns_move_into_settings_and_encrypted_secrets() -> None:
    old_apps = migrate(BEFORE)
    organization = _organization(old_apps)
    Old = old_apps.get_model("integrations", "Integration")
    full = Old.objects.create(
        organization=organization,
        name="Twilio",
        account_sid=SID,
        auth_token=TOKEN,
        sending_numbers=["+15005550006", "+14155550123"],
        messaging_service_sid=SERVICE,
        sender_type="ten_dlc",
        segments_per_second=40.0,
    )
    plain = Old.objects.create(
        organization=organization,
        name="Old one",
        enabled=False,
        account_sid=SID,
        auth_token="another-token",
        sending_numbers=["+15005550006"],
    )
    assert TOKEN not in _raw("auth_token", full.pk)

    new_apps = migrate(AFTER)
    New = new_apps.get_model("integrations", "Integration")
    migrated = New.objects.get(pk=full.pk)
    assert (migrated.name, migrated.adapter, migrated.enabled) == ("Twilio", "twilio", True)
    assert migrated.senders == ["+15005550006", "+14155550123"]
    assert migrated.settings == {
        "account_sid": SID,
        "messaging_service_sid": SERVICE,
        "sender_type": "ten_dlc",
        "segments_per_second": 40.0,
    }
    assert migrated.secrets == {"auth_token": TOKEN}
    # Encrypted by the field with the configured keys: ciphertext only, and it decrypts.
    raw = _raw("secrets", full.pk)
    assert TOKEN not in raw and "auth_token" not in raw
    assert json.loads(_decrypt(raw)) == {"auth_token": TOKEN}
    other = New.objects.get(pk=plain.pk)
    assert other.settings == {
        "account_sid": SID,
        "messaging_service_sid": "",
        "sender_type": "auto",
        "segments_per_second": None,
    }
    assert (other.secrets, other.enabled) == ({"auth_token": "another-token"}, False)
    with connection.cursor() as cursor:
        columns = {
            c.name
            for c in connection.introspection.get_table_description(
                cursor, "integrations_integration"
            )
        }
    assert not columns & {"account_sid", "auth_token", "sending_numbers", "sender_type"}


@pytest.mark.usefixtures("migrated_back")
def test_migrating_back_restores_the_twilio_columns() -> None:
    new_apps = migrate(AFTER)
    New = new_apps.get_model("integrations", "Integration")
    integration = New.objects.create(
        organization=_organization(new_apps),
        name="Twilio",
        adapter="twilio",
        senders=["+15005550006"],
        settings={
            "account_sid": SID,
            "messaging_service_sid": SERVICE,
            "sender_type": "toll_free",
            "segments_per_second": 3.0,
        },
        secrets={"auth_token": TOKEN},
    )

    old_apps = migrate(BEFORE)
    old = old_apps.get_model("integrations", "Integration").objects.get(pk=integration.pk)
    assert (old.account_sid, old.auth_token, old.messaging_service_sid) == (SID, TOKEN, SERVICE)
    assert (old.sender_type, old.segments_per_second) == ("toll_free", 3.0)
    assert old.sending_numbers == ["+15005550006"]
    assert _decrypt(_raw("auth_token", integration.pk)) == TOKEN

    again = migrate(AFTER).get_model("integrations", "Integration").objects.get(pk=integration.pk)
    assert (again.settings, again.secrets) == (integration.settings, {"auth_token": TOKEN})


@pytest.mark.usefixtures("migrated_back")
def test_an_integration_of_another_provider_cannot_go_back() -> None:
    new_apps = migrate(AFTER)
    new_apps.get_model("integrations", "Integration").objects.create(
        organization=_organization(new_apps), adapter="email", senders=["a@example.com"]
    )
    with pytest.raises(RuntimeError, match="email"):
        migrate(BEFORE)


# --- the demo's database, migrated back and forth -------------------------------------

# Messages and an opt-out the demo does not make itself: history the migration must keep.
ACTIVITY = """
from integrations.models import InboundMessage, Integration, OutboundMessage
from patients.models import ConsentRecord, Patient
# Back to the Twilio-only columns goes only a database without another provider's integration
# (test_an_integration_of_another_provider_cannot_go_back): the demo's email one goes first.
Integration.objects.exclude(adapter="twilio").delete()
integration = Integration.objects.get()
patient = Patient.objects.filter(organization=integration.organization).order_by("pk").first()
OutboundMessage.objects.create(
    organization=integration.organization, integration=integration, patient=patient,
    idempotency_key="migration-test-1", purpose="transactional", to=patient.phone,
    from_number=integration.senders[0], body="Your order has shipped", status="delivered",
    provider_sid="SM" + "1" * 32, segments=1,
)
InboundMessage.objects.create(
    organization=integration.organization, integration=integration, patient=patient,
    provider_sid="SM" + "2" * 32, from_number=patient.phone, to=integration.senders[0],
    body="STOP", action="opt_out",
)
ConsentRecord.objects.create(
    patient=patient, purpose="marketing", action="opt_out", source="sms_keyword",
)
"""

# What must come through unchanged; the token as a digest (never printed).
SNAPSHOT = """
import hashlib, json
from integrations.models import InboundMessage, Integration, OutboundMessage
from integrations.twilio.account import twilio_account
from patients.models import ConsentRecord
def rows(queryset, *fields):
    return [list(map(str, row)) for row in queryset.order_by("pk").values_list(*fields)]
print(json.dumps({
    "integrations": [
        [str(i.pk), str(i.uuid), i.name, i.adapter, i.enabled, i.senders, i.settings,
         hashlib.sha256(twilio_account(i).auth_token.encode()).hexdigest()]
        for i in Integration.objects.order_by("pk")
    ],
    "messages": rows(OutboundMessage.objects, "pk", "uuid", "integration_id", "patient_id",
        "idempotency_key", "to", "from_number", "body", "status", "provider_sid", "created_at"),
    "inbound": rows(InboundMessage.objects, "pk", "integration_id", "provider_sid", "action"),
    "consent": rows(ConsentRecord.objects, "pk", "patient_id", "purpose", "action", "source",
        "consent_text", "created_at"),
}))
"""

OLD_COLUMNS = """
import hashlib, json
from django.db import connection
from integrations.encryption import decrypt
with connection.cursor() as cursor:
    cursor.execute("SELECT account_sid, auth_token, sending_numbers FROM integrations_integration")
    # Django reads jsonb as text: its JSONField decodes it.
    print(json.dumps([[sid, hashlib.sha256(decrypt(token).encode()).hexdigest(), json.loads(numbers)]
                      for sid, token, numbers in cursor.fetchall()]))
"""


RULES_AFTER = [("integrations", "0008_messagingpolicy_channel_rules")]
# The policy's columns added after 0008 (smart sending, first contact, keyword replies, short
# links).
LATER_POLICY_COLUMNS = (
    "smart_sending_hours",
    "stop_confirmation_reply",
    "first_contact_enabled",
    "brand_name",
    "brand_prefix",
    "opt_out_wording",
    "first_contact_every_days",
    "short_links_enabled",
    "short_link_domain",
    "short_link_days",
    "translations",
    "retention_days",
)


@pytest.mark.usefixtures("migrated_back")
def test_policies_come_through_the_channel_rules_migration_with_their_rules() -> None:
    """0008: every existing policy keeps its quiet hours and caps, and every channel (SMS
    included) keeps going under them, until the clinic gives a channel rules of its own."""
    old_apps = migrate(AFTER)
    Policy = old_apps.get_model("integrations", "MessagingPolicy")
    policy = Policy.objects.create(
        organization=_organization(old_apps),
        quiet_hours_start=time(9, 0),
        quiet_hours_end=time(20, 30),
        transactional_per_day=4,
        marketing_per_day=None,
        marketing_per_week=2,
    )

    migrate(RULES_AFTER)
    # Columns of later migrations are not there yet at 0008.
    migrated = MessagingPolicy.objects.defer(*LATER_POLICY_COLUMNS).get(pk=policy.pk)
    assert migrated.channel_rules == {}
    for channel in ("sms", "email"):
        rules = migrated.rules(channel)
        assert (rules.own, rules.quiet_hours, rules.start, rules.end) == (
            False,
            True,
            time(9, 0),
            time(20, 30),
        )
        assert rules.caps == {
            "transactional_per_day": 4,
            "transactional_per_week": None,
            "marketing_per_day": None,
            "marketing_per_week": 2,
        }

    back_apps = migrate(AFTER)
    back = back_apps.get_model("integrations", "MessagingPolicy").objects.get(pk=policy.pk)
    assert (back.quiet_hours_end, back.transactional_per_day, back.marketing_per_week) == (
        time(20, 30),
        4,
        2,
    )


@pytest.fixture
def demo_database() -> Iterator[dict[str, str]]:
    """A database of its own, for manage.py processes (the test database stays as it is)."""
    db = settings.DATABASES["default"]
    name = f"{db['NAME']}_demo_migration"
    admin = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{name}",
    }
    try:
        yield env
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(  # noqa: S603 — this interpreter and this checkout's manage.py
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_a_demo_database_comes_through_back_and_forth_unchanged(
    demo_database: dict[str, str],
) -> None:
    env = demo_database
    _manage(env, "migrate", "--no-input", "-v0")
    _manage(env, "careflow_demo")
    _manage(env, "shell", "-v0", "-c", ACTIVITY)
    before = json.loads(_manage(env, "shell", "-v0", "-c", SNAPSHOT))
    assert len(before["integrations"]) == 1
    assert before["messages"] and before["inbound"] and len(before["consent"]) >= 4

    _manage(env, "migrate", "integrations", BEFORE[0][1], "--no-input", "-v0")
    ((sid, token_digest, numbers),) = json.loads(_manage(env, "shell", "-v0", "-c", OLD_COLUMNS))
    integration = before["integrations"][0]
    assert (sid, token_digest, numbers) == (
        integration[6]["account_sid"],
        integration[7],
        integration[5],
    )

    _manage(env, "migrate", "--no-input", "-v0")
    after = json.loads(_manage(env, "shell", "-v0", "-c", SNAPSHOT))
    assert after == before
