"""Broadcasts: one message to every member of a segment, through the workflows' send path.

A broadcast's messages are ordinary OutboundMessage rows, so every send-time check (consent
by purpose, opt-outs, quiet hours in the recipient's zone, caps, the approved sender,
first-contact wording, short links), the per-sender throttle and the exactly-once guarantee
(the UNIQUE idempotency key makes the row, a conditional UPDATE claims it, an ambiguous
outcome is reconciled) are the very ones a workflow's messages go through
(integrations.sending). What is broadcast-specific is only the production and the pacing:

- `broadcast_advance` makes the next batch of members' messages (members streamed by primary
  key after the broadcast's cursor, never the whole segment in memory), inserted at once with
  ON CONFLICT DO NOTHING on the key `broadcast:<broadcast uuid>:<patient uuid>`, so a batch
  made again after a crash writes nothing twice. The broadcast row is locked meanwhile and
  the cursor moves in the same transaction: two workers never make the same batch.
- It stops making messages while more than `CAREFLOW_BROADCAST_AHEAD_SECONDS` of sending at
  the sender's rate is already waiting, so memory, the queue and a cancel stay small
  whatever the segment's size.
- `broadcast_messages_send` sends a list of messages, each through `message_deliver`, waiting
  for the sender's throttle to have room before each (the slot it then reserves is at most
  the inline wait away), so one task sends many messages at the sender's rate.
- A message deferred (quiet hours, a retry after a 429, a slot taken by another sender)
  stays pending with its `next_attempt_at`; `broadcast_messages_due` (beat) hands the due
  ones back in batches. Nothing waits in a broker ETA.
"""

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from integrations.messaging import transport_get
from integrations.models import Broadcast, Integration, OutboundMessage
from integrations.sending import INLINE_WAIT_SECONDS, message_build, message_deliver
from integrations.throttle import throttle_backlog
from patients.consent import consent_history_prefetch
from patients.models import ConsentRecord, Organization, Patient
from patients.payloads import customer_payload
from patients.zones import patient_zone
from workflows.adapters import REGISTRY, Function, Outcome, StepContext
from workflows.builder import approved_senders
from workflows.filters import FilterError
from workflows.segments import segment_patients
from workflows.steps import StepConfigError, adapter_inputs_render
from workflows.validation import workflow_validate
from workflows.variants import step_language

logger = logging.getLogger(__name__)

State = Broadcast.Status
Status = OutboundMessage.Status

# Templates are checked against this event's data: a broadcast's data is its recipient's
# customer object, as in a customer.signup workflow.
DATA_EVENT = "customer.signup"
# The recipient parameter of a function, by its channel: always the member.
RECIPIENT = {"sms": "{{customer.phone}}", "email": "{{customer.email}}"}
# What a member without that address is skipped for.
NO_RECIPIENT = {"sms": "the patient has no phone number", "email": "the patient has no email"}
CANCELLED_REASON = "broadcast cancelled"
# Messages still to be settled: a broadcast is complete when none of its messages is.
UNSETTLED = (Status.PENDING, Status.SENDING, Status.UNKNOWN)


class BroadcastError(ValueError):
    """What stops a broadcast from being started or changed, in words for the admin."""


def broadcast_functions() -> list[tuple[str, Function]]:
    """The adapter functions a broadcast can send ("<adapter>.<function>"): those that
    message a patient on a channel a broadcast knows the recipient of."""
    return [
        (f"{adapter.name}.{function.name}", function)
        for adapter in REGISTRY.values()
        for function in adapter.functions.values()
        if function.messages_patient and function.channel in RECIPIENT
    ]


def broadcast_function(broadcast: Broadcast) -> Function | None:
    return dict(broadcast_functions()).get(broadcast.function)


def broadcast_step(broadcast: Broadcast) -> dict[str, Any]:
    """The broadcast's message as a workflow's adapter step holds it, its recipient the
    member: what validation, rendering and previews take."""
    function = broadcast_function(broadcast)
    channel = function.channel if function is not None else ""
    return {
        "type": "adapter",
        "adapter": broadcast.adapter_name,
        "function": broadcast.function_name,
        "purpose": broadcast.purpose,
        "parameters": {**broadcast.parameters, "to": RECIPIENT.get(channel, "")},
    }


def broadcast_integration(*, organization: Organization, adapter: str) -> Integration | None:
    """The clinic's enabled integration of `adapter` (the first, if there are several)."""
    return (
        Integration.objects.filter(organization=organization, adapter=adapter, enabled=True)
        .order_by("pk")
        .first()
    )


def broadcast_problems(*, broadcast: Broadcast) -> dict[str, list[str]]:
    """Everything wrong with a broadcast's message, by parameter, exactly as a workflow step
    with these parameters is checked at save time (required values, template syntax and
    variables, each language variant, a literal sender one of the clinic's approved ones)."""
    if broadcast_function(broadcast) is None:
        return {"function": [f"{broadcast.function!r} cannot be broadcast"]}
    report = workflow_validate(
        trigger=DATA_EVENT,
        filter={},
        steps=[broadcast_step(broadcast)],
        senders=approved_senders(broadcast.organization),
    )
    problems = report.steps.get(0, {})
    if broadcast.purpose not in ConsentRecord.Purpose.values:
        problems.setdefault("purpose", []).append("choose a consent purpose")
    try:
        if broadcast.segment_id is not None:  # a form still being filled in may have none
            segment_patients(segment=broadcast.segment)
    except FilterError as exc:
        # Saved before a field it names was withdrawn, or written around the admin's checks.
        problems.setdefault("segment", []).append(f"fix the segment's filter first: {exc}")
    return problems


def broadcast_recipients(*, broadcast: Broadcast) -> int:
    """How many members the segment has now (none while its filter cannot be used:
    broadcast_problems says why)."""
    try:
        return segment_patients(segment=broadcast.segment).count()
    except FilterError:
        return 0


def broadcast_rate(*, broadcast: Broadcast) -> float | None:
    """The sender's rate (units per second, e.g. SMS segments), None when unthrottled."""
    shaped = _throttle(broadcast)
    return shaped[1] if shaped is not None else None


def _throttle(broadcast: Broadcast) -> tuple[str, float] | None:
    """The sender's throttle key and rate, as a message of this broadcast would have them."""
    function = broadcast_function(broadcast)
    sender = str(broadcast.parameters.get(function.sender_parameter, "")) if function else ""
    probe = OutboundMessage(
        organization=broadcast.organization,
        integration=broadcast.integration,
        from_number=sender.strip(),
    )
    try:
        return transport_get(broadcast.integration.adapter).throttle(probe)
    except (LookupError, ValueError):
        return None


def broadcast_start(
    *, broadcast: Broadcast, at: datetime | None = None, user: AbstractBaseUser | AnonymousUser
) -> Broadcast:
    """Send a draft now (`at` None or past) or schedule it for `at`. Refused (BroadcastError)
    unless it is a draft whose message passes the save-time checks; a second start of the
    same draft changes nothing (the conditional UPDATE from draft)."""
    problems = broadcast_problems(broadcast=broadcast)
    if problems:
        raise BroadcastError(
            "fix the message first: " + "; ".join(p for ps in problems.values() for p in ps)
        )
    now = timezone.now()
    scheduled = at is not None and at > now
    fields: dict[str, Any] = {
        "status": State.SCHEDULED if scheduled else State.SENDING,
        "scheduled_at": at if scheduled else now,
        "recipients": broadcast_recipients(broadcast=broadcast),
        "updated_at": now,
    }
    if not scheduled:
        fields["started_at"] = now
    if getattr(user, "pk", None) and broadcast.created_by_id is None:
        fields["created_by"] = user
    started = Broadcast.objects.filter(pk=broadcast.pk, status=State.DRAFT).update(**fields)
    broadcast.refresh_from_db()
    if not started:
        raise BroadcastError(f"this broadcast is {broadcast.get_status_display().lower()}")
    return broadcast


def broadcast_cancel(*, broadcast_id: int) -> bool:
    """Stop a scheduled or sending broadcast: no more messages are made, and those not yet
    claimed for sending are skipped ("broadcast cancelled"); one being sent finishes (its
    outcome is recorded honestly). False if it was not scheduled or sending."""
    now = timezone.now()
    with transaction.atomic():
        cancelled = Broadcast.objects.filter(
            pk=broadcast_id, status__in=[State.SCHEDULED, State.SENDING]
        ).update(status=State.CANCELLED, cancelled_at=now, updated_at=now)
        if cancelled:
            OutboundMessage.objects.filter(broadcast_id=broadcast_id, status=Status.PENDING).update(
                status=Status.SKIPPED,
                skip_reason=CANCELLED_REASON,
                next_attempt_at=None,
                updated_at=now,
            )
    return bool(cancelled)


@dataclass
class Advance:
    """What one step of production did: the messages made ready to send, and whether (and in
    how many seconds) production should run again."""

    message_ids: list[int] = field(default_factory=list)
    again_in: float | None = None


def broadcast_advance(*, broadcast_id: int) -> Advance:
    """Make the next batch of the broadcast's messages, unless enough are already waiting to
    be sent. Safe to run twice and concurrently: the broadcast's row is locked (a second
    runner skips it) and its cursor moves with the batch, whose keys make a re-made message
    a no-op."""
    now = timezone.now()
    with transaction.atomic():
        broadcast = (
            Broadcast.objects.select_for_update(skip_locked=True)
            .select_related("organization", "segment", "integration")
            .filter(pk=broadcast_id, status=State.SENDING, produced_at__isnull=True)
            .first()
        )
        if broadcast is None:  # another runner has it, or it is cancelled or made
            return Advance()
        broadcast.advanced_at = now
        wait = _ahead_wait(broadcast, now)
        if wait > 0:
            broadcast.save(update_fields=["advanced_at"])
            return Advance(again_in=wait)
        members = list(
            segment_patients(segment=broadcast.segment)
            .filter(pk__gt=broadcast.cursor)
            .select_related("organization")
            .prefetch_related(consent_history_prefetch())
            .order_by("pk")[: settings.CAREFLOW_BROADCAST_BATCH]
        )
        if not members:
            broadcast.produced_at = now
            broadcast.save(update_fields=["advanced_at", "produced_at"])
            return Advance()
        messages = _messages_make(broadcast, members)
        OutboundMessage.objects.bulk_create(messages, ignore_conflicts=True)
        broadcast.cursor = members[-1].pk
        broadcast.save(update_fields=["advanced_at", "cursor"])
    keys = [message.idempotency_key for message in messages]
    ready = list(
        OutboundMessage.objects.filter(
            idempotency_key__in=keys, status=Status.PENDING, next_attempt_at__isnull=True
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return Advance(message_ids=ready, again_in=0.0)


def _ahead_wait(broadcast: Broadcast, now: datetime) -> float:
    """Seconds to wait before making more messages: while more than AHEAD_SECONDS of sending
    at the sender's rate is waiting (made and not yet sent, or reserved at the throttle),
    making more would only fill memory and the queue, and slow a cancel."""
    ahead = settings.CAREFLOW_BROADCAST_AHEAD_SECONDS
    shaped = _throttle(broadcast)
    rate = shaped[1] if shaped is not None else None
    if rate is None:  # unthrottled: keep a couple of batches in flight
        limit = 2 * settings.CAREFLOW_BROADCAST_BATCH
        waiting = _waiting(broadcast, now)
        return 1.0 if waiting > limit else 0.0
    try:
        backlog = throttle_backlog(key=shaped[0]) if shaped is not None else 0.0
    except redis.RedisError:
        backlog = 0.0
    queued = backlog + _waiting(broadcast, now) / rate
    if queued <= ahead:
        return 0.0
    return min(max(queued - ahead / 2, 0.5), ahead)


def _waiting(broadcast: Broadcast, now: datetime) -> int:
    """Messages made and not sent yet that are due within a minute (those deferred for hours
    by quiet hours do not hold production up)."""
    return OutboundMessage.objects.filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + timedelta(minutes=1)),
        broadcast=broadcast,
        status=Status.PENDING,
    ).count()


def _data(patient: Patient) -> dict[str, Any]:
    payload = {"customer": customer_payload(patient)}
    return {**payload, "trigger": payload, "history": {}}


def _messages_make(broadcast: Broadcast, members: Sequence[Patient]) -> list[OutboundMessage]:
    """Each member's message, rendered in their language and zone, as the adapter makes a
    workflow step's (`Adapter.message_fields`); one that cannot be made (no phone number, a
    template that cannot be filled in) is recorded skipped or failed with the reason."""
    step = broadcast_step(broadcast)
    adapter = REGISTRY[broadcast.adapter_name]
    organization = broadcast.organization
    channel = broadcast_function(broadcast).channel  # type: ignore[union-attr]
    memo: dict[Any, Any] = {}
    messages = []
    for patient in members:
        language = step_language(step["parameters"], patient=patient, organization=organization)
        inputs: dict[str, str] = {}
        key = f"broadcast:{broadcast.uuid}:{patient.uuid}"
        context = StepContext(
            organization=organization,
            idempotency_key=key,
            inputs=inputs,
            purpose=broadcast.purpose,
            patient=patient,
            is_test=patient.is_test,
            language=language,
            memo=memo,
        )
        try:
            adapter_inputs_render(
                step,
                _data(patient),
                into=inputs,
                tz=patient_zone(patient, organization),
                language=language,
            )
            made: dict[str, Any] | Outcome = adapter.message_fields(
                broadcast.function_name, context=context
            )
        except StepConfigError as exc:
            # Only an empty address fails to fill in the recipient: nobody to send to.
            made = (
                Outcome("skipped", reason=NO_RECIPIENT[channel])
                if exc.field == "to"
                else Outcome("failed", reason=str(exc))
            )
        if isinstance(made, Outcome):
            messages.append(_message_not_made(broadcast, patient, key, inputs, made))
            continue
        message = message_build(
            idempotency_key=key,
            organization=organization,
            purpose=broadcast.purpose,
            language=language,
            is_test=patient.is_test,
            **made,
        )
        message.broadcast = broadcast
        messages.append(message)
    return messages


def _message_not_made(
    broadcast: Broadcast, patient: Patient, key: str, inputs: dict[str, str], outcome: Outcome
) -> OutboundMessage:
    """The record of a member no message could be made for, counted with the others."""
    message = message_build(
        idempotency_key=key,
        organization=broadcast.organization,
        integration=broadcast.integration,
        purpose=broadcast.purpose,
        patient=patient,
        to=inputs.get("to", "")[:254],
        body="",
        channel=broadcast_function(broadcast).channel,  # type: ignore[union-attr]
    )
    message.broadcast = broadcast
    if outcome.status == "skipped":
        message.status, message.skip_reason = Status.SKIPPED, outcome.reason[:200]
    else:
        message.status, message.error_message = Status.FAILED, outcome.reason
    return message


def broadcast_messages_send(*, message_ids: Iterable[int]) -> int:
    """Send these messages of broadcasts, each through `message_deliver` (the send-time
    checks, the claim, the provider, reconciliation), at the sender's rate; returns how many
    were accepted by the provider. Stops early when their broadcast is cancelled."""
    ids = sorted(set(message_ids))
    sent = 0
    chunk = settings.CAREFLOW_BROADCAST_SEND_CHUNK
    for start in range(0, len(ids), chunk):
        messages = list(
            OutboundMessage.objects.filter(pk__in=ids[start : start + chunk])
            .filter(status__in=UNSETTLED)
            .exclude(broadcast__status=State.CANCELLED)
            .select_related("integration", "patient", "organization")
            .prefetch_related(consent_history_prefetch_for_messages())
            .order_by("pk")
        )
        if not messages:
            continue
        for message in messages:
            _throttle_room(message)
            if message_deliver(message).status in (Status.SENT, Status.DELIVERED):
                sent += 1
    return sent


def consent_history_prefetch_for_messages() -> Any:
    """Each message's patient's consent history, read once for the chunk."""
    prefetch = consent_history_prefetch()
    prefetch.add_prefix("patient")
    return prefetch


def _throttle_room(message: OutboundMessage) -> None:
    """Wait until the sender's throttle has room for this message within the inline wait, so
    the slot `message_deliver` reserves is near and the message goes now (instead of every
    message of the list reserving a slot far ahead and coming back later). A message with a
    slot reserved already goes at its slot."""
    if message.slot_at is not None or message.status != Status.PENDING:
        return
    shaped = transport_get(message.integration.adapter).throttle(message)
    if shaped is None:
        return
    try:
        backlog = throttle_backlog(key=shaped[0])
    except redis.RedisError:
        return  # message_deliver defers it, as it does any message while Redis is away
    if backlog > INLINE_WAIT_SECONDS:
        time.sleep(backlog - INLINE_WAIT_SECONDS / 2)


def broadcast_messages_due(*, limit: int | None = None) -> list[int]:
    """Claim the broadcast messages due again (deferred by quiet hours, waiting for a retry or
    a reconciliation, or made and never handed on: a lost task) and return their ids for
    sending, or whose sending worker died mid-call) and return their ids for sending.
    Claimed with SKIP LOCKED, pending ones by moving `next_attempt_at` off them (NULL: "due
    now"), so two sweeps do not hand on the same message; and were one handed on twice,
    `message_deliver`'s conditional claim still sends it once."""
    now = timezone.now()
    batch = limit or settings.CAREFLOW_BROADCAST_BATCH
    lost = now - timedelta(seconds=settings.CAREFLOW_BROADCAST_LOST_AFTER_SECONDS)
    with transaction.atomic():
        due = list(
            OutboundMessage.objects.select_for_update(skip_locked=True)
            .filter(broadcast__isnull=False)
            .filter(
                Q(next_attempt_at__lte=now, status__in=[Status.PENDING, Status.UNKNOWN])
                | Q(next_attempt_at__isnull=True, status=Status.PENDING, updated_at__lte=lost)
                # A worker died mid-call: message_deliver makes it "unknown" and reconciles.
                | Q(status=Status.SENDING, sending_started_at__lte=lost)
            )
            .order_by("pk")
            .values_list("pk", "status")[:batch]
        )
        if not due:
            return []
        pending = [pk for pk, status in due if status == Status.PENDING]
        OutboundMessage.objects.filter(pk__in=pending).update(next_attempt_at=None, updated_at=now)
    return [pk for pk, _ in due]


def broadcasts_due(*, now: datetime | None = None) -> list[int]:
    """Beat: start the scheduled broadcasts whose time has come, finish those whose every
    message is settled, and return the ids of those whose production should run (started
    now, or stopped for longer than it ever pauses: a lost task)."""
    now = now or timezone.now()
    Broadcast.objects.filter(status=State.SCHEDULED, scheduled_at__lte=now).update(
        status=State.SENDING, started_at=now, updated_at=now
    )
    made = Broadcast.objects.filter(status=State.SENDING, produced_at__isnull=False)
    for broadcast_id in made.values_list("pk", flat=True):
        unsettled = OutboundMessage.objects.filter(
            broadcast_id=broadcast_id, status__in=UNSETTLED
        ).exists()
        if not unsettled:
            Broadcast.objects.filter(pk=broadcast_id, status=State.SENDING).update(
                status=State.COMPLETED, finished_at=now, updated_at=now
            )
    stalled = now - timedelta(seconds=2 * settings.CAREFLOW_BROADCAST_AHEAD_SECONDS + 10)
    return list(
        Broadcast.objects.filter(status=State.SENDING, produced_at__isnull=True)
        .filter(Q(advanced_at__isnull=True) | Q(advanced_at__lte=stalled))
        .values_list("pk", flat=True)
    )


def broadcast_progress(*, broadcast: Broadcast) -> dict[str, Any]:
    """Where the broadcast stands: its state, the members made so far, and its messages by
    status and skip reason (one GROUP BY over the broadcast's index)."""
    rows = (
        OutboundMessage.objects.filter(broadcast=broadcast)
        .order_by()
        .values_list("status", "skip_reason")
        .annotate(n=Count("*"))
    )
    by_status: dict[str, int] = {}
    skipped: dict[str, int] = {}
    for status, reason, count in rows:
        by_status[status] = by_status.get(status, 0) + count
        if status == Status.SKIPPED:
            skipped[reason or "no reason recorded"] = count
    made = sum(by_status.values())
    queued = sum(by_status.get(s, 0) for s in UNSETTLED)
    sent = sum(by_status.get(s, 0) for s in (Status.SENT, Status.DELIVERED))
    failed = sum(by_status.get(s, 0) for s in (Status.FAILED, Status.UNDELIVERED))
    return {
        "status": broadcast.status,
        "statusLabel": broadcast.get_status_display(),
        "recipients": broadcast.recipients,
        "made": made,
        "queued": queued,
        "sent": sent,
        "delivered": by_status.get(Status.DELIVERED, 0),
        "skipped": by_status.get(Status.SKIPPED, 0),
        "failed": failed,
        "skippedByReason": dict(sorted(skipped.items(), key=lambda item: -item[1])),
        "done": broadcast.status in (State.COMPLETED, State.CANCELLED),
    }
