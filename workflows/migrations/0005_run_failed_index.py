"""The clinic home counts runs failed in the last 7 days on every admin visit: index only those."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0004_requeue_stamps"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="run",
            index=models.Index(
                condition=models.Q(("status", "failed")), fields=["finished_at"], name="run_failed"
            ),
        ),
    ]
