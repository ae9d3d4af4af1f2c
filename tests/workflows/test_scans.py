"""Time-based triggers: upcoming renewals and appointment reminders."""

import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection, connections

from patients.models import Appointment, Subscription
from patients.services import subscription_renew
from tests.factories import AppointmentFactory, OrganizationFactory, SubscriptionFactory
from workflows import tasks
from workflows.models import Event
from workflows.outbox import event_record
from workflows.scans import (
    appointment_reminders_scan,
    time_triggers_scan,
    upcoming_renewals_scan,
)

pytestmark = pytest.mark.django_db

# Noon UTC: the same calendar day in every US time zone.
NOW = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def _events(event_type: str) -> list[Event]:
    return list(Event.objects.filter(type=event_type).order_by("id"))


# --- subscription.upcoming_renewal -----------------------------------------------------------


@pytest.mark.parametrize(
    ("days_ahead", "fires"),
    [(-1, False), (0, True), (1, True), (7, True), (8, False), (30, False)],
)
def test_renewal_fires_only_within_the_lead_time(days_ahead: int, fires: bool) -> None:
    subscription = SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=days_ahead))
    assert upcoming_renewals_scan(now=NOW) == int(fires)
    events = _events("subscription.upcoming_renewal")
    assert len(events) == int(fires)
    if fires:
        event = events[0]
        assert event.subject_type == "subscription" and event.subject_id == str(subscription.pk)
        assert event.payload["subscription"]["nextCycleDate"] == str(subscription.next_cycle_date)
        assert event.payload["customer"]["id"] == str(subscription.patient.uuid)
        assert event.occurred_at == NOW


def test_lead_time_is_configurable(settings: Any) -> None:
    settings.CAREFLOW_RENEWAL_LEAD_DAYS = 2
    SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=3))
    assert upcoming_renewals_scan(now=NOW) == 0
    assert upcoming_renewals_scan(now=NOW + timedelta(days=1)) == 1


def test_default_lead_time_is_seven_days() -> None:
    assert django_settings.CAREFLOW_RENEWAL_LEAD_DAYS == 7
    assert django_settings.CAREFLOW_APPOINTMENT_REMINDER_HOURS == 24


@pytest.mark.parametrize("status", ["created", "paused", "cancelled"])
def test_inactive_subscriptions_get_no_renewal_notice(status: str) -> None:
    SubscriptionFactory(status=status, next_cycle_date=TODAY + timedelta(days=3))
    assert upcoming_renewals_scan(now=NOW) == 0
    assert _events("subscription.upcoming_renewal") == []


def test_subscription_without_a_renewal_date_is_skipped() -> None:
    SubscriptionFactory(next_cycle_date=None)
    assert upcoming_renewals_scan(now=NOW) == 0


def test_rerunning_the_scan_fires_once_per_cycle() -> None:
    SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=5))
    assert upcoming_renewals_scan(now=NOW) == 1
    assert upcoming_renewals_scan(now=NOW) == 0
    assert upcoming_renewals_scan(now=NOW + timedelta(days=2)) == 0
    assert len(_events("subscription.upcoming_renewal")) == 1


def test_the_next_cycle_is_announced_again() -> None:
    subscription = SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=5), interval_days=30)
    assert upcoming_renewals_scan(now=NOW) == 1
    subscription_renew(subscription=subscription)  # renews on TODAY+35 now, cycle 2
    assert upcoming_renewals_scan(now=NOW) == 0
    assert upcoming_renewals_scan(now=NOW + timedelta(days=30)) == 1
    events = _events("subscription.upcoming_renewal")
    assert [e.payload["subscription"]["currentCycle"] for e in events] == [1, 2]
    assert {e.dedupe_key for e in events} == {
        f"subscription.upcoming_renewal:{subscription.pk}:cycle:1",
        f"subscription.upcoming_renewal:{subscription.pk}:cycle:2",
    }


def test_moving_the_date_within_a_cycle_does_not_announce_twice() -> None:
    subscription = SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=5))
    upcoming_renewals_scan(now=NOW)
    subscription.next_cycle_date = TODAY + timedelta(days=6)
    subscription.save()
    assert upcoming_renewals_scan(now=NOW) == 0


def test_the_window_is_the_clinics_today() -> None:
    # 02:00 UTC on June 11 is still June 10 in Los Angeles: a renewal on June 10 is today
    # there (announce), but already past for a clinic in UTC (do not).
    late = datetime(2025, 6, 11, 2, 0, tzinfo=UTC)
    west = SubscriptionFactory(
        patient__organization=OrganizationFactory(timezone="America/Los_Angeles"),
        next_cycle_date=date(2025, 6, 10),
    )
    SubscriptionFactory(
        patient__organization=OrganizationFactory(timezone="UTC"),
        next_cycle_date=date(2025, 6, 10),
    )
    assert upcoming_renewals_scan(now=late) == 1
    assert _events("subscription.upcoming_renewal")[0].subject_id == str(west.pk)


def test_a_concurrent_scan_that_already_recorded_the_event_is_not_duplicated() -> None:
    # Another beat process recorded the event and its marker was lost (e.g. restored
    # backup): the unique dedupe key still holds.
    subscription = SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=5))
    event_record(
        organization_id=subscription.organization_id,
        type="subscription.upcoming_renewal",
        payload={},
        dedupe_key=f"subscription.upcoming_renewal:{subscription.pk}:cycle:1",
    )
    assert upcoming_renewals_scan(now=NOW) == 0
    assert len(_events("subscription.upcoming_renewal")) == 1


def test_scan_works_through_more_candidates_than_a_batch() -> None:
    for _ in range(5):
        SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=1))
    SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=1), status="paused")
    assert upcoming_renewals_scan(now=NOW, batch_size=2) == 5


def test_renewal_scan_query_count_does_not_grow_per_skipped_record(
    django_assert_max_num_queries: Any,
) -> None:
    for _ in range(10):
        SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=1))
    upcoming_renewals_scan(now=NOW)
    for _ in range(10):
        SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=40))
    # Everything is announced or out of the window: one query to find nothing.
    with django_assert_max_num_queries(1):
        assert upcoming_renewals_scan(now=NOW) == 0


# --- appointment.reminder --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hours_ahead", "fires"),
    [(-1, False), (0, False), (0.1, True), (23.9, True), (24, True), (24.1, False)],
)
def test_reminder_fires_only_within_the_lead_time(hours_ahead: float, fires: bool) -> None:
    appointment = AppointmentFactory(starts_at=NOW + timedelta(hours=hours_ahead))
    assert appointment_reminders_scan(now=NOW) == int(fires)
    events = _events("appointment.reminder")
    assert len(events) == int(fires)
    if fires:
        assert events[0].subject_id == str(appointment.pk)
        assert events[0].payload["appointment"]["startsAt"] == appointment.starts_at.isoformat()


def test_reminder_lead_time_is_configurable(settings: Any) -> None:
    settings.CAREFLOW_APPOINTMENT_REMINDER_HOURS = 2
    AppointmentFactory(starts_at=NOW + timedelta(hours=3))
    assert appointment_reminders_scan(now=NOW) == 0
    assert appointment_reminders_scan(now=NOW + timedelta(hours=1)) == 1


@pytest.mark.parametrize("status", ["cancelled", "completed", "no_show"])
def test_no_reminder_for_appointments_not_going_ahead(status: str) -> None:
    AppointmentFactory(starts_at=NOW + timedelta(hours=3), status=status)
    assert appointment_reminders_scan(now=NOW) == 0


def test_confirmed_appointments_are_reminded() -> None:
    AppointmentFactory(starts_at=NOW + timedelta(hours=3), status=Appointment.Status.CONFIRMED)
    assert appointment_reminders_scan(now=NOW) == 1


def test_reminder_fires_once_and_again_after_a_reschedule() -> None:
    appointment = AppointmentFactory(starts_at=NOW + timedelta(hours=3))
    assert appointment_reminders_scan(now=NOW) == 1
    assert appointment_reminders_scan(now=NOW + timedelta(minutes=1)) == 0
    appointment.starts_at = NOW + timedelta(hours=5)
    appointment.save()
    assert appointment_reminders_scan(now=NOW) == 1
    assert appointment_reminders_scan(now=NOW) == 0
    # Moved back to the first time: it was reminded of that time already.
    appointment.starts_at = NOW + timedelta(hours=3)
    appointment.save()
    assert appointment_reminders_scan(now=NOW) == 0
    events = _events("appointment.reminder")
    assert len(events) == 2
    assert events[0].dedupe_key != events[1].dedupe_key


def test_time_triggers_scan_runs_both_and_is_idempotent() -> None:
    SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=1))
    AppointmentFactory(starts_at=NOW + timedelta(hours=1))
    expected = {"subscription.upcoming_renewal": 1, "appointment.reminder": 1}
    assert time_triggers_scan(now=NOW) == expected
    assert time_triggers_scan(now=NOW) == dict.fromkeys(expected, 0)


def test_beat_task_runs_the_scan() -> None:
    from django.utils import timezone

    AppointmentFactory(starts_at=timezone.now() + timedelta(hours=1))
    assert tasks.time_triggers_scan() == {
        "subscription.upcoming_renewal": 0,
        "appointment.reminder": 1,
    }
    assert tasks.time_triggers_scan()["appointment.reminder"] == 0


def test_beat_schedule_and_route() -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["time-triggers-scan"]
    assert entry["task"] == "workflows.tasks.time_triggers_scan"
    assert entry["schedule"] == 60.0
    assert django_settings.CELERY_TASK_ROUTES["workflows.tasks.time_triggers_scan"] == {
        "queue": "events"
    }


def test_scan_uses_the_partial_indexes() -> None:
    names = {index.name for index in Subscription._meta.indexes} | {
        index.name for index in Appointment._meta.indexes
    }
    assert {"subscription_renewal_due", "appointment_upcoming"} <= names
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, Appointment._meta.db_table)
    assert indexes["appointment_upcoming"]["columns"] == ["starts_at"]


# --- two beat processes at once --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_worker")  # its beat would scan too
def test_two_scans_racing_record_each_event_once() -> None:
    for hours in (1, 2, 3):
        AppointmentFactory(starts_at=NOW + timedelta(hours=hours))
    for days in (1, 2):
        SubscriptionFactory(next_cycle_date=TODAY + timedelta(days=days))
    barrier = threading.Barrier(2)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def scan() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(time_triggers_scan(now=NOW))
        except BaseException as exc:  # noqa: BLE001 — reported by the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=scan) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    assert sum(r["appointment.reminder"] for r in results) == 3
    assert sum(r["subscription.upcoming_renewal"] for r in results) == 2
    assert len(_events("appointment.reminder")) == 3
    assert len(_events("subscription.upcoming_renewal")) == 2
