"""The workflow analytics page in the admin (/admin/workflows/workflow/<id>/analytics/),
mounted by the workflow admin through its page seam (workflows.pages), which scopes the
workflow to the user's clinic and checks the view permission first."""

from datetime import datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone

from integrations.analytics import Period, WorkflowAnalytics, workflow_analytics
from integrations.charts import Bar, day_bars_svg, horizontal_bars_svg
from integrations.models import OutboundMessage
from patients.zones import clinic_zone
from workflows.models import EnrollmentSkip, Run, Workflow
from workflows.pages import WorkflowPage

PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
PERIODS["90d"] = timedelta(days=90)
MAX_DAYS = 366


class PeriodForm(forms.Form):
    period = forms.ChoiceField(
        choices=[
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days"),
            ("30d", "Last 30 days"),
            ("90d", "Last 90 days"),
            ("custom", "Custom dates"),
        ],
        initial="30d",
        required=False,
    )
    start = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="From"
    )
    end = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        label="To",
        help_text="Both days included, in the clinic's time zone.",
    )

    def __init__(self, *args: Any, zone: str, now: datetime | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.zone = clinic_zone(zone)
        self.now = now or timezone.now()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        choice = cleaned.get("period") or "30d"
        cleaned["period"] = choice
        if choice != "custom":
            return cleaned
        start, end = cleaned.get("start"), cleaned.get("end")
        if self.errors:
            return cleaned  # a date that is not one: its own error says so
        if start is None or end is None:
            raise forms.ValidationError("Custom dates need both a “From” and a “To” date.")
        if start > end:
            raise forms.ValidationError("“From” must be on or before “To”.")
        if (end - start).days + 1 > MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        if start > self.now.astimezone(self.zone).date():
            raise forms.ValidationError("“From” is in the future: nothing has happened yet.")
        return cleaned

    def period_get(self) -> Period:
        """The chosen period; call after is_valid()."""
        choice = self.cleaned_data["period"]
        if choice in PERIODS:
            return Period(self.now - PERIODS[choice], self.now, self.zone)
        start = datetime.combine(self.cleaned_data["start"], time(), self.zone)
        end = datetime.combine(self.cleaned_data["end"] + timedelta(days=1), time(), self.zone)
        return Period(start, end, self.zone)


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "—"
    minutes = round(value.total_seconds() / 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days} d"] if days else []
    if hours or days:
        parts.append(f"{hours} h")
    parts.append(f"{minutes} min")
    return " ".join(parts)


def _links(workflow: Workflow, period: Period) -> tuple[Any, Any]:
    """URL builders of the run list and the message log filtered to this workflow and
    period (plain field lookups the admin accepts), test rows left out as here."""
    window = {
        "created_at__gte": period.start.isoformat(),
        "created_at__lt": period.end.isoformat(),
        "is_test__exact": "0",
    }
    runs_base = reverse("admin:workflows_run_changelist")
    messages_base = reverse("admin:integrations_outboundmessage_changelist")

    def runs(**extra: str) -> str:
        return f"{runs_base}?{urlencode({'workflow': workflow.pk, **window, **extra})}"

    def messages(**extra: str) -> str:
        return f"{messages_base}?{urlencode({'workflow': workflow.pk, **window, **extra})}"

    return runs, messages


def _context(workflow: Workflow, figures: WorkflowAnalytics) -> dict[str, Any]:
    runs, messages = _links(workflow, figures.period)
    statuses = dict(Run.Status.choices)
    message_statuses = dict(OutboundMessage.Status.choices)
    reasons = dict(EnrollmentSkip.Reason.choices)
    days = figures.days
    return {
        "figures": figures,
        "tiles": [
            ("Enrolled", figures.enrolled, runs()),
            ("Skipped", figures.skipped, ""),
            ("Messages sent", figures.messages_sent, messages(outcome="sent")),
            (
                "Delivered",
                figures.messages_by_status.get(OutboundMessage.Status.DELIVERED, 0),
                messages(status=OutboundMessage.Status.DELIVERED),
            ),
            ("Opt-outs caused", figures.opt_outs, ""),
            ("Replies", figures.replies, ""),
            ("Link clicks", figures.link_clicks, ""),
            ("Patients who clicked", figures.link_clickers, ""),
            ("Goals reached", figures.conversions, runs(goal_reached_at__isnull="False")),
            ("Conversion rate", _percent(figures.conversion_rate), ""),
            ("Median time to goal", _duration(figures.median_time_to_goal), ""),
        ],
        "run_statuses": [
            (label, figures.runs_by_status.get(value, 0), runs(status=value))
            for value, label in statuses.items()
            if figures.runs_by_status.get(value)
        ],
        "skips": [
            (reasons.get(reason, reason), n)
            for reason, n in sorted(figures.skipped_by_reason.items())
        ],
        "message_statuses": [
            (label, figures.messages_by_status.get(value, 0), messages(status=value))
            for value, label in message_statuses.items()
            if figures.messages_by_status.get(value)
        ],
        "errors": [
            (
                message_statuses.get(error.status, error.status),
                error.code or "none given",
                error.count,
                messages(status=error.status, error_code=error.code),
            )
            for error in figures.errors
        ],
        "variants": [
            (variant, _percent(variant.rate), runs(variant=variant.label))
            for variant in figures.variants
        ],
        "days_svg": day_bars_svg(
            [
                Bar(
                    day.day.strftime("%b %d"),
                    day.enrolled,
                    day.conversions,
                    f"{day.day:%b %d}: {day.enrolled} enrolled, {day.conversions} converted",
                )
                for day in days
            ],
            caption="Runs enrolled (whole bar) and converted (dark part) per day",
        ),
        "funnel_svg": horizontal_bars_svg(
            [
                Bar(
                    f"{step.number}. {step.label}",
                    step.reached,
                    step.succeeded,
                    f"{step.label}: {step.reached} reached, {step.succeeded} succeeded",
                )
                for step in figures.steps
            ],
            caption="Runs that reached each step, and succeeded there",
        )
        if figures.steps
        else "",
        "variants_svg": horizontal_bars_svg(
            [
                Bar(
                    variant.label or "(no split)",
                    variant.enrolled,
                    variant.conversions,
                    f"{variant.label or '(no split)'}: {variant.conversions} of "
                    f"{variant.enrolled} converted",
                )
                for variant in figures.variants
            ],
            caption="Conversions of each A/B variant",
        )
        if any(variant.label for variant in figures.variants)
        else "",
    }


def analytics_view(
    request: HttpRequest, workflow: Workflow, context: dict[str, Any]
) -> HttpResponse:
    zone = workflow.organization.timezone
    # No parameters: the last 30 days; anything given is validated, errors shown on the page.
    form = PeriodForm(request.GET or {"period": "30d"}, zone=zone)
    page = {**context, "form": form, "workflow": workflow, "zone": zone}
    if form.is_valid():
        figures = workflow_analytics(workflow=workflow, period=form.period_get())
        page.update(_context(workflow, figures))
    return TemplateResponse(request, "admin/workflows/workflow/analytics.html", page)


ANALYTICS_PAGE = WorkflowPage("analytics", "Analytics", analytics_view)
