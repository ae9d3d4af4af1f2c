"""Clinic isolation in the admin: staff linked to a clinic see and edit only its records."""

from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.http import HttpRequest

from patients.inputs import StorableJSONField, validate_storable_line, validate_storable_text
from patients.models import Organization
from patients.roles import VIEW_ALL_ORGANIZATIONS


def sees_all_organizations(user: Any) -> bool:
    """Superusers and support staff (`patients.view_all_organizations`) work in every clinic;
    everyone else only in the clinic of their StaffMembership."""
    return bool(user.is_superuser or user.has_perm(VIEW_ALL_ORGANIZATIONS))


def request_organization_id(request: HttpRequest) -> int | None:
    """The clinic a staff user belongs to; None for users linked to no clinic."""
    user = request.user
    membership = getattr(user, "membership", None) if user.is_authenticated else None
    return membership.organization_id if membership else None


def _org_path_of(model: type[models.Model]) -> str | None:
    names = {f.name for f in model._meta.get_fields()}
    if model is Organization:
        return "pk"
    return "organization" if "organization" in names else None


class OrganizationScopedAdmin(admin.ModelAdmin):
    """Scopes querysets, foreign-key choices and new records to the user's clinic.

    `organization_path` is the lookup from this model to its Organization.
    """

    organization_path = "organization"

    def _scope(self, request: HttpRequest, queryset: models.QuerySet[Any], path: str) -> Any:
        if sees_all_organizations(request.user):
            return queryset
        org_id = request_organization_id(request)
        if org_id is None:
            return queryset.none()
        return queryset.filter(**{path: org_id})

    def get_queryset(self, request: HttpRequest) -> models.QuerySet[Any]:
        return self._scope(request, super().get_queryset(request), self.organization_path)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        path = _org_path_of(db_field.related_model)
        org_id = request_organization_id(request)
        if (
            db_field.related_model is Organization
            and org_id
            and not sees_all_organizations(request.user)
        ):
            # A clinic's staff can only pick their own clinic; preselect it.
            kwargs.setdefault("initial", org_id)
            kwargs.setdefault("empty_label", None)
        formfield = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if path and formfield is not None and formfield.queryset is not None:
            formfield.queryset = self._scope(request, formfield.queryset, path)
        return formfield

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # Every admin form of every model: text PostgreSQL cannot store (NUL, lone
        # surrogates) or that would reach a patient invisible (control characters), and JSON
        # too deep for the parser, are a form error instead of a 500.
        if isinstance(db_field, models.JSONField):
            kwargs.setdefault("form_class", StorableJSONField)
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if isinstance(formfield, forms.CharField) and not isinstance(formfield, forms.JSONField):
            multiline = isinstance(formfield.widget, forms.Textarea)
            formfield.validators.append(
                validate_storable_text if multiline else validate_storable_line
            )
        return formfield

    def get_list_filter(self, request: HttpRequest) -> Any:
        filters = list(super().get_list_filter(request))
        if not sees_all_organizations(request.user):
            filters = [f for f in filters if f != "organization"]
        return filters


class ReadOnlyAdminMixin:
    """History is evidence: it can be browsed, never added, edited or deleted by hand."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
