"""Celery tasks of the send queue: thin, id-taking, safe to run twice."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import OperationalError
from django.utils import timezone

from integrations import alerts, analytics, broadcasts, retention, sending
from integrations.api import idempotency as api_idempotency
from integrations.models import OutboundMessage
from workflows.engine import run_wake
from workflows.tasks import run_advance

logger = logging.getLogger(__name__)
Status = OutboundMessage.Status
UNSETTLED = (Status.PENDING, Status.SENDING, Status.UNKNOWN)
# Longer waits are never held as broker ETAs (Redis would redeliver them); the run's due
# time, swept by beat, brings them back.
SHORT_WAIT = timedelta(seconds=60)


@shared_task
def message_send(message_id: int) -> None:
    """Send (or reconcile) one message at its time, then wake the run that waits on it."""
    try:
        message = sending.message_send(message_id=message_id)
    except OutboundMessage.DoesNotExist:
        return
    if message.step_run_id is None:
        return
    if message.status in UNSETTLED:
        # Not settled yet (a retry after a 429, a reconciliation): come back at its time;
        # the run's own due time is the durable fallback.
        due = message.next_attempt_at
        if due is not None and due - timezone.now() <= SHORT_WAIT:
            message_send.apply_async((message_id,), eta=due)
        return
    run_id = message.step_run.run_id  # type: ignore[union-attr]
    run_wake(run_id=run_id)
    run_advance.delay(run_id)


@shared_task
def sent_messages_reconcile() -> int:
    """Beat: settle messages whose final status callback never came (see the service)."""
    return sending.sent_messages_reconcile()


@shared_task
def idempotency_records_purge() -> int:
    """Beat: forget API idempotency outcomes older than a day (a retry comes within minutes)."""
    return api_idempotency.idempotency_records_purge()


@shared_task
def retention_apply() -> int:
    """Beat, daily with CAREFLOW_RETENTION_DAILY: delete what the clinics keep no longer
    (see the service); safe to overlap (rows are taken with SKIP LOCKED)."""
    return sum(sum(r.counts.values()) for r in retention.retention_apply())


@shared_task
def alerts_evaluate() -> int:
    """Beat: raise the failure alerts due and queue their deliveries (see the service)."""
    return len(alerts.alerts_evaluate())


@shared_task
def alert_deliver(alert_id: int) -> None:
    """Deliver one alert; a failed attempt comes back after its backoff (soon: as an ETA;
    later: through the beat sweep of `next_attempt_at`)."""
    alert = alerts.alert_deliver(alert_id=alert_id)
    due = alert.next_attempt_at if alert is not None else None
    if due is not None and due - timezone.now() <= alerts.SHORT_WAIT:
        alert_deliver.apply_async((alert_id,), eta=due)


# A beat run stops after this many batches, so one run stays short; the next goes on.
ROLL_UP_BATCHES = 20


@shared_task
def message_counts_roll_up() -> int:
    """Beat: bring workflow analytics' hourly message counts up to date (see the service);
    safe to overlap (messages are claimed with SKIP LOCKED)."""
    total = 0
    for _ in range(ROLL_UP_BATCHES):
        try:
            done = analytics.message_counts_roll_up()
        except OperationalError:
            # It gave way to a lock (see the service): the next run goes on from here.
            logger.info("message counts roll-up gave way to a lock after %s messages", total)
            break
        total += done
        if done < analytics.ROLL_UP_BATCH:
            break
    return total


@shared_task
def broadcast_advance(broadcast_id: int) -> None:
    """Make the broadcast's next batch of messages and hand them to sending in lists; come
    back soon (a short countdown: the beat sweep restarts a chain that was lost)."""
    advance = broadcasts.broadcast_advance(broadcast_id=broadcast_id)
    _broadcast_messages_hand_on(advance.message_ids)
    if advance.again_in is not None:
        broadcast_advance.apply_async((broadcast_id,), countdown=advance.again_in)


def _broadcast_messages_hand_on(message_ids: list[int]) -> None:
    chunk = settings.CAREFLOW_BROADCAST_SEND_CHUNK
    for start in range(0, len(message_ids), chunk):
        broadcast_messages_send.delay(message_ids[start : start + chunk])


@shared_task
def broadcast_messages_send(message_ids: list[int]) -> int:
    """Send a list of broadcast messages at their sender's rate (see the service)."""
    return broadcasts.broadcast_messages_send(message_ids=message_ids)


# A beat run hands on at most this many batches of due messages; the next run goes on.
BROADCAST_DUE_BATCHES = 10


@shared_task
def broadcasts_sweep() -> int:
    """Beat: start due broadcasts, finish settled ones, restart stopped production, and hand
    on the broadcast messages due again (deferred, retried, reconciled)."""
    for broadcast_id in broadcasts.broadcasts_due():
        broadcast_advance.delay(broadcast_id)
    handed = 0
    for _ in range(BROADCAST_DUE_BATCHES):
        due = broadcasts.broadcast_messages_due()
        _broadcast_messages_hand_on(due)
        handed += len(due)
        if len(due) < settings.CAREFLOW_BROADCAST_BATCH:
            break
    return handed


# Forwarders under the tasks' former wire names, so that a message queued before a deploy (in
# Redis, as a retry's ETA, or sent by a beat still running the previous release) is still
# sent. Routing is by name: config.settings.CELERY_TASK_ROUTES sends both names to "sends".
# Remove them in the release after the one that renamed the tasks.
@shared_task(name="integrations.tasks.send_message")
def _send_message_forward(message_id: int) -> None:
    message_send(message_id)


@shared_task(name="integrations.tasks.reconcile_sent_messages")
def _reconcile_sent_messages_forward() -> int:
    return sent_messages_reconcile()
