"""A clinic's Twilio integration, and the sending numbers support staff approved for it."""

from collections.abc import Iterable

from integrations.models import Integration
from integrations.twilio.account import ADAPTER
from patients.models import Organization

NO_INTEGRATION = "this clinic has no enabled Twilio integration"


def twilio_integration(organization: Organization) -> Integration | None:
    """The clinic's enabled Twilio integration (at most one, by constraint)."""
    enabled = Integration.objects.filter(
        organization=organization, adapter=ADAPTER, enabled=True
    ).order_by()
    return next(iter(enabled[:1]), None)


def twilio_senders(organization_ids: Iterable[int] | None) -> dict[int, list[str]]:
    """The approved sending numbers of each clinic's enabled Twilio integration (None: of
    every clinic), in the order support staff entered them."""
    integrations = Integration.objects.filter(adapter=ADAPTER, enabled=True).order_by("pk")
    if organization_ids is not None:
        integrations = integrations.filter(organization_id__in=list(organization_ids))
    numbers: dict[int, list[str]] = {}
    for organization_id, senders in integrations.values_list("organization_id", "senders"):
        found = numbers.setdefault(organization_id, [])
        found += [n for n in senders or [] if n not in found]
    return numbers
