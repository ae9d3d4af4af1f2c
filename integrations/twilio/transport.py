"""Twilio as the messaging core's SMS transport: send, look up, and what its answers mean.

Twilio has no idempotency key for sends, so what its answers mean decides exactly-once: a
refusal before acceptance is safe to retry or final, while no answer after the request went
out (or a 5xx) is ambiguous and the message is looked up before anything is sent again.
"""

import json
import logging
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.urls import reverse
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.rest import Client
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from common.addresses import host_unreachable
from integrations.messaging import Accepted, Ambiguous, Found, LookupRefused, Refused, Transport
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
# A look-up by recipient reads pages of this many messages (Twilio's most is 1000), and
# allows the clocks this much skew.
LOOKUP_PAGE_SIZE = 50
LOOKUP_SKEW = timedelta(minutes=5)
# A look-up Twilio refuses for the credentials (401 Authenticate; 403, e.g. 20008 with test
# credentials): asking again will not tell.
LOOKUP_REFUSED_STATUSES = {401, 403}
# 21609: Twilio cannot use the StatusCallback URL (CAREFLOW_PUBLIC_URL is not a public URL).
INVALID_CALLBACK_CODE = "21609"

# Twilio's statuses in the order a message moves through them; callbacks can repeat and
# arrive out of order, so a status is applied only if it ranks above the current one. A
# Messaging Service's send is "accepted" (the service has not picked a sender yet), then
# "queued".
PROVIDER_RANK = {
    "": 0,
    "accepted": 1,
    "scheduled": 1,
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "delivered": 5,
    "undelivered": 5,
    "failed": 5,
    "read": 6,
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


def twilio_is_real() -> bool:
    """Whether careflow talks to Twilio itself (TWILIO_API_BASE_URL is one of Twilio's own
    https hosts), not to a sandbox."""
    parts = urlsplit(settings.TWILIO_API_BASE_URL)
    host = (parts.hostname or "").lower()
    return parts.scheme == "https" and (host == "twilio.com" or host.endswith(".twilio.com"))


def public_url_problem(url: str) -> str:
    """Why Twilio could not post status callbacks under `url` (CAREFLOW_PUBLIC_URL), or "".
    https only: a callback names the message and its status, and is signed with the Auth
    Token over the URL, so it must not travel in clear."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").rstrip(".").lower()
        parts.port  # noqa: B018 — raises ValueError for a port that is not a number
    except ValueError:
        return f"CAREFLOW_PUBLIC_URL {url!r} is not a valid URL"
    if parts.scheme.lower() != "https":
        return f"CAREFLOW_PUBLIC_URL {url!r} is not an https URL"
    if not host:
        return f"CAREFLOW_PUBLIC_URL {url!r} has no host"
    unreachable = host_unreachable(host)
    if unreachable == "address":
        return (
            f"CAREFLOW_PUBLIC_URL {url!r} is a loopback, private or link-local address "
            "Twilio cannot reach"
        )
    if unreachable == "name":
        return f"CAREFLOW_PUBLIC_URL {url!r} names a host only this machine or network knows"
    return ""


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


def _create(message: OutboundMessage, params: dict[str, Any]) -> Any:
    """Create the message at Twilio; its refusals as Refused or Ambiguous."""
    try:
        return _client(message).messages.create(**params)
    except TwilioRestException as exc:
        raise _refusal(message, exc) from exc
    except requests.RequestException as exc:
        raise _transport_failure(message, exc) from exc


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


def _lookup_error(exc: TwilioException) -> Ambiguous:
    """A look-up's error answer. A fetch raises TwilioRestException; a list page raises a
    plain TwilioException carrying the response (twilio-python's Page), read here alike."""
    if isinstance(exc, TwilioRestException):
        status, code, text = exc.status, exc.code, str(exc.msg or "")
    else:
        response = exc.args[1] if len(exc.args) > 1 else None
        status = int(getattr(response, "status_code", 0) or 0)
        try:
            answer = json.loads(getattr(response, "text", "") or "{}")
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        code, text = answer.get("code"), str(answer.get("message") or exc.args[0])
    said = str(code or status or "lookup")[:16]
    if status in LOOKUP_REFUSED_STATUSES:
        return LookupRefused(said, text)
    return Ambiguous(said, text)


def _found(candidate: Any) -> Found:
    return Found(
        provider_id=candidate.sid,
        provider_status=candidate.status or "",
        error_code=str(candidate.error_code or ""),
        accepted_at=candidate.date_created or candidate.date_sent,
        reported_at=candidate.date_updated,
        sender=candidate.from_ or "",
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
            created = _create(message, params)
        except Refused as exc:
            if exc.code != INVALID_CALLBACK_CODE:
                raise
            # Refused before acceptance, so nothing went out: the patient still gets the text,
            # sent without a callback, and its status is settled by polling
            # (sent_messages_reconcile). `check --deploy` refuses such a CAREFLOW_PUBLIC_URL.
            logger.warning(
                "twilio refused the status-callback URL (21609) for message %s: sent without "
                "one; CAREFLOW_PUBLIC_URL must be a public https URL",
                message.pk,
            )
            del params["status_callback"]
            created = _create(message, params)
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
        earliest = since - LOOKUP_SKEW
        try:
            if message.provider_sid:
                return _found(client.messages(message.provider_sid).fetch())
            # No DateSent filter: a message Twilio accepted but still holds in its queue has
            # no date_sent yet, and must still be found. Pages come newest first (by
            # date_sent): every page is read, following next_page_uri, until a message sent
            # before our attempt, after which none can be ours. No page limit: a recipient
            # sent many texts since must not hide ours (it would be sent twice).
            filters: dict[str, Any] = {"to": message.to}
            if message.from_number and not message.messaging_service_sid:
                filters["from_"] = message.from_number
            for candidate in client.messages.stream(page_size=LOOKUP_PAGE_SIZE, **filters):
                if candidate.date_sent is not None and candidate.date_sent < earliest:
                    break
                if candidate.body == message.body and (
                    candidate.date_created is None or candidate.date_created >= earliest
                ):
                    return _found(candidate)
        except TwilioException as exc:
            raise _lookup_error(exc) from exc
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

    def deploy_problems(self) -> list[tuple[str, str]]:
        if not twilio_is_real():
            return []
        problem = public_url_problem(settings.CAREFLOW_PUBLIC_URL)
        if not problem:
            return []
        return [
            (
                f"{problem}: Twilio refuses such a status-callback URL (error 21609) or can "
                "never call it, so no delivery report would ever arrive.",
                "Set CAREFLOW_PUBLIC_URL to the public https address Twilio reaches careflow "
                "at, e.g. https://careflow.example-clinic.com (see README, Deploying).",
            )
        ]
