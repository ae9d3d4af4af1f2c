"""The admin form of an email integration: what support staff enter for a clinic's ESP.

Non-secret values go to `Integration.settings`, the server token and webhook secret to the
encrypted `Integration.secrets` (write-only: never rendered back; blank keeps the stored one),
the verified sender addresses to `Integration.senders` (issue 15, section 3).
"""

import json
from typing import Any

from django import forms
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.urls import reverse

from integrations.email.account import ESPS, WEBHOOK_USER, email_account
from integrations.email.adapter import email_problem
from integrations.models import Integration

_SECRET_WIDGET = forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
MIN_WEBHOOK_SECRET = 16


def webhook_url(integration: Integration) -> str:
    """Where the ESP posts this integration's events; its basic-auth user is fixed, the
    password is the webhook secret (shown as SECRET: it is write-only)."""
    path = reverse("email-events", kwargs={"integration_uuid": integration.uuid})
    origin = django_settings.CAREFLOW_PUBLIC_URL.rstrip("/")
    scheme, _, host = origin.partition("://")
    return f"{scheme}://{WEBHOOK_USER}:SECRET@{host}{path}"


class EmailIntegrationForm(forms.ModelForm):  # type: ignore[type-arg]
    esp = forms.ChoiceField(
        label="Email provider", choices=[(esp, esp.title()) for esp in ESPS], initial="postmark"
    )
    server_token = forms.CharField(
        label="Server API token",
        required=False,
        strip=True,
        widget=_SECRET_WIDGET,
        help_text="Write-only. Leave blank to keep the current token.",
    )
    webhook_secret = forms.CharField(
        label="Webhook secret",
        required=False,
        strip=True,
        widget=_SECRET_WIDGET,
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

    class Meta:
        model = Integration
        # The adapter is this form's own: save() sets it.
        fields = ["organization", "name", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        account = email_account(self.instance)
        self.initial.update(
            {
                "esp": account.esp,
                "message_stream": account.message_stream,
                "send_rate": account.send_rate,
                "sender_addresses": "\n".join(account.senders),
                "server_token": "",
                "webhook_secret": "",
            }
        )
        if self.instance.pk is None:
            for name in ("server_token", "webhook_secret"):
                self.fields[name].required = True

    def clean_sender_addresses(self) -> list[str]:
        addresses, errors = [], []
        for line in self.cleaned_data["sender_addresses"].splitlines():
            address = line.strip()
            if not address:
                continue
            problem = email_problem(address)
            if problem:
                errors.append(f"“{address[:60]}” {problem}")
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

    def email_values(self) -> dict[str, Any]:
        """What to store: {"settings": ..., "secrets": JSON, "senders": ...}; a blank secret
        keeps the stored one."""
        account = email_account(self.instance)
        stored_secret = account.webhook_auth.partition(":")[2]
        data = self.cleaned_data
        values: dict[str, Any] = {
            "esp": data["esp"],
            "message_stream": data["message_stream"] or "outbound",
        }
        if data.get("send_rate"):
            values["send_rate"] = data["send_rate"]
        return {
            "settings": values,
            # The encrypted text field holds the secrets as one JSON object.
            "secrets": json.dumps(
                {
                    "server_token": data.get("server_token") or account.server_token,
                    "webhook_secret": data.get("webhook_secret") or stored_secret,
                }
            ),
            "senders": data["sender_addresses"],
        }

    def save(self, commit: bool = True) -> Integration:
        integration: Integration = super().save(commit=False)
        values = self.email_values()
        integration.adapter = "email"
        for name, value in values.items():
            setattr(integration, name, value)
        if commit:
            integration.save()
        return integration
