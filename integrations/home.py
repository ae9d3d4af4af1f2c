"""The clinic home: the admin index with the clinic's day on top — today's messages by
outcome, inbound messages waiting for review, runs failed in the last 7 days — each count a
link to the list showing exactly the rows it counted.

The counts are taken from the querysets the admin lists show (each ModelAdmin's
`get_queryset`, so the same clinic scoping) narrowed by the filters the links apply
(`clinic_days_q` for the clinic's days, `MESSAGE_OUTCOMES` for the statuses): the number and
the list cannot disagree. Three counting queries, however many rows.

It lives here, not in `workflows`, because it reads messages (this app) and runs (the engine
below it); dependencies run patients ← workflows ← integrations.
"""

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.db.models import Count, Model, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone

from integrations.models import InboundMessage, OutboundMessage
from patients.clinic_view import clinic_days_q, clinic_today, request_zones
from workflows.models import Run

Status = OutboundMessage.Status

# Outcome → (label, the statuses it counts, what it means). "Sent" counts every message
# handed to the provider, delivered or not; "failed" every one that did not reach the phone.
MESSAGE_OUTCOMES: dict[str, tuple[str, tuple[str, ...], str]] = {
    "sent": ("Sent", (Status.SENT, Status.DELIVERED, Status.UNDELIVERED), "handed to the provider"),
    "delivered": ("Delivered", (Status.DELIVERED,), "reached the phone"),
    "failed": ("Failed", (Status.FAILED, Status.UNDELIVERED), "refused or not delivered"),
    "skipped": ("Skipped", (Status.SKIPPED,), "not sent: no consent, opted out, …"),
}
# The list filters the links use (integrations.admin, workflows.admin): their parameters.
TODAY = {"created": "today"}
LAST_7_DAYS = {"finished": "7d"}
RUNS_DAYS = 7


@dataclass(frozen=True, slots=True)
class Tile:
    key: str
    label: str
    count: int
    url: str
    help: str
    # Someone should act on a non-zero count (a failure, a message waiting for review).
    alarming: bool = False


@dataclass(frozen=True, slots=True)
class Home:
    # The clinic's zone, or "" when the counts span clinics (each counted in its own zone).
    zone: str
    today: date | None
    messages: list[Tile]
    attention: list[Tile]


def _url(model: type[Model], query: dict[str, str]) -> str:
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist") + "?" + urlencode(query)


def home_summary(
    *,
    messages: QuerySet[OutboundMessage] | None,
    inbound: QuerySet[InboundMessage] | None,
    runs: QuerySet[Run] | None,
    zones: list[str],
    now: datetime | None = None,
) -> Home:
    """The counts of the clinic home over the given (already clinic-scoped) querysets; a
    queryset the user may not see is None and its tiles are left out."""
    now = now or timezone.now()
    message_tiles: list[Tile] = []
    if messages is not None:
        counts = messages.filter(
            clinic_days_q(
                field="created_at", organization="organization", zones=zones, days=1, now=now
            )
        ).aggregate(
            **{
                key: Count("pk", filter=Q(status__in=statuses))
                for key, (_, statuses, _) in MESSAGE_OUTCOMES.items()
            }
        )
        message_tiles = [
            Tile(
                key,
                label,
                counts[key],
                _url(OutboundMessage, {**TODAY, "outcome": key}),
                meaning,
                alarming=key == "failed",
            )
            for key, (label, _, meaning) in MESSAGE_OUTCOMES.items()
        ]
    attention: list[Tile] = []
    if inbound is not None:
        attention.append(
            Tile(
                "review",
                "Inbound messages waiting for review",
                inbound.filter(needs_review=True).count(),
                _url(InboundMessage, {"needs_review__exact": "1"}),
                "replies that read like “stop texting me”: decide and record consent",
                alarming=True,
            )
        )
    if runs is not None:
        failed = runs.filter(status=Run.Status.FAILED).filter(
            clinic_days_q(
                field="finished_at",
                organization="workflow__organization",
                zones=zones,
                days=RUNS_DAYS,
                now=now,
            )
        )
        attention.append(
            Tile(
                "failed_runs",
                f"Runs failed in the last {RUNS_DAYS} days",
                failed.count(),
                _url(Run, {"status__exact": Run.Status.FAILED, **LAST_7_DAYS}),
                "open one to see the failed step; retry it from the list",
                alarming=True,
            )
        )
    zone = zones[0] if len(zones) == 1 else ""
    return Home(zone, clinic_today(zone, now) if zone else None, message_tiles, attention)


def _visible(request: HttpRequest, model: type[Model]) -> QuerySet[Any] | None:
    """What the model's admin list shows this user, or None if they may not see it."""
    model_admin = admin.site.get_model_admin(model)
    if not model_admin.has_view_permission(request):
        return None
    return model_admin.get_queryset(request)


def admin_home(request: HttpRequest) -> HttpResponse:
    """The admin index, with the clinic home above the list of apps."""
    home = home_summary(
        messages=_visible(request, OutboundMessage),
        inbound=_visible(request, InboundMessage),
        runs=_visible(request, Run),
        zones=request_zones(request),
    )
    shows = bool(home.messages or home.attention)
    return admin.site.index(request, extra_context={"home": home if shows else None})
