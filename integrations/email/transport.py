"""Email's transport: send and look up through django-anymail's Postmark backend.

The messaging core (claim → decide → throttle → send → accepted / refused / ambiguous →
reconcile) calls only this. Every message carries Metadata {"careflow_message": <uuid>}, so an
ambiguous attempt is found again by Postmark's outbound message search, and webhooks name the
message they are about.

Status words are anymail's normalised tracking events ("queued", "sent", "delivered",
"bounced", …), so another ESP behind anymail reports in the same words. A spam complaint
(or an unsubscribe) says the message did reach the inbox: it stays "delivered", and the
webhook records the email opt-out. A soft bounce is "deferred": Postmark keeps trying, and a
later delivery or hard bounce decides.

`CAREFLOW_EMAIL_DELIVERY` = "console" or "file" (local runs) hands messages to Django's own
email backends instead: written is delivered, there is no ESP to ask or to hear from.
"""

import logging
import threading
from datetime import datetime
from functools import lru_cache
from typing import Any

import requests
from anymail.exceptions import AnymailAPIError, AnymailError, AnymailRecipientsRefused
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.mail.backends.base import BaseEmailBackend
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from integrations.email.account import email_account
from integrations.messaging import Accepted, Ambiguous, Found, Refused, Transport
from integrations.models import OutboundMessage

logger = logging.getLogger(__name__)

Status = OutboundMessage.Status

POSTMARK_BACKEND = "anymail.backends.postmark.EmailBackend"
LOCAL_BACKENDS = {
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
}
METADATA_KEY = "careflow_message"

STATUS_MAP: dict[str, str] = {
    "queued": Status.SENT,
    "sent": Status.SENT,
    "deferred": Status.SENT,
    "delivered": Status.DELIVERED,
    "opened": Status.DELIVERED,
    "clicked": Status.DELIVERED,
    "complained": Status.DELIVERED,
    "unsubscribed": Status.DELIVERED,
    "bounced": Status.UNDELIVERED,
    "rejected": Status.FAILED,
    "failed": Status.FAILED,
}
# Webhooks repeat and arrive out of order: a status applies only above the current rank.
STATUS_RANK: dict[str, int] = {
    "": 0,
    "queued": 1,
    "sent": 2,
    "deferred": 3,
    "delivered": 4,
    "bounced": 4,
    "rejected": 4,
    "failed": 4,
    "opened": 5,
    "clicked": 5,
    "complained": 6,
    "unsubscribed": 6,
}

# Postmark's API error codes (https://postmarkapp.com/developer/api/overview#error-codes),
# plus careflow's own for what never reached an answer.
ERROR_EXPLANATIONS: dict[str, str] = {
    "10": "Postmark refused the server token: check the integration's token",
    "300": "Postmark found the email invalid (an address, the subject or the body)",
    "400": "the From address is not a confirmed sender signature in Postmark",
    "401": "the From address's sender signature is not confirmed yet in Postmark",
    "402": "Postmark could not read the request",
    "405": "the Postmark account cannot send (out of credits or suspended)",
    "406": "the recipient is inactive in Postmark (an earlier hard bounce or spam complaint)",
    "412": "the Postmark account is pending approval and may only send to its own domain",
    "413": "the Postmark account may not send (pending approval or suspended)",
    "429": "Postmark's rate limit: careflow tries again later",
    "500": "Postmark had an internal error",
    "1235": "the message stream does not exist in this Postmark server",
    "HardBounce": "the recipient's mail server refused the address (hard bounce)",
    "SoftBounce": "the recipient's mail server could not take the message for now",
    "SpamComplaint": "the recipient marked the message as spam",
    "network": "no answer from the email provider",
    "lookup": "the email provider's message search did not answer",
    "invalid": "the email could not be built (an address or a header is invalid)",
    "local": "the local email backend could not write the message",
}

_lock = threading.Lock()


@lru_cache(maxsize=256)
def _postmark_connection(
    server_token: str, api_url: str, timeout: float, message_stream: str
) -> BaseEmailBackend:
    """An open anymail Postmark backend, reused per process so connections stay warm."""
    connection = get_connection(
        POSTMARK_BACKEND,
        server_token=server_token,
        api_url=api_url,
        timeout=timeout,
        message_stream=message_stream,
    )
    connection.open()
    return connection


@lru_cache(maxsize=256)
def _search_session() -> requests.Session:
    return requests.Session()


def _never_connected(exc: BaseException) -> bool:
    """True only when no TCP connection was made, so the ESP cannot have the request.
    anymail re-raises requests' error with the original as its cause: both are read."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, requests.ConnectTimeout):
            return True
        reason = seen.args[0] if seen.args else None
        reason = getattr(reason, "reason", reason)
        if isinstance(reason, NewConnectionError | ConnectTimeoutError):
            return True
        seen = seen.__cause__
    return False


def _error_code(exc: AnymailAPIError) -> str:
    """Postmark's ErrorCode from an error answer, else the HTTP status."""
    response = getattr(exc, "response", None)
    try:
        code = response.json().get("ErrorCode") if response is not None else None
    except (ValueError, AttributeError):
        code = None
    if isinstance(code, int) and not isinstance(code, bool):
        return str(code)
    return str(exc.status_code or "")


def email_throttle_key(integration: Any) -> str:
    """The throttle's key of an integration's sending: one rate for all its senders."""
    return f"email:{integration.uuid}"


class EmailTransport(Transport):
    channel = "email"
    channel_word = "email"
    can_lookup = True
    # Florida's and Oklahoma's hours and daily limit bind texts and calls, not email.
    phone_rules = False
    status_map = STATUS_MAP
    status_rank = STATUS_RANK

    def _delivery(self) -> str:
        return str(getattr(settings, "CAREFLOW_EMAIL_DELIVERY", "postmark"))

    def _email(self, message: OutboundMessage, connection: BaseEmailBackend) -> Any:
        content = message.content or {}  # type: ignore[attr-defined]
        email = EmailMultiAlternatives(
            subject=str(content.get("subject", "")),
            body=message.body,
            from_email=message.from_number,
            to=[message.to],
            connection=connection,
        )
        if content.get("html"):
            email.attach_alternative(str(content["html"]), "text/html")
        email.metadata = {METADATA_KEY: str(message.uuid)}  # type: ignore[attr-defined]
        # Patients' reading habits are not careflow's business (and pixels leak them).
        email.track_opens = False  # type: ignore[attr-defined]
        email.track_clicks = False  # type: ignore[attr-defined]
        return email

    def send(self, message: OutboundMessage) -> Accepted:
        delivery = self._delivery()
        if delivery in LOCAL_BACKENDS:
            return self._send_local(message, LOCAL_BACKENDS[delivery])
        account = email_account(message.integration)
        with _lock:
            connection = _postmark_connection(
                account.server_token,
                settings.CAREFLOW_POSTMARK_API_URL,
                settings.CAREFLOW_EMAIL_HTTP_TIMEOUT,
                account.message_stream,
            )
        email = self._email(message, connection)
        try:
            email.send()
        except AnymailRecipientsRefused as exc:
            status = email.anymail_status.recipients.get(message.to)
            if status is not None and status.status == "rejected":
                raise Refused("406", ERROR_EXPLANATIONS["406"], opted_out=True) from exc
            raise Refused("300", f"Postmark refused the recipient: {exc}") from exc
        except AnymailAPIError as exc:
            raise self._api_error(message, exc) from exc
        except AnymailError as exc:  # raised before any request: the message cannot be built
            raise Refused("invalid", f"{ERROR_EXPLANATIONS['invalid']} ({exc})") from exc
        except requests.RequestException as exc:
            raise self._network_error(exc) from exc
        status = email.anymail_status
        if not status.message_id:
            raise Ambiguous("network", "Postmark answered without a MessageID")
        return Accepted(provider_id=str(status.message_id), provider_status="sent")

    def send_timeout(self) -> float:
        # What a send waits for Postmark, each of connecting and reading: the core takes a
        # claim older than twice this (plus a margin) for a dead worker's and looks it up.
        # A shorter figure than the real wait would let a slow send be looked up, missed,
        # and sent again while the first request may still be accepted.
        return float(settings.CAREFLOW_EMAIL_HTTP_TIMEOUT)

    def _send_local(self, message: OutboundMessage, backend: str) -> Accepted:
        kwargs: dict[str, Any] = {}
        if backend == LOCAL_BACKENDS["file"]:
            kwargs["file_path"] = settings.EMAIL_FILE_PATH
        try:
            email = self._email(message, get_connection(backend, **kwargs))
            email.extra_headers["X-Careflow-Message"] = str(message.uuid)
            email.send()
        except (OSError, ImproperlyConfigured) as exc:
            # EMAIL_FILE_PATH is not a writable directory: worth another try once fixed.
            raise Refused(
                "local", f"{ERROR_EXPLANATIONS['local']} ({exc})", retryable=True
            ) from exc
        return Accepted(provider_id=f"local-{message.uuid}", provider_status="delivered")

    def _network_error(self, exc: BaseException) -> Refused | Ambiguous:
        name = type(exc).__name__
        logger.warning("transport error sending email: %s", name)
        if _never_connected(exc):
            return Refused(
                "network", f"could not connect to the email provider ({name})", retryable=True
            )
        return Ambiguous(
            "network", f"no answer from the email provider after the request was sent ({name})"
        )

    def _api_error(self, message: OutboundMessage, exc: AnymailAPIError) -> Refused | Ambiguous:
        if isinstance(exc, requests.RequestException) and exc.response is None:
            # anymail wraps requests' own failures (timeouts, dropped connections) in a class
            # that is both: no HTTP answer arrived.
            return self._network_error(exc)
        code = _error_code(exc)
        status = exc.status_code or 0
        logger.info(
            "email provider refused message %s: code=%s status=%s", message.pk, code, status
        )
        explanation = ERROR_EXPLANATIONS.get(code, "")
        text = f"Postmark error {code}" + (f": {explanation}" if explanation else "")
        if code == "406":
            return Refused(code, text, opted_out=True)
        if status == 429 or code == "429":
            return Refused(code, text, retryable=True)
        if status >= 500 or status < 400:
            # A 5xx (or an unreadable 2xx) after the request left: Postmark may have accepted
            # it. Never resend blindly; the metadata search tells.
            return Ambiguous(code or "network", text)
        return Refused(code, text)

    def lookup(self, message: OutboundMessage, *, since: datetime) -> Found | None:
        """The message at Postmark, found by its careflow_message metadata (`since` is not
        needed: the metadata names one message). None: Postmark has no such message."""
        if self._delivery() in LOCAL_BACKENDS:
            # Sent locally means written (or refused): nothing is ever in between.
            if message.provider_sid:
                return Found(provider_id=message.provider_sid, provider_status="delivered")
            return None
        account = email_account(message.integration)
        url = settings.CAREFLOW_POSTMARK_API_URL.rstrip("/") + "/messages/outbound"
        params = {
            "count": "50",
            "offset": "0",
            "recipient": message.to,
            f"metadata_{METADATA_KEY}": str(message.uuid),
        }
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": account.server_token}
        try:
            response = _search_session().get(
                url, params=params, headers=headers, timeout=settings.CAREFLOW_EMAIL_HTTP_TIMEOUT
            )
            response.raise_for_status()
            found = response.json()
            candidates = found["Messages"]
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            logger.warning("email lookup for message %s failed: %s", message.pk, type(exc).__name__)
            raise Ambiguous("lookup", ERROR_EXPLANATIONS["lookup"]) from exc
        for candidate in candidates if isinstance(candidates, list) else []:
            if (
                isinstance(candidate, dict)
                and (candidate.get("Metadata") or {}).get(METADATA_KEY) == str(message.uuid)
                and candidate.get("MessageID")
            ):
                status = "queued" if str(candidate.get("Status")).lower() == "queued" else "sent"
                return Found(provider_id=str(candidate["MessageID"]), provider_status=status)
        return None

    def throttle(self, message: OutboundMessage) -> tuple[str, float] | None:
        rate = email_account(message.integration).send_rate
        return None if rate is None else (email_throttle_key(message.integration), rate)

    def units(self, message: OutboundMessage) -> int:
        return 1

    def explain_error(self, code: str) -> str:
        return ERROR_EXPLANATIONS.get(code, "")
