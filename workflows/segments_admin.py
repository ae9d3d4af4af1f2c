"""The admin of segments: the filter built with the workflows' point-and-click query builder
over the segment fields (or typed as JSON), checked on save, and counted live as it is edited
through a JSON endpoint. Registered by workflows.admin."""

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    JsonResponse,
)
from django.urls import URLPattern, path, reverse

from patients.inputs import JSONInputError, json_parse, json_textarea
from patients.models import Organization
from patients.tenancy import (
    OrganizationScopedAdmin,
    request_organization_id,
    sees_all_organizations,
)
from workflows.builder import QUERY_OPERATORS
from workflows.filters import FilterError, filter_summary
from workflows.models import Segment
from workflows.segments import (
    clinic_patients_matching,
    segment_field_catalogue,
    segment_patients,
    segment_q,
)

# Members shown on a segment's page: enough to recognise it, cheap to read.
SAMPLE_SIZE = 10

# The query builder's operators, less those it writes as $regex: a segment's SQL cannot
# match a pattern as workflows do (workflows.segments refuses it), so none is offered.
_PATTERNS = {"contains", "notContains", "startsWith", "regex"}
SEGMENT_OPERATORS = {
    kind: [list(op) for op in ops if op[0] not in _PATTERNS]
    for kind, ops in QUERY_OPERATORS.items()
}


def filter_parse(text: Any) -> Any:
    """A filter typed as JSON (an empty box: no conditions, every patient), checked as a
    segment filter; a ValidationError says what is wrong and where."""
    if isinstance(text, str):
        if not text.strip():
            return {}
        try:
            text = json_parse(text)
        except JSONInputError as exc:
            raise forms.ValidationError(f"The filter {exc}.") from None
    try:
        segment_q(text)
    except FilterError as exc:
        raise forms.ValidationError(f"The filter cannot be used: {exc}.") from None
    return text


class SegmentForm(forms.ModelForm):
    filter = forms.CharField(
        label="Filter (JSON)",
        required=False,
        strip=False,
        widget=json_textarea(rows=6, css_class="careflow-segment-json"),
        help_text='A MongoDB-style query on the segment fields, e.g. {"customer.provinceCode": '
        '"FL"}; empty: every patient of the clinic. The builder below edits it for you.',
    )

    class Meta:
        model = Segment
        fields = ["organization", "name", "description", "filter"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2, "cols": 60})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            query = self.instance.filter or {}
            self.initial["filter"] = (
                json.dumps(query, indent=2, ensure_ascii=False) if query else ""
            )

    def clean_filter(self) -> Any:
        return filter_parse(self.cleaned_data.get("filter", ""))

    def _get_validation_exclusions(self) -> Any:
        # The clinic is read-only once saved, so not a field of the form; the name must
        # still be unique within it: a form error, not an IntegrityError.
        exclusions = super()._get_validation_exclusions()  # type: ignore[misc]  # not in the stubs
        exclusions.discard("organization")
        return exclusions


class SegmentAdmin(OrganizationScopedAdmin):
    form = SegmentForm
    change_form_template = "admin/workflows/segment/change_form.html"
    list_display = ["name", "conditions", "organization", "updated_at"]
    list_filter = ["organization"]
    list_select_related = ["organization"]
    search_fields = ["name"]
    fields = ["organization", "name", "description", "filter"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # A segment stays in its clinic: broadcasts of that clinic point at it.
        fixed = ["organization"] if obj is not None and obj.pk else []
        return [*fixed, *super().get_readonly_fields(request, obj)]

    @admin.display(description="conditions")
    def conditions(self, obj: Segment) -> str:
        if not obj.filter:
            return "Every patient"
        return filter_summary(obj.filter) or json.dumps(obj.filter, ensure_ascii=False)

    # --- the page ---------------------------------------------------------------------------

    def _count_url(self, obj: Segment | None) -> str:
        if obj is not None and obj.pk:
            return reverse("admin:workflows_segment_count", args=[obj.pk])
        return reverse("admin:workflows_segment_count_new")

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Segment | None = None,
    ) -> HttpResponse:
        context["segment_builder"] = {
            "fields": segment_field_catalogue(),
            "operators": SEGMENT_OPERATORS,
            "countUrl": self._count_url(obj),
        }
        if obj is not None and obj.pk:
            context["segment_sample"] = self._sample(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def _sample(self, segment: Segment) -> dict[str, Any]:
        try:
            members = list(
                segment_patients(segment=segment).only("pk", "first_name", "last_name")[
                    :SAMPLE_SIZE
                ]
            )
        except FilterError as exc:
            return {"error": str(exc), "members": []}
        return {
            "members": [
                {
                    "name": str(patient) or f"Patient {patient.pk}",
                    "url": reverse("admin:patients_patient_change", args=[patient.pk]),
                }
                for patient in members
            ],
            "error": "",
        }

    # --- the live count ---------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.count_view)
        return [
            path("count/", view, name="workflows_segment_count_new"),
            path("<int:object_id>/count/", view, name="workflows_segment_count"),
            *super().get_urls(),
        ]

    def count_view(self, request: HttpRequest, object_id: int | None = None) -> HttpResponseBase:
        """{"count": n} for the filter in the request body ({"filter": …, "organization":
        id}), among the patients of the segment's clinic (on the add page: the user's, or
        for whoever sees every clinic, the one chosen); {"error": …} with status 400 for a
        filter that cannot be used. POST only, so the admin's CSRF check applies."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        organization_id = self._count_clinic(request, object_id)
        try:
            body = json_parse(request.body or b"{}")
        except JSONInputError as exc:
            return JsonResponse({"error": f"The request body {exc}."}, status=400)
        if not isinstance(body, dict):
            return JsonResponse({"error": "The request body must be a JSON object."}, status=400)
        if organization_id is None:
            organization_id = self._chosen_clinic(body.get("organization"))
        if organization_id is None:
            return JsonResponse({"error": "Choose a clinic to count its patients."}, status=400)
        try:
            query = filter_parse(body.get("filter", ""))
        except forms.ValidationError as exc:
            return JsonResponse({"error": " ".join(exc.messages)}, status=400)
        members = clinic_patients_matching(organization_id=organization_id, query=query)
        return JsonResponse({"count": members.count()})

    def _count_clinic(self, request: HttpRequest, object_id: int | None) -> int | None:
        """The clinic a count is for: the segment's (another clinic's segment is a 404, as
        if it did not exist), or on the add page the user's own; None: chosen in the body."""
        if object_id is not None:
            segment = self.get_queryset(request).filter(pk=object_id).first()
            if segment is None:
                raise Http404("No such segment.")
            if not self.has_view_or_change_permission(request, segment):
                raise PermissionDenied
            return segment.organization_id
        if not self.has_add_permission(request):
            raise PermissionDenied
        if sees_all_organizations(request.user):
            return None
        organization_id = request_organization_id(request)
        if organization_id is None:
            raise PermissionDenied
        return organization_id

    @staticmethod
    def _chosen_clinic(value: Any) -> int | None:
        text = str(value or "")
        if not text.isdecimal() or len(text) > 18:
            return None
        return Organization.objects.filter(pk=int(text)).values_list("pk", flat=True).first()
