"""The "Accept marketing" checkbox goes: the consent history is the one record of consent.

What the checkbox held is not turned into consent records. It carried no consent text, no
date and no source, so it is no evidence of express written consent, and a record made up
from it would be (the send-time policy never relied on the checkbox either). It is not lost
either: each patient whose box was ticked gets an entry in the audit trail saying so, for
the clinic to follow up (record a consent with its text, or not). Reversing the migration
restores the ticks from those entries and removes them.
"""

from typing import Any

from django.db import migrations, models
from django.utils import timezone

ACTOR = "migration patients.0008 (the checkbox was no consent evidence)"
MODEL = "patients.Patient"
BATCH = 1000


def checkbox_to_audit_trail(apps: Any, schema_editor: Any) -> None:
    Patient = apps.get_model("patients", "Patient")
    AuditEntry = apps.get_model("patients", "AuditEntry")
    alias = schema_editor.connection.alias
    now = timezone.now()
    ticked = (
        Patient.objects.using(alias)
        .filter(accept_marketing=True)
        .order_by("pk")
        .values_list("pk", "organization_id", "first_name", "last_name")
    )
    entries = [
        AuditEntry(
            at=now,
            actor_repr=ACTOR,
            organization_id=organization_id,
            action="updated",
            model=MODEL,
            object_id=str(pk),
            object_repr=f"{first_name} {last_name}".strip()[:200],
            changes={"accept_marketing": [True, None]},
        )
        for pk, organization_id, first_name, last_name in ticked.iterator(chunk_size=BATCH)
    ]
    AuditEntry.objects.using(alias).bulk_create(entries, batch_size=BATCH)


def audit_trail_to_checkbox(apps: Any, schema_editor: Any) -> None:
    Patient = apps.get_model("patients", "Patient")
    AuditEntry = apps.get_model("patients", "AuditEntry")
    alias = schema_editor.connection.alias
    entries = AuditEntry.objects.using(alias).filter(actor_repr=ACTOR, model=MODEL)
    ids = [int(pk) for pk in entries.values_list("object_id", flat=True)]
    for start in range(0, len(ids), BATCH):
        Patient.objects.using(alias).filter(pk__in=ids[start : start + BATCH]).update(
            accept_marketing=True
        )
    entries.delete()


class Migration(migrations.Migration):
    dependencies = [("patients", "0007_roles")]

    operations = [
        migrations.RunPython(checkbox_to_audit_trail, audit_trail_to_checkbox),
        migrations.RemoveField(model_name="patient", name="accept_marketing"),
    ]
