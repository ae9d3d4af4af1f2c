"""Twilio as the messaging core's SMS transport: send, look up, and what its answers mean.

Twilio has no idempotency key for sends, so what its answers mean decides exactly-once: a
refusal before acceptance is safe to retry or final, while no answer after the request went
out (or a 5xx) is ambiguous and the message is looked up before anything is sent again.
"""

import logging
import re
from datetime import datetime, timedelta
from typing import Any

import requests
from django.conf import settings
from django.urls import reverse
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from integrations.messaging import Accepted, Ambiguous, Found, Refused, Transport
from integrations.models import OutboundMessage
from integrations.sms import segment_info
from integrations.throttle import throttle_key
from integrations.twilio.account import twilio_account
from integrations.twilio.client import twilio_client
from integrations.twilio.errors import CREDENTIALS_ERROR_CODES, error_explanation
from patients.phones import is_e164

logger = logging.getLogger(__name__)

Status = OutboundMessage.Status

# Error codes that are safe to retry: the request was refused before acceptance.
RETRYABLE_CODES = {20429, 21611}
OPTED_OUT_CODE = 21610

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

# What Twilio's message SIDs look like (SM: SMS, MM: MMS).
MESSAGE_SID = re.compile(r"^(SM|MM)[0-9a-fA-F]{32}\Z")


def status_callback_url(message: OutboundMessage) -> str:
    path = reverse(
        "twilio-status-callback",
        kwargs={"integration_uuid": message.integration.uuid, "message_uuid": message.uuid},
    )
    return settings.CAREFLOW_PUBLIC_URL.rstrip("/") + path


def _client(message: OutboundMessage) -> Client:
    account = twilio_account(message.integration)
    return twilio_client(account_sid=account.account_sid, auth_token=account.auth_token)


def _never_connected(exc: requests.RequestException) -> bool:
    """True only when the TCP connection was never made, so Twilio cannot have the request."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)
    return isinstance(reason, (NewConnectionError, ConnectTimeoutError))


def _refusal(message: OutboundMessage, exc: TwilioRestException) -> Exception:
    """What Twilio's error answer means: a Refused (opted out, retryable or permanent), or
    Ambiguous for a 5xx (Twilio may have accepted it)."""
    code = int(exc.code) if exc.code else None
    text = str(exc.msg or "")
    logger.info("twilio refused message %s: code=%s status=%s", message.pk, code, exc.status)
    if code == OPTED_OUT_CODE:
        return Refused(str(code), text, opted_out=True)
    if code in RETRYABLE_CODES or exc.status == 429:
        return Refused(str(code or exc.status), text, retryable=True)
    if exc.status >= 500:
        return Ambiguous(str(code or exc.status), text)
    return Refused(str(code or exc.status), text)


def _transport_failure(message: OutboundMessage, exc: requests.RequestException) -> Exception:
    logger.warning("transport error sending message %s: %s", message.pk, type(exc).__name__)
    if _never_connected(exc):
        return Refused(
            "network", f"could not connect to Twilio ({type(exc).__name__})", retryable=True
        )
    return Ambiguous(
        "network", f"no answer from Twilio after the request was sent ({type(exc).__name__})"
    )


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


def _found(candidate: Any) -> Found:
    return Found(
        provider_id=candidate.sid,
        provider_status=candidate.status or "",
        error_code=str(candidate.error_code or ""),
        accepted_at=candidate.date_created or candidate.date_sent,
        reported_at=candidate.date_updated,
    )


class TwilioTransport(Transport):
    channel = "sms"
    channel_word = "SMS"
    can_lookup = True
    status_map = PROVIDER_TO_STATUS
    status_rank = PROVIDER_RANK
    credentials_error_codes = CREDENTIALS_ERROR_CODES
    first_contact_wording = True
    short_links = True

    def send(self, message: OutboundMessage) -> Accepted:
        params: dict[str, Any] = {
            "to": message.to,
            "body": message.body,
            "status_callback": status_callback_url(message),
        }
        if message.messaging_service_sid:
            params["messaging_service_sid"] = message.messaging_service_sid
        else:
            params["from_"] = message.from_number
        if message.media_url:
            params["media_url"] = [message.media_url]
        try:
            created = _client(message).messages.create(**params)
        except TwilioRestException as exc:
            raise _refusal(message, exc) from exc
        except requests.RequestException as exc:
            raise _transport_failure(message, exc) from exc
        return Accepted(
            provider_id=created.sid,
            provider_status=created.status or "queued",
            units=int(created.num_segments or 0),
        )

    def send_timeout(self) -> float:
        return float(settings.TWILIO_HTTP_TIMEOUT)

    def lookup(self, message: OutboundMessage, *, since: datetime) -> Found | None:
        """By SID when the message has one; else the newest message to the same recipient
        with the same body created after `since` (less a clock-skew margin)."""
        client = _client(message)
        try:
            if message.provider_sid:
                return _found(client.messages(message.provider_sid).fetch())
            # No DateSent filter: a message Twilio accepted but still holds in its queue has
            # no date_sent yet, and must still be found. Newest first; our attempt is recent.
            filters: dict[str, Any] = {"to": message.to}
            if message.from_number and not message.messaging_service_sid:
                filters["from_"] = message.from_number
            for candidate in client.messages.stream(page_size=50, limit=200, **filters):
                if candidate.body == message.body and (
                    candidate.date_created is None
                    or candidate.date_created >= since - timedelta(minutes=5)
                ):
                    return _found(candidate)
        except TwilioRestException as exc:
            raise Ambiguous(str(exc.code or exc.status), str(exc.msg or "")) from exc
        except requests.RequestException as exc:
            raise Ambiguous("network", type(exc).__name__) from exc
        return None

    def throttle(self, message: OutboundMessage) -> tuple[str, float]:
        account = twilio_account(message.integration)
        sender = message.messaging_service_sid or message.from_number
        return throttle_key(scope=account.account_sid, sender=sender), account.send_rate(sender)

    def measure(self, body: str, *, media: bool = False) -> tuple[int, str, int]:
        info = segment_info(body)
        # An MMS is one message however long its text (Twilio prices it per message, and
        # reports num_segments 1).
        return info.characters, info.encoding, 1 if media else info.segments

    def units(self, message: OutboundMessage) -> int:
        return max(1, message.segments)

    def provider_id_valid(self, provider_id: str) -> bool:
        return bool(MESSAGE_SID.match(provider_id))

    def sender_check(self, message: OutboundMessage) -> tuple[bool, str]:
        integration = message.integration
        if message.messaging_service_sid:
            if message.messaging_service_sid != twilio_account(integration).messaging_service_sid:
                return False, "messaging service is not the clinic's approved one"
        elif not message.from_number:
            return False, "no sender: the message has no From number"
        elif message.from_number not in integration.senders:
            return (
                False,
                f"sender {message.from_number} is not an approved number for this clinic",
            )
        return True, message.from_number or message.messaging_service_sid

    def recipient_check(self, message: OutboundMessage) -> tuple[bool, str]:
        if not is_e164(message.to):
            return False, f"recipient {message.to!r} is not a valid phone number"
        return True, "valid E.164 number"

    def explain_error(self, code: str) -> str:
        return error_explanation(code)
