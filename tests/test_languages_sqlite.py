"""`make run` keeps its data in SQLite: the language columns (with their database defaults),
a Spanish message's first-contact wording and the keywords per language must work there as
on PostgreSQL. Run in a `manage.py shell` against a fresh SQLite database."""

from pathlib import Path

from tests.deployments import sqlite_shell_result

SCRIPT = """
import json
import uuid
from django.db import connection, transaction
from django.utils import timezone
from integrations.first_contact import first_contact_fields, first_contact_lock, message_wording
from integrations.models import Integration, MessagingPolicy, OutboundMessage
from integrations.twilio.keywords import keyword_match
from patients.models import Organization, Patient
from workflows.variants import step_language

# A row inserted without the new columns (as older code would) gets their defaults.
with connection.cursor() as cursor:
    cursor.execute(
        "INSERT INTO patients_organization (created_at, updated_at, name, slug, timezone, uuid, "
        "webhook_token_hash) VALUES (%s, %s, 'Old', 'old', 'UTC', %s, '')",
        [timezone.now(), timezone.now(), uuid.uuid4().hex],
    )
old = Organization.objects.get(slug="old")
org = Organization.objects.create(name="Clinic", slug="clinic", timezone="UTC", languages=["es"])
MessagingPolicy.objects.update_or_create(
    organization=org,
    defaults={
        "first_contact_enabled": True,
        "translations": {"es": {"opt_out_wording": "Responda PARAR para cancelar."}},
    },
)
ana = Patient.objects.create(organization=org, first_name="Ana", language="es")
integration = Integration.objects.create(organization=org, adapter="twilio", senders=[])
message = OutboundMessage.objects.create(
    organization=org, integration=integration, idempotency_key="a", to="+14155550123",
    body="Hola", purpose="transactional", language="es",
)
with transaction.atomic():
    first_contact_lock(message)
    fields = first_contact_fields(message, message_wording(message), now=timezone.now())
params = {"message": "Hi", "variants": {"es": {"message": "Hola"}}}
print("RESULT " + json.dumps({
    "old": [old.languages, old.fallback_language],
    "body": fields.get("body"),
    "language": step_language(params, patient=ana, organization=org),
    "parar": keyword_match("parar", languages=org.enabled_languages).action,
    "spanish_patients": Patient.objects.filter(language="es").count(),
}))
"""


def test_languages_work_on_sqlite(tmp_path: Path) -> None:
    assert sqlite_shell_result(tmp_path, SCRIPT) == {
        "old": [[], "en"],
        "body": "Clinic: Hola Responda PARAR para cancelar.",
        "language": "es",
        "parar": "opt_out",
        "spanish_patients": 1,
    }
