"""Integration settings per provider: Twilio's columns move into the generic `settings`
(non-secret) and `secrets` (one encrypted JSON object); `sending_numbers` becomes `senders`.

Reversible: going back re-creates the Twilio columns and fills them from settings/secrets
(a non-Twilio integration cannot go back, and says so)."""

from typing import Any

from django.db import migrations, models

import integrations.encryption
import integrations.models

TWILIO = "twilio"


def twilio_columns_to_settings(apps: Any, schema_editor: Any) -> None:
    Integration = apps.get_model("integrations", "Integration")
    # The historical model's fields decrypt auth_token and encrypt `secrets` with the
    # configured keys, as the live model's would.
    for integration in Integration.objects.using(schema_editor.connection.alias).order_by("pk"):
        integration.settings = {
            "account_sid": integration.account_sid,
            "messaging_service_sid": integration.messaging_service_sid,
            "sender_type": integration.sender_type,
            "segments_per_second": integration.segments_per_second,
        }
        integration.secrets = (
            {"auth_token": integration.auth_token} if integration.auth_token else {}
        )
        integration.save(update_fields=["settings", "secrets"])


def settings_to_twilio_columns(apps: Any, schema_editor: Any) -> None:
    Integration = apps.get_model("integrations", "Integration")
    rows = Integration.objects.using(schema_editor.connection.alias).order_by("pk")
    others = sorted({i.adapter for i in rows if i.adapter != TWILIO})
    if others:
        raise RuntimeError(
            f"Cannot migrate back: integrations of {', '.join(others)} have no Twilio columns."
        )
    for integration in rows:
        settings = integration.settings or {}
        integration.account_sid = settings.get("account_sid") or ""
        integration.messaging_service_sid = settings.get("messaging_service_sid") or ""
        integration.sender_type = settings.get("sender_type") or "auto"
        integration.segments_per_second = settings.get("segments_per_second")
        integration.auth_token = (integration.secrets or {}).get("auth_token", "")
        integration.save(
            update_fields=[
                "account_sid",
                "messaging_service_sid",
                "sender_type",
                "segments_per_second",
                "auth_token",
            ]
        )


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0006_message_channel"),
    ]

    operations = [
        migrations.AddField(
            model_name="integration",
            name="settings",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Non-secret.",
                validators=[integrations.models.validate_settings],
            ),
        ),
        migrations.AddField(
            model_name="integration",
            name="secrets",
            field=integrations.encryption.EncryptedJSONField(blank=True, default=dict),
        ),
        migrations.RenameField(
            model_name="integration", old_name="sending_numbers", new_name="senders"
        ),
        migrations.AlterField(
            model_name="integration",
            name="senders",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text="The clinic's own senders approved at the provider (numbers, addresses).",
                validators=[integrations.models.validate_senders],
                verbose_name="approved senders",
            ),
        ),
        # Defaults for the columns about to go, so that migrating back can re-create them
        # NOT NULL on a table that has rows (then fill them).
        migrations.AlterField(
            model_name="integration",
            name="account_sid",
            field=models.CharField(default="", max_length=34, verbose_name="Account SID"),
        ),
        migrations.AlterField(
            model_name="integration",
            name="auth_token",
            field=integrations.encryption.EncryptedTextField(default="", verbose_name="Auth Token"),
        ),
        migrations.RunPython(twilio_columns_to_settings, settings_to_twilio_columns),
        migrations.RemoveField(model_name="integration", name="account_sid"),
        migrations.RemoveField(model_name="integration", name="auth_token"),
        migrations.RemoveField(model_name="integration", name="messaging_service_sid"),
        migrations.RemoveField(model_name="integration", name="sender_type"),
        migrations.RemoveField(model_name="integration", name="segments_per_second"),
        migrations.AlterField(
            model_name="integration",
            name="name",
            field=models.CharField(blank=True, default="", max_length=100),
        ),
        migrations.AlterField(
            model_name="integration",
            name="adapter",
            field=models.CharField(max_length=32),
        ),
    ]
