"""`make run` keeps its data in SQLite: the first-contact decision (its lock and its query)
must work there as on PostgreSQL. Run in a `manage.py shell` against a fresh SQLite
database, as tests/test_journeys_sqlite.py does."""

from pathlib import Path

from tests.deployments import sqlite_shell_result

SCRIPT = """
import json
from datetime import timedelta
from django.db import transaction
from django.utils import timezone
from integrations.first_contact import first_contact_fields, first_contact_lock, message_wording
from integrations.models import Integration, MessagingPolicy, OutboundMessage
from patients.models import Organization

org = Organization.objects.create(name="Clinic", slug="clinic", timezone="UTC")
MessagingPolicy.objects.update_or_create(
    organization=org, defaults={"first_contact_enabled": True, "first_contact_every_days": 7}
)
integration = Integration.objects.create(organization=org, adapter="twilio", senders=[])
now = timezone.now()

def decide(key):
    message = OutboundMessage.objects.create(
        organization=org, integration=integration, idempotency_key=key, to="+14155550123",
        body="Hi", purpose="transactional",
    )
    with transaction.atomic():
        first_contact_lock(message)
        fields = first_contact_fields(message, message_wording(message), now=now)
        OutboundMessage.objects.filter(pk=message.pk).update(
            **fields, status="sent", sending_started_at=now
        )
    return fields.get("first_contact"), fields.get("body")

out = {"first": decide("a"), "second": decide("b")}
OutboundMessage.objects.filter(first_contact=True).update(sending_started_at=now - timedelta(days=8))
out["later"] = decide("c")
print("RESULT " + json.dumps(out))
"""


def test_first_contact_works_on_sqlite(tmp_path: Path) -> None:
    assert sqlite_shell_result(tmp_path, SCRIPT) == {
        "first": [True, "Clinic: Hi Reply STOP to opt out."],
        "second": [False, None],
        "later": [True, "Clinic: Hi Reply STOP to opt out."],
    }
