"""Rules per channel: every existing policy starts with none of its own, so every channel,
SMS included, keeps going under the policy's quiet hours and caps exactly as before. A new
channel's rules are a key in this field: no further migration of this table."""

import integrations.models
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0007_integration_settings"),
    ]

    operations = [
        migrations.AddField(
            model_name="messagingpolicy",
            name="channel_rules",
            field=models.JSONField(
                blank=True,
                default=dict,
                help_text="Rules of a channel that does not follow the default rules above.",
                validators=[integrations.models.validate_channel_rules],
            ),
        ),
    ]
