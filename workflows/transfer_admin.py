"""The workflow admin's export action and import page (`workflows.transfer` does the work).

A base class of `WorkflowAdmin` rather than more of its module: the export action and
the import page are one feature, with its own template and tests.
"""

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from patients.models import Organization
from patients.tenancy import (
    OrganizationScopedAdmin,
    request_organization_id,
    sees_all_organizations,
)
from workflows.models import Workflow
from workflows.transfer import (
    MAX_DOCUMENT_BYTES,
    ImportPlan,
    ImportUnresolved,
    TransferRefused,
    document_read,
    export_filename,
    export_json,
    import_plan,
    workflows_export,
)
from workflows.transfer import (
    workflows_import as transfer_import,
)
from workflows.versions import DefinitionInvalid


class WorkflowTransferAdmin(OrganizationScopedAdmin):
    """Export selected workflows as a JSON download; import an export into a clinic."""

    def organizations_to_add_to(self, request: HttpRequest) -> list[Organization]:
        """The clinics the user may add a workflow to: their own, or every clinic for whoever
        sees them all."""
        organizations = Organization.objects.order_by("name", "pk")
        if not sees_all_organizations(request.user):
            organizations = organizations.filter(pk=request_organization_id(request) or 0)
        return list(organizations)

    @admin.action(description="Export selected as JSON", permissions=["view"])
    def export_workflows(
        self, request: HttpRequest, queryset: QuerySet[Workflow]
    ) -> HttpResponse | None:
        # The queryset is the user's clinic's (get_queryset): another clinic's id posted in
        # the selection is not in it, so it is not exported.
        workflows = list(
            queryset.select_related("organization").prefetch_related("steps").order_by("name", "pk")
        )
        organizations = {workflow.organization_id for workflow in workflows}
        if not organizations:
            self.message_user(
                request, "None of the selected workflows can be exported.", messages.ERROR
            )
            return None
        if len(organizations) != 1:
            self.message_user(
                request,
                "Select workflows of one clinic to export: an export comes from one clinic.",
                messages.ERROR,
            )
            return None
        organization = workflows[0].organization
        document = workflows_export(organization=organization, workflows=workflows)
        response = HttpResponse(
            export_json(document), content_type="application/json; charset=utf-8"
        )
        filename = export_filename(organization=organization)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="workflows_workflow_import",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Step 1: upload or paste an export and choose the clinic; the report says what
        maps, what must be mapped (a list to choose from per sender) and what stands in the
        way. Step 2: import all of it, disabled, or nothing."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        organizations = self.organizations_to_add_to(request)
        if not organizations:
            raise PermissionDenied  # staff of no clinic import nothing
        context: dict[str, Any] = {
            "organizations": organizations,
            "max_bytes": MAX_DOCUMENT_BYTES,
            "chosen": organizations[0].pk if len(organizations) == 1 else None,
        }
        if request.method != "POST":
            return self._import_page(request, context)
        try:
            post, files = request.POST, request.FILES
        except RequestDataTooBig:
            context["problem"] = (
                f"The export is too large: an export is at most {MAX_DOCUMENT_BYTES:,} bytes."
            )
            return self._import_page(request, context, status=400)
        chosen = str(post.get("organization") or "")
        organization = next((o for o in organizations if str(o.pk) == chosen), None)
        if organization is None and len(organizations) == 1:
            organization = organizations[0]
        text, problem = self._posted_document(post, files)
        context["document_text"] = text
        if organization is not None:
            context["chosen"] = organization.pk
        if problem:
            context["problem"] = problem
            return self._import_page(request, context, status=400)
        try:
            document = document_read(text)
        except TransferRefused as exc:
            context["problem"] = str(exc)
            return self._import_page(request, context, status=400)
        if organization is None:
            context["problem"] = "Choose the clinic to import the workflows into."
            return self._import_page(request, context, status=400)
        first = import_plan(document=document, organization=organization)
        unmapped = first.unmapped()
        if post.get("step") != "import":
            return self._import_page(request, {**context, **self._report(first, unmapped, {})})
        chosen_senders = {
            index: str(post.get(f"sender-{index}") or "").strip() for index in range(len(unmapped))
        }
        mapping: dict[str, dict[str, str]] = {}
        for index, need in enumerate(unmapped):
            if chosen_senders[index]:
                mapping.setdefault(need.adapter, {})[need.value] = chosen_senders[index]
        try:
            created = transfer_import(document=document, organization=organization, mapping=mapping)
        except ImportUnresolved as exc:
            report = self._report(exc.plan, unmapped, chosen_senders)
            context["problem"] = "Nothing was imported: resolve what the report says first."
            return self._import_page(request, {**context, **report}, status=400)
        except DefinitionInvalid as exc:
            report = self._report(first, unmapped, chosen_senders)
            context["problem"] = f"Nothing was imported: {exc}"
            return self._import_page(request, {**context, **report}, status=400)
        self.message_user(
            request,
            f"Imported {len(created)} workflow(s) into {organization}, all disabled: "
            + ", ".join(f"“{workflow}”" for workflow in created)
            + ". Review and dry-run each, then enable it.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(reverse("admin:workflows_workflow_changelist"))

    def _posted_document(self, post: Any, files: Any) -> tuple[str, str]:
        """The export's text (an uploaded file, else the pasted text) and the problem with
        it, if any."""
        upload = files.get("file")
        if upload is not None:
            if upload.size > MAX_DOCUMENT_BYTES:
                return "", (
                    f"The file is {upload.size:,} bytes; an export is at most "
                    f"{MAX_DOCUMENT_BYTES:,} bytes. Export fewer workflows at a time."
                )
            raw = upload.read(MAX_DOCUMENT_BYTES + 1)
            try:
                return raw.decode("utf-8"), ""
            except UnicodeDecodeError:
                return "", "The file is not text (UTF-8 JSON): choose the export's .json file."
        text = str(post.get("document") or "")
        if not text.strip():
            return "", "Choose the export's file, or paste its text."
        return text, ""

    def _report(
        self, plan: ImportPlan, unmapped: list[Any], chosen: dict[int, str]
    ) -> dict[str, Any]:
        return {
            "plan": plan,
            "choices": [
                {"index": index, "need": need, "chosen": chosen.get(index, "")}
                for index, need in enumerate(unmapped)
            ],
            # Only senders left to choose: the import button is offered (the choices are
            # checked again when it is pressed).
            "importable": all(
                not p.problems and not p.missing_integrations for p in plan.workflows
            ),
        }

    def _import_page(
        self, request: HttpRequest, context: dict[str, Any], status: int = 200
    ) -> TemplateResponse:
        return TemplateResponse(
            request,
            "admin/workflows/workflow/import.html",
            {
                **self.admin_site.each_context(request),
                "title": "Import workflows",
                "opts": self.opts,
                **context,
            },
            status=status,
        )
