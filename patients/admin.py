from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from patients.models import ConsentRecord, Order, Organization, Patient, StaffMembership
from patients.tenancy import OrganizationScopedAdmin


@admin.register(Organization)
class OrganizationAdmin(OrganizationScopedAdmin):
    organization_path = "pk"
    list_display = ["name", "slug", "timezone"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]


@admin.register(StaffMembership)
class StaffMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "organization"]
    list_select_related = ["user", "organization"]
    autocomplete_fields = ["user"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]


class ConsentInline(admin.TabularInline):
    model = ConsentRecord
    extra = 0
    can_delete = False
    readonly_fields = ("occurred_at", "purpose", "action", "source", "consent_text", "recorded_by")
    fields = readonly_fields
    ordering = ["-occurred_at", "-id"]
    show_change_link = True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Patient)
class PatientAdmin(OrganizationScopedAdmin):
    list_display = ["__str__", "phone", "email", "organization", "is_test", "created_at"]
    list_filter = ["organization", "is_test"]
    list_select_related = ["organization"]
    search_fields = ["first_name", "last_name", "email", "phone"]
    show_full_result_count = False
    inlines = [ConsentInline]
    fieldsets = [
        (
            None,
            {"fields": ["organization", "first_name", "last_name", "email", "phone", "is_test"]},
        ),
        ("Details", {"fields": ["dob", "gender", "timezone", "source", "accept_marketing"]}),
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


@admin.register(ConsentRecord)
class ConsentRecordAdmin(OrganizationScopedAdmin):
    """Staff may record a consent decision; history is never edited or deleted."""

    organization_path = "patient__organization"
    list_display = ["patient", "purpose", "action", "source", "occurred_at", "recorded_by"]
    list_filter = ["purpose", "action", "source"]
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
    autocomplete_fields = ["patient"]
    readonly_fields = ["status_history"]
    show_full_result_count = False
