import uuid

from django.db import migrations


def backfill_uuids(apps, schema_editor):
    Organization = apps.get_model("patients", "Organization")
    for organization in Organization.objects.filter(uuid__isnull=True).only("pk").iterator():
        Organization.objects.filter(pk=organization.pk).update(uuid=uuid.uuid4())


class Migration(migrations.Migration):
    """Step 2 of 3: a distinct random uuid for every existing clinic. Kept apart from the
    schema changes: on PostgreSQL, updating rows and altering the table in one transaction
    can fail with "pending trigger events"."""

    dependencies = [
        ("patients", "0002_organization_webhook_credentials"),
    ]

    operations = [
        # Reversing needs nothing: step 1's reversal drops the column.
        migrations.RunPython(backfill_uuids, migrations.RunPython.noop, elidable=True),
    ]
