"""What an email service provider (ESP) module gives email's transport, webhook view and
admin form, which dispatch on the integration's `esp` setting and name no ESP.

An ESP module holds everything that differs between ESPs behind anymail: the backend and
its connection settings, what its error answers mean, how a message is found again by its
`careflow_message` metadata, how its webhooks authenticate and what their events mean for
status and opt-outs, its admin fields and their validation, its credentials check. What is
the same for every ESP (building the email, network failures, the claim, statuses, the
opt-out record) stays in the transport and the webhook view.
"""

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

import requests
from anymail.exceptions import AnymailAPIError
from anymail.signals import AnymailTrackingEvent
from django import forms
from django.http import HttpRequest, HttpResponse

from integrations.email.account import EmailAccount
from integrations.messaging import Ambiguous, Found, Refused
from integrations.models import Integration, OutboundMessage

Status = OutboundMessage.Status

# The metadata every message carries, so a look-up and a webhook name the message.
METADATA_KEY = "careflow_message"

# Every ESP reports in anymail's normalised tracking event words ("queued", "sent",
# "delivered", "bounced", …). A spam complaint (or an unsubscribe) says the message did
# reach the inbox: it stays "delivered", and the webhook records the email opt-out.
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


def secret_field(label: str, help_text: str) -> forms.CharField:
    """A write-only form field: never rendered back, blank keeps the stored value."""
    return forms.CharField(
        label=label,
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=help_text,
    )


class Esp:
    """One ESP. Subclasses set the class attributes and implement the methods; an instance
    is registered in `integrations.email.esps.ESPS` under its `name` (the `esp` setting)."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    backend: ClassVar[str] = ""  # the anymail backend's import path
    # Its admin form fields, named uniquely across ESPs (they share one form); the secret
    # ones are stored under their field name in `Integration.secrets`, write-only.
    secret_fields: ClassVar[tuple[str, ...]] = ()
    # Help texts of its fields on a new integration's page (nothing stored to keep yet).
    new_help_texts: ClassVar[Mapping[str, str]] = {}
    # Explanations of the error codes its answers and webhooks leave on a message.
    error_explanations: ClassVar[Mapping[str, str]] = {}

    # Sending ---------------------------------------------------------------------------

    def connection_kwargs(self, account: EmailAccount) -> dict[str, Any]:
        """The anymail backend's keyword arguments for `account` (api_url included)."""
        raise NotImplementedError

    def api_error(self, exc: AnymailAPIError, code: str, status: int) -> Refused | Ambiguous:
        """What an HTTP error answer (`status`, with `code` from `error_code`) means."""
        raise NotImplementedError

    def error_code(self, exc: AnymailAPIError) -> str:
        """The code an error answer leaves on the message."""
        return str(exc.status_code or "")

    def recipients_refused(self, email: Any, message: OutboundMessage, exc: Exception) -> Refused:
        """anymail found every recipient refused in an accepted answer."""
        return Refused("invalid", f"{self.label} refused the recipient: {exc}")

    def explain(self, code: str) -> str:
        return self.error_explanations.get(code, "")

    # Looking a message up --------------------------------------------------------------

    def lookup(
        self,
        session: requests.Session,
        account: EmailAccount,
        message: OutboundMessage,
        *,
        since: datetime,
        timeout: float,
    ) -> Found | None:
        """The message at the ESP, by its metadata; None: the ESP has no such message.
        Raise requests' errors, ValueError, KeyError or TypeError when the ESP does not
        answer readably: the transport makes that an ambiguous look-up."""
        raise NotImplementedError

    # Webhooks --------------------------------------------------------------------------

    def webhook_refusal(
        self, request: HttpRequest, integration: Integration, account: EmailAccount
    ) -> HttpResponse | None:
        """The answer to a webhook that does not authenticate as `account`'s, or None.
        Logs the refusal with the integration's id, never what the request carried."""
        raise NotImplementedError

    def tracking_event(
        self, request: HttpRequest, account: EmailAccount
    ) -> AnymailTrackingEvent | None:
        """The authenticated request's event, read by anymail's parser; None if unreadable."""
        raise NotImplementedError

    def webhook_failed(self, request: HttpRequest, integration: Integration) -> None:
        """The authenticated request could not be processed (the ESP will send it again):
        forget whatever `webhook_refusal` recorded of it, so the retry is not a replay."""

    def provider_status(self, event: AnymailTrackingEvent) -> str:
        """Our status word for an event (anymail's event type, unless the ESP says more)."""
        return str(event.event_type)

    def event_error_code(self, event: AnymailTrackingEvent) -> str:
        """The error code a bounce or rejection leaves on the message."""
        return ""

    def opt_out(self, event: AnymailTrackingEvent) -> str:
        """The evidence name of an event after which the address will never take mail (a
        permanent failure, a complaint), or "": the patient cannot be emailed any more."""
        return ""

    def webhook_url(self, integration: Integration, url: str) -> str:
        """`url` (this integration's events endpoint) as it is entered at the ESP."""
        return url

    # The admin form --------------------------------------------------------------------

    def form_fields(self) -> dict[str, forms.Field]:
        """Its admin fields (labelled with the ESP's name: without script, all show)."""
        return {}

    def form_initial(self, account: EmailAccount) -> dict[str, Any]:
        return {}

    def form_values(
        self, cleaned: Mapping[str, Any], secrets: Mapping[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(its settings, its secrets) from the cleaned form; `secrets` holds the stored
        value of each secret field left blank. Raise ValidationError keyed by field."""
        return {}, self.own_secrets(secrets, {})

    def own_secrets(self, secrets: Mapping[str, str], errors: dict[str, str]) -> dict[str, str]:
        """Its secrets among `secrets` (another ESP's are dropped); each missing one is
        added to `errors`."""
        kept = {name: secrets[name] for name in self.secret_fields if secrets.get(name)}
        for name in self.secret_fields:
            if name not in kept:
                errors.setdefault(name, "This field is required.")
        return kept

    def account_display(self, account: EmailAccount) -> str:
        return self.label

    def credentials_check(self, account: EmailAccount, timeout: float) -> tuple[bool, str]:
        """(accepted, what the ESP said), for support staff; never a secret."""
        return False, "this email provider has no credentials check"
