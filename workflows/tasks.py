"""Celery tasks: thin, id-taking, safe to run twice. The logic is in workflows.engine."""

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from workflows.engine import event_dispatch, events_undispatched, run_advance, runs_due
from workflows.models import Event, Run

# A wait shorter than this is also handed to the broker as an ETA for promptness; longer
# waits are left to the beat sweeper alone (a long ETA on Redis would be redelivered).
SHORT_WAIT = timedelta(seconds=60)


@shared_task
def dispatch_event(event_id: int) -> None:
    try:
        run_ids = event_dispatch(event_id=event_id)
    except Event.DoesNotExist:
        return
    for run_id in run_ids:
        advance_run.delay(run_id)


@shared_task
def advance_run(run_id: int) -> None:
    try:
        run = run_advance(run_id=run_id)
    except Run.DoesNotExist:
        return
    if (
        run is not None
        and run.status == Run.Status.WAITING
        and run.due_at is not None
        and run.due_at - timezone.now() <= SHORT_WAIT
    ):
        advance_run.apply_async((run_id,), eta=run.due_at)


@shared_task
def relay_events() -> int:
    event_ids = events_undispatched()
    for event_id in event_ids:
        dispatch_event.delay(event_id)
    return len(event_ids)


@shared_task
def sweep_runs() -> int:
    run_ids = runs_due()
    for run_id in run_ids:
        advance_run.delay(run_id)
    return len(run_ids)


@shared_task
def scan_time_triggers() -> dict[str, int]:
    """Record the time-based events that are due (upcoming renewals, appointment reminders)."""
    from workflows.scans import time_triggers_scan

    return time_triggers_scan()
