"""Messages keep their workflow and step index (analytics counts them from one covering
index); existing messages get them from their step run. An index for the latest message to a
number, which attributes an opt-out to a workflow."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def backfill(apps, schema_editor):  # type: ignore[no-untyped-def]
    OutboundMessage = apps.get_model("integrations", "OutboundMessage")
    StepRun = apps.get_model("workflows", "StepRun")
    step_runs = StepRun.objects.filter(pk=OuterRef("step_run_id"))
    # One UPDATE with correlated subqueries: portable (SQLite too), no rows through Python.
    OutboundMessage.objects.filter(step_run__isnull=False).update(
        workflow_id=Subquery(step_runs.values("run__workflow_id")[:1]),
        step_index=Subquery(step_runs.values("index")[:1]),
    )


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0008_messagingpolicy_channel_rules"),
        ("patients", "0011_records_writes"),
        ("workflows", "0012_analytics"),
    ]

    operations = [
        migrations.AddField(
            model_name="outboundmessage",
            name="step_index",
            field=models.PositiveSmallIntegerField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="outboundmessage",
            name="workflow",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="workflows.workflow",
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="outboundmessage",
            index=models.Index(
                condition=models.Q(("workflow__isnull", False)),
                fields=["workflow", "created_at"],
                include=("step_index", "status", "error_code", "is_test"),
                name="message_workflow_time",
            ),
        ),
        migrations.AddIndex(
            model_name="outboundmessage",
            index=models.Index(
                fields=["organization", "to", "-created_at"], name="message_to_time"
            ),
        ),
    ]
