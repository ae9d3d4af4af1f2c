from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0003_throttle"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="inboundmessage",
            options={
                "ordering": ["-created_at", "-id"],
                "permissions": [("review_inboundmessage", "Can mark inbound messages as reviewed")],
            },
        ),
    ]
