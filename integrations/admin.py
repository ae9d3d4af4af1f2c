import json
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from integrations import broadcast_admin  # noqa: F401 — registers the broadcasts' admin
from integrations.alert_forms import AlertSettingsForm
from integrations.alerts import alert_credentials_rejected
from integrations.api import admin as api_admin  # noqa: F401 — registers the API keys' admin
from integrations.channels import registered_channels
from integrations.forms import INTEGRATION_FORMS, IntegrationForm, integration_form_get
from integrations.home import MESSAGE_OUTCOMES
from integrations.messaging import transport_get
from integrations.models import (
    Alert,
    AlertSettings,
    InboundMessage,
    Integration,
    MessagingPolicy,
    OutboundMessage,
)
from integrations.policy_forms import (
    FIRST_CONTACT_FIELDS,
    KEYWORD_REPLY_FIELDS,
    LANGUAGE_FIELDS,
    SHORT_LINK_FIELDS,
    channel_fieldsets,
    channel_rules_summary,
    policy_form_class,
)
from integrations.short_links import short_link_host_unserved
from integrations.throttle import throttle_backlog
from patients.clinic_view import (
    ClinicDaysFilter,
    EstimatedCountPaginator,
    PhoneSearchMixin,
    TechnicalDetailsMixin,
    clinic_datetime,
    request_is_clinic_role,
    search_phone,
)
from patients.languages import language_name
from patients.services import organization_languages_set
from patients.tenancy import (
    OrganizationScopedAdmin,
    ReadOnlyAdminMixin,
    request_organization_id,
    sees_all_organizations,
)
from workflows.admin import WorkflowListFilter


def _form_of(obj: Integration) -> type[IntegrationForm] | None:
    return integration_form_get(obj.adapter)


@admin.register(Integration)
class IntegrationAdmin(OrganizationScopedAdmin):
    """Integrations of every provider; the form's provider fields come from the provider's
    folder, picked by the integration's adapter (on the add page: `?adapter=…`, asked for
    when more than one provider is registered)."""

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

    readonly_fields = ["adapter", "provider_settings", "inbound_webhook_url"]

    def _adapter(self, request: HttpRequest, obj: Integration | None) -> str:
        if obj is not None:
            return obj.adapter
        chosen = request.GET.get("adapter") or request.POST.get("adapter") or ""
        if not chosen and len(INTEGRATION_FORMS) == 1:
            chosen = next(iter(INTEGRATION_FORMS))
        return chosen

    def get_form(
        self,
        request: HttpRequest,
        obj: Integration | None = None,
        change: bool = False,
        **kwargs: Any,
    ) -> Any:
        provider = integration_form_get(self._adapter(request, obj))
        if provider is not None:
            kwargs["form"] = provider
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Integration | None = None) -> Any:
        form = integration_form_get(self._adapter(request, obj)) or IntegrationForm
        if obj is not None and not self.has_change_permission(request, obj):
            # A view-only page shows every field's value as text: the provider's settings
            # are shown by the form's own reading of them, which leaves secrets out.
            return [
                "organization",
                "name",
                "adapter",
                "provider_settings",
                "enabled",
                "inbound_webhook_url",
            ]
        provider = [
            name for name in form.declared_fields if name not in IntegrationForm.base_fields
        ]
        return ["organization", "name", "adapter", *provider, "enabled", "inbound_webhook_url"]

    @admin.display(description="Settings")
    def provider_settings(self, obj: Integration) -> str:
        form = _form_of(obj)
        if form is None:
            return ""
        shown = form(instance=obj)
        rows = [
            (field.label, shown.initial.get(name) or "")
            for name, field in shown.fields.items()
            if name not in form.secret_fields and name not in IntegrationForm.base_fields
        ]
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}: {}</li>", rows))

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> Any:
        if integration_form_get(self._adapter(request, None)) is None:
            # The chooser is part of the add page: the same permission (Django's add_view
            # checks it only after this).
            if not self.has_add_permission(request):
                raise PermissionDenied
            return TemplateResponse(
                request,
                "admin/integrations/integration/choose_adapter.html",
                {
                    **self.admin_site.each_context(request),
                    "opts": self.opts,
                    "title": "Add integration: which provider?",
                    "providers": sorted(
                        (form.adapter_label, form.adapter_name)
                        for form in INTEGRATION_FORMS.values()
                    ),
                    "chosen": request.GET.get("adapter", ""),
                },
            )
        return super().add_view(request, form_url, extra_context)

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        # The form posts secrets: an error page or error e-mail shows the request's POST
        # data, less these parameters (what @sensitive_post_parameters sets, for every
        # provider's secret fields).
        request.sensitive_post_parameters = sorted(  # type: ignore[attr-defined]
            {name for form in INTEGRATION_FORMS.values() for name in form.secret_fields}
        )
        return super().changeform_view(request, *args, **kwargs)

    @admin.display(description="Webhook to enter at the provider")
    def inbound_webhook_url(self, obj: Integration) -> str:
        if obj.pk is None:
            return "shown once saved"
        form = _form_of(obj)
        path = form.inbound_webhook_path(obj) if form else ""
        return settings.CAREFLOW_PUBLIC_URL.rstrip("/") + path if path else "none"

    @admin.display(description="Rate/s")
    def rate(self, obj: Integration) -> str:
        form = _form_of(obj)
        return form.rates_display(obj) if form else ""

    @admin.display(description="Queued sending")
    def backlog(self, obj: Integration) -> str:
        """How far ahead each sender's throughput is booked; the provider would refuse
        beyond its queue limit (the form's `queue_limit_seconds`), so that is flagged."""
        form = _form_of(obj)
        if form is None:
            return "none"
        parts = []
        for sender, key in form.backlog_keys(obj):
            try:
                seconds = throttle_backlog(key=key)
            except redis.RedisError:
                return "unknown (throttle unreachable)"
            limit = form.queue_limit_seconds
            if seconds >= 1:
                over = limit is not None and seconds > limit
                parts.append(
                    format_html(
                        "{}: {}{}",
                        sender,
                        timedelta(seconds=round(seconds)),
                        f" ⚠ over {form.adapter_label}'s {(limit or 0) / 3600:g}-hour queue"
                        if over
                        else "",
                    )
                )
        return format_html_join(", ", "{}", ((p,) for p in parts)) if parts else "none"

    @admin.display(description="Account")
    def masked_sid(self, obj: Integration) -> str:
        form = _form_of(obj)
        return form.account_display(obj) if form else ""

    @admin.display(description="Senders")
    def numbers(self, obj: Integration) -> str:
        return ", ".join(obj.senders)

    @admin.action(description="Check credentials with the provider", permissions=["change"])
    def check_credentials(self, request: HttpRequest, queryset: QuerySet[Integration]) -> None:
        for integration in queryset:
            form = _form_of(integration)
            if form is None:
                accepted, said = False, f"no provider named “{integration.adapter}”."
            else:
                accepted, said, rejected = form.credentials_verdict(integration)
                if rejected:
                    # The clinic's alert recipients hear of it too (once per period).
                    alert_credentials_rejected(integration=integration, said=said)
            self.message_user(
                request, f"{integration}: {said}", messages.SUCCESS if accepted else messages.ERROR
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
    """Sent (handed to the provider), delivered, failed (refused or undelivered), skipped: the
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


class MessageChannelFilter(admin.SimpleListFilter):
    """Messages of one channel, offered from the channels the registered providers send on:
    Django's own filter for the field reads them with a DISTINCT over the whole log (277 ms
    of a 430 ms page at 1,000,000 messages, `bench/admin.py`)."""

    title = "channel"
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(channel, channel) for channel in sorted(registered_channels())]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[OutboundMessage]
    ) -> QuerySet[OutboundMessage]:
        return queryset.filter(channel=self.value()) if self.value() else queryset


class MessageWorkflowFilter(WorkflowListFilter):
    """Messages sent by one workflow's runs (alerts on a workflow's rates link here)."""

    field = "workflow_id"


class MessageSenderFilter(admin.SimpleListFilter):
    """Messages from one of the clinic's senders (a number, a Messaging Service, an address):
    the queue alerts link here. Offered from the integrations' senders, not from the
    messages (a DISTINCT over the whole log)."""

    title = "sender"
    parameter_name = "sender"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        integrations = Integration.objects.only("senders")
        if not sees_all_organizations(request.user):
            integrations = integrations.filter(
                organization_id=request_organization_id(request) or 0
            )
        senders = sorted({s for i in integrations[:200] for s in i.senders})
        return [(sender, sender) for sender in senders]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[OutboundMessage]
    ) -> QuerySet[OutboundMessage]:
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(Q(from_number=value) | Q(messaging_service_sid=value))


@admin.register(OutboundMessage)
class OutboundMessageAdmin(
    PhoneSearchMixin, TechnicalDetailsMixin, ReadOnlyAdminMixin, OrganizationScopedAdmin
):
    """The message log: every message decided on, on every channel (an email shown by its
    subject), its delivery status, and why it was or was not sent, with the provider's error
    codes explained. Times are the clinic's; internal keys are for support staff only
    (Technical details)."""

    list_display = [
        "created",
        "patient",
        "kind",
        "to",
        "from_number",
        "short_body",
        "status_badge",
        "error",
        "billed_as",
        "is_test",
        "run_link",
    ]
    list_filter = [
        MessageOutcomeFilter,
        MessageChannelFilter,
        "status",
        MessageCreatedFilter,
        MessageWorkflowFilter,
        MessageSenderFilter,
        "is_test",
        "purpose",
        "organization",
    ]
    # The integration names the provider whose error codes the list explains.
    list_select_related = ["patient", "step_run", "organization", "integration"]
    search_fields = ["to", "patient__first_name", "patient__last_name"]
    phone_search_field = "to"
    search_help_text = "Patient name, phone number or email address."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "organization",
                    "patient",
                    "channel",
                    "to",
                    "from_number",
                    "subject",
                    "body",
                    "media_link",
                    "first_contact_note",
                    "short_links_list",
                    "html",
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
                    "billed_as",
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
        "subject",
        "media_link",
        "first_contact_note",
        "short_links_list",
        "billed_as",
        "html",
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

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        # A phone number is looked up, not searched for: it cannot be in a name, and
        # "contains" read every message of the log (a table scan of millions of rows).
        phone = search_phone(search_term)
        if phone is not None:
            return queryset.filter(to=phone), False
        return super().get_search_results(request, queryset, search_term)

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

    @admin.display(description="Subject (email)")
    def subject(self, obj: OutboundMessage) -> str:
        return str((obj.content or {}).get("subject", ""))

    @admin.display(description="HTML body (email)")
    def html(self, obj: OutboundMessage) -> str:
        html = str((obj.content or {}).get("html", ""))
        # Shown as source, never rendered: the admin must not load what an email links to.
        return format_html('<pre class="cf-code">{}</pre>', html) if html else ""

    @admin.display(description="Channel", ordering="channel")
    def kind(self, obj: OutboundMessage) -> str:
        return obj.kind

    @admin.display(description="Billed as", ordering="segments")
    def billed_as(self, obj: OutboundMessage) -> str:
        # Twilio prices an MMS per message, whatever its length; an SMS per segment.
        if obj.media_url:
            return "1 MMS"
        return f"{obj.segments} segment{'s' if obj.segments != 1 else ''}"

    @admin.display(description="Media (MMS)")
    def media_link(self, obj: OutboundMessage) -> str:
        # A link, never loaded by the page: the admin does not fetch third-party hosts.
        if not obj.media_url:
            return ""
        return format_html(
            '<a href="{}" rel="noopener noreferrer" target="_blank">{}</a>',
            obj.media_url,
            obj.media_url,
        )

    @admin.display(description="First-contact wording")
    def first_contact_note(self, obj: OutboundMessage) -> str:
        if obj.first_contact is None:
            return "—"
        if obj.first_contact:
            return "added to this message (the clinic's brand prefix and opt-out wording)"
        return "not needed: the number had it already"

    @admin.display(description="Short links")
    def short_links_list(self, obj: OutboundMessage) -> str:
        links = list(obj.short_links.annotate(click_count=Count("clicks")).order_by("id"))
        if not links:
            return "—"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                "<li>{} → {}: {} click{}{}</li>",
                (
                    (
                        link.code,
                        link.url,
                        link.click_count,
                        "" if link.click_count == 1 else "s",
                        " (expired)" if link.expires_at <= timezone.now() else "",
                    )
                    for link in links
                ),
            ),
        )

    @admin.display(description="Message")
    def short_body(self, obj: OutboundMessage) -> str:
        subject = self.subject(obj)
        if subject:  # an email reads by its subject
            return subject if len(subject) <= 60 else subject[:57] + "…"
        return obj.body if len(obj.body) <= 60 else obj.body[:57] + "…"

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: OutboundMessage) -> str:
        return format_html(
            '<span class="cf-badge cf-status-{}" title="{}">{}</span>',
            obj.status,
            f"Provider status: {obj.provider_status}" if obj.provider_status else "",
            obj.get_status_display(),
        )

    @admin.display(description="Error / reason")
    def error(self, obj: OutboundMessage) -> str:
        if obj.skip_reason:
            return obj.skip_reason
        if obj.error_code:
            try:
                explained = transport_get(obj.integration.adapter).explain_error(obj.error_code)
            except LookupError:  # a provider no longer offered
                explained = ""
            return f"{obj.error_code}: {explained or obj.error_message}"
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
    """The clinic's default rules, then each channel's: the defaults or rules of its own."""

    list_display = [
        "organization",
        "quiet_hours_start",
        "quiet_hours_end",
        "transactional_per_day",
        "marketing_per_day",
        "marketing_per_week",
        "channels_with_own_rules",
    ]
    list_select_related = ["organization"]
    fieldsets = [
        (None, {"fields": ["organization"]}),
        (
            "Default quiet hours (recipient's local time; texts to Florida and Oklahoma end at "
            "20:00 regardless)",
            {"fields": ["quiet_hours_start", "quiet_hours_end"]},
        ),
        (
            "Default frequency caps per patient and channel (blank: none)",
            {
                "fields": [
                    "transactional_per_day",
                    "transactional_per_week",
                    "marketing_per_day",
                    "marketing_per_week",
                ]
            },
        ),
        (
            "Smart sending",
            {
                "fields": ["smart_sending_hours"],
                "description": "Skip a marketing message if this patient received any message "
                "(any channel; test messages aside) in the last N hours. Skipped, not "
                "deferred, and never retried; the message's decision table says why.",
            },
        ),
        (
            "Retention",
            {
                "fields": ["retention_days"],
                "description": "The retention job (if the installation runs it) deletes "
                "messages, runs and events older than this. Consent records and opt-outs "
                "are kept.",
            },
        ),
    ]
    keywords = ("Keyword replies", {"fields": KEYWORD_REPLY_FIELDS})
    first_contact = (
        "First contact (texts)",
        {
            "fields": FIRST_CONTACT_FIELDS,
            "description": "Carriers expect a text to say who sends it and how to stop them. "
            "Added when the text is sent, so the message log shows the text as sent; the "
            "builder's preview counts their characters. Email is not affected.",
        },
    )

    short_links = (
        "Short links (texts)",
        {
            "fields": SHORT_LINK_FIELDS,
            "description": "The links in a text are replaced, when it is sent, by short links "
            "(<domain>/l/<random code>) that record the patient's click: for analytics and "
            "as a workflow goal or exit (event “message.link_clicked”). The code carries no "
            "patient data. Point the domain at careflow first. Email is not affected.",
        },
    )

    languages = (
        "Languages",
        {
            "fields": [*LANGUAGE_FIELDS, "translations"],
            "description": "A workflow step may have its message in each of these languages; "
            "a patient gets the one in their preferred language, else the fallback.",
        },
    )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if not self.has_change_permission(request, obj):
            # Read-only pages show model values only: the channels' rules as one summary.
            return [
                *self.fieldsets,
                ("Channels", {"fields": ["rules_by_channel"]}),
                ("Languages", {"fields": ["clinic_languages", "translations"]}),
                self.first_contact,
                self.short_links,
                self.keywords,
            ]
        return [
            *self.fieldsets,
            *channel_fieldsets(),
            self.languages,
            self.first_contact,
            self.short_links,
            self.keywords,
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*super().get_readonly_fields(request, obj), "rules_by_channel", "clinic_languages"]

    def save_model(
        self, request: HttpRequest, obj: MessagingPolicy, form: Any, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        organization = obj.organization
        organization_languages_set(
            organization=organization,
            languages=list(form.cleaned_data.get("languages") or []),
            fallback=form.cleaned_data.get("fallback_language") or organization.fallback_language,
        )
        self._short_link_host_warn(request, obj)

    @admin.display(description="Languages")
    def clinic_languages(self, obj: MessagingPolicy) -> str:
        organization = obj.organization
        others = [language_name(code) for code in organization.enabled_languages[1:]]
        fallback = language_name(organization.fallback_language)
        return f"{fallback} (fallback)" + (f", {', '.join(others)}" if others else "")

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        # One set of fields per channel registered now, declared on the form class (the admin
        # accepts only declared or model fields).
        kwargs["form"] = policy_form_class()
        return super().get_form(request, obj, change, **kwargs)

    @admin.display(description="Own rules")
    def channels_with_own_rules(self, obj: MessagingPolicy) -> str:
        return ", ".join(sorted(obj.channel_rules or {})) or "—"

    def _short_link_host_warn(self, request: HttpRequest, obj: MessagingPolicy) -> None:
        host = short_link_host_unserved(obj)
        if host:
            # Not refused: the DNS and the deployment may be changed after this; but until
            # then every short link in a text would answer "Bad Request".
            messages.warning(
                request,
                f"Short links will use {host}, which careflow does not serve yet: add it to "
                "ALLOWED_HOSTS (and point its DNS at careflow) before texts go out.",
            )

    @admin.display(description="Rules by channel")
    def rules_by_channel(self, obj: MessagingPolicy) -> str:
        own = obj.channel_rules or {}
        if not own:
            return "Every channel follows the default rules."
        return format_html_join("", "<p>{}: {}</p>", channel_rules_summary(own))


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
    paginator = EstimatedCountPaginator
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


@admin.register(AlertSettings)
class AlertSettingsAdmin(OrganizationScopedAdmin):
    """Who a clinic tells when something breaks, and the thresholds (integrations.alerts)."""

    form = AlertSettingsForm
    list_display = ["organization", "enabled", "recipients", "thresholds", "period_minutes"]
    list_select_related = ["organization"]
    fieldsets = [
        (None, {"fields": ["organization", "enabled"]}),
        ("Who is told", {"fields": ["staff_emails", "webhook_url", "webhook_secret"]}),
        (
            "When (rates over a workflow's messages of the last hour)",
            {
                "fields": [
                    "failure_rate_percent",
                    "undelivered_rate_percent",
                    "minimum_messages",
                    "period_minutes",
                ]
            },
        ),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if self.has_change_permission(request, obj):
            return self.fieldsets
        # Read-only pages show model values: never the secret, only whether there is one.
        return [
            (None, {"fields": ["organization", "enabled"]}),
            ("Who is told", {"fields": ["staff_emails", "webhook_url", "signing_secret"]}),
            self.fieldsets[2],
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*super().get_readonly_fields(request, obj), "signing_secret"]

    def changeform_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        # Error pages and reports show POST data less these (see IntegrationAdmin).
        request.sensitive_post_parameters = ["webhook_secret"]  # type: ignore[attr-defined]
        return super().changeform_view(request, *args, **kwargs)

    @admin.display(description="Webhook signing secret")
    def signing_secret(self, obj: AlertSettings) -> str:
        return "set" if obj.webhook_secret else "not set"

    @admin.display(description="Recipients")
    def recipients(self, obj: AlertSettings) -> str:
        emails = len(obj.staff_emails or [])
        parts = [f"{emails} email(s)"] if emails else []
        if obj.webhook_url:
            parts.append("webhook")
        return ", ".join(parts) or "nobody (no alerts)"

    @admin.display(description="Failed / undelivered over")
    def thresholds(self, obj: AlertSettings) -> str:
        return (
            f"{obj.failure_rate_percent}% / {obj.undelivered_rate_percent}% "
            f"of ≥ {obj.minimum_messages} messages"
        )


ALERT_FIELDS = (
    "organization",
    "condition",
    "subject",
    "period_start",
    "created_at",
    "summary",
    "details",
    "open_list",
    "delivered_email",
    "delivered_webhook",
    "attempts",
    "next_attempt_at",
    "error",
)


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    """The alert log: what was raised, when, and whether it reached its recipients."""

    list_display = [
        "created",
        "organization",
        "condition",
        "summary",
        "open_list",
        "delivered_email",
        "delivered_webhook",
        "attempts",
        "error",
    ]
    list_filter = ["condition", "delivered_email", "delivered_webhook", "organization"]
    list_select_related = ["organization"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    fields = readonly_fields = ALERT_FIELDS

    @admin.display(description="Raised", ordering="created_at")
    def created(self, obj: Alert) -> str:
        return clinic_datetime(obj.created_at, obj.organization.timezone)

    @admin.display(description="List")
    def open_list(self, obj: Alert) -> str:
        return format_html('<a href="{}">open</a>', obj.link) if obj.link else ""
