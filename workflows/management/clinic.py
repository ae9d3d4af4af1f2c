"""The --clinic option the workflow commands share: a clinic named by its uuid or exact name."""

from typing import Any

from django.core.management.base import CommandError, CommandParser

from patients.models import Organization
from workflows.transfer import organization_named


def clinic_option_add(parser: CommandParser) -> None:
    parser.add_argument("--clinic", required=True, help="The clinic's uuid or exact name.")


def clinic_option_read(options: dict[str, Any]) -> Organization:
    try:
        return organization_named(options["clinic"])
    except LookupError as exc:
        raise CommandError(f"--clinic: {exc}.") from None
