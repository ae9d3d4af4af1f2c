"""Analytics: messages keep their workflow and step index (filled in for existing messages
from their step runs); hourly message counts per workflow (MessageHourCount), kept by the
roll-up, which counts existing messages on its first runs as it does new ones (a message is
"uncounted" until then); an index for the latest message to a number, which attributes an
opt-out to a workflow."""

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
    if schema_editor.connection.vendor == "postgresql":
        # The new foreign key's checks are deferred to the commit; PostgreSQL will not build
        # the indexes below on a table with checks pending: run them now.
        schema_editor.execute("SET CONSTRAINTS ALL IMMEDIATE")


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0010_smart_sending"),
        ("patients", "0011_records_writes"),
        ("workflows", "0012_analytics"),
    ]

    operations = [
        migrations.CreateModel(
            name="MessageHourCount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("hour", models.DateTimeField()),
                (
                    "step_index",
                    models.IntegerField(help_text="-1: the message named no step."),
                ),
                ("status", models.CharField(max_length=16)),
                ("error_code", models.CharField(blank=True, max_length=16)),
                ("count", models.IntegerField(default=0)),
                (
                    "workflow",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="workflows.workflow",
                    ),
                ),
            ],
            options={"ordering": ["workflow", "hour"]},
        ),
        migrations.AddConstraint(
            model_name="messagehourcount",
            constraint=models.UniqueConstraint(
                fields=("workflow", "hour", "step_index", "status", "error_code"),
                name="one_message_count_per_key",
            ),
        ),
        migrations.AddField(
            model_name="outboundmessage",
            name="counted_error_code",
            field=models.CharField(blank=True, editable=False, max_length=16),
        ),
        migrations.AddField(
            model_name="outboundmessage",
            name="counted_status",
            field=models.CharField(blank=True, editable=False, max_length=16),
        ),
        migrations.AddField(
            model_name="outboundmessage",
            name="uncounted",
            field=models.GeneratedField(
                db_persist=True,
                expression=models.Q(
                    models.Q(("status", models.F("counted_status")), _negated=True),
                    models.Q(("error_code", models.F("counted_error_code")), _negated=True),
                    _connector="OR",
                ),
                output_field=models.BooleanField(),
            ),
        ),
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
                condition=models.Q(
                    ("is_test", False), ("uncounted", True), ("workflow__isnull", False)
                ),
                fields=["workflow", "created_at"],
                name="message_uncounted",
            ),
        ),
        migrations.AddIndex(
            model_name="outboundmessage",
            index=models.Index(
                fields=["organization", "to", "-created_at"], name="message_to_time"
            ),
        ),
    ]
