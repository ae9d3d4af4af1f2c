from typing import Any

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django_celery_results.models import GroupResult, TaskResult
from django_otp.plugins.otp_totp.models import TOTPDevice

from patients.channels import consent_channels
from patients.consent import consent_verdict
from patients.models import (
    Appointment,
    AuditEntry,
    Cart,
    ConsentRecord,
    Lead,
    Order,
    Organization,
    Patient,
    PatientNote,
    Prescription,
    QuestionnaireSubmission,
    Requisition,
    StaffMembership,
    Subscription,
    Task,
)
from patients.panels import patient_panels
from patients.selectors import NEVER_ASKED, OPTED_IN, OPTED_OUT, PurposeConsent
from patients.services import organization_webhook_token_issue, subscription_renew
from patients.tenancy import OrganizationScopedAdmin, ReadOnlyAdminMixin, sees_all_organizations


@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdmin):
    organization_path = "pk"
    list_display = ["name", "slug", "timezone", "webhook_token_issued_at"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["uuid", "webhook_endpoint", "webhook_token_issued_at"]
    actions = ["issue_webhook_token"]

    @admin.display(description="Custom event webhook URL")
    def webhook_endpoint(self, obj: Organization) -> str:
        if obj.pk is None:
            return "-"
        return reverse("webhook-custom-event", kwargs={"organization_uuid": obj.uuid})

    @admin.action(
        description="Issue a new webhook token (the old one stops working)",
        permissions=["change"],
    )
    def issue_webhook_token(
        self, request: HttpRequest, queryset: QuerySet[Organization]
    ) -> HttpResponse | None:
        organizations = list(queryset[:2])
        if len(organizations) != 1:
            self.message_user(
                request, "Select exactly one organization to issue a token for.", messages.ERROR
            )
            return None
        organization = organizations[0]
        token = organization_webhook_token_issue(organization=organization)
        # Rendered into this one response only: never stored, logged or put in a message
        # (messages can live in a cookie).
        response = TemplateResponse(
            request,
            "admin/careflow/webhook_token.html",
            {
                **self.admin_site.each_context(request),
                "title": "Webhook token issued",
                "opts": self.model._meta,
                "organization": organization,
                "token": token,
                "endpoint": request.build_absolute_uri(self.webhook_endpoint(organization)),
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]


def manages_memberships(request: HttpRequest, action: str) -> bool:
    """Support staff (every clinic) and superusers decide who works in which clinic. A clinic
    user holding the model permissions (a hand-made group) must not: a membership is not
    clinic-owned, so holding them would list every clinic's staff and let a user move
    themselves into another clinic."""
    user: Any = request.user
    return bool(
        user.is_superuser
        or (
            sees_all_organizations(user)
            and user.has_perm(f"patients.{action}_{StaffMembership._meta.model_name}")
        )
    )


@admin.register(StaffMembership)
class StaffMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization"]
    list_select_related = ["user", "organization"]
    autocomplete_fields = ["user"]

    def get_autocomplete_fields(self, request: HttpRequest) -> Any:
        # The user autocomplete asks the user admin, which is superuser-only; support staff
        # pick from a plain list instead.
        return self.autocomplete_fields if request.user.is_superuser else []  # type: ignore[union-attr]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if (
            db_field.name == "user"
            and formfield is not None
            and formfield.queryset is not None
            and not request.user.is_superuser  # type: ignore[union-attr]
        ):
            # Only a superuser touches a superuser's account, even its clinic.
            formfield.queryset = formfield.queryset.filter(is_superuser=False)
        return formfield

    def get_queryset(self, request: HttpRequest) -> QuerySet[StaffMembership]:
        queryset = super().get_queryset(request)
        if not request.user.is_superuser:  # type: ignore[union-attr]
            queryset = queryset.filter(user__is_superuser=False)
        return queryset

    def has_module_permission(self, request: HttpRequest) -> bool:
        return manages_memberships(request, "view") or manages_memberships(request, "change")

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return manages_memberships(request, "view") or manages_memberships(request, "change")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return manages_memberships(request, "add")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return manages_memberships(request, "change")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return manages_memberships(request, "delete")


class SuperuserOnlyAdminMixin:
    """Accounts, permission groups and Celery's task results are not clinic-owned and are
    not part of any role: a user who edits users or groups can make themselves superuser,
    and task results carry task arguments. Whatever permissions a non-superuser holds, these
    stay closed to them."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]


def _superuser_only(model: type[models.Model]) -> None:
    """Re-register another app's ModelAdmin with SuperuserOnlyAdminMixin in front of it.

    Its own actions that declare no permission (axes' "Clean up expired attempts") would be
    offered to anyone who may view the list: they get `permissions=["delete"]`, which only a
    superuser holds here."""
    model_admin = type(admin.site.get_model_admin(model))
    namespace: dict[str, Any] = {}
    for name in model_admin.actions or []:
        func = getattr(model_admin, name) if isinstance(name, str) else name
        if not getattr(func, "allowed_permissions", None):
            namespace[func.__name__] = admin.action(
                permissions=["delete"], description=getattr(func, "short_description", None)
            )(_same_action(func))
    admin.site.unregister(model)
    admin.site.register(
        model, type(model_admin.__name__, (SuperuserOnlyAdminMixin, model_admin), namespace)
    )


def _same_action(func: Any) -> Any:
    def action(model_admin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> Any:
        return func(model_admin, request, queryset)

    action.__name__ = func.__name__
    return action


# Login attempts (django-axes: usernames, addresses) and authenticators (django-otp: each
# device's key) too: a superuser enrols a user's authenticator and unlocks accounts.
for _model in (
    get_user_model(),
    Group,
    TaskResult,
    GroupResult,
    AccessAttempt,
    AccessLog,
    AccessFailureLog,
    TOTPDevice,
):
    if admin.site.is_registered(_model):
        _superuser_only(_model)


class ConsentInline(admin.TabularInline):
    model = ConsentRecord
    extra = 0
    can_delete = False
    readonly_fields = (
        "occurred_at",
        "channel",
        "purpose",
        "action",
        "source",
        "consent_text",
        "recorded_by",
    )
    fields = readonly_fields
    ordering = ["-occurred_at", "-id"]
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[ConsentRecord]:
        return super().get_queryset(request).select_related("recorded_by")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def channel_consent_summary(patient: Patient, channel: str) -> list[PurposeConsent]:
    """The patient's current consent on one channel per purpose, by the send-time rule over
    that channel's history (an email bounce records an email opt-out; texts are unaffected)."""
    history = list(
        ConsentRecord.objects.filter(patient=patient, channel=channel)
        .select_related("recorded_by")
        .order_by()
    )
    rows = []
    for purpose, label in ConsentRecord.Purpose.choices:
        verdict = consent_verdict(history, purpose=purpose, channel=channel)
        if verdict.latest is None:
            state, record = NEVER_ASKED, None
        elif verdict.latest.action == ConsentRecord.Action.OPT_OUT:
            state, record = OPTED_OUT, verdict.latest
        else:
            state, record = OPTED_IN, verdict.latest
        rows.append(PurposeConsent(purpose, str(label), state, record, verdict))
    return rows


def other_channels_consent(patient: Patient) -> list[dict[str, Any]]:
    """A consent table for each registered channel beside SMS (whose consent heads the page
    with the conversation, patients.panels)."""
    return [
        {"channel": channel, "word": word, "rows": channel_consent_summary(patient, channel)}
        for channel, word in consent_channels().items()
        if channel != ConsentRecord.Channel.SMS
    ]


@admin.register(Patient)
class PatientAdmin(OrganizationScopedAdmin):
    """A patient, with at the top what a clinic needs before texting them: the current
    consent per purpose and the conversation (panels from `patients.panels`)."""

    change_form_template = "admin/patients/patient/change_form.html"
    list_display = ["__str__", "phone", "email", "organization", "is_test", "created_at"]
    list_filter = ["organization", "is_test"]
    list_select_related = ["organization"]
    search_fields = ["first_name", "last_name", "email", "phone"]
    show_full_result_count = False
    inlines = [ConsentInline]
    # Consent is not a field of the patient: it is the history below, and the panel at the
    # top derives the current state from it.
    fieldsets = [
        (
            None,
            {"fields": ["organization", "first_name", "last_name", "email", "phone", "is_test"]},
        ),
        ("Details", {"fields": ["dob", "gender", "timezone", "language", "source"]}),
        (
            "Address",
            {
                "fields": [
                    "address1",
                    "address2",
                    "city",
                    "province",
                    "province_code",
                    "postal_code",
                    "country_code",
                ]
            },
        ),
    ]

    class Media:
        css = {"all": ["careflow/history.css", "careflow/patient.css"]}

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Patient | None = None,
    ) -> HttpResponse:
        # Here rather than in change_view: the object is the one this user may see.
        if obj is None or obj.pk is None:
            return super().render_change_form(request, context, add, change, form_url, obj)
        context["patient_panels"] = patient_panels(request=request, patient=obj)
        context["channel_consents"] = other_channels_consent(obj)
        response = super().render_change_form(request, context, add, change, form_url, obj)
        # Times as the clinic reads them (the conversation, the consent history below), in
        # the patient's clinic's zone whoever looks: rendered now, while it is the current one.
        if isinstance(response, TemplateResponse):
            with timezone.override(obj.organization.timezone):
                response.render()
        return response


@admin.register(ConsentRecord)
class ConsentRecordAdmin(OrganizationScopedAdmin):
    """Staff may record a consent decision; history is never edited or deleted."""

    organization_path = "patient__organization"
    list_display = [
        "patient",
        "channel",
        "purpose",
        "action",
        "source",
        "occurred_at",
        "recorded_by",
    ]
    list_filter = ["channel", "purpose", "action", "source"]
    list_select_related = ["patient", "recorded_by"]
    search_fields = ["patient__first_name", "patient__last_name", "patient__phone"]
    autocomplete_fields = ["patient"]
    fields = ["patient", "channel", "purpose", "action", "source", "consent_text", "occurred_at"]
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.fields if obj is not None else []

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ConsentRecord, form: Any, change: bool) -> None:
        obj.recorded_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)


@admin.register(Order)
class OrderAdmin(OrganizationScopedAdmin):
    list_display = ["number", "patient", "status", "total_amount", "organization", "created_at"]
    list_filter = ["status", "organization"]
    list_select_related = ["patient", "organization"]
    search_fields = ["number", "tracking_number", "patient__last_name"]
    autocomplete_fields = ["patient", "subscription"]
    readonly_fields = ["status_history"]
    show_full_result_count = False


class PatientRecordAdmin(OrganizationScopedAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_select_related = ["patient", "organization"]
    autocomplete_fields = ["patient"]
    search_fields = ["patient__first_name", "patient__last_name", "patient__phone"]
    show_full_result_count = False


@admin.register(Subscription)
class SubscriptionAdmin(PatientRecordAdmin):
    list_display = [
        "product_name",
        "patient",
        "status",
        "current_cycle",
        "next_cycle_date",
        "organization",
    ]
    list_filter = ["status", "organization"]
    search_fields = [*PatientRecordAdmin.search_fields, "product_name", "product_id"]
    fields = [
        "organization",
        "patient",
        "product_id",
        "product_name",
        "price",
        "interval_days",
        "status",
        "current_cycle",
        "next_cycle_date",
    ]
    actions = ["renew"]

    @admin.action(description="Renew now (create the next cycle’s order)", permissions=["change"])
    def renew(self, request: HttpRequest, queryset: QuerySet[Subscription]) -> None:
        renewed = 0
        for subscription in queryset:
            try:
                subscription_renew(subscription=subscription)
            except ValidationError as exc:
                self.message_user(request, f"{subscription}: {exc.messages[0]}", messages.WARNING)
            else:
                renewed += 1
        if renewed:
            self.message_user(request, f"Renewed {renewed} subscription(s).", messages.SUCCESS)


@admin.register(Appointment)
class AppointmentAdmin(PatientRecordAdmin):
    list_display = ["starts_at", "patient", "status", "provider_name", "organization"]
    list_filter = ["status", "organization"]
    search_fields = [*PatientRecordAdmin.search_fields, "provider_name"]
    date_hierarchy = "starts_at"
    fields = [
        "organization",
        "patient",
        "starts_at",
        "duration_minutes",
        "status",
        "provider_name",
        "location",
        "video_url",
    ]


@admin.register(Cart)
class CartAdmin(PatientRecordAdmin):
    list_display = ["__str__", "patient", "checked_out_at", "organization", "created_at"]
    list_filter = ["organization"]
    fields = ["organization", "patient", "line_items", "checkout_url", "checked_out_at"]


@admin.register(QuestionnaireSubmission)
class QuestionnaireSubmissionAdmin(PatientRecordAdmin):
    list_display = ["questionnaire_name", "patient", "submitted_at", "organization"]
    list_filter = ["organization"]
    search_fields = [*PatientRecordAdmin.search_fields, "questionnaire_name"]
    fields = ["organization", "patient", "questionnaire_name", "answers", "submitted_at"]


@admin.register(Prescription)
class PrescriptionAdmin(PatientRecordAdmin):
    list_display = ["medication_name", "patient", "status", "organization", "created_at"]
    list_filter = ["status", "organization"]
    fields = ["organization", "patient", "medication_name", "status"]


@admin.register(Requisition)
class RequisitionAdmin(PatientRecordAdmin):
    list_display = ["lab_name", "test_panel", "patient", "status", "organization", "created_at"]
    list_filter = ["status", "organization"]
    fields = ["organization", "patient", "lab_name", "test_panel", "status"]


@admin.register(Lead)
class LeadAdmin(OrganizationScopedAdmin):
    list_display = ["__str__", "phone", "email", "status", "source", "organization", "created_at"]
    list_filter = ["status", "organization"]
    list_select_related = ["organization"]
    search_fields = ["first_name", "last_name", "email", "phone"]
    autocomplete_fields = ["converted_patient"]
    show_full_result_count = False
    fields = [
        "organization",
        "first_name",
        "last_name",
        "email",
        "phone",
        "source",
        "status",
        "converted_patient",
    ]


@admin.register(Task)
class TaskAdmin(OrganizationScopedAdmin):
    list_display = ["title", "patient", "status", "due_at", "organization"]
    list_filter = ["status", "organization"]
    list_select_related = ["patient", "organization"]
    search_fields = ["title", "patient__last_name"]
    autocomplete_fields = ["patient"]
    show_full_result_count = False
    fields = ["organization", "patient", "title", "status", "due_at"]


@admin.register(PatientNote)
class PatientNoteAdmin(PatientRecordAdmin):
    """Notes for staff about a patient, by staff or by a workflow (its "Update record" step);
    who wrote each is kept, and every edit is in the audit trail."""

    list_display = ["created_at", "patient", "written_by", "organization"]
    list_filter = ["organization"]
    search_fields = [*PatientRecordAdmin.search_fields, "text"]
    fields = ["organization", "patient", "text", "written_by", "created_at"]
    readonly_fields = ["written_by", "created_at"]

    def save_model(self, request: HttpRequest, obj: PatientNote, form: Any, change: bool) -> None:
        if not change:
            obj.written_by = str(request.user)[:150]
        super().save_model(request, obj, form, change)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    """The audit trail: browsable and filterable, never editable."""

    list_display = ["at", "actor_repr", "action", "model", "object_repr", "changed_fields"]
    # Fixed date ranges rather than date_hierarchy, whose drill-down scans the whole table.
    list_filter = ["action", "model", ("at", admin.DateFieldListFilter), "organization"]
    search_fields = ["object_repr", "actor_repr", "object_id"]
    show_full_result_count = False
    list_select_related = ["organization"]

    @admin.display(description="Changed")
    def changed_fields(self, obj: AuditEntry) -> str:
        return ", ".join(sorted(obj.changes))
