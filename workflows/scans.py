"""Time-based triggers: events that fire because time passed, not because a record changed.

A periodic beat task runs `time_triggers_scan` (every minute by default). Each scan looks
only at records inside its window, through partial indexes on the date fields, and skips
the ones it already handled (a marker column on the record). Each record is claimed with a
conditional UPDATE of that marker in the same transaction as the event insert, and the
event's unique dedupe key backs that up: two beat processes, or a rerun, record one event.
"""

import zoneinfo
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from django.conf import settings
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from patients.models import Appointment, Subscription
from patients.payloads import appointment_event_payload, subscription_event_payload
from workflows.outbox import event_record

M = TypeVar("M", bound=models.Model)

BATCH_SIZE = 500
REMINDABLE = (Appointment.Status.BOOKED, Appointment.Status.CONFIRMED)


def _batches(queryset: models.QuerySet[M], batch_size: int) -> Iterator[list[M]]:
    """Keyset pagination by pk: records skipped on the way cannot make the loop spin."""
    last_pk: Any = 0
    while True:
        batch = list(queryset.filter(pk__gt=last_pk).order_by("pk")[:batch_size])
        if not batch:
            return
        yield batch
        if len(batch) < batch_size:
            return
        last_pk = batch[-1].pk


def _clinic_today(now: datetime, zone_name: str) -> Any:
    try:
        zone = zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        zone = zoneinfo.ZoneInfo("UTC")
    return now.astimezone(zone).date()


def upcoming_renewals_scan(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Record subscription.upcoming_renewal for active subscriptions whose renewal date is
    within CAREFLOW_RENEWAL_LEAD_DAYS of today (in the clinic's time zone), once per cycle.

    Renewals already past are not announced. Returns the number of events recorded.
    """
    now = now or timezone.now()
    lead = timedelta(days=settings.CAREFLOW_RENEWAL_LEAD_DAYS)
    utc_today = now.astimezone(UTC).date()
    # A day wider each way than any clinic's "today"; the exact window is checked per clinic.
    candidates = (
        Subscription.objects.filter(
            status=Subscription.Status.ACTIVE,
            next_cycle_date__gte=utc_today - timedelta(days=1),
            next_cycle_date__lte=utc_today + lead + timedelta(days=1),
        )
        .exclude(renewal_notice_cycle=F("current_cycle"))
        .select_related("patient", "organization")
    )
    recorded = 0
    for batch in _batches(candidates, batch_size):
        for subscription in batch:
            today = _clinic_today(now, subscription.organization.timezone)
            renews_on = subscription.next_cycle_date
            if renews_on is not None and today <= renews_on <= today + lead:
                recorded += _renewal_notice_record(subscription, now)
    return recorded


def _renewal_notice_record(subscription: Subscription, now: datetime) -> int:
    cycle = subscription.current_cycle
    with transaction.atomic():
        # The claim re-checks what was read, so a subscription paused, renewed or moved
        # since then is left alone; a concurrent scan waits on the row and then finds it
        # already claimed.
        claimed = (
            Subscription.objects.filter(
                pk=subscription.pk,
                status=Subscription.Status.ACTIVE,
                current_cycle=cycle,
                next_cycle_date=subscription.next_cycle_date,
            )
            .exclude(renewal_notice_cycle=cycle)
            .update(renewal_notice_cycle=cycle)
        )
        if not claimed:
            return 0
        event = event_record(
            organization_id=subscription.organization_id,
            type="subscription.upcoming_renewal",
            payload=subscription_event_payload(subscription),
            dedupe_key=f"subscription.upcoming_renewal:{subscription.pk}:cycle:{cycle}",
            subject_type="subscription",
            subject_id=str(subscription.pk),
            occurred_at=now,
        )
    return int(event is not None)


def appointment_reminders_scan(*, now: datetime | None = None, batch_size: int = BATCH_SIZE) -> int:
    """Record appointment.reminder for booked or confirmed appointments starting within
    CAREFLOW_APPOINTMENT_REMINDER_HOURS; once per appointment and start time, so a
    rescheduled appointment is reminded again. Returns the number of events recorded."""
    now = now or timezone.now()
    until = now + timedelta(hours=settings.CAREFLOW_APPOINTMENT_REMINDER_HOURS)
    candidates = (
        Appointment.objects.filter(status__in=REMINDABLE, starts_at__gt=now, starts_at__lte=until)
        .exclude(reminder_starts_at=F("starts_at"))
        .select_related("patient", "organization")
    )
    recorded = 0
    for batch in _batches(candidates, batch_size):
        for appointment in batch:
            recorded += _reminder_record(appointment, now)
    return recorded


def _reminder_record(appointment: Appointment, now: datetime) -> int:
    starts_at = appointment.starts_at
    with transaction.atomic():
        claimed = (
            Appointment.objects.filter(
                pk=appointment.pk, status__in=REMINDABLE, starts_at=starts_at
            )
            .exclude(reminder_starts_at=starts_at)
            .update(reminder_starts_at=starts_at)
        )
        if not claimed:
            return 0
        event = event_record(
            organization_id=appointment.organization_id,
            type="appointment.reminder",
            payload=appointment_event_payload(appointment),
            dedupe_key=(
                f"appointment.reminder:{appointment.pk}:{starts_at.astimezone(UTC).isoformat()}"
            ),
            subject_type="appointment",
            subject_id=str(appointment.pk),
            occurred_at=now,
        )
    return int(event is not None)


SCANS: dict[str, Callable[..., int]] = {
    "subscription.upcoming_renewal": upcoming_renewals_scan,
    "appointment.reminder": appointment_reminders_scan,
}


def time_triggers_scan(*, now: datetime | None = None) -> dict[str, int]:
    """Run every time-based trigger's scan; the number of events each recorded."""
    now = now or timezone.now()
    return {event_type: scan(now=now) for event_type, scan in SCANS.items()}
