import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import F, QuerySet
from django.http import HttpRequest

from integrations.registry import REGISTRY
from patients.tenancy import OrganizationScopedAdmin, ReadOnlyAdminMixin
from workflows.engine import run_retry, workflow_disable
from workflows.filters import FilterError, filter_validate
from workflows.models import Event, Run, Step, StepRun, Workflow
from workflows.steps import STEP_TYPES
from workflows.tasks import advance_run
from workflows.validation import workflow_validate


def _parameter_names() -> dict[str, str]:
    """Every parameter of every step type and adapter function: name → label."""
    names = {p.name: f"{t.label}: {p.label}" for t in STEP_TYPES.values() for p in t.parameters}
    for adapter in REGISTRY.values():
        for function in adapter.functions.values():
            for p in function.parameters:
                names.setdefault(p.name, f"{adapter.label} {function.name}: {p.label}")
    return names


def _step_parameter_names(step: Step) -> list[str]:
    if step.type == Step.Type.ADAPTER:
        adapter = REGISTRY.get(step.adapter)
        function = adapter.functions.get(step.function) if adapter else None
        return [p.name for p in function.parameters] if function else []
    return [p.name for p in STEP_TYPES[step.type].parameters]


def _parameter_fields() -> dict[str, forms.Field]:
    fields: dict[str, forms.Field] = {}
    for name, label in _parameter_names().items():
        big = name in ("message", "query")
        widget = (
            forms.Textarea(attrs={"rows": 2, "cols": 60})
            if big
            else forms.TextInput(attrs={"size": 40})
        )
        fields[name] = forms.CharField(label=label, required=False, widget=widget)
    return fields


class _StepFormBase(forms.ModelForm):
    """One step with its parameters as plain fields; the visual builder replaces this form
    with a friendlier editor, and both validate through workflows.validation."""

    class Meta:
        model = Step
        fields = ["position", "type", "adapter", "function", "purpose", "urgent"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = self.instance.parameters or {}
        for name in _parameter_names():
            value = params.get(name)
            if value is not None:
                self.initial[name] = json.dumps(value) if name == "query" else value
        self.fields["adapter"].widget = forms.Select(
            choices=[("", "—"), *((a.name, a.label) for a in REGISTRY.values())]
        )
        self.fields["function"].widget = forms.Select(
            choices=[
                ("", "—"),
                *(
                    (f.name, f"{a.label} → {f.label}")
                    for a in REGISTRY.values()
                    for f in a.functions.values()
                ),
            ]
        )

    def clean_query(self) -> Any:
        raw = self.cleaned_data.get("query", "")
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ValidationError(f"The query is not valid JSON: {exc}") from exc

    def definition(self) -> dict[str, Any]:
        """The step as the engine would pin it, from the submitted values."""
        step = Step(**{f: self.cleaned_data.get(f) for f in _StepFormBase.Meta.fields})
        return {
            **step.definition(),
            "parameters": {
                name: self.cleaned_data.get(name)
                for name in _step_parameter_names(step)
                if self.cleaned_data.get(name) not in (None, "")
            },
        }

    def save(self, commit: bool = True) -> Step:
        self.instance.parameters = self.definition()["parameters"]
        if self.instance.type != Step.Type.ADAPTER:
            self.instance.adapter = self.instance.function = ""
        return super().save(commit)


# Declared (not added in __init__) so the admin renders them and binds their data; the
# parameter list comes from the step types and the adapter registry.
StepForm = type("StepForm", (_StepFormBase,), _parameter_fields())


class StepFormSet(forms.BaseInlineFormSet):
    def clean(self) -> None:
        super().clean()
        forms_in_order = sorted(
            (
                f
                for f in self.forms
                if f.is_valid() and f.cleaned_data and not f.cleaned_data.get("DELETE")
            ),
            key=lambda f: f.cleaned_data.get("position") or 0,
        )
        report = workflow_validate(
            trigger=self.instance.trigger,
            filter=self.instance.filter,
            steps=[f.definition() for f in forms_in_order],
        )
        for index, problems in report.steps.items():
            form = forms_in_order[index]
            for name, texts in problems.items():
                for text in texts:
                    form.add_error(name if name in form.fields else None, text)


class StepInline(admin.StackedInline):
    model = Step
    form = StepForm
    formset = StepFormSet
    extra = 0
    ordering = ["position", "id"]


class WorkflowForm(forms.ModelForm):
    filter = forms.JSONField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text='Optional, e.g. {"order.totalAmount": {"$gte": 50}}',
    )

    class Meta:
        model = Workflow
        fields = ["organization", "name", "description", "trigger", "filter", "enabled"]

    def clean_filter(self) -> dict[str, Any]:
        value = self.cleaned_data.get("filter") or {}
        try:
            filter_validate(value)
        except FilterError as exc:
            raise ValidationError(f"Filter: {exc}") from exc
        return value


@admin.register(Workflow)
class WorkflowAdmin(OrganizationScopedAdmin):
    form = WorkflowForm
    inlines = [StepInline]
    list_display = ["name", "trigger", "enabled", "organization", "version", "updated_at"]
    list_filter = ["enabled", "trigger", "organization"]
    list_select_related = ["organization"]
    search_fields = ["name"]
    actions = ["disable_workflows"]

    def save_model(self, request: HttpRequest, obj: Workflow, form: Any, change: bool) -> None:
        disabling = change and "enabled" in form.changed_data and not obj.enabled
        if disabling:
            obj.enabled = True  # workflow_disable does it, together with the cancellations
        super().save_model(request, obj, form, change)
        if disabling:
            cancelled = workflow_disable(workflow=obj)
            self.message_user(
                request,
                f"“{obj}” is disabled; {cancelled} waiting run(s) were cancelled.",
                messages.WARNING,
            )

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if change:
            # Runs already started keep the definition they pinned; new runs see this version.
            Workflow.objects.filter(pk=form.instance.pk).update(version=F("version") + 1)

    @admin.action(description="Disable (cancels their waiting runs)", permissions=["change"])
    def disable_workflows(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        total = sum(workflow_disable(workflow=w) for w in queryset)
        self.message_user(
            request,
            f"Disabled {queryset.count()} workflow(s); {total} waiting run(s) were cancelled.",
            messages.WARNING,
        )


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    list_display = ["id", "type", "occurred_at", "dispatched_at", "organization"]
    list_filter = ["type", "organization"]
    list_select_related = ["organization"]
    show_full_result_count = False
    readonly_fields = ["payload_pretty"]
    exclude = ["payload"]

    @admin.display(description="Payload")
    def payload_pretty(self, obj: Event) -> str:
        return json.dumps(obj.payload, indent=2, sort_keys=True)


class StepRunInline(admin.TabularInline):
    model = StepRun
    extra = 0
    can_delete = False
    readonly_fields = (
        "number",
        "status",
        "inputs",
        "result",
        "skip_reason",
        "error",
        "attempts",
        "due_at",
        "finished_at",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="Step")
    def number(self, obj: StepRun) -> int:
        return obj.number


@admin.register(Run)
class RunAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    organization_path = "workflow__organization"
    list_display = ["id", "workflow", "status", "event_type", "created_at", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["workflow", "event"]
    show_full_result_count = False
    inlines = [StepRunInline]
    actions = ["retry_failed_runs"]

    @admin.display(description="Event", ordering="event__type")
    def event_type(self, obj: Run) -> str:
        return obj.event.type

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("workflows.change_run"))  # type: ignore[union-attr]

    @admin.action(description="Retry from the failed step", permissions=["retry"])
    def retry_failed_runs(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        retried = [run for run in queryset if run_retry(run=run)]
        for run in retried:
            advance_run.delay(run.pk)
        skipped = queryset.count() - len(retried)
        self.message_user(
            request,
            f"Retrying {len(retried)} run(s) from their failed step; steps that succeeded are "
            f"not repeated."
            + (f" {skipped} run(s) had not failed and were left alone." if skipped else ""),
            messages.SUCCESS if retried else messages.WARNING,
        )


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    organization_path = "run__workflow__organization"
    list_display = ["id", "run", "index", "status", "skip_reason", "error", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["run"]
    show_full_result_count = False
