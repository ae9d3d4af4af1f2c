"""Email's transport: send and look up through django-anymail, by the integration's ESP.

The messaging core (claim → decide → throttle → send → accepted / refused / ambiguous →
reconcile) calls only this. What differs between ESPs (anymail's backend and its settings,
what an error answer means, how a message is found again) is the ESP's module's
(`integrations.email.esps`), picked by the integration's `esp` setting. Every message
carries metadata {"careflow_message": <uuid>}, so an ambiguous attempt is found again by the
ESP's search, and webhooks name the message they are about.

Status words are anymail's normalised tracking events ("queued", "sent", "delivered",
"bounced", …), so every ESP behind anymail reports in the same words.

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

from integrations.email.account import EmailAccount, email_account
from integrations.email.esps import ESPS, esp_get
from integrations.email.esps.base import METADATA_KEY, STATUS_MAP, STATUS_RANK, Esp
from integrations.messaging import Accepted, Ambiguous, Found, Refused, Transport
from integrations.models import OutboundMessage

__all__ = ["METADATA_KEY", "STATUS_MAP", "STATUS_RANK", "EmailTransport"]

logger = logging.getLogger(__name__)

LOCAL_BACKENDS = {
    "console": "django.core.mail.backends.console.EmailBackend",
    "file": "django.core.mail.backends.filebased.EmailBackend",
}

# careflow's own codes, for what never reached an ESP's answer.
ERROR_EXPLANATIONS: dict[str, str] = {
    "network": "no answer from the email provider",
    "lookup": "the email provider's message search did not answer",
    "invalid": "the email could not be built (an address or a header is invalid)",
    "local": "the local email backend could not write the message",
    "esp": "the integration names an email provider careflow does not offer",
}


def email_error_explanation(code: str) -> str:
    """What an email error code means, whichever ESP (or careflow) left it."""
    found = ERROR_EXPLANATIONS.get(code, "")
    for esp in ESPS.values():
        found = found or esp.explain(code)
    return found


_lock = threading.Lock()


@lru_cache(maxsize=256)
def _connection(
    backend: str, kwargs: tuple[tuple[str, Any], ...], timeout: float
) -> BaseEmailBackend:
    """An open anymail backend, reused per process so connections stay warm."""
    connection = get_connection(backend, timeout=timeout, **dict(kwargs))
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


def email_throttle_key(integration: Any) -> str:
    """The throttle's key of an integration's sending: one rate for all its senders."""
    return f"email:{integration.uuid}"


class EmailTransport(Transport):
    channel = "email"
    channel_word = "email"
    can_lookup = True
    # Florida's and Oklahoma's hours and daily limit bind texts and calls, not email.
    phone_rules = False
    # Postmark's ErrorCode 10 (bad server token), Mailgun's 401 (careflow records "mg401").
    credentials_error_codes = frozenset({"10", "mg401"})
    status_map = STATUS_MAP
    status_rank = STATUS_RANK

    def _delivery(self) -> str:
        return str(getattr(settings, "CAREFLOW_EMAIL_DELIVERY", "esp"))

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

    def _esp(self, account: EmailAccount) -> Esp:
        esp = esp_get(account.esp)
        if esp is None:
            raise Refused("esp", ERROR_EXPLANATIONS["esp"])
        return esp

    def send(self, message: OutboundMessage) -> Accepted:
        delivery = self._delivery()
        if delivery in LOCAL_BACKENDS:
            return self._send_local(message, LOCAL_BACKENDS[delivery])
        account = email_account(message.integration)
        esp = self._esp(account)
        with _lock:
            connection = _connection(
                esp.backend,
                tuple(sorted(esp.connection_kwargs(account).items())),
                settings.CAREFLOW_EMAIL_HTTP_TIMEOUT,
            )
        email = self._email(message, connection)
        try:
            email.send()
        except AnymailRecipientsRefused as exc:
            raise esp.recipients_refused(email, message, exc) from exc
        except AnymailAPIError as exc:
            raise self._api_error(esp, message, exc) from exc
        except AnymailError as exc:  # raised before any request: the message cannot be built
            raise Refused("invalid", f"{ERROR_EXPLANATIONS['invalid']} ({exc})") from exc
        except requests.RequestException as exc:
            raise self._network_error(exc) from exc
        status = email.anymail_status
        if not status.message_id:
            raise Ambiguous("network", f"{esp.label} answered without a message id")
        return Accepted(provider_id=str(status.message_id), provider_status="sent")

    def send_timeout(self) -> float:
        # What a send waits for the ESP, each of connecting and reading: the core takes a
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

    def _api_error(
        self, esp: Esp, message: OutboundMessage, exc: AnymailAPIError
    ) -> Refused | Ambiguous:
        if isinstance(exc, requests.RequestException) and exc.response is None:
            # anymail wraps requests' own failures (timeouts, dropped connections) in a class
            # that is both: no HTTP answer arrived.
            return self._network_error(exc)
        code = esp.error_code(exc)
        status = exc.status_code or 0
        logger.info(
            "email provider refused message %s: code=%s status=%s", message.pk, code, status
        )
        return esp.api_error(exc, code, status)

    def lookup(self, message: OutboundMessage, *, since: datetime) -> Found | None:
        """The message at the ESP, found by its careflow_message metadata. None: the ESP
        has no such message; Ambiguous("lookup"): the ESP did not answer readably."""
        if self._delivery() in LOCAL_BACKENDS:
            # Sent locally means written (or refused): nothing is ever in between.
            if message.provider_sid:
                return Found(provider_id=message.provider_sid, provider_status="delivered")
            return None
        account = email_account(message.integration)
        esp = esp_get(account.esp)
        if esp is None:
            raise Ambiguous("esp", ERROR_EXPLANATIONS["esp"])
        try:
            return esp.lookup(
                _search_session(),
                account,
                message,
                since=since,
                timeout=settings.CAREFLOW_EMAIL_HTTP_TIMEOUT,
            )
        except (requests.RequestException, ValueError, KeyError, TypeError) as exc:
            logger.warning("email lookup for message %s failed: %s", message.pk, type(exc).__name__)
            raise Ambiguous("lookup", ERROR_EXPLANATIONS["lookup"]) from exc

    def throttle(self, message: OutboundMessage) -> tuple[str, float] | None:
        rate = email_account(message.integration).send_rate
        return None if rate is None else (email_throttle_key(message.integration), rate)

    def units(self, message: OutboundMessage) -> int:
        return 1

    def explain_error(self, code: str) -> str:
        return email_error_explanation(code)
