"""Celery tasks: thin, id-taking, safe to run twice. The logic is in workflows.engine."""

from datetime import timedelta
from typing import Any

from celery import current_app, shared_task
from django.conf import settings
from django.utils import timezone
from kombu import Queue
from kombu.exceptions import ChannelError, KombuError

from workflows import engine, scans
from workflows.models import Run
from workflows.publishing import DISPATCH_BATCH, events_wake
from workflows.selectors import run_waiting_message
from workflows.waiting import events_waiting_count, events_waiting_take

# The send queue's task (integrations.tasks.message_send), registered by
# IntegrationsConfig.ready(): integrations sits above the engine and imports it, so the
# engine names the task it hands a waiting message to without importing it.
_message_send_task: list[Any] = []


def message_send_task_register(task: Any) -> None:
    """Name the task that sends a message at its time (called once, at app loading)."""
    _message_send_task[:] = [task]


# A wait shorter than this is also handed to the broker as an ETA for promptness; longer
# waits are left to the beat sweeper alone (a long ETA on Redis would be redelivered).
SHORT_WAIT = timedelta(seconds=60)


# Runs of one event advanced in the dispatching task itself: the common case (an event that
# starts one run whose SMS goes out at once) then costs no task of its own.
INLINE_RUNS = 3
# A worker woken for the waiting events takes at most this many batches, then leaves the
# rest to a fresh wake-up (so a long backlog does not hold one task for minutes).
WAKE_BATCHES = 50


# Acknowledged when a worker takes it, not when it is done: the events' state is in the
# database (a worker dying mid-batch leaves its events to the relay and its runs to their
# leases), so a redelivery would add nothing.
@shared_task(acks_late=False)
def events_dispatch(event_ids: list[int] | None = None) -> None:
    """Dispatch these events (the relay's, or one published without the shared Redis); with
    none, the events waiting (workflows.publishing.events_publish), a batch at a time until fewer
    than a full batch were left."""
    if event_ids is not None:
        _dispatch(event_ids)
        return
    for _ in range(WAKE_BATCHES):
        event_ids = events_waiting_take(DISPATCH_BATCH)
        if event_ids:
            _dispatch(event_ids)
        if len(event_ids) < DISPATCH_BATCH:
            return
    events_wake()


def _dispatch(event_ids: list[int]) -> None:
    """Dispatch a batch of events, advance their first runs here and queue the others."""
    _, runs = engine.events_dispatch(event_ids=event_ids, claim_per_event=INLINE_RUNS)
    inline = [run for run in runs if run.status == Run.Status.RUNNING]
    for run in runs:
        if run.status == Run.Status.PENDING:
            run_advance.delay(run.pk)
    for run in engine.runs_continue(runs=inline):
        _after_advance(run)


@shared_task
def run_advance(run_id: int) -> None:
    try:
        run = engine.run_advance(run_id=run_id)
    except Run.DoesNotExist:
        return
    _after_advance(run)


def _after_advance(run: Run | None) -> None:
    if (
        run is None
        or run.status != Run.Status.WAITING
        or run.due_at is None
        or run.due_at - timezone.now() > SHORT_WAIT
    ):
        return  # finished, or a long wait: the sweeper resumes it when due
    message_id = run_waiting_message(run=run)
    if message_id is not None:
        # The run waits on an SMS (throttle slot, retry, reconciliation): the send queue
        # sends it at its time and then wakes the run.
        _message_send_task[0].apply_async((message_id,), eta=run.due_at)
    else:
        run_advance.apply_async((run.pk,), eta=run.due_at)


def _queued(queue: str) -> int:
    """Tasks waiting in this broker queue (not those a worker has taken); 0 when the broker
    cannot say, so the relay then relays as if nothing were queued."""
    try:
        with current_app.connection_for_read() as connection:
            # kombu's stubs say str; a passive declare answers (name, messages, consumers).
            declared: Any = Queue(queue, channel=connection.default_channel).queue_declare(
                passive=True
            )
    except (OSError, KombuError, ChannelError):  # no such queue yet, or no broker
        return 0
    return int(declared.message_count)


@shared_task
def events_relay() -> int:
    # Events waiting in the list are as good as queued, provided a wake-up is queued for them
    # (its publish may have failed, or its task been lost when the flag expired).
    waiting = events_waiting_count()
    if waiting:
        events_wake()
    event_ids = engine.events_undispatched(queued=_queued("events") + waiting)
    for start in range(0, len(event_ids), DISPATCH_BATCH):
        events_dispatch.delay(event_ids[start : start + DISPATCH_BATCH])
    return len(event_ids)


@shared_task
def runs_sweep() -> int:
    now = timezone.now()
    due = engine.runs_due(
        lookahead=timedelta(seconds=settings.CELERY_BEAT_SCHEDULE["runs-sweep"]["schedule"])
    )
    for run_id, due_at in due:
        if due_at is not None and due_at > now:
            run_advance.apply_async((run_id,), eta=due_at)
        else:
            run_advance.delay(run_id)
    return len(due)


@shared_task
def time_triggers_scan() -> dict[str, int]:
    """Record the time-based events that are due (upcoming renewals, appointment reminders)."""
    return scans.time_triggers_scan()


# Forwarders under the tasks' former wire names, so that a task queued before a deploy (in
# Redis, as an ETA, or sent by a beat still running the previous release) still runs. They
# carry their task's options (routing is by name: config.settings.CELERY_TASK_ROUTES keeps
# both names). Remove them in the release after the one that renamed the tasks, once no
# broker or beat can hold the old names.
@shared_task(name="workflows.tasks.dispatch_events", acks_late=False)
def _dispatch_events_forward(event_ids: list[int] | None = None) -> None:
    events_dispatch(event_ids)


@shared_task(name="workflows.tasks.advance_run")
def _advance_run_forward(run_id: int) -> None:
    run_advance(run_id)


@shared_task(name="workflows.tasks.relay_events")
def _relay_events_forward() -> int:
    return events_relay()


@shared_task(name="workflows.tasks.sweep_runs")
def _sweep_runs_forward() -> int:
    return runs_sweep()


@shared_task(name="workflows.tasks.scan_time_triggers")
def _scan_time_triggers_forward() -> dict[str, int]:
    return time_triggers_scan()
