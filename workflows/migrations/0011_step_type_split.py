from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0010_enrollment"),
    ]

    operations = [
        migrations.AlterField(
            model_name="step",
            name="type",
            field=models.CharField(
                choices=[
                    ("condition", "Condition"),
                    ("delay", "Delay"),
                    ("adapter", "Adapter action"),
                    ("reply", "Wait for reply"),
                    ("split", "A/B split"),
                ],
                default="adapter",
                max_length=16,
            ),
        ),
    ]
