import json
from datetime import timedelta
from typing import Any

import redis
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.views.decorators.debug import sensitive_post_parameters
from twilio.base.exceptions import TwilioRestException

from integrations.home import MESSAGE_OUTCOMES
from integrations.models import InboundMessage, Integration, MessagingPolicy, OutboundMessage
from integrations.throttle import throttle_backlog, throttle_key
from integrations.twilio.client import twilio_client
from integrations.twilio.errors import error_explanation
from patients.clinic_view import (
    ClinicDaysFilter,
    PhoneSearchMixin,
    TechnicalDetailsMixin,
    clinic_datetime,
    request_is_clinic_role,
)
from patients.phones import phone_to_e164
from patients.tenancy import OrganizationScopedAdmin, ReadOnlyAdminMixin

TWILIO_QUEUE_SECONDS = 10 * 3600


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
            "sender_type",
            "segments_per_second",
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
    list_display = [
        "name",
        "organization",
        "adapter",
        "masked_sid",
        "numbers",
        "rate",
        "backlog",
        "enabled",
    ]
    list_filter = ["adapter", "enabled", "organization"]
    list_select_related = ["organization"]
    actions = ["check_credentials"]

    readonly_fields = ["inbound_webhook_url"]

    # The form posts the new token: an error page or error e-mail shows the request's POST
    # data, less the parameters named here.
    @method_decorator(sensitive_post_parameters("auth_token"))
    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        return super().changeform_view(request, *args, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Integration | None = None) -> Any:
        fields = super().get_fields(request, obj)
        if obj is not None and not self.has_change_permission(request, obj):
            # A view-only page shows every field's value as text, which would be the
            # decrypted token: only a form's write-only input may stand for it.
            return [field for field in fields if field != "auth_token"]
        return fields

    @admin.display(description="Inbound SMS webhook (set it on each number in Twilio)")
    def inbound_webhook_url(self, obj: Integration) -> str:
        if obj.pk is None:
            return "shown once saved"
        path = reverse("twilio-inbound-sms", kwargs={"integration_uuid": obj.uuid})
        return settings.CAREFLOW_PUBLIC_URL.rstrip("/") + path

    @admin.display(description="Segments/s")
    def rate(self, obj: Integration) -> str:
        return ", ".join(f"{obj.send_rate(n):g}" for n in obj.sending_numbers)

    @admin.display(description="Queued sending")
    def backlog(self, obj: Integration) -> str:
        """How far ahead each sender's throughput is booked; Twilio would refuse (21611)
        beyond about 10 hours, so that is flagged for support staff."""
        parts = []
        for sender in [*obj.sending_numbers, obj.messaging_service_sid]:
            if not sender:
                continue
            try:
                seconds = throttle_backlog(key=throttle_key(scope=obj.account_sid, sender=sender))
            except redis.RedisError:
                return "unknown (throttle unreachable)"
            if seconds >= 1:
                parts.append(
                    format_html(
                        "{}: {}{}",
                        sender,
                        timedelta(seconds=round(seconds)),
                        " ⚠ over Twilio's 10-hour queue" if seconds > TWILIO_QUEUE_SECONDS else "",
                    )
                )
        return format_html_join(", ", "{}", ((p,) for p in parts)) if parts else "none"

    @admin.display(description="Account SID")
    def masked_sid(self, obj: Integration) -> str:
        return obj.masked_account_sid()

    @admin.display(description="Sending numbers")
    def numbers(self, obj: Integration) -> str:
        return ", ".join(obj.sending_numbers)

    @admin.action(description="Check credentials with Twilio", permissions=["change"])
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


class MessageCreatedFilter(ClinicDaysFilter):
    """Messages decided today or in the last 7 days, in the clinic's time zone (the clinic
    home's counts link here). Not date_hierarchy: its drill-down bar runs SELECT DISTINCT
    DATE_TRUNC over the whole table (367 ms at a million messages)."""

    title = "created (clinic time)"
    parameter_name = "created"
    field = "created_at"
    organization = "organization"


class MessageOutcomeFilter(admin.SimpleListFilter):
    """Sent (handed to Twilio), delivered, failed (refused or undelivered), skipped: the
    clinic home's words, and its counts' statuses."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _, _) in MESSAGE_OUTCOMES.items()]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[OutboundMessage]
    ) -> QuerySet[OutboundMessage]:
        outcome = MESSAGE_OUTCOMES.get(self.value() or "")
        return queryset.filter(status__in=outcome[1]) if outcome else queryset


@admin.register(OutboundMessage)
class OutboundMessageAdmin(
    PhoneSearchMixin, TechnicalDetailsMixin, ReadOnlyAdminMixin, OrganizationScopedAdmin
):
    """The message log: every SMS decided on, its delivery status, and why it was or was not
    sent, with Twilio's error codes explained. Times are the clinic's; internal keys are for
    support staff only (Technical details)."""

    list_display = [
        "created",
        "patient",
        "to",
        "from_number",
        "short_body",
        "status_badge",
        "error",
        "segments",
        "is_test",
        "run_link",
    ]
    list_filter = [
        MessageOutcomeFilter,
        "status",
        MessageCreatedFilter,
        "is_test",
        "purpose",
        "organization",
    ]
    list_select_related = ["patient", "step_run", "organization"]
    search_fields = ["to", "patient__first_name", "patient__last_name"]
    phone_search_field = "to"
    search_help_text = "Patient name or phone number."
    show_full_result_count = False
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "organization",
                    "patient",
                    "to",
                    "from_number",
                    "body",
                    "purpose",
                    "urgent",
                    "is_test",
                    "created",
                ]
            },
        ),
        (
            "Delivery",
            {
                "fields": [
                    "status_badge",
                    "error",
                    "sent",
                    "delivered",
                    "characters",
                    "encoding",
                    "segments",
                ]
            },
        ),
        ("Send-time decision", {"fields": ["decision_checks", "consent_record"]}),
        ("Where it came from", {"fields": ["run_link"]}),
    ]
    technical_fields = [
        "uuid",
        "idempotency_key",
        "integration",
        "messaging_service_sid",
        "provider_sid",
        "provider_status",
        "error_code",
        "error_message",
        "attempts",
        "next_attempt_at",
        "slot_at",
        "sending_started_at",
        "decision_raw",
    ]
    readonly_fields = [
        "created",
        "status_badge",
        "error",
        "sent",
        "delivered",
        "decision_checks",
        "run_link",
        *technical_fields,
    ]

    class Media:
        css = {"all": ["careflow/history.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[OutboundMessage]:
        # The change page needs them too; and a changelist only applies list_select_related
        # to a queryset that has none yet.
        return super().get_queryset(request).select_related(*self.list_select_related)

    def get_search_fields(self, request: HttpRequest) -> list[str]:
        fields = list(super().get_search_fields(request))
        if not request_is_clinic_role(request):
            fields += ["provider_sid", "idempotency_key"]  # support staff trace a message
        return fields

    def _time(self, obj: OutboundMessage, value: Any) -> str:
        return clinic_datetime(value, obj.organization.timezone)

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj: OutboundMessage) -> str:
        return self._time(obj, obj.created_at)

    @admin.display(description="Sent", ordering="sent_at")
    def sent(self, obj: OutboundMessage) -> str:
        return self._time(obj, obj.sent_at)

    @admin.display(description="Delivered", ordering="delivered_at")
    def delivered(self, obj: OutboundMessage) -> str:
        return self._time(obj, obj.delivered_at)

    @admin.display(description="Body")
    def short_body(self, obj: OutboundMessage) -> str:
        return obj.body if len(obj.body) <= 60 else obj.body[:57] + "…"

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: OutboundMessage) -> str:
        return format_html(
            '<span class="cf-badge cf-status-{}" title="{}">{}</span>',
            obj.status,
            f"Twilio status: {obj.provider_status}" if obj.provider_status else "",
            obj.get_status_display(),
        )

    @admin.display(description="Error / reason")
    def error(self, obj: OutboundMessage) -> str:
        if obj.skip_reason:
            return obj.skip_reason
        if obj.error_code:
            return f"{obj.error_code}: {error_explanation(obj.error_code) or obj.error_message}"
        return ""

    @admin.display(description="Run")
    def run_link(self, obj: OutboundMessage) -> str:
        if obj.step_run is None:
            return ""
        url = reverse("admin:workflows_run_change", args=[obj.step_run.run_id])
        return format_html(
            '<a href="{}">Run {}, step {}</a>', url, obj.step_run.run_id, obj.step_run.number
        )

    @admin.display(description="Decision as recorded")
    def decision_raw(self, obj: OutboundMessage) -> str:
        return format_html(
            '<pre class="cf-code">{}</pre>',
            json.dumps(obj.decision or {}, indent=2, sort_keys=True, ensure_ascii=False),
        )

    @admin.display(description="Checks")
    def decision_checks(self, obj: OutboundMessage) -> str:
        decision = obj.decision or {}
        if not decision:
            return "No decision recorded yet."
        zone = obj.organization.timezone
        verdict = (
            "send"
            if decision.get("allowed")
            else f"wait until {clinic_datetime(decision['defer_until'], zone)}"
            if decision.get("defer_until")
            else f"do not send ({decision.get('reason', '')})"
        )
        rows = format_html_join(
            "",
            '<tr class="cf-check-{}"><th scope="row">{}</th><td>{}</td><td>{}</td></tr>',
            (
                (
                    "passed" if check.get("ok") else "failed",
                    check.get("check", ""),
                    "✓ passed" if check.get("ok") else "✗ failed",
                    check.get("detail", ""),
                )
                for check in decision.get("checks", [])
            ),
        )
        return format_html(
            '<table class="cf-checks"><caption>Decided {}: {}</caption><tbody>{}</tbody></table>',
            clinic_datetime(decision.get("at"), zone),
            verdict,
            rows,
        )


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
        "received",
        "from_number",
        "patient",
        "short_body",
        "action",
        "needs_review",
        "reviewed_by",
    ]
    list_filter = ["needs_review", "action", "organization"]
    list_select_related = ["patient", "reviewed_by", "organization"]
    search_fields = ["from_number", "body", "provider_sid"]
    show_full_result_count = False
    actions = ["mark_reviewed"]

    @admin.display(description="Received", ordering="created_at")
    def received(self, obj: InboundMessage) -> str:
        return clinic_datetime(obj.created_at, obj.organization.timezone)

    @admin.display(description="Body")
    def short_body(self, obj: InboundMessage) -> str:
        return obj.body if len(obj.body) <= 60 else obj.body[:57] + "…"

    def has_review_permission(self, request: HttpRequest) -> bool:
        # Its own permission: seeing a message (view) is not deciding about it.
        return bool(request.user.has_perm("integrations.review_inboundmessage"))  # type: ignore[union-attr]

    @admin.action(
        description="Mark as reviewed (record consent separately if needed)", permissions=["review"]
    )
    def mark_reviewed(self, request: HttpRequest, queryset: QuerySet[InboundMessage]) -> None:
        count = queryset.filter(needs_review=True).update(
            needs_review=False, reviewed_by=request.user, reviewed_at=timezone.now()
        )
        self.message_user(request, f"{count} message(s) marked as reviewed.", messages.SUCCESS)
