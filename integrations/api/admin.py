"""API keys in the admin: a clinic admin creates their clinic's keys (the key is shown once,
on the page after the add) and revokes them (an action, effective at once). Keys are never
edited or deleted: the audit trail names them."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from integrations.api.keys import api_key_revoke, api_key_secret_assign
from integrations.models import ApiKey
from patients.tenancy import OrganizationScopedAdmin

# Where save_model leaves the new key for response_add, on this one request only.
_NEW_KEY = "_careflow_new_api_key"


@admin.register(ApiKey)
class ApiKeyAdmin(OrganizationScopedAdmin):
    list_display = ["name", "shown_prefix", "scope", "organization", "state", "last_used_at"]
    list_filter = ["scope", "organization"]
    list_select_related = ["organization", "created_by", "revoked_by"]
    search_fields = ["name", "prefix"]
    fields = ["organization", "name", "scope"]
    readonly_fields = [
        "shown_prefix",
        "created_by",
        "created_at",
        "last_used_at",
        "revoked_at",
        "revoked_by",
    ]
    actions = ["revoke_api_keys"]
    show_full_result_count = False

    @admin.display(description="key", ordering="prefix")
    def shown_prefix(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…" if obj.prefix else "-"

    @admin.display(description="state", ordering="revoked_at")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at is None:
            return "active"
        return f"revoked {timezone.localtime(obj.revoked_at):%Y-%m-%d %H:%M}"

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        if obj is None:
            return self.fields
        return [*self.fields, *self.readonly_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        # Never edited: a key's name and scope are what it was issued with.
        return [*self.fields, *self.readonly_fields] if obj is not None else []

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return  # nothing of a key is editable
        obj.created_by = request.user  # type: ignore[assignment]
        setattr(request, _NEW_KEY, api_key_secret_assign(api_key=obj))
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None
    ) -> HttpResponse:
        token = getattr(request, _NEW_KEY, None)
        if token is None:
            return super().response_add(request, obj, post_url_continue)
        # Rendered into this one response only: never stored, logged or put in a message
        # (messages can live in a cookie).
        response = TemplateResponse(
            request,
            "admin/careflow/api_key.html",
            {
                **self.admin_site.each_context(request),
                "title": "API key created",
                "opts": self.model._meta,
                "api_key": obj,
                "token": token,
                "api_base": request.build_absolute_uri("/api/v1/"),
                "docs_url": reverse("api:docs"),
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(
        description="Revoke the selected keys (they stop working at once)", permissions=["change"]
    )
    def revoke_api_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(
            api_key_revoke(api_key=api_key, revoked_by=request.user)
            for api_key in queryset.filter(revoked_at__isnull=True)
        )
        self.message_user(request, f"Revoked {revoked} API key(s).", messages.SUCCESS)
