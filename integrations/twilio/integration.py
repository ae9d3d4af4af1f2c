"""A clinic's Twilio integration, and the sending numbers support staff approved for it."""

from collections.abc import Iterable

from integrations.models import Integration
from patients.models import Organization

NO_INTEGRATION = "this clinic has no enabled Twilio integration"


def twilio_integration(organization: Organization) -> Integration | None:
    """The clinic's enabled Twilio integration (at most one, by constraint)."""
    enabled = Integration.objects.filter(
        organization=organization, adapter=Integration.Adapter.TWILIO, enabled=True
    ).order_by()
    return next(iter(enabled[:1]), None)


def twilio_senders(organization_ids: Iterable[int] | None) -> dict[int, list[str]]:
    """The approved sending numbers of each clinic's enabled Twilio integration (None: of
    every clinic), in the order support staff entered them."""
    integrations = Integration.objects.filter(
        adapter=Integration.Adapter.TWILIO, enabled=True
    ).order_by("pk")
    if organization_ids is not None:
        integrations = integrations.filter(organization_id__in=list(organization_ids))
    numbers: dict[int, list[str]] = {}
    for organization_id, sending_numbers in integrations.values_list(
        "organization_id", "sending_numbers"
    ):
        found = numbers.setdefault(organization_id, [])
        found += [n for n in sending_numbers or [] if n not in found]
    return numbers
