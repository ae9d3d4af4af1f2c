"""Delete events, runs, step runs and messages older than each clinic's retention
(integrations.retention): `--dry-run` counts them instead, `--clinic` takes one clinic.
Progress lines give clinic ids and counts, never patient data."""

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.retention import KINDS, retention_apply
from patients.models import Organization


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")
        parser.add_argument("--clinic", help="one clinic, by id or slug")
        parser.add_argument(
            "--batch-size",
            type=int,
            help="rows per transaction (default CAREFLOW_RETENTION_BATCH)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        clinic = options["clinic"]
        organization_id = None
        if clinic:
            lookup = {"pk": int(clinic)} if clinic.isdigit() else {"slug": clinic}
            organization_id = (
                Organization.objects.filter(**lookup).values_list("pk", flat=True).first()
            )
            if organization_id is None:
                raise CommandError(f"No clinic {clinic!r}.")
        batch = options["batch_size"]
        if batch is not None and batch < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            results = retention_apply(
                organization_id=organization_id,
                batch=batch,
                dry_run=options["dry_run"],
                progress=lambda line: self.stdout.write(line),
            )
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from exc
        totals = {kind: sum(r.counts[kind] for r in results) for kind in KINDS}
        longest = max((r.longest_batch_s for r in results), default=0.0)
        verb = "would delete" if options["dry_run"] else "deleted"
        self.stdout.write(
            f"{len(results)} clinic(s): {verb} "
            + ", ".join(f"{count} {kind}" for kind, count in totals.items())
            + ("" if options["dry_run"] else f"; longest transaction {longest * 1000:.0f} ms")
        )
