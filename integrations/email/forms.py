"""The admin form of an email integration: what support staff enter for a clinic's ESP.

Non-secret values go to `Integration.settings`, the server token and webhook secret to the
encrypted `Integration.secrets` (write-only: never rendered back; blank keeps the stored one),
the verified sender addresses to `Integration.senders`.
"""

from typing import Any

import requests
from django import forms
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.urls import reverse

from integrations.email.account import ESPS, WEBHOOK_USER, email_account
from integrations.email.adapter import email_problem
from integrations.email.transport import ERROR_EXPLANATIONS, email_throttle_key
from integrations.forms import IntegrationForm
from integrations.models import Integration

MIN_WEBHOOK_SECRET = 16


def _secret_widget() -> forms.PasswordInput:
    return forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})


def webhook_url(integration: Integration) -> str:
    """Where the ESP posts this integration's events; its basic-auth user is fixed, the
    password is the webhook secret (shown as SECRET: it is write-only)."""
    path = reverse("email-events", kwargs={"integration_uuid": integration.uuid})
    origin = django_settings.CAREFLOW_PUBLIC_URL.rstrip("/")
    scheme, _, host = origin.partition("://")
    return f"{scheme}://{WEBHOOK_USER}:SECRET@{host}{path}"


class EmailIntegrationForm(IntegrationForm):
    adapter_name = "email"
    adapter_label = "Email"
    secret_fields = ("server_token", "webhook_secret")

    esp = forms.ChoiceField(
        label="Email provider", choices=[(esp, esp.title()) for esp in ESPS], initial="postmark"
    )
    server_token = forms.CharField(
        label="Server API token",
        required=False,
        strip=True,
        widget=_secret_widget(),
        help_text="Write-only. Leave blank to keep the current token.",
    )
    webhook_secret = forms.CharField(
        label="Webhook secret",
        required=False,
        strip=True,
        widget=_secret_widget(),
        help_text=(
            f"Write-only, at least {MIN_WEBHOOK_SECRET} characters: the password of the "
            "webhook URL given to the provider. Leave blank to keep the current one."
        ),
    )
    message_stream = forms.CharField(
        label="Message stream", initial="outbound", max_length=64, required=False
    )
    send_rate = forms.FloatField(
        label="Messages per second",
        required=False,
        min_value=0.01,
        help_text="Blank: no limit of careflow's own (the provider still has its limits).",
    )
    sender_addresses = forms.CharField(
        label="Verified sender addresses",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line. Each must be a confirmed sender signature at the provider.",
    )

    class Meta(IntegrationForm.Meta):
        pass

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields[
                "server_token"
            ].help_text = (
                "From the provider's server settings (Postmark: API Tokens). Stored encrypted."
            )
            self.fields["webhook_secret"].help_text = (
                f"At least {MIN_WEBHOOK_SECRET} characters, stored encrypted: the password "
                "of the webhook URL given to the provider."
            )

    def provider_initial(self, integration: Integration) -> dict[str, Any]:
        if integration.pk is None:
            return {}
        account = email_account(integration)
        return {
            "esp": account.esp,
            "message_stream": account.message_stream,
            "send_rate": account.send_rate,
            "sender_addresses": "\n".join(account.senders),
        }

    def clean_sender_addresses(self) -> list[str]:
        addresses, errors = [], []
        for line in self.cleaned_data["sender_addresses"].splitlines():
            address = line.strip()
            if not address:
                continue
            problem = email_problem(address)
            if problem:
                errors.append(f"“{address[:60]}” {problem}.")
            else:
                addresses.append(address.lower())
        if errors:
            raise ValidationError(errors)
        if not addresses:
            raise ValidationError("Enter at least one verified sender address.")
        return list(dict.fromkeys(addresses))

    def clean_webhook_secret(self) -> str:
        secret: str = self.cleaned_data.get("webhook_secret", "")
        if secret and len(secret) < MIN_WEBHOOK_SECRET:
            raise ValidationError(f"Use at least {MIN_WEBHOOK_SECRET} characters.")
        if ":" in secret:
            raise ValidationError("A basic-auth password cannot hold “:”.")
        return secret

    def provider_values(
        self, cleaned: dict[str, Any], secrets: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, str], list[str]]:
        settings: dict[str, Any] = {
            "esp": cleaned.get("esp") or "postmark",
            "message_stream": cleaned.get("message_stream") or "outbound",
        }
        if cleaned.get("send_rate"):
            settings["send_rate"] = cleaned["send_rate"]
        return settings, secrets, list(cleaned.get("sender_addresses") or [])

    @classmethod
    def account_display(cls, integration: Integration) -> str:
        account = email_account(integration)
        return f"{account.esp.title()}, stream “{account.message_stream}”"

    @classmethod
    def rates_display(cls, integration: Integration) -> str:
        rate = email_account(integration).send_rate
        return "no limit" if rate is None else f"{rate:g}"

    @classmethod
    def backlog_keys(cls, integration: Integration) -> list[tuple[str, str]]:
        if email_account(integration).send_rate is None:
            return []  # unthrottled: nothing is booked ahead
        return [("all senders", email_throttle_key(integration))]

    @classmethod
    def inbound_webhook_path(cls, integration: Integration) -> str:
        # Given to the provider with the basic-auth user and the webhook secret (webhook_url).
        return reverse("email-events", kwargs={"integration_uuid": integration.uuid})

    @classmethod
    def credentials_check(cls, integration: Integration) -> tuple[bool, str]:
        """Postmark's `GET /server` answers only to a valid server token."""
        account = email_account(integration)
        url = django_settings.CAREFLOW_POSTMARK_API_URL.rstrip("/") + "/server"
        headers = {"Accept": "application/json", "X-Postmark-Server-Token": account.server_token}
        try:
            response = requests.get(
                url, headers=headers, timeout=django_settings.CAREFLOW_EMAIL_HTTP_TIMEOUT
            )
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
