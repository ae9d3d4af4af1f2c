"""Celery tasks of the send queue: thin, id-taking, safe to run twice."""

from datetime import timedelta

from celery import shared_task
from django.utils import timezone

from integrations.models import OutboundMessage
from integrations.sending import message_send, sent_messages_reconcile
from workflows.engine import run_wake
from workflows.tasks import advance_run

Status = OutboundMessage.Status
UNSETTLED = (Status.PENDING, Status.SENDING, Status.UNKNOWN)
# Longer waits are never held as broker ETAs (Redis would redeliver them); the run's due
# time, swept by beat, brings them back.
SHORT_WAIT = timedelta(seconds=60)


@shared_task
def send_message(message_id: int) -> None:
    """Send (or reconcile) one message at its time, then wake the run that waits on it."""
    try:
        message = message_send(message_id=message_id)
    except OutboundMessage.DoesNotExist:
        return
    if message.step_run_id is None:
        return
    if message.status in UNSETTLED:
        # Not settled yet (a retry after a 429, a reconciliation): come back at its time;
        # the run's own due time is the durable fallback.
        due = message.next_attempt_at
        if due is not None and due - timezone.now() <= SHORT_WAIT:
            send_message.apply_async((message_id,), eta=due)
        return
    run_id = message.step_run.run_id  # type: ignore[union-attr]
    run_wake(run_id=run_id)
    advance_run.delay(run_id)


@shared_task
def reconcile_sent_messages() -> int:
    """Beat: settle messages whose final status callback never came (see the service)."""
    return sent_messages_reconcile()
