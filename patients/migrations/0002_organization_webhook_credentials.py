from django.db import migrations, models


class Migration(migrations.Migration):
    """Step 1 of 3 for Organization.uuid: add it nullable, so existing rows can be backfilled
    with distinct values (a callable default on AddField runs once for every row)."""

    dependencies = [
        ("patients", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="organization",
            name="uuid",
            field=models.UUIDField(editable=False, null=True),
        ),
        migrations.AddField(
            model_name="organization",
            name="webhook_token_hash",
            field=models.CharField(blank=True, editable=False, max_length=64),
        ),
        migrations.AddField(
            model_name="organization",
            name="webhook_token_issued_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
