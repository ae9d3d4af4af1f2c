"""Export a clinic's workflows (or some of them) as a careflow workflows document."""

import uuid
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflows.management.clinic import clinic_option_add, clinic_option_read
from workflows.models import Workflow
from workflows.transfer import export_json, workflows_export


class Command(BaseCommand):
    help = (
        "Export a clinic's workflows as JSON (schema version 1) for `workflows_import` into "
        "another clinic. No ids, secrets or patient data are exported."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        clinic_option_add(parser)
        parser.add_argument(
            "--workflow",
            action="append",
            default=[],
            metavar="UUID",
            help="Export only this workflow (repeat for several); default: all of the clinic's.",
        )
        parser.add_argument("--output", metavar="FILE", help="Write here; default: stdout.")

    def handle(self, *args: Any, **options: Any) -> None:
        organization = clinic_option_read(options)
        workflows = Workflow.objects.filter(organization=organization).order_by("name", "pk")
        wanted = options["workflow"]
        if wanted:
            try:
                uuids = {uuid.UUID(value.strip()) for value in wanted}
            except ValueError:
                raise CommandError("--workflow: give each workflow's uuid.") from None
            workflows = workflows.filter(uuid__in=uuids)
            missing = uuids - set(workflows.values_list("uuid", flat=True))
            if missing:
                raise CommandError(
                    f"--workflow: {organization} has no workflow "
                    + ", ".join(sorted(str(u) for u in missing))
                    + "."
                )
        chosen = list(workflows.prefetch_related("steps"))
        if not chosen:
            raise CommandError(f"{organization} has no workflows to export.")
        text = export_json(workflows_export(organization=organization, workflows=chosen))
        if options["output"]:
            Path(options["output"]).write_text(text, encoding="utf-8")
            self.stderr.write(
                f"Exported {len(chosen)} workflow(s) of {organization} to {options['output']}."
            )
        else:
            self.stdout.write(text, ending="")
