"""How the admin shows a clinic its own records: times in the clinic's time zone, "today" as
the clinic's own midnight to midnight, and which users are a clinic's roles (they are not
shown internal keys).

A clinic in Chicago reads "Dec 6, 2026, 9:14 AM CST", not "2026-12-06T15:14:00+00:00"; its
home page counts and its list filters agree on what "today" is because both use
`clinic_days_q`.
"""

import functools
import json
from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta
from operator import or_
from typing import Any, ClassVar

from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.functional import cached_property

from patients.models import Organization
from patients.phones import phone_to_e164
from patients.tenancy import request_organization_id, sees_all_organizations
from patients.zones import clinic_zone

# "Dec 6, 2026, 9:14 AM CST": the zone's abbreviation says which clock it is.
DATETIME_FORMAT = "M j, Y, g:i A T"


def clinic_datetime(value: datetime | str | None, zone: str) -> str:
    """`value` as the clinic reads it. Also takes the ISO 8601 strings stored in JSON (a send
    decision's time); text that is not a timestamp is returned as it is."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return value
        # careflow writes aware UTC timestamps into JSON; a naive one can only be UTC too.
        value = parsed if timezone.is_aware(parsed) else parsed.replace(tzinfo=UTC)
    return date_format(value.astimezone(clinic_zone(zone)), DATETIME_FORMAT)


def clinic_today(zone: str, now: datetime | None = None) -> date:
    return (now or timezone.now()).astimezone(clinic_zone(zone)).date()


def clinic_days(*, zone: str, days: int, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The last `days` calendar days in the zone, today included, as [start, end)."""
    tz = clinic_zone(zone)
    today = clinic_today(zone, now)
    start = datetime.combine(today - timedelta(days=days - 1), time.min, tzinfo=tz)
    end = datetime.combine(today + timedelta(days=1), time.min, tzinfo=tz)
    return start, end


def clinic_days_q(
    *,
    field: str,
    organization: str,
    zones: Collection[str],
    days: int,
    now: datetime | None = None,
) -> Q:
    """Rows whose `field` falls in the last `days` calendar days of their own clinic's zone.

    `zones` must hold the zone of every clinic the rows may belong to (`request_zones`);
    `organization` is the lookup from the row to its clinic. With one zone the window is a
    plain range (no join to the clinic); with several, one range per zone.
    """
    now = now or timezone.now()

    def window(zone: str) -> Q:
        start, end = clinic_days(zone=zone, days=days, now=now)
        return Q(**{f"{field}__gte": start, f"{field}__lt": end})

    names = sorted(set(zones))
    if not names:
        return Q(pk__in=[])
    if len(names) == 1:
        return window(names[0])
    return functools.reduce(
        or_, (window(name) & Q(**{f"{organization}__timezone": name}) for name in names)
    )


def request_is_clinic_role(request: HttpRequest) -> bool:
    """A clinic admin or clinic staff: a user whose admin shows one clinic at most. Support
    staff and superusers are not; they may see internal keys (idempotency keys, provider ids)."""
    return not sees_all_organizations(request.user)


def request_zones(request: HttpRequest) -> list[str]:
    """The time zones of the clinics the user's admin lists may show (one query)."""
    organizations = Organization.objects.all()
    if request_is_clinic_role(request):
        organization_id = request_organization_id(request)
        if organization_id is None:
            return []
        organizations = organizations.filter(pk=organization_id)
    return list(organizations.order_by().values_list("timezone", flat=True).distinct())


class ClinicDaysFilter(admin.SimpleListFilter):
    """Rows of today, or of the last 7 days, each in its own clinic's time zone. The clinic
    home page's counts link to these filters; both use `clinic_days_q`, so they agree."""

    field: ClassVar[str]
    organization: ClassVar[str]
    CHOICES: ClassVar[dict[str, tuple[str, int]]] = {
        "today": ("Today", 1),
        "7d": ("Last 7 days", 7),
    }

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(value, label) for value, (label, _) in self.CHOICES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        choice = self.CHOICES.get(self.value() or "")
        if choice is None:
            return queryset
        return queryset.filter(
            clinic_days_q(
                field=self.field,
                organization=self.organization,
                zones=request_zones(request),
                days=choice[1],
            )
        )


class TechnicalDetailsMixin:
    """Adds a collapsed "Technical details" fieldset (idempotency keys, provider ids, leases)
    for support staff and superusers. Clinic roles never get those fields: list them in
    `technical_fields` and nowhere else."""

    technical_fields: ClassVar[list[str]] = []

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))  # type: ignore[misc]
        if self.technical_fields and not request_is_clinic_role(request):
            fieldsets.append(
                ("Technical details", {"fields": self.technical_fields, "classes": ["collapse"]})
            )
        return fieldsets


class PhoneSearchMixin:
    """The changelist search also finds a phone number typed as people write it, "(415)
    555-0101", in `phone_search_field`, where it is stored as "+14155550101"."""

    phone_search_field: ClassVar[str]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        results, may_have_duplicates = super().get_search_results(  # type: ignore[misc]
            request, queryset, search_term
        )
        phone = search_phone(search_term)
        if phone and phone != search_term.strip():
            results = results | queryset.filter(**{self.phone_search_field: phone})
        return results, may_have_duplicates


def search_phone(term: str) -> str | None:
    """The E.164 form of a search term typed as a phone number ("(415) 555-0101"), so the
    admin finds the stored "+14155550101"; None when the term is not a phone number."""
    term = term.strip()
    if sum(c.isdigit() for c in term) < 7 or not all(c.isdigit() or c in " ()+-." for c in term):
        return None
    try:
        return phone_to_e164(term)
    except ValidationError:
        return None


class EstimatedCountPaginator(Paginator):
    """A changelist paginator that counts exactly up to EXACT_UP_TO rows and estimates
    beyond: the admin's COUNT(*) of an unfiltered list read all 10 million messages (seconds,
    and on every page), where the list itself reads 100 rows from an index.

    The estimate is the planner's row estimate for the list's own query (for the whole table,
    pg_class.reltuples as ANALYZE left it; for a filter or a search, its selectivity), never
    below the exact figure it is known to exceed. The page links are then approximate: a last
    page past the real end shows an empty list, not an error. Other databases count."""

    EXACT_UP_TO = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet):
            return super().count
        rows = queryset.order_by().values("pk")
        capped = rows[: self.EXACT_UP_TO + 1].count()
        if capped <= self.EXACT_UP_TO:
            return capped
        if connections[queryset.db].vendor != "postgresql":
            return super().count
        plan = json.loads(rows.explain(format="json"))
        return max(int(plan[0]["Plan"]["Plan Rows"]), capped)
