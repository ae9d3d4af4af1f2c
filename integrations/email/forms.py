"""The admin form of an email integration: what support staff enter for a clinic's ESP.

The ESP is picked by the `esp` field; each ESP's own fields (`integrations.email.esps`) are
all declared here, shown only for the chosen ESP by a small script (without it, all show,
each labelled with its ESP), and only the chosen ESP's are read and validated. Non-secret
values go to `Integration.settings`, the ESP's secrets to the encrypted
`Integration.secrets` (write-only: never rendered back; blank keeps the stored one), the
verified sender addresses to `Integration.senders`.
"""

import json
from typing import Any

from django import forms
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.urls import reverse

from integrations.email.account import email_account
from integrations.email.adapter import email_problem
from integrations.email.esps import ESPS, esp_get
from integrations.email.transport import email_throttle_key
from integrations.forms import IntegrationForm
from integrations.models import Integration

DEFAULT_ESP = "postmark"


def webhook_url(integration: Integration) -> str:
    """Where the integration's ESP posts its events, as it is entered at the ESP (secrets
    shown as SECRET: they are write-only)."""
    path = reverse("email-events", kwargs={"integration_uuid": integration.uuid})
    url = django_settings.CAREFLOW_PUBLIC_URL.rstrip("/") + path
    esp = esp_get(email_account(integration).esp)
    return esp.webhook_url(integration, url) if esp is not None else url


def _esp_fields() -> dict[str, list[str]]:
    return {name: list(esp.form_fields()) for name, esp in ESPS.items()}


class EmailIntegrationForm(IntegrationForm):
    adapter_name = "email"
    adapter_label = "Email"
    secret_fields = tuple(name for esp in ESPS.values() for name in esp.secret_fields)

    esp = forms.ChoiceField(
        label="Email provider",
        choices=[(name, esp.label) for name, esp in ESPS.items()],
        initial=DEFAULT_ESP,
        # Which rows belong to which ESP, for the script that shows only the chosen one's.
        widget=forms.Select(attrs={"data-esp-fields": json.dumps(_esp_fields())}),
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
        help_text="One per line. Each must be a confirmed sender at the provider.",
    )

    class Meta(IntegrationForm.Meta):
        pass

    class Media:
        js = ["integrations/email_esp_fields.js"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only the chosen ESP's secrets are needed: `provider_values` asks for them.
        for name in self.secret_fields:
            self.fields[name].required = False
        if self.instance.pk is None:
            for esp in ESPS.values():
                for name, text in esp.new_help_texts.items():
                    self.fields[name].help_text = text

    def provider_initial(self, integration: Integration) -> dict[str, Any]:
        if integration.pk is None:
            return {}
        account = email_account(integration)
        initial: dict[str, Any] = {
            "esp": account.esp,
            "send_rate": account.send_rate,
            "sender_addresses": "\n".join(account.senders),
        }
        for esp in ESPS.values():
            initial.update(esp.form_initial(account))
        return initial

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

    def provider_values(
        self, cleaned: dict[str, Any], secrets: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, str], list[str]]:
        esp = esp_get(cleaned.get("esp") or "")
        if esp is None:  # the choice field said so already
            raise ValidationError({"esp": "Pick an email provider."})
        own, own_secrets = esp.form_values(cleaned, secrets)
        settings: dict[str, Any] = {"esp": esp.name, **own}
        if cleaned.get("send_rate"):
            settings["send_rate"] = cleaned["send_rate"]
        return settings, own_secrets, list(cleaned.get("sender_addresses") or [])

    @classmethod
    def account_display(cls, integration: Integration) -> str:
        account = email_account(integration)
        esp = esp_get(account.esp)
        return esp.account_display(account) if esp is not None else account.esp

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
        # Entered at the ESP as `webhook_url` gives it (with Postmark's basic-auth user).
        return reverse("email-events", kwargs={"integration_uuid": integration.uuid})

    @classmethod
    def credentials_check(cls, integration: Integration) -> tuple[bool, str]:
        """The ESP's own check, for support staff; never a secret."""
        account = email_account(integration)
        esp = esp_get(account.esp)
        if esp is None:
            return False, "the integration names an email provider careflow does not offer."
        return esp.credentials_check(account, django_settings.CAREFLOW_EMAIL_HTTP_TIMEOUT)


def _declare_esp_fields(form: type[IntegrationForm]) -> None:
    """Each ESP's fields, declared after the ESP choice (admin pages list declared fields
    in order)."""
    for attribute in ("base_fields", "declared_fields"):
        fields: dict[str, forms.Field] = {}
        for name, field in getattr(form, attribute).items():
            fields[name] = field
            if name == "esp":
                for esp in ESPS.values():
                    fields.update(esp.form_fields())
        setattr(form, attribute, fields)


_declare_esp_fields(EmailIntegrationForm)
