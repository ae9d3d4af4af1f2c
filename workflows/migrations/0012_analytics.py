"""A workflow's runs of a period, read by analytics from one covering index."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("workflows", "0011_step_type_split"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="run",
            index=models.Index(
                fields=["workflow", "created_at"],
                include=("status", "variant", "goal_reached_at", "is_test"),
                name="run_workflow_time",
            ),
        ),
    ]
