import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst

from patients.clinic_view import (
    ClinicDaysFilter,
    EstimatedCountPaginator,
    PhoneSearchMixin,
    TechnicalDetailsMixin,
    clinic_datetime,
    request_is_clinic_role,
)
from patients.inputs import JSONInputError, json_parse, json_textarea
from patients.models import Organization, Patient
from patients.tenancy import (
    OrganizationScopedAdmin,
    ReadOnlyAdminMixin,
    request_organization_id,
    sees_all_organizations,
)
from workflows import builder
from workflows.adapters import REGISTRY
from workflows.custom_events import EventTypes, event_types
from workflows.diagram import ending_summary, workflow_diagram
from workflows.dry_run import workflow_dry_run, workflow_live_test
from workflows.engine import run_retry, workflow_definition, workflow_disable
from workflows.models import (
    CustomEventType,
    EnrollmentSkip,
    Event,
    Run,
    Segment,
    StepRun,
    Workflow,
)
from workflows.pages import WORKFLOW_PAGES, WorkflowPage
from workflows.recipes import RECIPES, RecipeUnavailable, recipe_add
from workflows.segments_admin import SegmentAdmin
from workflows.selectors import (
    run_patient,
    run_timeline,
    workflow_skip_counts,
    workflow_version,
    workflow_version_documents,
    workflow_version_numbers,
    workflow_versions,
    workflow_waiting_runs,
)
from workflows.tasks import run_advance
from workflows.transfer_admin import WorkflowTransferAdmin
from workflows.validation import ClinicSenders, ValidationReport, workflow_validate
from workflows.version_diff import version_diff
from workflows.versions import (
    COMMENT_LENGTH,
    DefinitionInvalid,
    workflow_definition_save,
    workflow_document,
    workflow_version_restore,
)

# The longest SMS: no real reply is longer than a simulated one may be.
MAX_SIMULATED_REPLY = 1600


class WorkflowForm(forms.ModelForm):
    """The workflow's own fields, and its whole definition (trigger, filter, steps) as one
    JSON document written by the builder. Saving validates it with `workflow_validate`."""

    definition = forms.CharField(
        label="Definition (JSON)",
        required=False,
        strip=False,
        widget=json_textarea(rows=14, css_class="careflow-definition"),
        help_text="Trigger, filter and steps. The builder below edits this for you; "
        "without JavaScript, edit the JSON here.",
    )

    comment = forms.CharField(
        label="Change note",
        required=False,
        max_length=COMMENT_LENGTH,
        widget=forms.TextInput(attrs={"size": 80}),
        help_text="Optional: what this save changes and why. Kept with the version, shown in "
        "the workflow's Versions.",
    )

    class Meta:
        model = Workflow
        # Not "enabled": a workflow is enabled and disabled only through the banner's
        # Enable…/Disable…, which check it and confirm. A new one starts disabled.
        fields = ["organization", "name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2, "cols": 60})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.report: ValidationReport | None = None
        self.steps: list[dict[str, Any]] = []
        self.enrollment_changed = False
        if not self.is_bound:
            self.initial["definition"] = json.dumps(
                builder.definition_initial(self.instance), indent=2, ensure_ascii=False
            )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        try:
            parsed = builder.definition_parse(cleaned.get("definition", ""))
        except builder.DefinitionError as exc:
            self.add_error("definition", str(exc))
            return cleaned
        organization = cleaned.get("organization")
        self.report = builder.definition_report(
            parsed,
            senders=builder.approved_senders(organization) if organization else None,
            events=event_types(organization_id=organization.pk if organization else None),
        )
        if not self.report.ok:
            raise ValidationError(builder.report_lines(self.report, parsed.steps))
        self.instance.trigger = parsed.trigger
        self.instance.filter = parsed.filter
        builder.goal_apply(self.instance, parsed.goal)
        before = builder.EnrollmentSettings.of(self.instance)
        parsed.enrollment.apply(self.instance)
        self.enrollment_changed = parsed.enrollment != before
        self.steps = parsed.steps
        return cleaned


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        body = json_parse(request.body or b"{}")
    except JSONInputError as exc:
        raise ValidationError(f"The request body {exc}.") from None
    if not isinstance(body, dict):
        raise ValidationError("The request body must be a JSON object.")
    return body


def _pages(workflow: Workflow) -> list[tuple[str, str]]:
    """The workflow's extra pages (its versions, and workflows.pages) as (label, url)."""
    return [("Versions", reverse("admin:workflows_workflow_versions", args=[workflow.pk]))] + [
        (page.label, reverse(f"admin:workflows_workflow_{page.slug}", args=[workflow.pk]))
        for page in WORKFLOW_PAGES.values()
    ]


def _version_number(value: Any) -> int | None:
    """A version number from a query or form value; None when absent or not a number."""
    text = str(value or "").strip()
    return int(text) if text.isdigit() and len(text) < 10 else None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        raise Http404("No such patient.") from None


@admin.register(Workflow)
class WorkflowAdmin(WorkflowTransferAdmin):
    form = WorkflowForm
    change_form_template = "admin/workflows/workflow/change_form.html"
    list_display = ["name", "trigger", "enabled", "organization", "version", "updated_at", "runs"]
    list_filter = ["enabled", "trigger", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name"]
    actions = ["disable_workflows", "export_workflows"]
    fieldsets = [
        (None, {"fields": ["organization", "name", "description"]}),
        ("Definition", {"fields": ["definition"], "classes": ["careflow-definition-fallback"]}),
        ("Version", {"fields": ["comment"]}),
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Workflow | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        editable = (
            self.has_change_permission(request, obj)
            if obj is not None
            else self.has_add_permission(request)
        )
        # A change note belongs to a save: whoever may only look has none to write.
        return fieldsets if editable else [f for f in fieldsets if f[0] != "Version"]

    @admin.display(description="Runs")
    def runs(self, obj: Workflow) -> str:
        url = reverse("admin:workflows_run_changelist") + f"?workflow={obj.pk}"
        links = [format_html('<a href="{}">Runs</a>', url)]
        links += [format_html('<a href="{}">{}</a>', url, label) for label, url in _pages(obj)]
        return format_html_join(" · ", "{}", ((link,) for link in links))

    # --- saving ---------------------------------------------------------------------------

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # changeform_view runs in one transaction: the workflow, its trigger and filter, and
        # its steps are saved together or not at all.
        super().save_related(request, form, formsets, change)
        workflow_definition_save(
            workflow=form.instance,
            steps=form.steps,
            created=not change,
            enrollment_changed=form.enrollment_changed,
            comment=form.cleaned_data.get("comment", ""),
        )

    @admin.action(description="Disable (cancels their waiting runs)", permissions=["change"])
    def disable_workflows(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        total = sum(workflow_disable(workflow=w) for w in queryset)
        self.message_user(
            request,
            f"Disabled {queryset.count()} workflow(s); {total} waiting run(s) were cancelled.",
            messages.WARNING,
        )

    # --- the builder page -----------------------------------------------------------------

    def _visible_organization_ids(
        self, request: HttpRequest, obj: Workflow | None
    ) -> list[int] | None:
        if obj is not None and obj.pk:
            return [obj.organization_id]
        if sees_all_organizations(request.user):
            return None
        org_id = request_organization_id(request)
        return [org_id] if org_id else []

    def _builder_urls(self, obj: Workflow | None) -> dict[str, str]:
        args = [obj.pk] if obj is not None and obj.pk else []
        urls = {
            name: reverse(f"admin:workflows_workflow_builder_{name.replace('-', '_')}", args=args)
            for name in ("validate", "diagram", "preview", "dry-run")
        }
        urls = {"dryRun" if k == "dry-run" else k: v for k, v in urls.items()}
        if args:
            urls["liveTest"] = reverse("admin:workflows_workflow_live_test", args=args)
        urls["patients"] = reverse("admin:patients_patient_changelist") + "?is_test__exact=1"
        return urls

    def _builder_config(
        self, request: HttpRequest, form: WorkflowForm, obj: Workflow | None, editable: bool
    ) -> dict[str, Any]:
        definition: Any = None
        if form.is_bound:
            try:
                definition = json_parse(form.data.get("definition") or "{}")
            except JSONInputError:
                definition = None  # the fallback textarea shows what was typed, and its error
        else:
            definition = json.loads(form.initial["definition"])
        org_ids = self._visible_organization_ids(request, obj)
        # Whoever sees every clinic may move a workflow to another one: offer every clinic's
        # numbers, the builder shows those of the clinic chosen.
        every = sees_all_organizations(request.user)
        numbers = builder.approved_numbers(organization_ids=None if every else org_ids)
        senders = {str(organization_id): found for organization_id, found in numbers.items()}
        clinic = obj.organization_id if obj is not None and obj.pk else None
        if clinic is None and org_ids is not None and len(org_ids) == 1:
            clinic = org_ids[0]
        return {
            "schema": builder.builder_schema(organization_id=clinic),
            "definition": definition,
            "errors": form.report.as_dict() if form.report is not None else None,
            "urls": self._builder_urls(obj),
            "testPatients": builder.builder_test_patients(org_ids),
            "senders": senders,
            "organization": obj.organization_id if obj is not None and obj.pk else None,
            "editable": editable,
            "saved": bool(obj is not None and obj.pk),
        }

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Workflow | None = None,
    ) -> HttpResponse:
        form = context["adminform"].form
        editable = (
            self.has_add_permission(request) if add else self.has_change_permission(request, obj)
        )
        context["builder"] = self._builder_config(request, form, obj, editable)
        if obj is not None and obj.pk:
            context["waiting_runs"] = workflow_waiting_runs(workflow=obj)
            context["runs_url"] = reverse("admin:workflows_run_changelist") + f"?workflow={obj.pk}"
            skips = reverse("admin:workflows_enrollmentskip_changelist") + f"?workflow={obj.pk}"
            context["skips_url"] = skips
            context["skip_counts"] = [
                {
                    "reason": reason,
                    "label": label,
                    "count": count,
                    "url": f"{skips}&reason={reason}",
                }
                for reason, label, count in workflow_skip_counts(workflow=obj)
            ]
            context["workflow_pages"] = _pages(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    # --- builder endpoints ----------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        def view(function: Any) -> Any:
            return self.admin_site.admin_view(function)

        urls = []
        for name, function in (
            ("validate", self.builder_validate_view),
            ("diagram", self.builder_diagram_view),
            ("preview", self.builder_preview_view),
            ("dry-run", self.builder_dry_run_view),
        ):
            url_name = f"workflows_workflow_builder_{name.replace('-', '_')}"
            urls += [
                path(f"builder/{name}/", view(function), name=url_name),
                path(f"<int:object_id>/builder/{name}/", view(function), name=url_name),
            ]
        urls += [
            path(
                "builder/schema/",
                view(self.builder_schema_view),
                name="workflows_workflow_builder_schema",
            ),
            path(
                "<int:object_id>/builder/live-test/",
                view(self.live_test_view),
                name="workflows_workflow_live_test",
            ),
            path("recipes/", view(self.recipes_view), name="workflows_workflow_recipes"),
            path(
                "<int:object_id>/versions/",
                view(self.versions_view),
                name="workflows_workflow_versions",
            ),
            path(
                "<int:object_id>/versions/compare/",
                view(self.version_compare_view),
                name="workflows_workflow_version_compare",
            ),
            path(
                "<int:object_id>/versions/restore/",
                view(self.version_restore_view),
                name="workflows_workflow_version_restore",
            ),
            path(
                "<int:object_id>/enable/", view(self.enable_view), name="workflows_workflow_enable"
            ),
            path(
                "<int:object_id>/disable/",
                view(self.disable_view),
                name="workflows_workflow_disable",
            ),
        ]
        for page in WORKFLOW_PAGES.values():
            urls.append(
                path(
                    f"<int:object_id>/{page.slug}/",
                    view(functools.partial(self.workflow_page_view, page=page)),
                    name=f"workflows_workflow_{page.slug}",
                )
            )
        return urls + super().get_urls()

    def workflow_page_view(
        self, request: HttpRequest, object_id: int, *, page: WorkflowPage
    ) -> HttpResponse:
        """A page another app provides (workflows.pages), for a workflow of the user's
        clinic they may view; another clinic's workflow is a 404."""
        workflow = self._workflow(request, object_id, change=False)
        assert workflow is not None  # noqa: S101 — object_id is always given here
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": workflow,
            "title": f"{page.label}: {workflow.name}",
            "has_view_permission": True,
            "change_url": reverse("admin:workflows_workflow_change", args=[workflow.pk]),
        }
        return page.view(request, workflow, context)

    def _workflow(
        self, request: HttpRequest, object_id: int | None, *, change: bool
    ) -> Workflow | None:
        """The workflow an endpoint acts on (None on the add page), scoped to the user's
        clinic: another clinic's workflow is a 404, as if it did not exist."""
        if object_id is None:
            if not self.has_add_permission(request):
                raise PermissionDenied
            return None
        workflow = (
            self.get_queryset(request).select_related("organization").filter(pk=object_id).first()
        )
        if workflow is None:
            raise Http404("No such workflow.")
        allowed = (
            self.has_change_permission(request, workflow)
            if change
            else self.has_view_or_change_permission(request, workflow)
        )
        if not allowed:
            raise PermissionDenied
        return workflow

    def _patient(
        self, request: HttpRequest, workflow: Workflow | None, body: dict[str, Any]
    ) -> Patient | None:
        """The patient named in the request, from the workflow's clinic (on the add page: the
        chosen clinic, which must be one the user may see). A patient of another clinic is a
        404."""
        patient_id = _int_or_none(body.get("patient"))
        if patient_id is None:
            return None
        patients = Patient.objects.select_related("organization")
        if workflow is not None:
            patients = patients.filter(organization_id=workflow.organization_id)
        else:
            org_ids = self._visible_organization_ids(request, None)
            if org_ids is not None:
                patients = patients.filter(organization_id__in=org_ids)
            organization = _int_or_none(body.get("organization"))
            if organization is not None:
                patients = patients.filter(organization_id=organization)
        patient = patients.filter(pk=patient_id).first()
        if patient is None:
            raise Http404("No such patient.")
        return patient

    def _senders(
        self, request: HttpRequest, workflow: Workflow | None, body: dict[str, Any]
    ) -> ClinicSenders | None:
        """The approved numbers of the clinic a definition is checked for (`_clinic`)."""
        organization = self._clinic(request, workflow, body)
        return builder.approved_senders(organization) if organization is not None else None

    def _events(
        self, request: HttpRequest, workflow: Workflow | None, body: dict[str, Any]
    ) -> EventTypes:
        """The event types (the clinic's custom ones too) a definition is checked with."""
        organization = self._clinic(request, workflow, body)
        return event_types(organization_id=organization.pk if organization else None)

    def _clinic(
        self, request: HttpRequest, workflow: Workflow | None, body: dict[str, Any]
    ) -> Organization | None:
        """The clinic a definition is checked for: a clinic user's own (the workflow's);
        for whoever sees every clinic the one chosen on the page, else the workflow's. None
        while no clinic is known."""
        organization = workflow.organization if workflow is not None else None
        if sees_all_organizations(request.user):
            try:
                chosen = int(body.get("organization") or 0)
            except (TypeError, ValueError):
                chosen = 0
            if 0 < chosen < 2**63:  # a bigint id: a larger number would be a database error
                organization = Organization.objects.filter(pk=chosen).first() or organization
        elif organization is None:
            organization = Organization.objects.filter(
                pk=request_organization_id(request) or 0
            ).first()
        return organization

    def _endpoint(self, request: HttpRequest, handler: Any) -> HttpResponseBase:
        """Run a builder endpoint: POST only (CSRF-checked by admin_view), a JSON body in;
        a refusal the admin can act on comes back as {"error": …} with status 400."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        try:
            return handler(_json_body(request))
        except ValidationError as exc:
            return JsonResponse({"error": " ".join(exc.messages)}, status=400)
        except builder.DefinitionError as exc:
            return JsonResponse({"error": str(exc)}, status=400)

    def builder_schema_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        # A clinic's custom triggers: a clinic user's own; whoever sees every clinic names
        # one (?organization=), else sees the catalogue's alone.
        clinic = self._clinic(request, None, {"organization": request.GET.get("organization")})
        return JsonResponse(builder.builder_schema(organization_id=clinic.pk if clinic else None))

    def builder_validate_view(
        self, request: HttpRequest, object_id: int | None = None
    ) -> HttpResponseBase:
        workflow = self._workflow(request, object_id, change=False)

        def handle(body: dict[str, Any]) -> HttpResponse:
            parsed = builder.definition_parse(body.get("definition") or {})
            senders = self._senders(request, workflow, body)
            events = self._events(request, workflow, body)
            report = builder.definition_report(parsed, senders=senders, events=events)
            tree = builder.definition_tree(parsed.steps)
            return JsonResponse({"ok": report.ok, **report.as_dict(), "tree": tree})

        return self._endpoint(request, handle)

    def builder_diagram_view(
        self, request: HttpRequest, object_id: int | None = None
    ) -> HttpResponseBase:
        workflow = self._workflow(request, object_id, change=False)

        def handle(body: dict[str, Any]) -> HttpResponse:
            parsed = builder.definition_parse(body.get("definition") or {})
            events = self._events(request, workflow, body)
            report = builder.definition_report(parsed, events=events)
            svg = workflow_diagram(
                trigger=parsed.trigger,
                filter=parsed.filter,
                steps=parsed.steps,
                problems=set(report.steps),
                ends_when=ending_summary(goal_event=parsed.goal.event, exits=parsed.goal.exits),
                events=events,
            )
            return HttpResponse(svg, content_type="image/svg+xml; charset=utf-8")

        return self._endpoint(request, handle)

    def builder_preview_view(
        self, request: HttpRequest, object_id: int | None = None
    ) -> HttpResponseBase:
        workflow = self._workflow(request, object_id, change=False)

        def handle(body: dict[str, Any]) -> HttpResponse:
            patient = self._patient(request, workflow, body)
            messages_ = body.get("messages") or {}
            if not isinstance(messages_, dict):
                raise ValidationError("messages must be an object")
            return JsonResponse(
                builder.message_previews(
                    trigger=str(body.get("trigger") or ""),
                    patient=patient,
                    messages=messages_,
                    organization=workflow.organization if workflow else None,
                )
            )

        return self._endpoint(request, handle)

    def builder_dry_run_view(
        self, request: HttpRequest, object_id: int | None = None
    ) -> HttpResponseBase:
        workflow = self._workflow(request, object_id, change=False)

        def handle(body: dict[str, Any]) -> HttpResponse:
            patient = self._patient(request, workflow, body)
            if patient is None:
                raise ValidationError("Choose a test patient first.")
            parsed = builder.definition_parse(body.get("definition") or {})
            reply = body.get("reply")
            if reply is not None and not isinstance(reply, str):
                raise ValidationError("The simulated reply must be text (or null: no reply).")
            if reply is not None and len(reply) > MAX_SIMULATED_REPLY:
                raise ValidationError(
                    f"A simulated reply is at most {MAX_SIMULATED_REPLY} characters."
                )
            clinic = workflow.organization if workflow is not None else patient.organization
            report = builder.definition_report(
                parsed,
                senders=builder.approved_senders(clinic),
                events=event_types(organization_id=clinic.pk),
            )
            context: dict[str, Any] = {"patient": patient, "problems": []}
            if not report.ok:
                context["problems"] = builder.report_lines(report, parsed.steps)
            else:
                target = workflow or Workflow(
                    organization=patient.organization, trigger=parsed.trigger, name="(new)"
                )
                # The rule as on the page (saved or not), against the enrollments so far.
                parsed.enrollment.apply(target)
                result = workflow_dry_run(
                    workflow=target,
                    patient=patient,
                    definition={
                        "trigger": parsed.trigger,
                        "filter": parsed.filter,
                        "steps": parsed.steps,
                    },
                    # A blank reply is no reply: no SMS is empty.
                    reply=reply if reply and reply.strip() else None,
                )
                context.update(builder.dry_run_context(result.as_dict()))
                context["ends_when"] = ending_summary(
                    goal_event=parsed.goal.event, exits=parsed.goal.exits
                )
            return TemplateResponse(request, "admin/workflows/workflow/dry_run.html", context)

        return self._endpoint(request, handle)

    def live_test_view(self, request: HttpRequest, object_id: int) -> HttpResponseBase:
        workflow = self._workflow(request, object_id, change=True)
        assert workflow is not None  # noqa: S101 — object_id is always given here

        def handle(body: dict[str, Any]) -> HttpResponse:
            patient = self._patient(request, workflow, body)
            if patient is None:
                raise ValidationError("Choose a test patient first.")
            saved = workflow_definition(workflow)
            report = workflow_validate(
                trigger=workflow.trigger,
                filter=workflow.filter,
                steps=saved["steps"],
                senders=builder.approved_senders(workflow.organization),
                events=event_types(organization_id=workflow.organization_id),
            )
            if not report.ok or not saved["steps"]:
                raise ValidationError(
                    "The saved workflow has problems or no steps: fix them and save first."
                )
            run = workflow_live_test(workflow=workflow, patient=patient)
            return JsonResponse(
                {
                    "run": run.pk,
                    "url": reverse("admin:workflows_run_change", args=[run.pk]),
                    "message": f"Live test started for {patient}: run {run.pk}.",
                }
            )

        return self._endpoint(request, handle)

    # --- ready-made workflows --------------------------------------------------------------

    def recipes_view(self, request: HttpRequest) -> HttpResponse:
        """The ready-made workflows, each added in one click as a disabled workflow of the
        user's clinic; the admin lands in the builder to review it."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        organizations = self.organizations_to_add_to(request)
        if not organizations:
            raise PermissionDenied  # staff of no clinic add nothing
        problem, status = "", 200
        if request.method == "POST":
            recipe = RECIPES.get(str(request.POST.get("recipe") or ""))
            chosen = _int_or_none(request.POST.get("organization"))
            organization = (
                organizations[0]
                if chosen is None and len(organizations) == 1
                else next((o for o in organizations if o.pk == chosen), None)
            )
            if recipe is None:
                problem, status = "Choose one of the ready-made workflows below.", 400
            elif organization is None:
                problem, status = "Choose the clinic to add it to.", 400
            else:
                try:
                    workflow = recipe_add(
                        recipe=recipe,
                        organization=organization,
                        sender=str(request.POST.get("sender") or "").strip(),
                    )
                except RecipeUnavailable as exc:
                    problem, status = f"“{recipe.name}” was not added: {exc}.", 400
                else:
                    self.message_user(
                        request,
                        f"“{workflow}” was added, disabled: review its messages, then "
                        "enable it with Enable….",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(
                        reverse("admin:workflows_workflow_change", args=[workflow.pk])
                    )
        numbers = builder.approved_numbers(organization_ids=[o.pk for o in organizations])
        adapters = {recipe.sender_adapter for recipe in RECIPES.values()}
        senders = []
        for organization in organizations:
            found = numbers.get(organization.pk, {})
            for number in dict.fromkeys(n for a in sorted(adapters) for n in found.get(a, [])):
                label = f"{number} ({organization})" if len(organizations) > 1 else number
                senders.append((number, label))
        added = self.get_queryset(request).filter(name__in=[r.name for r in RECIPES.values()])
        return TemplateResponse(
            request,
            "admin/workflows/workflow/recipes.html",
            {
                **self.admin_site.each_context(request),
                "title": "Add a ready-made workflow",
                "opts": self.opts,
                "recipes": [
                    {"recipe": r, "added": [w for w in added if w.name == r.name]}
                    for r in RECIPES.values()
                ],
                "organizations": organizations,
                "senders": senders,
                "several_senders": len(senders) > len(organizations),
                "problem": problem,
            },
            status=status,
        )

    # --- versions: history, diff, restore --------------------------------------------------

    def _version_context(
        self, request: HttpRequest, workflow: Workflow, title: str
    ) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.opts,
            "original": workflow,
            "workflow": workflow,
            "change_url": reverse("admin:workflows_workflow_change", args=[workflow.pk]),
            "versions_url": reverse("admin:workflows_workflow_versions", args=[workflow.pk]),
            "compare_url": reverse("admin:workflows_workflow_version_compare", args=[workflow.pk]),
            "restore_url": reverse("admin:workflows_workflow_version_restore", args=[workflow.pk]),
            "can_restore": self.has_change_permission(request, workflow),
        }

    def versions_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """The workflow's versions, newest first, and a form to compare any two."""
        workflow = self._workflow(request, object_id, change=False)
        assert workflow is not None  # noqa: S101 — object_id is always given here
        versions = workflow_versions(workflow=workflow)
        zone = workflow.organization.timezone
        context = self._version_context(request, workflow, f"Versions of “{workflow}”")
        context["versions"] = [
            {
                "version": v,
                "when": clinic_datetime(v.created_at, zone),
                "previous": versions[i + 1].number if i + 1 < len(versions) else None,
            }
            for i, v in enumerate(versions)
        ]
        # The compare form: by default the latest and the one before it.
        context["numbers"] = [v.number for v in versions]
        context["older"] = versions[1].number if len(versions) > 1 else None
        context["newer"] = versions[0].number if versions else None
        return TemplateResponse(request, "admin/workflows/workflow/versions.html", context)

    def version_compare_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """What changed between two versions (?from=N&to=M; by default the latest and the
        one before it)."""
        workflow = self._workflow(request, object_id, change=False)
        assert workflow is not None  # noqa: S101
        numbers = workflow_version_numbers(workflow=workflow)
        context = self._version_context(request, workflow, f"Compare versions of “{workflow}”")
        context["numbers"] = numbers
        chosen = [request.GET.get("from"), request.GET.get("to")]
        older, newer = (_version_number(value) for value in chosen)
        problem, status = "", 400
        if not any(chosen) and len(numbers) < 2:
            problem = "This workflow has only one version so far: there is nothing to compare."
            status = 200
        elif not any(chosen):
            older, newer = numbers[1], numbers[0]
        elif older not in numbers or newer not in numbers:
            problem = "No such version of this workflow: choose two from the list."
        if problem or older is None or newer is None:
            context["problem"] = problem
            return TemplateResponse(
                request, "admin/workflows/workflow/version_diff.html", context, status=status
            )
        documents = workflow_version_documents(workflow=workflow, numbers=[older, newer])
        context.update(
            {
                "older": older,
                "newer": newer,
                "diff": version_diff(before=documents[older], after=documents[newer]),
                "before_label": f"Version {older}",
                "after_label": f"Version {newer}",
            }
        )
        return TemplateResponse(request, "admin/workflows/workflow/version_diff.html", context)

    def version_restore_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """Restore a version (?version=N): a page showing what it will change, then a POST
        saving its definition as a new version. Refused, with what is wrong, when the
        version would not save today (a sender no longer approved); nothing changes then."""
        workflow = self._workflow(request, object_id, change=True)
        assert workflow is not None  # noqa: S101
        data = request.POST if request.method == "POST" else request.GET
        version = workflow_version(workflow=workflow, number=_version_number(data.get("version")))
        context = self._version_context(request, workflow, f"Restore a version of “{workflow}”")
        if version is None:
            context["problem"] = "Choose a version of this workflow to restore."
            return TemplateResponse(
                request, "admin/workflows/workflow/version_restore.html", context, status=400
            )
        diff = version_diff(before=workflow_document(workflow), after=version.document)
        context.update(
            {
                "version": version,
                "diff": diff,
                "before_label": "Now",
                "after_label": f"Version {version.number}",
            }
        )
        status = 200
        if not diff.has_changes:
            context["problem"] = (
                f"Version {version.number} is the workflow's definition now: nothing to restore."
            )
            status = 400
        elif request.method == "POST":
            try:
                restored = workflow_version_restore(version=version)
            except DefinitionInvalid as exc:
                context["refused"] = exc.lines
                status = 400
            else:
                self.message_user(
                    request,
                    f"Version {version.number} was restored as version {restored.number}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(context["versions_url"])
        return TemplateResponse(
            request, "admin/workflows/workflow/version_restore.html", context, status=status
        )

    # --- enable / disable with confirmation ----------------------------------------------

    def _toggle_page(
        self, request: HttpRequest, workflow: Workflow, action: str, **extra: Any
    ) -> TemplateResponse:
        return TemplateResponse(
            request,
            "admin/workflows/workflow/toggle_confirmation.html",
            {
                **self.admin_site.each_context(request),
                "title": f"{action.title()} “{workflow}”?",
                "opts": self.opts,
                "original": workflow,
                "workflow": workflow,
                "action": action,
                "change_url": reverse("admin:workflows_workflow_change", args=[workflow.pk]),
                **extra,
            },
        )

    def enable_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        workflow = self._workflow(request, object_id, change=True)
        assert workflow is not None  # noqa: S101
        change_url = reverse("admin:workflows_workflow_change", args=[workflow.pk])
        if workflow.enabled:
            self.message_user(request, f"“{workflow}” is already enabled.", messages.INFO)
            return HttpResponseRedirect(change_url)
        steps = workflow_definition(workflow)["steps"]
        report = workflow_validate(
            trigger=workflow.trigger,
            filter=workflow.filter,
            steps=steps,
            senders=builder.approved_senders(workflow.organization),
            events=event_types(organization_id=workflow.organization_id),
        )
        problems = builder.report_lines(report, steps)
        if not steps:
            problems.append("The workflow has no steps yet.")
        if request.method == "POST" and not problems:
            # No engine service enables a workflow: there is nothing to do but set the flag,
            # with a save so that the audit trail records who did it.
            workflow.enabled = True
            workflow.save(update_fields=["enabled", "updated_at"])
            self.message_user(
                request,
                f"“{workflow}” is enabled: every {workflow.trigger} event of "
                f"{workflow.organization} now starts a run.",
                messages.SUCCESS,
            )
            return HttpResponseRedirect(change_url)
        return self._toggle_page(
            request,
            workflow,
            "enable",
            problems=problems,
            setup_problems=_setup_problems(workflow.organization, steps),
        )

    def disable_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        workflow = self._workflow(request, object_id, change=True)
        assert workflow is not None  # noqa: S101
        change_url = reverse("admin:workflows_workflow_change", args=[workflow.pk])
        if request.method == "POST":
            cancelled = workflow_disable(workflow=workflow)
            self.message_user(
                request,
                f"“{workflow}” is disabled; {cancelled} waiting run(s) were cancelled.",
                messages.WARNING,
            )
            return HttpResponseRedirect(change_url)
        if not workflow.enabled:
            self.message_user(request, f"“{workflow}” is already disabled.", messages.INFO)
            return HttpResponseRedirect(change_url)
        return self._toggle_page(
            request, workflow, "disable", waiting=workflow_waiting_runs(workflow=workflow)
        )


class EventTypeFilter(admin.SimpleListFilter):
    """Events of one type, chosen from the types the user's clinic has (the catalogue's and
    its own): a field filter read every distinct type off the outbox on every page (1.6 s
    for one clinic's 50,000 events)."""

    title = "type"
    parameter_name = "type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        types = event_types(organization_id=request_organization_id(request))
        return [(t.name, t.name) for t in types.listed]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(type=value) if value else queryset


@admin.register(Event)
class EventAdmin(TechnicalDetailsMixin, ReadOnlyAdminMixin, OrganizationScopedAdmin):
    list_display = ["id", "type", "patient", "occurred", "organization"]
    list_filter = [EventTypeFilter, "organization"]
    list_select_related = ["organization"]
    # Newest recorded first, by the primary key: a million events are not sorted by
    # occurrence to show a hundred (occurred_at has no index; the outbox pays for each one).
    ordering = ["-id"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    fieldsets = [
        (None, {"fields": ["type", "organization", "patient", "occurred", "payload_pretty"]})
    ]
    technical_fields = [
        "uuid",
        "subject_type",
        "subject_id",
        "dedupe_key",
        "created_at",
        "dispatched_at",
        "relayed_at",
    ]
    readonly_fields = ["patient", "occurred", "payload_pretty", *technical_fields]

    @admin.display(description="Patient")
    def patient(self, obj: Event) -> str:
        return obj.patient_name

    @admin.display(description="Occurred", ordering="occurred_at")
    def occurred(self, obj: Event) -> str:
        return clinic_datetime(obj.occurred_at, obj.organization.timezone)

    @admin.display(description="Payload")
    def payload_pretty(self, obj: Event) -> str:
        return json.dumps(obj.payload, indent=2, sort_keys=True)


class WorkflowListFilter(admin.SimpleListFilter):
    """Runs of one workflow; lists only the workflows of the user's clinic."""

    title = "workflow"
    parameter_name = "workflow"
    # The lookup from the listed model to its workflow's id (messages: through their run).
    field = "workflow_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        workflows = Workflow.objects.select_related("organization").only(
            "id", "name", "organization__name"
        )
        if not sees_all_organizations(request.user):
            workflows = workflows.filter(organization_id=request_organization_id(request) or 0)
            return [(str(w.pk), w.name) for w in workflows[:200]]
        return [(str(w.pk), f"{w.name} ({w.organization.name})") for w in workflows[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if not value:
            return queryset
        if not value.isdigit():
            raise IncorrectLookupParameters(f"No such workflow: {value!r}.")
        return queryset.filter(**{self.field: value})


class RunFinishedFilter(ClinicDaysFilter):
    """Runs that finished today or in the last 7 days, in the clinic's time zone (the clinic
    home's "runs failed in the last 7 days" links here)."""

    title = "finished (clinic time)"
    parameter_name = "finished"
    field = "finished_at"
    organization = "workflow__organization"


def _status_badge(status: str, label: str) -> str:
    return format_html('<span class="cf-badge cf-status-{}">{}</span>', status, label)


class HistoryMedia:
    css = {"all": ["careflow/history.css"]}


RUN_FIELDS = (
    "workflow",
    "patient_link",
    "trigger",
    "status_badge",
    "goal",
    "is_test",
    "version",
    "created",
    "started",
    "due",
    "finished",
    "error",
)
# Searched in the event's payload, where the patient and the order were recorded: no join
# and no column on the outbox, whose INSERT is on every trigger's path.
RUN_SEARCH_FIELDS = [
    "event__payload__customer__firstName",
    "event__payload__customer__lastName",
    "event__payload__customer__phone",
    "event__payload__order__number",
]


@admin.register(Run)
class RunAdmin(
    PhoneSearchMixin, TechnicalDetailsMixin, ReadOnlyAdminMixin, OrganizationScopedAdmin
):
    organization_path = "workflow__organization"
    change_form_template = "admin/workflows/run/change_form.html"
    list_display = [
        "id",
        "workflow",
        "patient",
        "trigger",
        "status_badge",
        "is_test",
        "created",
        "finished",
    ]
    list_filter = ["status", WorkflowListFilter, RunFinishedFilter, "is_test"]
    list_select_related = ["workflow__organization", "event"]
    search_fields = RUN_SEARCH_FIELDS
    phone_search_field = "event__payload__customer__phone"
    search_help_text = "Patient name, phone number or order number."
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    fieldsets = [(None, {"fields": RUN_FIELDS})]
    technical_fields = ["uuid", "event", "next_index", "lease_expires_at", "pushed_at"]
    readonly_fields = [*RUN_FIELDS, *technical_fields]
    actions = ["retry_failed_runs"]
    Media = HistoryMedia

    @admin.display(description="Patient")
    def patient(self, obj: Run) -> str:
        return obj.event.patient_name

    @admin.display(description="Patient")
    def patient_link(self, obj: Run) -> str:
        patient = run_patient(obj)
        if patient is None:
            return obj.event.patient_name or "—"
        url = reverse("admin:patients_patient_change", args=[patient.pk])
        return format_html('<a href="{}">{}</a>', url, patient)

    @admin.display(description="Trigger", ordering="event__type")
    def trigger(self, obj: Run) -> str:
        return obj.event.type

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Run) -> str:
        badge = _status_badge(obj.status, obj.get_status_display())
        if obj.status == Run.Status.EXITED and obj.exit_reason:
            # "Ended early: goal reached: appointment.confirmed" (or "exit: …").
            return format_html('{} <span class="cf-quiet">{}</span>', badge, obj.exit_reason)
        return badge

    @admin.display(description="Goal")
    def goal(self, obj: Run) -> str:
        if obj.goal_reached_at is None:
            return "—" if obj.workflow.goal_event else "no goal"
        return format_html(
            "Reached {} ({}): a conversion",
            self._time(obj, obj.goal_reached_at),
            obj.workflow.goal_event or "the goal",
        )

    @admin.display(description="Workflow version")
    def version(self, obj: Run) -> Any:
        return obj.definition.get("version", "")

    def _time(self, obj: Run, value: Any) -> str:
        return clinic_datetime(value, obj.workflow.organization.timezone)

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj: Run) -> str:
        return self._time(obj, obj.created_at)

    @admin.display(description="Started", ordering="started_at")
    def started(self, obj: Run) -> str:
        return self._time(obj, obj.started_at)

    @admin.display(description="Due", ordering="due_at")
    def due(self, obj: Run) -> str:
        return self._time(obj, obj.due_at)

    @admin.display(description="Finished", ordering="finished_at")
    def finished(self, obj: Run) -> str:
        return self._time(obj, obj.finished_at)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Run]:
        # The change page needs them too; and a changelist only applies list_select_related
        # to a queryset that has none yet.
        return super().get_queryset(request).select_related(*self.list_select_related)

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Run | None = None,
    ) -> HttpResponse:
        if obj is not None:
            context["subtitle"] = obj.title
            context["show_technical"] = not request_is_clinic_role(request)
            context["timeline"] = run_timeline(obj)
        return super().render_change_form(request, context, add, change, form_url, obj)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("workflows.change_run"))  # type: ignore[union-attr]

    @admin.action(description="Retry from the failed step", permissions=["retry"])
    def retry_failed_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        retried = [run for run in queryset if run_retry(run=run)]
        for run in retried:
            run_advance.delay(run.pk)
        skipped = queryset.count() - len(retried)
        self.message_user(
            request,
            f"Retrying {len(retried)} run(s) from their failed step; steps that succeeded are "
            f"not repeated."
            + (f" {skipped} run(s) had not failed and were left alone." if skipped else ""),
            messages.SUCCESS if retried else messages.WARNING,
        )


def _setup_problems(organization: Organization, steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """What the clinic must set up before the steps' adapters can work: one line for each
    adapter the steps use whose `setup_problem` says so."""
    problems = []
    used = dict.fromkeys(str(step.get("adapter") or "") for step in steps if step.get("adapter"))
    for name in used:
        adapter = REGISTRY.get(name)
        problem = adapter.setup_problem(organization) if adapter is not None else ""
        if adapter is not None and problem:
            problems.append(
                f"{capfirst(problem)}: its {adapter.label} steps will fail until support "
                "staff set one up."
            )
    return problems


@admin.register(EnrollmentSkip)
class EnrollmentSkipAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    """Triggers that fired for a workflow but did not enroll the patient, with the rule's
    reason: what the workflow page counts, listed."""

    organization_path = "workflow__organization"
    list_display = ["created", "workflow", "patient", "trigger", "reason", "detail"]
    list_filter = ["reason", WorkflowListFilter]
    list_select_related = ["workflow__organization", "event"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator
    fields = ("workflow", "patient", "trigger", "reason", "detail", "created")
    readonly_fields = fields

    @admin.display(description="Patient")
    def patient(self, obj: EnrollmentSkip) -> str:
        return obj.event.patient_name or "—"

    @admin.display(description="Trigger", ordering="event__type")
    def trigger(self, obj: EnrollmentSkip) -> str:
        return obj.event.type

    @admin.display(description="When", ordering="created_at")
    def created(self, obj: EnrollmentSkip) -> str:
        return clinic_datetime(obj.created_at, obj.workflow.organization.timezone)


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    organization_path = "run__workflow__organization"
    list_display = ["id", "run", "patient", "step", "status", "skip_reason", "error", "finished"]
    list_filter = ["status"]
    list_select_related = ["run__workflow__organization", "run__event"]
    show_full_result_count = False
    paginator = EstimatedCountPaginator

    @admin.display(description="Patient")
    def patient(self, obj: StepRun) -> str:
        return obj.run.event.patient_name

    @admin.display(description="Step", ordering="index")
    def step(self, obj: StepRun) -> int:
        return obj.number

    @admin.display(description="Finished", ordering="finished_at")
    def finished(self, obj: StepRun) -> str:
        return clinic_datetime(obj.finished_at, obj.run.workflow.organization.timezone)


@admin.register(CustomEventType)
class CustomEventTypeAdmin(OrganizationScopedAdmin):
    """A clinic's own event types: name, label and the JSON Schema of their data, edited as
    JSON; a schema careflow cannot describe is a form error that names the place. The name
    is fixed once saved (workflows and events refer to it), and a type a workflow uses
    cannot be deleted: archive it."""

    list_display = ["type_name", "label", "enabled", "archived", "organization", "updated_at"]
    list_filter = ["enabled", "archived", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name", "label"]
    readonly_fields = ["used_by", "reference"]
    fields = [
        "organization",
        "name",
        "label",
        "description",
        "schema",
        "enabled",
        "archived",
        "used_by",
        "reference",
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fixed = ["name", "organization"] if obj is not None and obj.pk else []
        return [*fixed, *super().get_readonly_fields(request, obj)]

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "schema":
            kwargs["widget"] = forms.Textarea(
                attrs={"rows": 16, "cols": 80, "class": "vLargeTextField", "spellcheck": "false"}
            )
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="event type", ordering="name")
    def type_name(self, obj: CustomEventType) -> str:
        return obj.type_name

    @admin.display(description="used by")
    def used_by(self, obj: CustomEventType) -> str:
        used = obj.workflows_using()
        if not used:
            return "No workflow yet."
        return format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:workflows_workflow_change", args=[w.pk]), w.name) for w in used),
        )

    @admin.display(description="data reference")
    def reference(self, obj: CustomEventType) -> str:
        if obj.pk is None:
            return "Shown once saved."
        url = reverse("careflow-reference-event", args=[obj.type_name])
        return format_html(
            '<a href="{}?organization={}">Variables of {}</a>',
            url,
            obj.organization_id,
            obj.type_name,
        )

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # Workflows refer to a type by its name, not by a foreign key: the delete page lists
        # them as protected (and refuses), as it would a PROTECT relation.
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        for custom_type in objs:
            protected += [
                f"Workflow: {workflow.name} (uses {custom_type.type_name})"
                for workflow in custom_type.workflows_using()
            ]
        return deleted, model_count, perms_needed, protected


admin.site.register(Segment, SegmentAdmin)
