"""The admin form of a clinic's alert settings: staff emails as lines, the webhook URL checked
as the outbound webhook step checks its URLs, and the signing secret write-only."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from integrations.models import AlertSettings, validate_staff_emails
from integrations.webhook import webhook_url_problem
from patients.inputs import validate_storable_line, validate_storable_text

SECRET_MIN_LENGTH = 16


class AlertSettingsForm(forms.ModelForm):
    staff_emails = forms.CharField(
        label="Staff emails",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        # Declared fields miss the admin's storable-text guard: a NUL or a lone surrogate
        # is a form error here, not a 500 further down.
        validators=[validate_storable_text],
        help_text="One address per line (commas work too). Each alert is emailed to them.",
    )
    webhook_secret = forms.CharField(
        label="Webhook signing secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False),
        validators=[validate_storable_line],
        help_text=(
            f"At least {SECRET_MIN_LENGTH} characters; required with a webhook URL. Every POST "
            "carries X-Careflow-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of “t.” + body>. "
            "Leave blank to keep the stored secret."
        ),
    )

    class Meta:
        model = AlertSettings
        fields = [
            "organization",
            "enabled",
            "staff_emails",
            "webhook_url",
            "webhook_secret",
            "failure_rate_percent",
            "undelivered_rate_percent",
            "minimum_messages",
            "period_minutes",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["staff_emails"] = "\n".join(self.instance.staff_emails or [])
        # Never sent back to the browser, not even in a hidden value.
        self.initial["webhook_secret"] = ""
        self.fields["webhook_url"].help_text = (
            "Optional. Must start with https:// and reach a public address; receives each "
            "alert as JSON."
        )

    def clean_staff_emails(self) -> list[str]:
        raw = self.cleaned_data.get("staff_emails") or ""
        addresses = [part.strip() for part in raw.replace(",", "\n").splitlines()]
        addresses = list(dict.fromkeys(a for a in addresses if a))
        validate_staff_emails(addresses)
        return addresses

    def clean_webhook_url(self) -> str:
        url = (self.cleaned_data.get("webhook_url") or "").strip()
        if url:
            problem = webhook_url_problem(url)
            if problem:
                raise ValidationError(f"Alerts cannot be posted here: {problem}.", code="url")
        return url

    def clean_webhook_secret(self) -> str:
        secret = self.cleaned_data.get("webhook_secret") or ""
        if secret and len(secret) < SECRET_MIN_LENGTH:
            raise ValidationError(
                f"Use at least {SECRET_MIN_LENGTH} characters.", code="secret_short"
            )
        # Blank keeps the stored one.
        return secret or (self.instance.webhook_secret if self.instance.pk else "")

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        secret_refused = "webhook_secret" in self.errors
        if cleaned.get("webhook_url") and not cleaned.get("webhook_secret") and not secret_refused:
            self.add_error(
                "webhook_secret", "Set a signing secret: every alert webhook is signed with it."
            )
        return cleaned
