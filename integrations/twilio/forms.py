"""Twilio's fields on the Integration admin form, mapped to the integration's generic
`settings` (Account SID, Messaging Service SID, sender type, rate), `secrets` (the Auth
Token, write-only) and `senders` (the approved numbers)."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.urls import reverse
from twilio.base.exceptions import TwilioRestException

from integrations.forms import IntegrationForm
from integrations.models import Integration
from integrations.throttle import throttle_key
from integrations.twilio.account import (
    ADAPTER,
    RATE_MAX,
    RATE_MIN,
    SENDER_TYPES,
    twilio_account,
    twilio_settings,
    twilio_settings_validate,
)
from integrations.twilio.client import twilio_client
from integrations.twilio.errors import CREDENTIALS_ERROR_CODES, error_explanation
from patients.phones import phone_to_e164


class TwilioIntegrationForm(IntegrationForm):
    adapter_name = ADAPTER
    adapter_label = "Twilio"
    secret_fields = ("auth_token",)
    queue_limit_seconds = 10 * 3600  # then 21611: the queue is full

    account_sid = forms.CharField(label="Account SID", max_length=34)
    # Write-only: the stored token is never rendered back into the page.
    auth_token = forms.CharField(
        label="Auth Token",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Write-only. Leave blank to keep the current token.",
    )
    sending_numbers = forms.CharField(
        label="Approved sending numbers",
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One per line, e.g. +14155550123. Must be approved (10DLC / toll-free) at Twilio.",
    )
    messaging_service_sid = forms.CharField(
        label="Messaging Service SID", max_length=34, required=False
    )
    sender_type = forms.ChoiceField(
        choices=SENDER_TYPES,
        initial="auto",
        help_text="Sets the default sending rate Twilio allows.",
    )
    segments_per_second = forms.FloatField(
        required=False,
        min_value=RATE_MIN,
        max_value=RATE_MAX,
        help_text="Override, e.g. your 10DLC tier's rate. Blank: long code 1/s, toll-free 3/s, "
        "short code 100/s, 10DLC 12/s.",
    )

    class Meta(IntegrationForm.Meta):
        pass

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields["auth_token"].help_text = "From the Twilio Console. Stored encrypted."

    def provider_initial(self, integration: Integration) -> dict[str, Any]:
        if integration.pk is None:
            return {}
        account = twilio_account(integration)
        return {
            "account_sid": account.account_sid,
            "messaging_service_sid": account.messaging_service_sid,
            "sender_type": account.sender_type,
            "segments_per_second": account.segments_per_second,
            "sending_numbers": "\n".join(integration.senders or []),
        }

    def clean_sending_numbers(self) -> list[str]:
        numbers, errors = [], []
        for line in self.cleaned_data["sending_numbers"].splitlines():
            if not line.strip():
                continue
            try:
                numbers.append(phone_to_e164(line))
            except ValidationError as exc:
                errors.extend(exc.messages)
        if errors:
            raise ValidationError(errors)
        if not numbers:
            raise ValidationError("Enter at least one approved sending number.")
        return list(dict.fromkeys(numbers))

    def provider_values(
        self, cleaned: dict[str, Any], secrets: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, str], list[str]]:
        settings = twilio_settings(
            account_sid=cleaned.get("account_sid", ""),
            messaging_service_sid=cleaned.get("messaging_service_sid", ""),
            sender_type=cleaned.get("sender_type") or "auto",
            segments_per_second=cleaned.get("segments_per_second"),
        )
        senders = list(cleaned.get("sending_numbers") or [])
        twilio_settings_validate(settings, senders)
        return settings, secrets, senders

    @classmethod
    def account_display(cls, integration: Integration) -> str:
        return twilio_account(integration).masked_account_sid()

    @classmethod
    def rates_display(cls, integration: Integration) -> str:
        account = twilio_account(integration)
        return ", ".join(f"{account.send_rate(n):g}" for n in integration.senders)

    @classmethod
    def backlog_keys(cls, integration: Integration) -> list[tuple[str, str]]:
        account = twilio_account(integration)
        senders = [*integration.senders, account.messaging_service_sid]
        return [
            (sender, throttle_key(scope=account.account_sid, sender=sender))
            for sender in senders
            if sender
        ]

    @classmethod
    def inbound_webhook_path(cls, integration: Integration) -> str:
        return reverse("twilio-inbound-sms", kwargs={"integration_uuid": integration.uuid})

    @classmethod
    def credentials_check(cls, integration: Integration) -> tuple[bool, str]:
        accepted, said, _ = cls.credentials_verdict(integration)
        return accepted, said

    @classmethod
    def credentials_verdict(cls, integration: Integration) -> tuple[bool, str, bool]:
        account = twilio_account(integration)
        client = twilio_client(account_sid=account.account_sid, auth_token=account.auth_token)
        try:
            fetched = client.api.v2010.accounts(account.account_sid).fetch()
        except TwilioRestException as exc:
            explanation = error_explanation(str(exc.code)) or exc.msg
            rejected = str(exc.code) in CREDENTIALS_ERROR_CODES or exc.status == 401
            return False, f"Twilio error {exc.code}: {explanation}", rejected
        except Exception as exc:  # noqa: BLE001 — report any transport failure to the user
            return False, f"could not reach Twilio ({type(exc).__name__}).", False
        return True, f"credentials accepted (account status: {fetched.status}).", False
