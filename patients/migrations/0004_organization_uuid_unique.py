import uuid

from django.db import migrations, models


class Migration(migrations.Migration):
    """Step 3 of 3: every clinic has a uuid now; make it required and unique."""

    dependencies = [
        ("patients", "0003_organization_uuid_backfill"),
    ]

    operations = [
        migrations.AlterField(
            model_name="organization",
            name="uuid",
            field=models.UUIDField(default=uuid.uuid4, editable=False, unique=True),
        ),
    ]
