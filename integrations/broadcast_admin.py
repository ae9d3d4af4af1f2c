"""The broadcasts' admin: drafts edited with the builder's preview, a confirmation showing the
recipient count before sending or scheduling, live progress, and cancelling mid-way.

A draft is the only editable state: once sending (or scheduled, cancelled, completed) the
page is read-only, with the progress panel and, while it can still be stopped, "Cancel"."""

from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.formats import localize
from django.utils.html import format_html, format_html_join

from integrations.broadcasts import (
    BroadcastError,
    broadcast_cancel,
    broadcast_function,
    broadcast_functions,
    broadcast_integration,
    broadcast_problems,
    broadcast_progress,
    broadcast_rate,
    broadcast_recipients,
    broadcast_start,
    broadcast_step,
)
from integrations.models import Broadcast
from patients.clinic_view import clinic_datetime
from patients.tenancy import OrganizationScopedAdmin
from workflows.builder import message_previews
from workflows.variants import VARIANTS, step_variants

State = Broadcast.Status

# The form's fields for the function's parameters, by parameter name ("message" and "body"
# are the text the patient reads, whichever the channel calls it).
PARAMETER_FIELDS = {
    "message": "text",
    "body": "text",
    "subject": "subject",
    "from": "sender",
    "media": "media_url",
    VARIANTS: "variants",
}


class BroadcastForm(forms.ModelForm):
    function = forms.ChoiceField(label="Channel")
    subject = forms.CharField(
        required=False, max_length=500, help_text="Email only: the subject line."
    )
    text = forms.CharField(
        label="Message",
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="What each patient reads (the text, or the email's body). Use "
        "{{customer.firstName}} and the other customer variables of the data reference.",
    )
    sender = forms.CharField(
        label="From",
        max_length=254,
        help_text="One of the clinic's approved senders (a number for texts, an address for "
        "email).",
    )
    media_url = forms.CharField(
        label="Media URL",
        required=False,
        max_length=1000,
        help_text="Texts only, optional: an https image or PDF sent with it (an MMS).",
    )
    variants = forms.JSONField(
        required=False,
        help_text='The message in other languages, e.g. {"es": {"message": "Hola '
        "{{customer.firstName}}\"}}: a patient who prefers one of the clinic's languages gets "
        "its variant.",
    )

    class Meta:
        model = Broadcast
        fields = ["organization", "name", "segment", "function", "purpose", "scheduled_at"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = self.fields["function"]
        assert isinstance(choices, forms.ChoiceField)  # noqa: S101 — declared above
        choices.choices = [
            (name, f"{function.label} ({function.channel})")
            for name, function in broadcast_functions()
        ]
        parameters = self.instance.parameters or {}
        for parameter, name in PARAMETER_FIELDS.items():
            if parameter in parameters and name in self.fields:
                self.initial.setdefault(name, parameters[parameter])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        broadcast: Broadcast = self.instance
        organization = data.get("organization") or getattr(broadcast, "organization", None)
        segment = data.get("segment")
        if organization is None or segment is None or "function" not in data:
            return data
        if segment.organization_id != organization.pk:
            self.add_error("segment", "Choose one of this clinic's segments.")
            return data
        broadcast.organization = organization
        broadcast.function = data["function"]
        function = broadcast_function(broadcast)
        if function is None:
            return data
        integration = broadcast_integration(
            organization=organization, adapter=broadcast.adapter_name
        )
        if integration is None:
            self.add_error("function", f"{organization} has no enabled integration for this.")
            return data
        broadcast.integration = integration
        parameters: dict[str, Any] = {}
        for parameter in function.parameters:
            name = PARAMETER_FIELDS.get(parameter.name)
            value = data.get(name) if name else None
            if value not in (None, ""):
                parameters[parameter.name] = str(value).strip() if name == "sender" else value
        if data.get("variants"):
            parameters[VARIANTS] = data["variants"]
        broadcast.parameters = parameters
        broadcast.purpose = data.get("purpose") or broadcast.purpose
        for given, problems in broadcast_problems(broadcast=broadcast).items():
            name = PARAMETER_FIELDS.get(given, "function" if given == "to" else None)
            for problem in problems:
                self.add_error(name if name in self.fields else None, problem)
        return data


@admin.register(Broadcast)
class BroadcastAdmin(OrganizationScopedAdmin):
    form = BroadcastForm
    list_display = ["name", "organization", "status", "segment", "channel", "when", "progress"]
    list_filter = ["status", "organization"]
    list_select_related = ["organization", "segment"]
    search_fields = ["name"]
    show_full_result_count = False
    change_form_template = "admin/integrations/broadcast/change_form.html"
    readonly_fields = [
        "status",
        "recipients",
        "preview",
        "created_by",
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Broadcast | None = None) -> Any:
        message = ["function", "purpose", "sender", "subject", "text", "media_url", "variants"]
        if obj is not None and not self.has_change_permission(request, obj):
            message = ["function", "purpose", "message"]
        fieldsets: list[tuple[str | None, dict[str, Any]]] = [
            (None, {"fields": ["organization", "name", "segment", "scheduled_at"]}),
            ("Message", {"fields": message}),
        ]
        if obj is not None:
            fieldsets.append(("Preview", {"fields": ["preview"]}))
            sending = ["created_by"]
            if obj.status == State.DRAFT:
                # Once started, the live progress panel shows these and when it started and
                # ended (a second, static copy here would contradict it within seconds:
                # "Completed" there, "Finished at: -" here).
                sending = ["status", "recipients", *sending]
            fieldsets.append(("Sending", {"fields": sending}))
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Broadcast | None = None) -> Any:
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            fields.append("message")
        return fields

    def has_change_permission(self, request: HttpRequest, obj: Broadcast | None = None) -> bool:
        # A broadcast's message is what was (or will be) sent: only a draft is edited.
        if obj is not None and obj.status != State.DRAFT:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Broadcast | None = None) -> bool:
        return False  # its messages are the record of what was sent

    def save_model(self, request: HttpRequest, obj: Broadcast, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    # --- the list and the page --------------------------------------------------------------

    @admin.display(description="channel")
    def channel(self, obj: Broadcast) -> str:
        function = broadcast_function(obj)
        return function.channel.upper() if function else obj.function

    @admin.display(description="when", ordering="scheduled_at")
    def when(self, obj: Broadcast) -> str:
        moment = obj.started_at or obj.scheduled_at
        return clinic_datetime(moment, obj.organization.timezone) if moment else "—"

    @admin.display(description="recipients")
    def progress(self, obj: Broadcast) -> str:
        return "—" if obj.recipients is None else f"{obj.recipients:,}"

    @admin.display(description="message")
    def message(self, obj: Broadcast) -> str:
        rows = [(name, str(value)) for name, value in obj.parameters.items() if name != VARIANTS]
        for code, texts in step_variants(obj.parameters).items():
            rows += [(f"{name} ({code})", text) for name, text in texts.items()]
        return format_html("<dl>{}</dl>", format_html_join("", "<dt>{}</dt><dd>{}</dd>", rows))

    @admin.display(description="preview")
    def preview(self, obj: Broadcast) -> str:
        """Each language's message as the builder previews it (characters, encoding,
        segments, the clinic's wording), with the segment's size and the time it takes."""
        function = broadcast_function(obj)
        if function is None or not function.preview_parameter:
            return "—"
        step = broadcast_step(obj)
        parameters = step["parameters"]
        inputs = {k: str(v) for k, v in parameters.items() if k != VARIANTS}
        messages_ = {"": {"text": inputs.get(function.preview_parameter, ""), "inputs": inputs}}
        for code, texts in step_variants(parameters).items():
            if function.preview_parameter in texts:
                messages_[f"0:{code}"] = {
                    "text": texts[function.preview_parameter],
                    "inputs": {**inputs, **texts},
                }
        for key in messages_:
            messages_[key]["function"] = obj.function
        previews = message_previews(
            trigger="customer.signup",
            patient=None,
            messages=messages_,
            organization=obj.organization,
        )["previews"]
        rows = []
        for key, shown in previews.items():
            language = key.partition(":")[2] or obj.organization.fallback_language
            if "error" in shown:
                rows.append((language, shown["error"], "", ""))
                continue
            counts = ", ".join(
                f"{shown[name]} {name if shown[name] != 1 else name[:-1]}"
                for name in ("characters", "segments")
                if shown.get(name) is not None
            )
            if shown.get("encoding"):
                counts += f", {shown['encoding']}"
            warnings = " ".join(shown.get("warnings") or [])
            rows.append((language, shown.get("text", ""), counts, warnings))
        recipients = broadcast_recipients(broadcast=obj)
        rate = broadcast_rate(broadcast=obj)
        estimate = (
            f"about {_duration(recipients / rate)} at {rate:g} per second"
            if rate
            else "unthrottled"
        )
        return format_html(
            '<p id="broadcast-size">{} recipient{} now in “{}”; {} (one segment each).</p>'
            '<table class="broadcast-preview"><thead><tr><th>language</th><th>message '
            "(example data)</th><th>counts</th><th>notes</th></tr></thead><tbody>{}</tbody>"
            "</table>",
            f"{recipients:,}",
            "" if recipients == 1 else "s",
            obj.segment,
            estimate,
            format_html_join(
                "",
                "<tr><td>{}</td><td><pre>{}</pre></td><td>{}</td><td>{}</td></tr>",
                rows,
            ),
        )

    # --- sending, cancelling, progress -----------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        wrap = self.admin_site.admin_view
        return [
            path(
                "<path:object_id>/send/",
                wrap(self.send_view),
                name="integrations_broadcast_send",
            ),
            path(
                "<path:object_id>/cancel/",
                wrap(self.cancel_view),
                name="integrations_broadcast_cancel",
            ),
            path(
                "<path:object_id>/progress/",
                wrap(self.progress_view),
                name="integrations_broadcast_progress",
            ),
            *super().get_urls(),
        ]

    def _broadcast(self, request: HttpRequest, object_id: str, *, change: bool) -> Broadcast:
        """The broadcast, if this user's clinic has it (404 otherwise, as for any other
        object of another clinic) and they may act on it."""
        broadcast = self.get_object(request, object_id)
        if broadcast is None:
            raise Http404("No such broadcast.")
        allowed = (
            super().has_change_permission(request, broadcast)
            if change
            else self.has_view_permission(request, broadcast)
        )
        if not allowed:
            raise PermissionDenied
        return broadcast

    def send_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        broadcast = self._broadcast(request, object_id, change=True)
        change_url = reverse("admin:integrations_broadcast_change", args=[broadcast.pk])
        if broadcast.status != State.DRAFT:
            self.message_user(
                request,
                f"“{broadcast}” is {broadcast.get_status_display().lower()}.",
                messages.INFO,
            )
            return HttpResponseRedirect(change_url)
        problems = [p for ps in broadcast_problems(broadcast=broadcast).values() for p in ps]
        if request.method == "POST" and not problems:
            try:
                broadcast_start(broadcast=broadcast, at=broadcast.scheduled_at, user=request.user)
            except BroadcastError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                return HttpResponseRedirect(change_url)
            if broadcast.status == State.SCHEDULED:
                when = clinic_datetime(broadcast.scheduled_at, broadcast.organization.timezone)
                done = f"“{broadcast}” is scheduled for {when}."
            else:
                done = f"“{broadcast}” is sending to {broadcast.recipients:,} patients."
            self.message_user(request, done, messages.SUCCESS)
            return HttpResponseRedirect(change_url)
        scheduled = broadcast.scheduled_at is not None and broadcast.scheduled_at > timezone.now()
        recipients = broadcast_recipients(broadcast=broadcast)
        rate = broadcast_rate(broadcast=broadcast)
        return TemplateResponse(
            request,
            "admin/integrations/broadcast/send_confirmation.html",
            {
                **self.admin_site.each_context(request),
                "title": f"{'Schedule' if scheduled else 'Send'} “{broadcast}”?",
                "opts": self.opts,
                "original": broadcast,
                "broadcast": broadcast,
                "change_url": change_url,
                "problems": problems,
                "recipients": recipients,
                "scheduled": scheduled,
                "when": clinic_datetime(broadcast.scheduled_at, broadcast.organization.timezone)
                if scheduled
                else "",
                "estimate": _duration(recipients / rate) if rate else "",
            },
        )

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        broadcast = self._broadcast(request, object_id, change=True)
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        if broadcast_cancel(broadcast_id=broadcast.pk):
            self.message_user(
                request,
                f"“{broadcast}” is cancelled: no more messages go out (one being sent this "
                "moment finishes).",
                messages.SUCCESS,
            )
        else:
            broadcast.refresh_from_db()
            self.message_user(
                request,
                f"“{broadcast}” is {broadcast.get_status_display().lower()}: nothing to cancel.",
                messages.INFO,
            )
        return HttpResponseRedirect(
            reverse("admin:integrations_broadcast_change", args=[broadcast.pk])
        )

    def progress_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        broadcast = self._broadcast(request, object_id, change=False)
        return JsonResponse(_panel_progress(broadcast))

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Broadcast | None = None,
    ) -> Any:
        if obj is not None:
            can_act = super().has_change_permission(request, obj)
            context["broadcast_panel"] = {
                "progressUrl": reverse("admin:integrations_broadcast_progress", args=[obj.pk]),
                "progress": _panel_progress(obj),
                "intervalMs": 2000,
            }
            context["send_url"] = (
                reverse("admin:integrations_broadcast_send", args=[obj.pk])
                if can_act and obj.status == State.DRAFT
                else ""
            )
            context["cancel_url"] = (
                reverse("admin:integrations_broadcast_cancel", args=[obj.pk])
                if can_act and obj.status in (State.SCHEDULED, State.SENDING)
                else ""
            )
            context["show_progress"] = obj.status != State.DRAFT
        return super().render_change_form(request, context, add, change, form_url, obj)


def _panel_progress(broadcast: Broadcast) -> dict[str, Any]:
    """What the live panel shows: the progress, and when the broadcast started and ended
    (completed or cancelled), None while it has not; written as the admin writes the
    page's other times ("Scheduled at"), so the two agree."""
    ended = broadcast.finished_at or broadcast.cancelled_at
    return {
        **broadcast_progress(broadcast=broadcast),
        "startedAt": _admin_time(broadcast.started_at),
        "endedAt": _admin_time(ended),
    }


def _admin_time(value: datetime | None) -> str | None:
    return None if value is None else str(localize(timezone.localtime(value)))


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
