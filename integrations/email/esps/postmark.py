"""Postmark: anymail's Postmark backend with the integration's server token and message
stream; lookup by Postmark's outbound message search on the metadata; webhooks
authenticated by HTTP basic auth (the integration's own secret) and read by anymail's
Postmark tracking parser.

Postmark's only webhook security is HTTP basic auth in the URL it posts to: each
integration has its own secret (`email_account(...).webhook_auth`), compared in constant
time; no credentials get 401, wrong ones 403, and neither changes anything. A soft bounce is
"deferred" (Postmark keeps trying, a later delivery or hard bounce decides); a hard bounce
or a spam complaint makes the address unmailable.
"""

import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import requests
from anymail.exceptions import AnymailAPIError, AnymailConfigurationError, AnymailError
from anymail.signals import AnymailTrackingEvent, EventType
from anymail.utils import get_request_basic_auth
from anymail.webhooks.postmark import PostmarkTrackingWebhookView
from django import forms
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.utils.crypto import constant_time_compare

from integrations.email.account import WEBHOOK_USER, EmailAccount
from integrations.email.esps.base import METADATA_KEY, Esp, secret_field
from integrations.messaging import Ambiguous, Found, Refused
from integrations.models import Integration, OutboundMessage

logger = logging.getLogger(__name__)

MIN_WEBHOOK_SECRET = 16
# Bounce types after which the address will never take mail: the patient cannot be emailed.
OPT_OUT_TYPES = frozenset({"HardBounce", "SpamComplaint", "SpamNotification"})
MAX_ERROR_CODE = 16  # OutboundMessage.error_code's length

# Postmark's API error codes (https://postmarkapp.com/developer/api/overview#error-codes)
# and its bounce types.
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
}


def _unauthorized() -> HttpResponse:
    response = HttpResponse("authentication required", status=401)
    response["WWW-Authenticate"] = 'Basic realm="careflow email events"'
    return response


class Postmark(Esp):
    name = "postmark"
    label = "Postmark"
    backend = "anymail.backends.postmark.EmailBackend"
    secret_fields = ("server_token", "webhook_secret")
    error_explanations = ERROR_EXPLANATIONS
    new_help_texts = {
        "server_token": "From the provider's server settings (Postmark: API Tokens). "
        "Stored encrypted.",
        "webhook_secret": f"At least {MIN_WEBHOOK_SECRET} characters, stored encrypted: the "
        "password of the webhook URL given to the provider.",
    }

    def connection_kwargs(self, account: EmailAccount) -> dict[str, Any]:
        return {
            "server_token": account.server_token,
            "api_url": django_settings.CAREFLOW_POSTMARK_API_URL,
            "message_stream": account.message_stream,
        }

    def error_code(self, exc: AnymailAPIError) -> str:
        """Postmark's ErrorCode from an error answer, else the HTTP status."""
        response = getattr(exc, "response", None)
        try:
            code = response.json().get("ErrorCode") if response is not None else None
        except (ValueError, AttributeError):
            code = None
        if isinstance(code, int) and not isinstance(code, bool):
            return str(code)
        return str(exc.status_code or "")

    def recipients_refused(self, email: Any, message: OutboundMessage, exc: Exception) -> Refused:
        status = email.anymail_status.recipients.get(message.to)
        if status is not None and status.status == "rejected":
            return Refused("406", ERROR_EXPLANATIONS["406"], opted_out=True)
        return Refused("300", f"Postmark refused the recipient: {exc}")

    def api_error(self, exc: AnymailAPIError, code: str, status: int) -> Refused | Ambiguous:
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

    def lookup(
        self,
        session: requests.Session,
        account: EmailAccount,
        message: OutboundMessage,
        *,
        since: datetime,
        timeout: float,
    ) -> Found | None:
        # `since` is not needed: the metadata names one message.
        url = django_settings.CAREFLOW_POSTMARK_API_URL.rstrip("/") + "/messages/outbound"
        params = {
            "count": "50",
            "offset": "0",
            "recipient": message.to,
            f"metadata_{METADATA_KEY}": str(message.uuid),
        }
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": account.server_token}
        response = session.get(url, params=params, headers=headers, timeout=timeout)
        response.raise_for_status()
        candidates = response.json()["Messages"]
        for candidate in candidates if isinstance(candidates, list) else []:
            if (
                isinstance(candidate, dict)
                and (candidate.get("Metadata") or {}).get(METADATA_KEY) == str(message.uuid)
                and candidate.get("MessageID")
            ):
                status = "queued" if str(candidate.get("Status")).lower() == "queued" else "sent"
                return Found(provider_id=str(candidate["MessageID"]), provider_status=status)
        return None

    def webhook_refusal(
        self, request: HttpRequest, integration: Integration, account: EmailAccount
    ) -> HttpResponse | None:
        expected = account.webhook_auth
        given = get_request_basic_auth(request)
        if not given:  # none, or not decodable
            return _unauthorized()
        if not expected or not constant_time_compare(given, expected):
            logger.warning(
                "rejected email webhook with wrong credentials for integration %s", integration.pk
            )
            return HttpResponseForbidden("invalid credentials")
        return None

    def tracking_event(
        self, request: HttpRequest, account: EmailAccount
    ) -> AnymailTrackingEvent | None:
        try:
            payload = json.loads(request.body)
        except ValueError:
            return None
        if not isinstance(payload, dict):
            return None
        try:
            view = PostmarkTrackingWebhookView(webhook_secret=account.webhook_auth)
            return view.esp_to_anymail_event(payload)
        except (AnymailError, AnymailConfigurationError, ValueError, TypeError, KeyError):
            return None

    def _type(self, event: AnymailTrackingEvent) -> str:
        return str((event.esp_event or {}).get("Type") or "")

    def provider_status(self, event: AnymailTrackingEvent) -> str:
        if event.event_type == EventType.BOUNCED and self._type(event) == "SoftBounce":
            return str(EventType.DEFERRED)
        return str(event.event_type)

    def event_error_code(self, event: AnymailTrackingEvent) -> str:
        return self._type(event)[:MAX_ERROR_CODE]

    def opt_out(self, event: AnymailTrackingEvent) -> str:
        esp_type = self._type(event)
        if esp_type in OPT_OUT_TYPES or event.event_type == EventType.COMPLAINED:
            return esp_type or "SpamComplaint"
        return ""

    def webhook_url(self, integration: Integration, url: str) -> str:
        # Its basic-auth user is fixed, the password is the webhook secret (shown as SECRET:
        # it is write-only).
        scheme, _, rest = url.partition("://")
        return f"{scheme}://{WEBHOOK_USER}:SECRET@{rest}"

    def form_fields(self) -> dict[str, forms.Field]:
        return {
            "server_token": secret_field(
                "Server API token", "Write-only. Leave blank to keep the current token."
            ),
            "webhook_secret": secret_field(
                "Webhook secret",
                f"Write-only, at least {MIN_WEBHOOK_SECRET} characters: the password of the "
                "webhook URL given to the provider. Leave blank to keep the current one.",
            ),
            "message_stream": forms.CharField(
                label="Message stream", initial="outbound", max_length=64, required=False
            ),
        }

    def form_initial(self, account: EmailAccount) -> dict[str, Any]:
        return {"message_stream": account.message_stream}

    def form_values(
        self, cleaned: Mapping[str, Any], secrets: Mapping[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        errors: dict[str, str] = {}
        kept = self.own_secrets(secrets, errors)
        secret = str(cleaned.get("webhook_secret") or "")
        if secret and len(secret) < MIN_WEBHOOK_SECRET:
            errors["webhook_secret"] = f"Use at least {MIN_WEBHOOK_SECRET} characters."
        elif ":" in secret:
            errors["webhook_secret"] = "A basic-auth password cannot hold “:”."  # noqa: S105
        if errors:
            raise ValidationError(errors)
        return {"message_stream": cleaned.get("message_stream") or "outbound"}, kept

    def account_display(self, account: EmailAccount) -> str:
        return f"Postmark, stream “{account.message_stream}”"

    def credentials_check(self, account: EmailAccount, timeout: float) -> tuple[bool, str]:
        """Postmark's `GET /server` answers only to a valid server token."""
        url = django_settings.CAREFLOW_POSTMARK_API_URL.rstrip("/") + "/server"
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": account.server_token}
        try:
            response = requests.get(url, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            return False, f"could not reach the email provider ({type(exc).__name__})."
        if response.status_code == 200:
            try:
                name = str(response.json().get("Name", ""))[:100]
            except (ValueError, AttributeError):
                name = ""
            return True, f"credentials accepted (server: {name or 'unnamed'})."
        try:
            code = str(response.json().get("ErrorCode", response.status_code))
        except (ValueError, AttributeError):
            code = str(response.status_code)
        explanation = ERROR_EXPLANATIONS.get(code, "")
        return False, f"Postmark error {code}" + (f": {explanation}." if explanation else ".")
