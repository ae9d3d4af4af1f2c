from django.db import migrations, models

from common.db import AddIndexConcurrently


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY: a plain CREATE INDEX blocks every insert into the outbox (every
    # trigger-firing save) while it reads a million events.
    atomic = False

    dependencies = [
        ("patients", "0012_language"),
        ("workflows", "0015_segments"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="event",
            index=models.Index(fields=["organization", "created_at"], name="event_clinic_time"),
        ),
    ]
