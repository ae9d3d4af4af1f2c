"""Mailgun: anymail's Mailgun backend with the integration's API key, sender domain and
region; the metadata travels as Mailgun's user-variables (`v:careflow_message`); lookup by
Mailgun's Events API; webhooks authenticated by Mailgun's HMAC signature and read by
anymail's Mailgun tracking parser.

A webhook carries {"signature": {"timestamp", "token", "signature"}, "event-data": {...}}:
the signature is HMAC-SHA256 of timestamp + token under the integration's webhook signing
key, compared in constant time. A timestamp more than `SIGNATURE_WINDOW` away from now is
stale, and a token seen before (for this integration, within twice that window) is a replay:
both are refused with 406, which tells Mailgun not to retry. A permanent failure and a
complaint make the address unmailable; a temporary failure only defers the message
(Mailgun keeps trying).
"""

import contextlib
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests
from anymail.exceptions import AnymailAPIError, AnymailConfigurationError, AnymailError
from anymail.signals import AnymailTrackingEvent, EventType
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from django import forms
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.utils.crypto import constant_time_compare
from redis.exceptions import RedisError

from common.coordination import coordination_redis
from integrations.email.account import EmailAccount
from integrations.email.esps.base import METADATA_KEY, STATUS_RANK, Esp, secret_field
from integrations.messaging import Ambiguous, Found, Refused
from integrations.models import Integration, OutboundMessage

logger = logging.getLogger(__name__)

REGIONS = {"us": "US (api.mailgun.net)", "eu": "EU (api.eu.mailgun.net)"}
# How far a webhook's signed timestamp may be from our clock (Mailgun's own examples use
# 15 minutes); a token is remembered for twice that, so a replay is refused even while
# the clocks disagree.
SIGNATURE_WINDOW = 15 * 60
# Look-ups read at most this many pages of events (300 each) before giving up undecided.
LOOKUP_PAGES = 10
LOOKUP_PAGE_SIZE = 300
# The events of a message start when Mailgun accepts it: a margin for the clocks.
LOOKUP_MARGIN = timedelta(minutes=5)
MAX_ERROR_CODE = 16  # OutboundMessage.error_code's length
# Private API keys: "key-" + 32 hex digits (older accounts) or 32 hex digits and two
# 8-digit groups; domains: DNS names with at least one dot.
API_KEY = re.compile(r"^(key-[0-9a-f]{32}|[0-9a-f]{32}-[0-9a-f]{8}-[0-9a-f]{8})$")
SIGNING_KEY = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
DOMAIN = re.compile(
    r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z](?:[a-z0-9-]{0,61}[a-z0-9])$"
)

ERROR_EXPLANATIONS: dict[str, str] = {
    "mg400": "Mailgun refused the request (an address, a header or the body is invalid)",
    "mg401": "Mailgun refused the API key: check the integration's key",
    "mg402": "the Mailgun account cannot send (a payment is due)",
    "mg403": "Mailgun forbids this send (a sandbox domain may only send to its authorised "
    "recipients)",
    "mg404": "Mailgun does not know the sending domain: check the domain and the region",
    "mg413": "Mailgun found the message too large",
    "mg429": "Mailgun's rate limit: careflow tries again later",
    "mg500": "Mailgun had an internal error",
    "mg-bounce": "the recipient's mail server refused the address (permanent failure)",
    # Mailgun's reasons cut to the column's 16 characters.
    "mg-suppress-boun": "Mailgun did not send: the address bounced before",
    "mg-suppress-comp": "Mailgun did not send: the recipient complained before",
    "mg-suppress-unsu": "Mailgun did not send: the recipient unsubscribed before",
    "mg-temporary": "the recipient's mail server could not take the message for now",
    "mg-complained": "the recipient marked the message as spam",
}

_seen_lock = threading.Lock()
# Tokens seen in this process, for the embedded setup that has no Redis (one process).
_seen_here: dict[str, float] = {}


def api_url(account: EmailAccount) -> str:
    """The API base of the integration's region, ".../v3" (the tests' sandbox stands in)."""
    if account.settings.get("mailgun_region") == "eu":
        return str(django_settings.CAREFLOW_MAILGUN_EU_API_URL).rstrip("/")
    return str(django_settings.CAREFLOW_MAILGUN_API_URL).rstrip("/")


def _domain(account: EmailAccount) -> str:
    return str(account.settings.get("mailgun_domain") or "")


def _key(account: EmailAccount) -> str:
    return str(account.secrets.get("mailgun_api_key") or "")


def signature_expected(signing_key: str, timestamp: str, token: str) -> str:
    return hmac.new(
        signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()


def _token_name(integration: Integration, token: str) -> str:
    digest = hashlib.sha256(token.encode()).hexdigest()
    return f"careflow:mailgun-token:{integration.uuid}:{digest}"


def _token_forget(integration: Integration, token: str) -> None:
    name = _token_name(integration, token)
    client = coordination_redis()
    if client is not None:
        with contextlib.suppress(RedisError):
            client.delete(name)
        return
    with _seen_lock:
        _seen_here.pop(name, None)


def _token(request: HttpRequest) -> str:
    try:
        return str(json.loads(request.body)["signature"]["token"])
    except (ValueError, KeyError, TypeError):
        return ""


def _first_use(integration: Integration, token: str) -> bool:
    """Record `token` as used by `integration`'s webhooks; False if it was already."""
    name = _token_name(integration, token)
    client = coordination_redis()
    if client is not None:
        try:
            return bool(client.set(name, 1, nx=True, ex=2 * SIGNATURE_WINDOW))
        except RedisError:
            # Refusing every webhook while Redis is away would lose their events; the
            # signature and the timestamp still hold, and statuses only move forward.
            logger.warning("mailgun webhook replay check skipped: Redis unavailable")
            return True
    now = time.monotonic()
    with _seen_lock:
        for old in [k for k, at in _seen_here.items() if now - at > 2 * SIGNATURE_WINDOW]:
            del _seen_here[old]
        if name in _seen_here:
            return False
        _seen_here[name] = now
        return True


def _event_error_code(event_data: Mapping[str, Any]) -> str:
    kind = event_data.get("event")
    if kind == "complained":
        return "mg-complained"
    if kind == "failed" and event_data.get("severity") == "temporary":
        return "mg-temporary"
    if kind in ("failed", "rejected"):
        reason = str(event_data.get("reason") or "bounce")
        return f"mg-{reason}"[:MAX_ERROR_CODE]
    return ""


class Mailgun(Esp):
    name = "mailgun"
    label = "Mailgun"
    backend = "anymail.backends.mailgun.EmailBackend"
    secret_fields = ("mailgun_api_key", "mailgun_webhook_signing_key")
    error_explanations = ERROR_EXPLANATIONS
    new_help_texts = {
        "mailgun_api_key": "From Mailgun's API Security page. Stored encrypted.",
        "mailgun_webhook_signing_key": "From Mailgun's Webhooks page (HTTP webhook signing "
        "key). Stored encrypted.",
    }

    def connection_kwargs(self, account: EmailAccount) -> dict[str, Any]:
        return {
            "api_key": _key(account),
            "sender_domain": _domain(account),
            "api_url": api_url(account),
        }

    def error_code(self, exc: AnymailAPIError) -> str:
        return f"mg{exc.status_code or ''}"

    def api_error(self, exc: AnymailAPIError, code: str, status: int) -> Refused | Ambiguous:
        explanation = self.explain(code)
        said = ""
        # Mailgun says what was wrong in {"message": ...}; it goes on the message's row
        # (which holds the address already), never in a log.
        with contextlib.suppress(ValueError, AttributeError):
            said = str(exc.response.json().get("message") or "")[:200]  # type: ignore[union-attr]
        text = f"Mailgun error {status}" + (f": {explanation}" if explanation else "")
        text += f" ({said})" if said and status == 400 else ""
        if status == 429:
            return Refused(code, text, retryable=True)
        if status >= 500 or status < 400:
            # After the request left: Mailgun may have accepted it. The Events API tells.
            return Ambiguous(code if status >= 500 else "network", text)
        return Refused(code, text)

    def explain(self, code: str) -> str:
        found = ERROR_EXPLANATIONS.get(code, "")
        if not found and code.startswith("mg5"):
            return ERROR_EXPLANATIONS["mg500"]
        if not found and code.startswith("mg-"):
            return "Mailgun did not deliver the message"
        return found

    def lookup(
        self,
        session: requests.Session,
        account: EmailAccount,
        message: OutboundMessage,
        *,
        since: datetime,
        timeout: float,
    ) -> Found | None:
        """The message's events since `since`, by recipient, matched on user-variables;
        the furthest status they reach (and its error code) is what was found."""
        url: str | None = f"{api_url(account)}/{quote(_domain(account), safe='')}/events"
        params: dict[str, str] | None = {
            "recipient": message.to,
            "begin": f"{(since - LOOKUP_MARGIN).timestamp():.3f}",
            "ascending": "yes",
            "limit": str(LOOKUP_PAGE_SIZE),
        }
        mine: list[dict[str, Any]] = []
        for _ in range(LOOKUP_PAGES):
            if url is None:
                break
            response = session.get(url, params=params, auth=("api", _key(account)), timeout=timeout)
            response.raise_for_status()
            page = response.json()
            items = page["items"]
            if not isinstance(items, list):
                raise TypeError("items is not a list")
            if not items:
                url = None
                break
            mine.extend(
                item
                for item in items
                if isinstance(item, dict)
                and (item.get("user-variables") or {}).get(METADATA_KEY) == str(message.uuid)
            )
            # The next page's URL carries the query: no parameters of ours again.
            url, params = str(page["paging"]["next"]), None
        if url is not None:
            raise ValueError("too many events to read")
        return self._found(mine)

    def _found(self, events: list[dict[str, Any]]) -> Found | None:
        provider_id, accepted_at, best, best_rank, error_code = "", None, "", -1, ""
        reported_at = None
        for item in events:
            headers = (item.get("message") or {}).get("headers") or {}
            if headers.get("message-id") and not provider_id:
                provider_id = f"<{str(headers['message-id']).strip('<>')}>"
            moment = datetime.fromtimestamp(float(item.get("timestamp") or 0), tz=UTC)
            status = self._status_word(item)
            if item.get("event") == "accepted" and accepted_at is None:
                accepted_at = moment
            rank = STATUS_RANK.get(status, -1)
            if rank > best_rank:
                best, best_rank, error_code, reported_at = (
                    status,
                    rank,
                    _event_error_code(item),
                    moment,
                )
        if not provider_id:
            return None
        return Found(
            provider_id=provider_id,
            provider_status=best or "sent",
            error_code=error_code,
            accepted_at=accepted_at,
            reported_at=reported_at,
        )

    @staticmethod
    def _status_word(event_data: Mapping[str, Any]) -> str:
        kind = MailgunTrackingWebhookView.event_types.get(str(event_data.get("event")), "")
        if kind == EventType.QUEUED:
            return "sent"  # accepted: what a send's answer says
        if kind == EventType.BOUNCED and event_data.get("severity") == "temporary":
            return str(EventType.DEFERRED)
        return str(kind)

    def webhook_refusal(
        self, request: HttpRequest, integration: Integration, account: EmailAccount
    ) -> HttpResponse | None:
        signing_key = str(account.secrets.get("mailgun_webhook_signing_key") or "")
        try:
            block = json.loads(request.body)["signature"]
            timestamp, token, signature = (
                str(block["timestamp"]),
                str(block["token"]),
                str(block["signature"]),
            )
        except (ValueError, KeyError, TypeError):
            response = HttpResponse("signature required", status=401)
            return response
        if not signing_key or not constant_time_compare(
            signature, signature_expected(signing_key, timestamp, token)
        ):
            logger.warning(
                "rejected email webhook with a wrong signature for integration %s", integration.pk
            )
            return HttpResponseForbidden("invalid signature")
        try:
            age = abs(time.time() - float(timestamp))
        except ValueError:
            age = float("inf")
        if age > SIGNATURE_WINDOW:
            logger.warning("rejected a stale email webhook for integration %s", integration.pk)
            return HttpResponse("stale signature", status=406)
        if not _first_use(integration, token):
            logger.warning("rejected a replayed email webhook for integration %s", integration.pk)
            return HttpResponse("replayed signature", status=406)
        return None

    def webhook_failed(self, request: HttpRequest, integration: Integration) -> None:
        token = _token(request)
        if token:
            _token_forget(integration, token)

    def tracking_event(
        self, request: HttpRequest, account: EmailAccount
    ) -> AnymailTrackingEvent | None:
        try:
            payload = json.loads(request.body)
        except ValueError:
            return None
        if not isinstance(payload, dict) or not isinstance(payload.get("event-data"), dict):
            return None
        signing_key = str(account.secrets.get("mailgun_webhook_signing_key") or "")
        try:
            view = MailgunTrackingWebhookView(webhook_signing_key=signing_key)
            return view.esp_to_anymail_event(payload)
        except (AnymailError, AnymailConfigurationError, ValueError, TypeError, KeyError):
            return None

    def event_error_code(self, event: AnymailTrackingEvent) -> str:
        return _event_error_code((event.esp_event or {}).get("event-data") or {})

    def opt_out(self, event: AnymailTrackingEvent) -> str:
        event_data = (event.esp_event or {}).get("event-data") or {}
        if event.event_type == EventType.COMPLAINED:
            return "MailgunComplaint"
        if event.event_type == EventType.BOUNCED and event_data.get("severity") == "permanent":
            return "MailgunPermanentFailure"
        return ""

    def form_fields(self) -> dict[str, forms.Field]:
        return {
            "mailgun_api_key": secret_field(
                "Mailgun: private API key",
                "Write-only (Mailgun: API Security). Leave blank to keep the current key.",
            ),
            "mailgun_domain": forms.CharField(
                label="Mailgun: sending domain",
                required=False,
                max_length=253,
                help_text="The domain verified at Mailgun, e.g. mg.clinic.example.",
            ),
            "mailgun_region": forms.ChoiceField(
                label="Mailgun: region",
                choices=list(REGIONS.items()),
                initial="us",
                required=False,
                help_text="Where the domain's account lives.",
            ),
            "mailgun_webhook_signing_key": secret_field(
                "Mailgun: webhook signing key",
                "Write-only (Mailgun: Webhooks → HTTP webhook signing key). Leave blank to keep "
                "the current key.",
            ),
        }

    def form_initial(self, account: EmailAccount) -> dict[str, Any]:
        return {
            "mailgun_domain": _domain(account),
            "mailgun_region": account.settings.get("mailgun_region") or "us",
        }

    def form_values(
        self, cleaned: Mapping[str, Any], secrets: Mapping[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        errors: dict[str, str] = {}
        kept = self.own_secrets(secrets, errors)
        api_key = str(cleaned.get("mailgun_api_key") or "")
        if api_key and not API_KEY.match(api_key):
            errors["mailgun_api_key"] = (
                "This is not a Mailgun private API key (“key-” and 32 hexadecimal digits, or "
                "32 hexadecimal digits and two groups of 8)."
            )
        signing_key = str(cleaned.get("mailgun_webhook_signing_key") or "")
        if signing_key and not SIGNING_KEY.match(signing_key):
            errors["mailgun_webhook_signing_key"] = (
                "This is not a Mailgun webhook signing key (16 or more letters, digits or “-”)."
            )
        domain = str(cleaned.get("mailgun_domain") or "").strip().lower().rstrip(".")
        if not domain:
            errors["mailgun_domain"] = "This field is required."
        elif not DOMAIN.match(domain):
            errors["mailgun_domain"] = (
                "Enter a domain name such as mg.clinic.example (no “https://”, path or address)."
            )
        region = str(cleaned.get("mailgun_region") or "us")
        if errors:
            raise ValidationError(errors)
        return {"mailgun_domain": domain, "mailgun_region": region}, kept

    def account_display(self, account: EmailAccount) -> str:
        region = str(account.settings.get("mailgun_region") or "us").upper()
        return f"Mailgun, domain “{_domain(account)}” ({region})"

    def credentials_check(self, account: EmailAccount, timeout: float) -> tuple[bool, str]:
        """Mailgun's `GET /v3/domains/<domain>` answers only to a key of the domain's account."""
        url = f"{api_url(account)}/domains/{quote(_domain(account), safe='')}"
        try:
            response = requests.get(url, auth=("api", _key(account)), timeout=timeout)
        except requests.RequestException as exc:
            return False, f"could not reach the email provider ({type(exc).__name__})."
        if response.status_code == 200:
            try:
                state = str(response.json()["domain"]["state"])[:40]
            except (ValueError, KeyError, TypeError):
                state = "unknown"
            return True, f"credentials accepted (domain {_domain(account)}: {state})."
        code = f"mg{response.status_code}"
        explanation = self.explain(code)
        return False, f"Mailgun error {response.status_code}" + (
            f": {explanation}." if explanation else "."
        )
