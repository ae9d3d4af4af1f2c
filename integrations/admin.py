from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from twilio.base.exceptions import TwilioRestException

from integrations.models import InboundMessage, Integration, MessagingPolicy, OutboundMessage
from integrations.twilio.client import twilio_client
from integrations.twilio.errors import error_explanation
from patients.phones import phone_to_e164
from patients.tenancy import OrganizationScopedAdmin, ReadOnlyAdminMixin


class IntegrationForm(forms.ModelForm):
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

    class Meta:
        model = Integration
        fields = [
            "organization",
            "name",
            "adapter",
            "account_sid",
            "auth_token",
            "sending_numbers",
            "messaging_service_sid",
            "enabled",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["auth_token"] = ""
        self.initial["sending_numbers"] = "\n".join(self.instance.sending_numbers or [])
        if self.instance.pk is None:
            self.fields["auth_token"].required = True
            self.fields["auth_token"].help_text = "From the Twilio Console. Stored encrypted."

    def clean_account_sid(self) -> str:
        return self.cleaned_data["account_sid"].strip()

    def clean_auth_token(self) -> str:
        token: str = self.cleaned_data.get("auth_token", "")
        if not token and self.instance.pk:
            return Integration.objects.get(pk=self.instance.pk).auth_token
        return token

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


@admin.register(Integration)
class IntegrationAdmin(OrganizationScopedAdmin):
    form = IntegrationForm
    list_display = ["name", "organization", "adapter", "masked_sid", "numbers", "enabled"]
    list_filter = ["adapter", "enabled", "organization"]
    list_select_related = ["organization"]
    actions = ["check_credentials"]

    @admin.display(description="Account SID")
    def masked_sid(self, obj: Integration) -> str:
        return obj.masked_account_sid()

    @admin.display(description="Sending numbers")
    def numbers(self, obj: Integration) -> str:
        return ", ".join(obj.sending_numbers)

    @admin.action(description="Check credentials with Twilio")
    def check_credentials(self, request: HttpRequest, queryset: QuerySet[Integration]) -> None:
        for integration in queryset:
            client = twilio_client(
                account_sid=integration.account_sid, auth_token=integration.auth_token
            )
            try:
                account = client.api.v2010.accounts(integration.account_sid).fetch()
            except TwilioRestException as exc:
                explanation = error_explanation(str(exc.code)) or exc.msg
                self.message_user(
                    request,
                    f"{integration}: Twilio error {exc.code}: {explanation}",
                    messages.ERROR,
                )
            except Exception as exc:  # noqa: BLE001 — report any transport failure to the user
                self.message_user(
                    request,
                    f"{integration}: could not reach Twilio ({type(exc).__name__}).",
                    messages.ERROR,
                )
            else:
                self.message_user(
                    request,
                    f"{integration}: credentials accepted (account status: {account.status}).",
                    messages.SUCCESS,
                )


@admin.register(OutboundMessage)
class OutboundMessageAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    list_display = [
        "created_at",
        "to",
        "from_number",
        "short_body",
        "status_badge",
        "segments",
        "error",
        "patient",
        "is_test",
    ]
    list_filter = ["status", "is_test", "purpose", "organization"]
    list_select_related = ["patient"]
    search_fields = ["to", "provider_sid", "idempotency_key"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    readonly_fields = ["error_explained"]

    @admin.display(description="Body")
    def short_body(self, obj: OutboundMessage) -> str:
        return obj.body if len(obj.body) <= 60 else obj.body[:57] + "…"

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: OutboundMessage) -> str:
        return format_html(
            "<span title='{}'>{}</span>", obj.provider_status or "", obj.get_status_display()
        )

    @admin.display(description="Error / reason")
    def error(self, obj: OutboundMessage) -> str:
        if obj.skip_reason:
            return obj.skip_reason
        if obj.error_code:
            return f"{obj.error_code}: {error_explanation(obj.error_code) or obj.error_message}"
        return ""

    @admin.display(description="What the error means")
    def error_explained(self, obj: OutboundMessage) -> str:
        return error_explanation(obj.error_code) if obj.error_code else ""


@admin.register(MessagingPolicy)
class MessagingPolicyAdmin(OrganizationScopedAdmin):
    list_display = [
        "organization",
        "quiet_hours_start",
        "quiet_hours_end",
        "transactional_per_day",
        "marketing_per_day",
        "marketing_per_week",
    ]
    list_select_related = ["organization"]
    fieldsets = [
        (None, {"fields": ["organization"]}),
        (
            "Quiet hours (recipient's local time; Florida and Oklahoma end at 20:00 regardless)",
            {"fields": ["quiet_hours_start", "quiet_hours_end"]},
        ),
        (
            "Frequency caps per patient (blank: none)",
            {
                "fields": [
                    "transactional_per_day",
                    "transactional_per_week",
                    "marketing_per_day",
                    "marketing_per_week",
                ]
            },
        ),
        ("Keywords", {"fields": ["help_text_reply"]}),
    ]


@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    list_display = [
        "created_at",
        "from_number",
        "patient",
        "short_body",
        "action",
        "needs_review",
        "reviewed_by",
    ]
    list_filter = ["needs_review", "action", "organization"]
    list_select_related = ["patient", "reviewed_by"]
    search_fields = ["from_number", "body", "provider_sid"]
    show_full_result_count = False
    actions = ["mark_reviewed"]

    @admin.display(description="Body")
    def short_body(self, obj: InboundMessage) -> str:
        return obj.body if len(obj.body) <= 60 else obj.body[:57] + "…"

    def has_review_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("integrations.view_inboundmessage"))  # type: ignore[union-attr]

    @admin.action(
        description="Mark as reviewed (record consent separately if needed)", permissions=["review"]
    )
    def mark_reviewed(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        count = queryset.filter(needs_review=True).update(
            needs_review=False, reviewed_by=request.user, reviewed_at=timezone.now()
        )
        self.message_user(request, f"{count} message(s) marked as reviewed.", messages.SUCCESS)
