"""Import a careflow workflows export into a clinic, disabled; or only report (--dry-run)."""

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from workflows.management.clinic import clinic_option_add, clinic_option_read
from workflows.transfer import (
    MAX_DOCUMENT_BYTES,
    ImportUnresolved,
    TransferRefused,
    document_read,
    import_plan,
    mapping_parse,
    workflows_import,
)
from workflows.versions import DefinitionInvalid


class Command(BaseCommand):
    help = (
        "Import the workflows of an export file into a clinic, each disabled. Prints what "
        "maps and what must be mapped first; imports all of them or none."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="The export (from `workflows_export` or the admin).")
        clinic_option_add(parser)
        parser.add_argument(
            "--map-sender",
            action="append",
            default=[],
            metavar="OLD=NEW",
            help="Send from NEW (approved in this clinic) where the export sends from OLD.",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the report; import nothing."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        organization = clinic_option_read(options)
        path = Path(options["file"])
        try:
            if path.stat().st_size > MAX_DOCUMENT_BYTES:
                raise CommandError(
                    f"{path} is larger than an export may be ({MAX_DOCUMENT_BYTES:,} bytes)."
                )
            raw = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        try:
            document = document_read(raw)
            mapping = mapping_parse(options["map_sender"], document=document)
        except (TransferRefused, ValueError) as exc:
            raise CommandError(str(exc)) from None
        plan = import_plan(document=document, organization=organization, mapping=mapping)
        for line in plan.lines():
            self.stdout.write(line)
        if not plan.ok:
            raise CommandError(
                "Nothing was imported: resolve what the report says is not ready "
                "(map senders with --map-sender OLD=NEW)."
            )
        if options["dry_run"]:
            self.stdout.write("Dry run: nothing was imported.")
            return
        try:
            created = workflows_import(
                document=document, organization=organization, mapping=mapping
            )
        except (ImportUnresolved, DefinitionInvalid) as exc:
            raise CommandError(f"Nothing was imported: {exc}") from None
        for workflow in created:
            self.stdout.write(f"Imported “{workflow}” (disabled), uuid {workflow.uuid}.")
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {len(created)} workflow(s) into {organization}, all disabled: review "
                "and dry-run each, then enable it."
            )
        )
