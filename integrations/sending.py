"""Outbound SMS: create the message row first, then claim it, decide, and call Twilio once.

Twilio has no idempotency key for sends and Celery delivers at least once, so exactly-once
rests on our database: the UNIQUE idempotency key makes the row, a conditional UPDATE
(pending → sending) makes the claim, and an ambiguous outcome becomes `unknown`, which is
reconciled by looking the message up at Twilio before anything is sent again.
"""

import logging
import re
import time
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

import redis
import requests
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef, Q, Value
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone
from twilio.base.exceptions import TwilioRestException
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from common.db import insert_or_get, rows_update
from common.retry import retry_delay
from integrations.models import Integration, OutboundMessage
from integrations.policy import SMS_HISTORY, send_decide, send_needs_lock
from integrations.sms import segment_info
from integrations.throttle import throttle_key, throttle_reserve
from integrations.twilio.account import twilio_account
from integrations.twilio.client import twilio_client
from integrations.twilio.errors import error_explanation
from patients.models import ConsentRecord, Organization, Patient

logger = logging.getLogger(__name__)

Status = OutboundMessage.Status

# Twilio error codes that are safe to retry: the request was refused before acceptance.
RETRYABLE_CODES = {20429, 21611}
OPTED_OUT_CODE = 21610
# How long after an ambiguous attempt we look the message up at Twilio, and how long a
# message must be missing there before we conclude it was never accepted and send again.
RECONCILE_AFTER = timedelta(seconds=15)
RECONCILE_GRACE = timedelta(minutes=2)


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
    is_test: bool = False,
    urgent: bool = False,
) -> dict[str, Any]:
    info = segment_info(body)
    return {
        "organization": organization,
        "integration": integration,
        "patient": patient,
        "step_run_id": step_run_id,
        "purpose": purpose,
        "to": to,
        "from_number": from_number,
        "messaging_service_sid": messaging_service_sid,
        "body": body,
        "characters": info.characters,
        "encoding": info.encoding,
        "segments": info.segments,
        "is_test": is_test,
        "urgent": urgent,
    }


def message_prepare(*, idempotency_key: str, **fields: Any) -> OutboundMessage:
    """Create the message row for this idempotency key, or return the one that exists.
    `fields`: organization, integration, to, body, purpose and optionally from_number,
    messaging_service_sid, patient, step_run_id, is_test, urgent."""
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
    (a batch of runs), Twilio's acceptance of a message sent here is recorded with the
    others at the batch's end.
    """
    defaults = _message_defaults(**fields)
    message = OutboundMessage(idempotency_key=idempotency_key, **defaults)
    if not first_attempt or (message.patient_id is not None and send_needs_lock(message=message)):
        return message_deliver(message_prepare(idempotency_key=idempotency_key, **fields))
    now = timezone.now()
    decided, wait = _message_decide(message, now)
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
    return _message_call_twilio(row, accepted)


def status_callback_url(message: OutboundMessage) -> str:
    path = reverse(
        "twilio-status-callback",
        kwargs={"integration_uuid": message.integration.uuid, "message_uuid": message.uuid},
    )
    return settings.CAREFLOW_PUBLIC_URL.rstrip("/") + path


def _sending_stale(message: OutboundMessage) -> bool:
    started = message.sending_started_at or message.updated_at
    return timezone.now() - started > timedelta(seconds=2 * settings.TWILIO_HTTP_TIMEOUT + 30)


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
            error_message="the sending worker stopped before recording Twilio's answer",
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
    return _message_call_twilio(message)


# A reserved slot at most this far ahead is waited for in the worker; later ones are
# handed back to the queue (with the time) so the worker serves other senders meanwhile.
INLINE_WAIT_SECONDS = 0.5
THROTTLE_RETRY_SECONDS = 5.0
# A slot reserved longer ago than this (the message was deferred by quiet hours, say) is
# stale: a new one is reserved.
SLOT_STALE = timedelta(minutes=1)


def _message_slot(message: OutboundMessage, now: datetime) -> float | None:
    """Seconds until this message's send slot (reserving one if needed); None if the
    throttle cannot be reached."""
    if message.slot_at is not None and now - message.slot_at < SLOT_STALE:
        return max(0.0, (message.slot_at - now).total_seconds())
    account = twilio_account(message.integration)
    sender = message.messaging_service_sid or message.from_number
    try:
        return throttle_reserve(
            key=throttle_key(account_sid=account.account_sid, sender=sender),
            rate=account.send_rate(sender),
            segments=max(1, message.segments),
        )
    except redis.RedisError:
        waiting = f"message {message.pk}" if message.pk else "a new message"
        logger.warning("throttle unreachable; %s waits %.0f s", waiting, THROTTLE_RETRY_SECONDS)
        return None


def _message_decide(message: OutboundMessage, now: datetime) -> tuple[dict[str, Any], float | None]:
    """Run the send-time checks: the fields recording their outcome, and how long to wait
    before sending when the message may be claimed now (None: not now; the fields say why)."""
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
    wait = _message_slot(message, now)
    if wait is None or wait > INLINE_WAIT_SECONDS:
        # Queued behind this sender's throughput (or Redis is unreachable, in which
        # case sending unshaped is not an option): come back at the reserved time.
        later = now + timedelta(seconds=wait if wait is not None else THROTTLE_RETRY_SECONDS)
        slot = {"slot_at": later} if wait is not None else {}
        return {**fields, "next_attempt_at": later, **slot}, None
    claim = {"status": Status.SENDING, "attempts": message.attempts + 1, "sending_started_at": now}
    return {**fields, **claim}, wait


def _slot_wait(wait: float) -> None:
    if wait > 0:
        time.sleep(wait)  # a fraction of a second: cheaper than a round trip via the broker


def _message_decide_and_claim(message: OutboundMessage) -> bool:
    """Run the send-time checks and, if they pass, claim the message (pending → sending).

    Where a frequency cap applies, the patient's row is locked meanwhile, so two sends to the
    same patient cannot both pass a cap that only one of them fits under.
    """
    patient_id = message.patient_id
    locking = patient_id is not None and send_needs_lock(message=message)
    with transaction.atomic() if locking else nullcontext():
        if locking and patient_id is not None:
            Patient.objects.select_for_update().filter(pk=patient_id).first()
        now = timezone.now()
        fields, wait = _message_decide(message, now)
        if wait is None:
            _update(message, **fields)
            return False
        claimed = OutboundMessage.objects.filter(pk=message.pk, status=Status.PENDING).update(
            **fields, updated_at=now
        )
    if not claimed:  # another worker has it
        message.refresh_from_db()
        return False
    for name, value in fields.items():
        setattr(message, name, value)
    _slot_wait(wait)
    return True


class MessagesAccepted:
    """Twilio's acceptance of the messages a batch of runs sent, recorded together at the
    end of the batch (`write`: one statement) instead of one UPDATE per message. Until then
    they stay "sending": a worker that dies first leaves them to reconciliation, which finds
    them at Twilio, so nothing is sent twice."""

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


# What recording Twilio's acceptance writes besides the status.
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


def _message_call_twilio(
    message: OutboundMessage, accepted: MessagesAccepted | None = None
) -> OutboundMessage:
    account = twilio_account(message.integration)
    client = twilio_client(account_sid=account.account_sid, auth_token=account.auth_token)
    params: dict[str, Any] = {
        "to": message.to,
        "body": message.body,
        "status_callback": status_callback_url(message),
    }
    if message.messaging_service_sid:
        params["messaging_service_sid"] = message.messaging_service_sid
    else:
        params["from_"] = message.from_number
    try:
        created = client.messages.create(**params)
    except TwilioRestException as exc:
        return _message_provider_error(message, exc)
    except requests.RequestException as exc:
        return _message_transport_error(message, exc)
    answer = {
        "sid": created.sid,
        "provider_status": created.status or "queued",
        "segments": int(created.num_segments or message.segments),
    }
    if accepted is not None:
        accepted.add(message, **answer)
    else:
        _message_accepted(message, **answer)
    return message


def _message_accepted(
    message: OutboundMessage,
    *,
    sid: str,
    provider_status: str,
    segments: int | None = None,
    accepted_at: datetime | None = None,
) -> None:
    """Record Twilio's acceptance (at `accepted_at`, when Twilio told us; else now). A status
    callback may already have moved the message on (it can arrive before this commit), so
    the status only advances from sending/unknown."""
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


def _message_provider_error(message: OutboundMessage, exc: TwilioRestException) -> OutboundMessage:
    code = int(exc.code) if exc.code else None
    text = str(exc.msg or "")
    logger.info("twilio refused message %s: code=%s status=%s", message.pk, code, exc.status)
    if code == OPTED_OUT_CODE:
        _record_provider_opt_out(message)
        _update(
            message,
            status=Status.FAILED,
            error_code=str(code),
            error_message=text,
            next_attempt_at=None,
        )
    elif code in RETRYABLE_CODES or exc.status == 429:
        _schedule_retry(message, error_code=str(code or exc.status), error_message=text)
    elif exc.status >= 500:
        # 5xx after the request left: Twilio may have accepted it. Never resend blindly.
        _mark_unknown(message, error_code=str(code or exc.status), error_message=text)
    else:
        _update(
            message,
            status=Status.FAILED,
            error_code=str(code or exc.status),
            error_message=text,
            next_attempt_at=None,
        )
    return message


def _message_transport_error(
    message: OutboundMessage, exc: requests.RequestException
) -> OutboundMessage:
    logger.warning("transport error sending message %s: %s", message.pk, type(exc).__name__)
    if _never_connected(exc):
        _schedule_retry(
            message,
            error_code="network",
            error_message=f"could not connect to Twilio ({type(exc).__name__})",
        )
    else:
        _mark_unknown(
            message,
            error_code="network",
            error_message=f"no answer from Twilio after the request was sent ({type(exc).__name__})",
        )
    return message


def _never_connected(exc: requests.RequestException) -> bool:
    """True only when the TCP connection was never made, so Twilio cannot have the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


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
    _update(
        message,
        status=Status.UNKNOWN,
        error_code=error_code,
        error_message=error_message,
        next_attempt_at=timezone.now() + RECONCILE_AFTER,
    )


def _message_reconcile(message: OutboundMessage) -> OutboundMessage:
    """Find out at Twilio whether an ambiguous attempt was accepted, before any resend."""
    now = timezone.now()
    if message.next_attempt_at and message.next_attempt_at > now:
        return message
    account = twilio_account(message.integration)
    client = twilio_client(account_sid=account.account_sid, auth_token=account.auth_token)
    started = message.sending_started_at or message.created_at
    try:
        found = _twilio_lookup(client, message, since=started)
    except (TwilioRestException, requests.RequestException) as exc:
        logger.warning("reconciling message %s failed: %s", message.pk, type(exc).__name__)
        _update(message, next_attempt_at=now + RECONCILE_AFTER)
        return message
    if found is not None:
        _message_found(message, found)
    elif now - started >= RECONCILE_GRACE:
        # Twilio has no trace of it after the grace period: it was never accepted.
        OutboundMessage.objects.filter(pk=message.pk, status=Status.UNKNOWN).update(
            status=Status.PENDING, next_attempt_at=None, updated_at=now
        )
        message.refresh_from_db()
    else:
        _update(message, next_attempt_at=now + RECONCILE_AFTER)
    return message


def _message_found(message: OutboundMessage, found: Any) -> None:
    """Record what Twilio's copy of an ambiguous attempt says: accepted (when Twilio says it
    was, not when we asked), and any status it has reached since, by the path a callback
    takes, so a message found already delivered or failed is not left "sent"."""
    reached = found.status or "sent"
    accepted = reached if PROVIDER_RANK.get(reached, 0) <= PROVIDER_RANK["sent"] else "sent"
    _message_accepted(
        message,
        sid=found.sid,
        provider_status=accepted,
        accepted_at=found.date_created or found.date_sent,
    )
    if reached != accepted:
        message_status_apply(
            message=message,
            provider_status=reached,
            error_code=str(found.error_code or ""),
            reported_at=found.date_updated,
        )
        message.refresh_from_db()


def _twilio_lookup(client: Any, message: OutboundMessage, *, since: datetime) -> Any:
    # No DateSent filter: a message Twilio accepted but still holds in its queue has no
    # date_sent yet, and must still be found. Newest first; our attempt is recent.
    filters: dict[str, Any] = {"to": message.to}
    if message.from_number and not message.messaging_service_sid:
        filters["from_"] = message.from_number
    for candidate in client.messages.stream(page_size=50, limit=200, **filters):
        if candidate.body == message.body and (
            candidate.date_created is None or candidate.date_created >= since - timedelta(minutes=5)
        ):
            return candidate
    return None


def _record_provider_opt_out(message: OutboundMessage) -> None:
    """Twilio says the recipient replied STOP to this sender: record it for every purpose."""
    if message.patient is None:
        return
    # A consent history read with the patient for a batch no longer tells the whole story.
    message.patient.__dict__.pop(SMS_HISTORY, None)
    for purpose in ConsentRecord.Purpose.values:
        ConsentRecord.objects.create(
            patient=message.patient,
            purpose=purpose,
            action=ConsentRecord.Action.OPT_OUT,
            source=ConsentRecord.Source.PROVIDER_ERROR,
            evidence={
                "error_code": OPTED_OUT_CODE,
                "message_id": message.pk,
                "from": message.from_number,
            },
        )


def _update(message: OutboundMessage, **fields: Any) -> None:
    for name, value in fields.items():
        setattr(message, name, value)
    message.save(update_fields=[*fields, "updated_at"])


# Twilio's statuses in the order a message moves through them; callbacks can repeat and
# arrive out of order, so a status is applied only if it ranks above the current one.
PROVIDER_RANK = {
    "": 0,
    "accepted": 1,
    "scheduled": 1,
    "queued": 1,
    "sending": 2,
    "sent": 3,
    "delivered": 4,
    "undelivered": 4,
    "failed": 4,
    "read": 5,
}
PROVIDER_TO_STATUS = {
    "accepted": Status.SENT,
    "scheduled": Status.SENT,
    "queued": Status.SENT,
    "sending": Status.SENT,
    "sent": Status.SENT,
    "delivered": Status.DELIVERED,
    "read": Status.DELIVERED,
    "undelivered": Status.UNDELIVERED,
    "failed": Status.FAILED,
}


# What Twilio's message SIDs look like (SM: SMS, MM: MMS); nothing else fits our column.
MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}\Z")


def message_sid_mismatch(*, message: OutboundMessage, sid: str) -> str | None:
    """Why a status report naming `sid` is not about `message`, or None when it is.

    A report is about a message when it names the message's own SID. A message Twilio's
    answer never reached us for has none yet: the report may be the first to tell us, so its
    SID is taken, unless another message already holds it (then it is that one's report).
    """
    if not MESSAGE_SID.match(sid):
        return "MessageSid is missing or is not a Twilio message SID"
    if message.provider_sid:
        return None if message.provider_sid == sid else "MessageSid is not this message's"
    if OutboundMessage.objects.filter(provider_sid=sid).exclude(pk=message.pk).exists():
        return "MessageSid belongs to another message"
    return None


def message_status_apply(
    *,
    message: OutboundMessage,
    provider_status: str,
    sid: str = "",
    error_code: str = "",
    accepted_at: datetime | None = None,
    reported_at: datetime | None = None,
) -> bool:
    """Apply a provider status report monotonically; True when it changed the message.

    `sid` (a callback's MessageSid) must be the message's own, or fill a missing one that no
    other message holds; a report naming another SID changes nothing. `accepted_at` is when
    Twilio accepted the message and fills a missing `sent_at`: a callback carries no
    timestamp, so without it the time the report arrived is the best we know. `reported_at`
    is when the status was reached (reconciliation reads it from Twilio), else now.
    """
    rank = PROVIDER_RANK.get(provider_status)
    if rank is None:
        logger.info(
            "ignoring unknown provider status %r for message %s", provider_status, message.pk
        )
        return False
    if sid and not MESSAGE_SID.match(sid):
        return False
    lower = [status for status, r in PROVIDER_RANK.items() if r < rank]
    now = timezone.now()
    fields: dict[str, Any] = {
        "provider_status": provider_status,
        "status": PROVIDER_TO_STATUS[provider_status],
        "updated_at": now,
        # Accepted by Twilio, whoever told us first: the create answer, a callback or a
        # look-up. The first to record it wins.
        "sent_at": Coalesce(F("sent_at"), Value(accepted_at or now)),
    }
    if error_code:
        fields["error_code"] = error_code
        fields["error_message"] = error_explanation(error_code)
    if fields["status"] == Status.DELIVERED:
        fields["delivered_at"] = reported_at or now
    mine = OutboundMessage.objects.filter(pk=message.pk)
    if sid:
        # A callback for an attempt we could not confirm proves Twilio accepted it. The SID
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
    """Look up at Twilio the messages still "sent" a grace period after we last heard of
    them, and settle those Twilio has settled (delivered, undelivered, failed; error codes
    explained) by the status callback's own path. Returns how many changed.

    Twilio does not retry a status callback we failed to take (a 500, a restart), so without
    this a message could stay "sent" for ever. Each message is claimed (its next check time
    moved on, by a backoff) in one short transaction before Twilio is asked, so two runs
    never ask about the same message and a crash only postpones it. After
    CAREFLOW_STATUS_RECONCILE_MAX_CHECKS look-ups it is left as it is: some carriers never
    report delivery, and Twilio's own copy then stays "sent" too.
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
        account = twilio_account(message.integration)
        client = twilio_client(account_sid=account.account_sid, auth_token=account.auth_token)
        try:
            found = client.messages(message.provider_sid).fetch()
        except TwilioRestException as exc:
            logger.warning(
                "status look-up of message %s refused: code=%s status=%s",
                message.pk,
                exc.code,
                exc.status,
            )
            continue
        except requests.RequestException as exc:
            logger.warning(
                "status look-up of message %s failed: %s", message.pk, type(exc).__name__
            )
            continue
        changed += message_status_apply(
            message=message,
            provider_status=found.status or "",
            error_code=str(found.error_code or ""),
            accepted_at=found.date_created,
            reported_at=found.date_updated,
        )
    return changed
