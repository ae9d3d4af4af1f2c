"""Outbound messages: create the message row first, then claim it, decide, and hand it to
the provider's transport (integrations.messaging) once.

Providers need not have an idempotency key for sends and Celery delivers at least once, so
exactly-once rests on our database: the UNIQUE idempotency key makes the row, a conditional
UPDATE (pending → sending) makes the claim, and an ambiguous outcome becomes `unknown`, which
is reconciled by looking the message up at the provider before anything is sent again.
"""

import logging
import time
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from common.db import insert_or_get, rows_update
from common.retry import retry_delay
from integrations.first_contact import (
    ClinicWording,
    first_contact_fields,
    first_contact_lock,
    message_wording,
)
from integrations.messaging import (
    Ambiguous,
    Found,
    LookupRefused,
    Refused,
    Transport,
    body_measure,
    transport_get,
)
from integrations.models import Integration, OutboundMessage
from integrations.policy import send_decide, send_needs_lock
from integrations.short_links import link_may_shorten, short_links_fields
from integrations.throttle import SLOT_MISSED_AFTER, throttle_reserve
from patients.consent import CONSENT_HISTORY
from patients.models import ConsentRecord, Organization, Patient

logger = logging.getLogger(__name__)

Status = OutboundMessage.Status

# How long after an ambiguous attempt we look the message up at the provider, and how long
# a message must be missing there before we conclude it was never accepted and send again.
RECONCILE_AFTER = timedelta(seconds=15)
RECONCILE_GRACE = timedelta(minutes=2)
# Failed look-ups back off from RECONCILE_AFTER, doubling, to at most this.
RECONCILE_BACKOFF_MAX = timedelta(hours=1)


def _message_defaults(
    *,
    organization: Organization,
    integration: Integration,
    to: str,
    body: str,
    purpose: str,
    from_number: str = "",
    messaging_service_sid: str = "",
    patient: Patient | None = None,
    step_run_id: int | None = None,
    workflow_id: int | None = None,
    step_index: int | None = None,
    is_test: bool = False,
    urgent: bool = False,
    channel: str = "sms",
    content: dict[str, Any] | None = None,
    media_url: str = "",
    language: str = "",
) -> dict[str, Any]:
    characters, encoding, segments = body_measure(integration.adapter, body, media=bool(media_url))
    return {
        "organization": organization,
        "integration": integration,
        "patient": patient,
        "step_run_id": step_run_id,
        "workflow_id": workflow_id,
        "step_index": step_index,
        "purpose": purpose,
        "channel": channel,
        "content": content or {},
        "to": to,
        "from_number": from_number,
        "messaging_service_sid": messaging_service_sid,
        "body": body,
        "media_url": media_url,
        "language": language,
        "characters": characters,
        "encoding": encoding,
        "segments": segments,
        "is_test": is_test,
        "urgent": urgent,
    }


def message_build(*, idempotency_key: str, **fields: Any) -> OutboundMessage:
    """The message row for these fields (those of `message_prepare`), not saved: for a caller
    inserting many at once (a broadcast's batch, ON CONFLICT DO NOTHING on the key)."""
    return OutboundMessage(idempotency_key=idempotency_key, **_message_defaults(**fields))


def message_prepare(*, idempotency_key: str, **fields: Any) -> OutboundMessage:
    """Create the message row for this idempotency key, or return the one that exists.
    `fields`: organization, integration, to, body, purpose and optionally from_number,
    messaging_service_sid, patient, step_run_id (with its run's workflow_id and its
    step_index), is_test, urgent, channel ("sms" unless
    said), content (the channel's other parts, e.g. an email's subject), media_url (a
    text's picture or PDF: an MMS), language (the body's, patients.languages)."""
    defaults = _message_defaults(**fields)
    return insert_or_get(OutboundMessage, {"idempotency_key": idempotency_key}, defaults)


def message_prepare_and_deliver(
    *,
    idempotency_key: str,
    first_attempt: bool,
    accepted: "MessagesAccepted | None" = None,
    **fields: Any,
) -> OutboundMessage:
    """message_prepare, then message_deliver, with one write fewer: a new message's first
    write is its INSERT, already carrying the send-time decision (claimed for sending,
    deferred or skipped). That is for the first attempt of a step, whose message does not
    exist yet: deciding first for one that does would reserve a throttle slot for nothing.
    Later attempts, and sends a frequency cap may limit (decided under the patient's lock),
    go the usual way; a message found to exist already goes on as it is. With `accepted`
    (a batch of runs), the provider's acceptance of a message sent here is recorded with the
    others at the batch's end.
    """
    defaults = _message_defaults(**fields)
    message = OutboundMessage(idempotency_key=idempotency_key, **defaults)
    if (
        not first_attempt
        or (message.patient_id is not None and send_needs_lock(message=message))
        # First contact is decided under a lock on the number, in the claim's transaction.
        or message_wording(message) is not None
        # Short links refer to the message row: it must exist before the claim makes them.
        or link_may_shorten(message)
    ):
        return message_deliver(message_prepare(idempotency_key=idempotency_key, **fields))
    now = timezone.now()
    decided, wait = _message_decide(message, now, None)
    row = insert_or_get(
        OutboundMessage,
        {"idempotency_key": idempotency_key},
        {**defaults, **decided, "uuid": message.uuid},
    )
    if row.uuid != message.uuid:  # written before (a retried step): it goes on from there
        return message_deliver(row)
    if wait is None:
        return row
    _slot_wait(wait)
    return _message_call_provider(row, accepted)


def _transport(message: OutboundMessage) -> Transport:
    return transport_get(message.integration.adapter)


def _sending_stale(message: OutboundMessage) -> bool:
    started = message.sending_started_at or message.updated_at
    timeout = _transport(message).send_timeout()
    return timezone.now() - started > timedelta(seconds=2 * timeout + 30)


def message_send(*, message_id: int) -> OutboundMessage:
    """Attempt to send one message; safe to call any number of times.

    Returns the message in its new state: `sent`, `skipped`/`failed` (with the reason), or
    still `pending`/`unknown` with `next_attempt_at` set when the caller should come back.
    """
    message = OutboundMessage.objects.select_related("integration", "patient").get(pk=message_id)
    return message_deliver(message)


def message_deliver(message: OutboundMessage) -> OutboundMessage:
    """message_send for a message already in hand (with its integration and patient)."""
    if message.status == Status.SENDING and _sending_stale(message):
        # The worker that claimed it died mid-call: the outcome is ambiguous, not failed.
        OutboundMessage.objects.filter(pk=message.pk, status=Status.SENDING).update(
            status=Status.UNKNOWN,
            error_code="stale",
            error_message="the sending worker stopped before recording the provider's answer",
            lookup_failures=0,
        )
        message.refresh_from_db()
    if message.status == Status.UNKNOWN:
        return _message_reconcile(message)
    if message.status != Status.PENDING:
        return message
    if message.next_attempt_at and message.next_attempt_at > timezone.now():
        return message

    if not _message_decide_and_claim(message):
        return message
    return _message_call_provider(message)


# A reserved slot at most this far ahead is waited for in the worker; later ones are
# handed back to the queue (with the time) so the worker serves other senders meanwhile.
INLINE_WAIT_SECONDS = 0.5
THROTTLE_RETRY_SECONDS = 5.0


def _message_slot(
    message: OutboundMessage, now: datetime, sending: dict[str, Any] | None = None
) -> float | None:
    """Seconds until this message's send slot (reserving one if needed); None if the
    throttle cannot be reached. A transport without a throttle sends at once. `sending`: what
    the claim will change of the message (its body, with the first-contact wording, may cost
    more segments)."""
    if message.slot_at is not None and now - message.slot_at <= SLOT_MISSED_AFTER:
        return max(0.0, (message.slot_at - now).total_seconds())
    transport = _transport(message)
    shaped = transport.throttle(message)
    if shaped is None:
        return 0.0
    key, rate = shaped
    units = transport.units(message)
    if sending and "segments" in sending:
        units = max(units, sending["segments"])
    try:
        return throttle_reserve(key=key, rate=rate, segments=units)
    except redis.RedisError:
        waiting = f"message {message.pk}" if message.pk else "a new message"
        logger.warning("throttle unreachable; %s waits %.0f s", waiting, THROTTLE_RETRY_SECONDS)
        return None


def _message_decide(
    message: OutboundMessage, now: datetime, wording: ClinicWording | None
) -> tuple[dict[str, Any], float | None]:
    """Run the send-time checks: the fields recording their outcome, and how long to wait
    before sending when the message may be claimed now (None: not now; the fields say why).
    A claim also records the body as sent: with the clinic's first-contact `wording` when this
    is the number's first contact (the caller holds the number's lock)."""
    decision = send_decide(message=message, now=now)
    fields: dict[str, Any] = {
        "decision": decision.as_dict(now),
        "consent_record": decision.consent_record,
    }
    if decision.defer_until is not None:
        return {**fields, "next_attempt_at": decision.defer_until}, None
    if not decision.allowed:
        skipped = {"status": Status.SKIPPED, "skip_reason": decision.reason}
        return {**fields, **skipped, "next_attempt_at": None}, None
    # The body as sent: its links shortened, then the first-contact wording around it.
    links = short_links_fields(message, now=now)
    sending = {**links, **first_contact_fields(message, wording, now=now, body=links.get("body"))}
    wait = _message_slot(message, now, sending)
    if wait is None or wait > INLINE_WAIT_SECONDS:
        # Queued behind this sender's throughput (or Redis is unreachable, in which
        # case sending unshaped is not an option): come back at the reserved time.
        later = now + timedelta(seconds=wait if wait is not None else THROTTLE_RETRY_SECONDS)
        slot = {"slot_at": later} if wait is not None else {}
        return {**fields, "next_attempt_at": later, **slot}, None
    claim = {"status": Status.SENDING, "attempts": message.attempts + 1, "sending_started_at": now}
    return {**fields, **sending, **claim}, wait


def _slot_wait(wait: float) -> None:
    if wait > 0:
        time.sleep(wait)  # a fraction of a second: cheaper than a round trip via the broker


def _message_decide_and_claim(message: OutboundMessage) -> bool:
    """Run the send-time checks and, if they pass, claim the message (pending → sending).

    Where a frequency cap applies, the patient's row is locked meanwhile, so two sends to the
    same patient cannot both pass a cap that only one of them fits under. Where the clinic's
    first-contact wording may apply, the number is locked likewise, so two first texts
    cannot both find no earlier one.
    """
    patient_id = message.patient_id
    locking = patient_id is not None and send_needs_lock(message=message)
    wording = message_wording(message) if message.first_contact is None else None
    with transaction.atomic() if locking or wording else nullcontext():
        if locking and patient_id is not None:
            Patient.objects.select_for_update().filter(pk=patient_id).first()
        if wording is not None:
            first_contact_lock(message)
        now = timezone.now()
        fields, wait = _message_decide(message, now, wording)
        # The claim, or the refusal or deferral, only of a message still pending: another
        # worker may have claimed it (and sent it) since this one read it.
        written = OutboundMessage.objects.filter(pk=message.pk, status=Status.PENDING).update(
            **fields, updated_at=now
        )
    if not written:  # another worker has it
        message.refresh_from_db()
        return False
    for name, value in {**fields, "updated_at": now}.items():
        setattr(message, name, value)
    if wait is None:
        return False
    _slot_wait(wait)
    return True


class MessagesAccepted:
    """The provider's acceptance of the messages a batch of runs sent, recorded together at
    the end of the batch (`write`: one statement) instead of one UPDATE per message. Until
    then they stay "sending": a worker that dies first leaves them to reconciliation, which
    finds them at the provider, so nothing is sent twice."""

    def __init__(self) -> None:
        self._messages: list[OutboundMessage] = []

    def add(
        self, message: OutboundMessage, *, sid: str, provider_status: str, segments: int
    ) -> None:
        fields, status = _accepted_fields(
            sid=sid, provider_status=provider_status, segments=segments
        )
        for name, value in {**fields, **status}.items():
            setattr(message, name, value)
        self._messages.append(message)

    def write(self) -> None:
        """Record them; the status only advances from sending/unknown (a status callback
        may have got there first)."""
        messages, self._messages = self._messages, []
        if len(messages) == 1:  # one conditional UPDATE does for one
            (message,) = messages
            _message_accepted(
                message,
                sid=message.provider_sid or "",
                provider_status=message.provider_status,
                segments=message.segments,
            )
            return
        rows_update(
            OutboundMessage,
            messages,
            [*ACCEPTED_FIELDS, "status", "provider_status"],
            guarded=["status", "provider_status"],
            only_where=("status", [Status.SENDING, Status.UNKNOWN]),
        )


# What recording the provider's acceptance writes besides the status.
ACCEPTED_FIELDS = [
    "provider_sid",
    "sent_at",
    "next_attempt_at",
    "error_code",
    "error_message",
    "segments",
    "updated_at",
]


def _accepted_fields(
    *, sid: str, provider_status: str, segments: int | None, accepted_at: datetime | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    now = timezone.now()
    fields: dict[str, Any] = {
        "provider_sid": sid,
        "sent_at": accepted_at or now,
        "next_attempt_at": None,
        "error_code": "",
        "error_message": "",
        "updated_at": now,
    }
    if segments:
        fields["segments"] = segments
    return fields, {"status": Status.SENT, "provider_status": provider_status}


def _message_call_provider(
    message: OutboundMessage, accepted: MessagesAccepted | None = None
) -> OutboundMessage:
    try:
        answer = _transport(message).send(message)
    except Refused as exc:
        return _message_refused(message, exc)
    except Ambiguous as exc:
        # The request went out and no answer says what became of it: never resend blindly.
        _mark_unknown(message, error_code=exc.code, error_message=exc.message)
        return message
    sid, provider_status = answer.provider_id, answer.provider_status
    segments = answer.units or message.segments
    if accepted is not None:
        accepted.add(message, sid=sid, provider_status=provider_status, segments=segments)
    else:
        _message_accepted(message, sid=sid, provider_status=provider_status, segments=segments)
    return message


def _message_accepted(
    message: OutboundMessage,
    *,
    sid: str,
    provider_status: str,
    segments: int | None = None,
    accepted_at: datetime | None = None,
) -> None:
    """Record the provider's acceptance (at `accepted_at`, when the provider told us; else
    now). A status callback may already have moved the message on (it can arrive before this
    commit), so the status only advances from sending/unknown."""
    fields, status = _accepted_fields(
        sid=sid, provider_status=provider_status, segments=segments, accepted_at=accepted_at
    )
    mine = OutboundMessage.objects.filter(pk=message.pk)
    # The common case is one plain UPDATE (a CASE per column cost 5 % of a busy worker's time).
    if not mine.filter(status__in=[Status.SENDING, Status.UNKNOWN]).update(**fields, **status):
        mine.update(**fields)  # a callback got there first: keep its status
        status = dict(zip(status, mine.values_list(*status).get(), strict=True))
    for name, value in {**fields, **status}.items():
        setattr(message, name, value)


def _message_refused(message: OutboundMessage, exc: Refused) -> OutboundMessage:
    """The provider refused before accepting: nothing went out."""
    if exc.opted_out:
        _record_provider_opt_out(message, exc.code)
        _update(
            message,
            status=Status.FAILED,
            error_code=exc.code,
            error_message=exc.message,
            next_attempt_at=None,
        )
    elif exc.retryable:
        _schedule_retry(message, error_code=exc.code, error_message=exc.message)
    else:
        _update(
            message,
            status=Status.FAILED,
            error_code=exc.code,
            error_message=exc.message,
            next_attempt_at=None,
        )
    return message


def _schedule_retry(message: OutboundMessage, *, error_code: str, error_message: str) -> None:
    if message.attempts >= settings.CAREFLOW_SEND_MAX_RETRIES:
        _update(
            message,
            status=Status.FAILED,
            error_code=error_code,
            next_attempt_at=None,
            error_message=f"gave up after {message.attempts} attempts: {error_message}",
        )
        return
    _update(
        message,
        status=Status.PENDING,
        error_code=error_code,
        error_message=error_message,
        next_attempt_at=timezone.now() + retry_delay(message.attempts),
    )


def _mark_unknown(message: OutboundMessage, *, error_code: str, error_message: str) -> None:
    """Only while the message is still ours to send: a status report can arrive before the
    sender gives up waiting for the answer (the provider accepted it), and must not be undone."""
    now = timezone.now()
    fields = {
        "status": Status.UNKNOWN,
        "error_code": error_code,
        "error_message": error_message,
        "next_attempt_at": now + RECONCILE_AFTER,
        "lookup_failures": 0,
        "updated_at": now,
    }
    if OutboundMessage.objects.filter(pk=message.pk, status=Status.SENDING).update(**fields):
        for name, value in fields.items():
            setattr(message, name, value)
    else:
        message.refresh_from_db()


def _message_reconcile(message: OutboundMessage) -> OutboundMessage:
    """Find out at the provider whether an ambiguous attempt was accepted, before any resend.
    A provider that cannot be asked leaves the message "unknown" for staff: never resent."""
    now = timezone.now()
    if message.next_attempt_at and message.next_attempt_at > now:
        return message
    if message.next_attempt_at is None and message.lookup_failures:
        return message  # its look-ups were given up: left to staff (_lookup_failed)
    transport = _transport(message)
    if not transport.can_lookup:
        if message.next_attempt_at is not None:
            _update(message, next_attempt_at=None)
        return message
    started = message.sending_started_at or message.created_at
    try:
        found = transport.lookup(message, since=started)
    except Ambiguous as exc:
        logger.warning("reconciling message %s failed: %s", message.pk, exc.code)
        _lookup_failed(message, exc, now)
        return message
    if found is not None:
        _message_found(message, found, transport)
    elif now - started >= RECONCILE_GRACE:
        # The provider has no trace of it after the grace period: it was never accepted.
        OutboundMessage.objects.filter(pk=message.pk, status=Status.UNKNOWN).update(
            status=Status.PENDING, next_attempt_at=None, updated_at=now
        )
        message.refresh_from_db()
    else:
        _update(message, next_attempt_at=now + RECONCILE_AFTER)
    return message


def _lookup_failed(message: OutboundMessage, exc: Ambiguous, now: datetime) -> None:
    """A look-up of an ambiguous send could not tell: ask again later, backing off, or (the
    provider refuses look-ups, or they kept failing) leave the message "unknown" for staff,
    never resent (it may have gone out), with the reason; a failure alert tells them."""
    failures = message.lookup_failures + 1
    refused = isinstance(exc, LookupRefused)
    if not refused and failures < settings.CAREFLOW_RECONCILE_MAX_FAILURES:
        wait = min(RECONCILE_BACKOFF_MAX, RECONCILE_AFTER * 2 ** (failures - 1))
        _update(message, lookup_failures=failures, next_attempt_at=now + wait)
        return
    said = f"{exc.code}: {exc.message}" if exc.message else exc.code
    why = "the provider refuses to look it up" if refused else f"{failures} look-ups failed"
    _update(
        message,
        lookup_failures=failures,
        next_attempt_at=None,
        error_code=exc.code[:16],
        error_message=(
            f"Not confirmed: careflow could not find out whether the provider accepted this "
            f"message ({why}; last answer {said}). It was not sent again, as it may have gone "
            "out: check it in the provider's console."
        ),
    )
    logger.warning("message %s left unconfirmed: %s", message.pk, why)


def _accepted_status(transport: Transport) -> str:
    """The furthest provider status that still means only "accepted by the provider"."""
    rank = transport.status_rank
    accepted = [word for word, status in transport.status_map.items() if status == Status.SENT]
    return max(accepted, key=lambda word: rank.get(word, 0))


def _message_found(message: OutboundMessage, found: Found, transport: Transport) -> None:
    """Record what the provider's copy of an ambiguous attempt says: accepted (when the
    provider says it was, not when we asked), and any status it has reached since, by the
    path a callback takes, so a message found already delivered or failed is not left
    "sent"."""
    rank = transport.status_rank
    ceiling = _accepted_status(transport)
    reached = found.provider_status or ceiling
    accepted = reached if rank.get(reached, 0) <= rank[ceiling] else ceiling
    _message_accepted(
        message, sid=found.provider_id, provider_status=accepted, accepted_at=found.accepted_at
    )
    if reached != accepted:
        message_status_apply(
            message=message,
            provider_status=reached,
            error_code=found.error_code,
            reported_at=found.reported_at,
        )
        message.refresh_from_db()


def _record_provider_opt_out(message: OutboundMessage, code: str) -> None:
    """The provider says the recipient refuses this sender (replied STOP, say): record it on
    the message's channel for every purpose."""
    if message.patient is None:
        return
    # A consent history read with the patient for a batch no longer tells the whole story.
    message.patient.__dict__.pop(CONSENT_HISTORY, None)
    for purpose in ConsentRecord.Purpose.values:
        ConsentRecord.objects.create(
            patient=message.patient,
            channel=message.channel,
            purpose=purpose,
            action=ConsentRecord.Action.OPT_OUT,
            source=ConsentRecord.Source.PROVIDER_ERROR,
            evidence={
                "error_code": int(code) if code.isdigit() else code,
                "message_id": message.pk,
                "from": message.from_number,
            },
        )


def _update(message: OutboundMessage, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(message, name, value)
    message.save(update_fields=[*fields, "updated_at"])


def message_status_apply(
    *,
    message: OutboundMessage,
    provider_status: str,
    sid: str = "",
    error_code: str = "",
    accepted_at: datetime | None = None,
    reported_at: datetime | None = None,
    sender: str = "",
) -> bool:
    """Apply a provider status report monotonically; True when it changed the message.

    `sid` (a report's message id) must be the message's own, or fill a missing one that no
    other message holds; a report naming another id changes nothing. `accepted_at` is when
    the provider accepted the message and fills a missing `sent_at`: a callback may carry no
    timestamp, so without it the time the report arrived is the best we know. `reported_at`
    is when the status was reached (reconciliation reads it from the provider), else now.
    `sender` (the report's sending number) fills a missing `from_number`: a message sent
    through a pool of numbers (a Twilio Messaging Service) learns which one sent it so.
    """
    transport = _transport(message)
    rank = transport.status_rank.get(provider_status)
    if rank is None or provider_status not in transport.status_map:
        logger.info(
            "ignoring unknown provider status %r for message %s", provider_status, message.pk
        )
        return False
    if sid and not transport.provider_id_valid(sid):
        return False
    lower = [status for status, r in transport.status_rank.items() if r < rank]
    now = timezone.now()
    fields: dict[str, Any] = {
        "provider_status": provider_status,
        "status": transport.status_map[provider_status],
        "updated_at": now,
        # Accepted by the provider, whoever told us first: the send's answer, a callback or
        # a look-up. The first to record it wins.
        "sent_at": Coalesce(F("sent_at"), Value(accepted_at or now)),
    }
    if error_code:
        fields["error_code"] = error_code
        fields["error_message"] = transport.explain_error(error_code)
    if fields["status"] == Status.DELIVERED:
        fields["delivered_at"] = reported_at or now
    mine = OutboundMessage.objects.filter(pk=message.pk)
    if sid:
        # A callback for an attempt we could not confirm proves the provider accepted it. The id
        # goes in the same statement as the status: a message is never left "sent" without it.
        # The conditions are checked again here, in the statement: the row may have changed
        # since the caller read it.
        fields["provider_sid"] = Coalesce(F("provider_sid"), Value(sid))
        mine = mine.filter(Q(provider_sid__isnull=True) | Q(provider_sid=sid)).exclude(
            Exists(OutboundMessage.objects.filter(provider_sid=sid).exclude(pk=OuterRef("pk")))
        )
    try:
        with transaction.atomic():
            changed = (
                mine.filter(provider_status__in=lower)
                .exclude(status__in=[Status.SKIPPED])
                .update(**fields)
            )
            if sid and not changed:
                # A stale report (the status is already further on) can still carry a
                # missing SID.
                mine.filter(provider_sid__isnull=True).update(
                    provider_sid=sid, sent_at=fields["sent_at"]
                )
            if sender:
                # Whatever the status did: the first report naming the sender may be stale.
                mine.filter(from_number="").update(from_number=sender)
    except IntegrityError:
        # Another message took this SID between the check and the write: not ours.
        logger.warning("status report for message %s names another message's SID", message.pk)
        return False
    return bool(changed)


def _status_check_delay(checks: int) -> timedelta:
    """The wait before the next look-up of a message still "sent" after `checks` of them:
    the grace period, doubling each time (at most 12 hours)."""
    grace = settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS
    return timedelta(seconds=min(12 * 3600, grace * 2**checks))


def sent_messages_reconcile(*, limit: int | None = None) -> int:
    """Look up at the provider the messages still "sent" a grace period after we last heard
    of them, and settle those the provider has settled (delivered, undelivered, failed; error
    codes explained) by the status callback's own path. Returns how many changed.

    A provider need not retry a status callback we failed to take (a 500, a restart), so
    without this a message could stay "sent" for ever. Each message is claimed (its next
    check time moved on, by a backoff) in one short transaction before the provider is
    asked, so two runs never ask about the same message and a crash only postpones it. After
    CAREFLOW_STATUS_RECONCILE_MAX_CHECKS look-ups it is left as it is: some carriers never
    report delivery, and the provider's own copy then stays "sent" too.
    """
    now = timezone.now()
    grace = timedelta(seconds=settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS)
    batch = settings.CAREFLOW_STATUS_RECONCILE_BATCH if limit is None else limit
    with transaction.atomic():
        due = list(
            OutboundMessage.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("integration")
            .filter(
                status=Status.SENT,
                provider_sid__isnull=False,
                status_checks__lt=settings.CAREFLOW_STATUS_RECONCILE_MAX_CHECKS,
            )
            .filter(
                Q(status_check_at__lte=now)
                | Q(status_check_at__isnull=True, updated_at__lte=now - grace)
            )
            .order_by(F("status_check_at").asc(nulls_first=True), "id")[:batch]
        )
        for message in due:
            message.status_check_at = now + _status_check_delay(message.status_checks)
            message.status_checks += 1
        OutboundMessage.objects.bulk_update(due, ["status_check_at", "status_checks"])
    changed = 0
    for message in due:
        transport = _transport(message)
        if not transport.can_lookup:
            continue
        started = message.sending_started_at or message.created_at
        try:
            found = transport.lookup(message, since=started)
        except Ambiguous as exc:
            logger.warning("status look-up of message %s failed: %s", message.pk, exc.code)
            continue
        if found is None:
            continue
        changed += message_status_apply(
            message=message,
            provider_status=found.provider_status,
            error_code=found.error_code,
            accepted_at=found.accepted_at,
            reported_at=found.reported_at,
            sender=found.sender,
        )
    return changed


def messages_of_ended_runs_skip(run_ids: set[int], reason: str) -> int:
    """Skip the messages of these runs not sent yet (pending: deferred by quiet hours, or
    waiting for a send slot): their runs ended early (a goal reached, an exit), so a reminder
    never goes out after its goal is met. A message already being sent is left to finish.
    Called by the engine (workflows.goals.runs_end) in the transaction that ends the runs."""
    now = timezone.now()
    return OutboundMessage.objects.filter(
        step_run__run_id__in=run_ids, status=Status.PENDING
    ).update(
        status=Status.SKIPPED,
        skip_reason=f"the run ended early: {reason}"[:200],
        next_attempt_at=None,
        updated_at=now,
    )
