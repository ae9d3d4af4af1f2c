import json
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import F
from django.http import HttpRequest

from integrations.adapters import REGISTRY
from patients.tenancy import OrganizationScopedAdmin, ReadOnlyAdminMixin
from workflows.filters import FilterError, filter_validate
from workflows.models import Event, Run, Step, StepRun, Workflow
from workflows.rendering import TemplateError, template_variables


class StepForm(forms.ModelForm):
    """An adapter step with its parameters as form fields (the visual builder comes later)."""

    message = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 50}),
        help_text='e.g. Hi {{customer.firstName | default:"there"}}!',
    )
    to = forms.CharField(label="To Phone", initial="{{customer.phone}}")
    from_number = forms.CharField(label="From Phone", help_text="An approved sending number.")

    class Meta:
        model = Step
        fields = ["position", "adapter", "function", "purpose"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        params = self.instance.parameters or {}
        for field, key in (("message", "message"), ("to", "to"), ("from_number", "from")):
            if key in params:
                self.initial[field] = params[key]
        self.fields["adapter"].widget = forms.Select(
            choices=[(a.name, a.label) for a in REGISTRY.values()]
        )
        self.fields["function"].widget = forms.Select(
            choices=[
                (f.name, f"{a.label} → {f.label}")
                for a in REGISTRY.values()
                for f in a.functions.values()
            ]
        )

    def _clean_template(self, field: str) -> str:
        value: str = self.cleaned_data[field]
        try:
            template_variables(value)
        except TemplateError as exc:
            raise ValidationError(str(exc)) from exc
        return value

    def clean_message(self) -> str:
        return self._clean_template("message")

    def clean_to(self) -> str:
        return self._clean_template("to")

    def clean_from_number(self) -> str:
        return self._clean_template("from_number")

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        adapter = REGISTRY.get(cleaned.get("adapter", ""))
        if adapter is None:
            self.add_error("adapter", "Choose an adapter.")
        elif cleaned.get("function") not in adapter.functions:
            self.add_error(
                "function", f"{adapter.label} has no function {cleaned.get('function')!r}."
            )
        return cleaned

    def save(self, commit: bool = True) -> Step:
        self.instance.parameters = {
            "message": self.cleaned_data["message"],
            "to": self.cleaned_data["to"],
            "from": self.cleaned_data["from_number"],
        }
        return super().save(commit)


class StepInline(admin.StackedInline):
    model = Step
    form = StepForm
    extra = 0
    ordering = ["position", "id"]


class WorkflowForm(forms.ModelForm):
    filter = forms.JSONField(
        required=False,
        initial=dict,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text='Optional, e.g. {"order.totalAmount": {"$gte": "50"}}',
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

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if change:
            # Runs already started keep the definition they pinned; new runs see this version.
            Workflow.objects.filter(pk=form.instance.pk).update(version=F("version") + 1)


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

    @admin.display(description="Event", ordering="event__type")
    def event_type(self, obj: Run) -> str:
        return obj.event.type


@admin.register(StepRun)
class StepRunAdmin(ReadOnlyAdminMixin, OrganizationScopedAdmin):
    organization_path = "run__workflow__organization"
    list_display = ["id", "run", "index", "status", "skip_reason", "error", "finished_at"]
    list_filter = ["status"]
    list_select_related = ["run"]
    show_full_result_count = False
