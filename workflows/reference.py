"""The data reference: every trigger and the variables its events offer, for clinic admins
(HTML in the admin) and for the workflow builder (`?format=json`).

Built from the catalogue in `workflows.catalogue` and the clinic's own custom event types
(`workflows.custom_events`, one query); it reads nothing else from the database beyond what
the admin's own chrome needs, so its cost does not grow with the data. A clinic's staff see
their clinic's custom types; whoever sees every clinic names one with `?organization=<id>`.
"""

import json
from dataclasses import dataclass
from typing import Any

from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from patients.tenancy import request_organization_id, sees_all_organizations
from workflows.catalogue import EventType, Field, schema_paths
from workflows.custom_events import EventTypes, event_types

# How the date filter treats time zones (workflows.rendering._format_date), for every page
# and the builder's JSON: clinic admins write times once, patients read their own clock.
DATES_NOTE = (
    'The date filter, e.g. {{appointment.startsAt | date:"%b %-d at %-I:%M %p"}}, shows a '
    "time in the recipient's time zone: the patient's time zone, else the state of their "
    "address, else the clinic's. Daylight saving time is taken into account. A date without "
    "a time (e.g. a birth date) is shown as it is, never moved to another day."
)


@dataclass(frozen=True, slots=True)
class Row:
    path: str
    depth: int
    field: Field
    # Null here, or inside an object that may be null: a template needs a `default`.
    nullable: bool

    @property
    def is_variable(self) -> bool:
        return self.field.type not in ("object", "array")

    @property
    def is_free_form(self) -> bool:
        return self.field.type == "object" and self.field.fields is None

    @property
    def example_text(self) -> str:
        if self.field.example is None:
            return ""
        return json.dumps(self.field.example, ensure_ascii=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "type": self.field.type,
            "description": self.field.description,
            "example": self.field.example,
            "nullable": self.nullable,
            "sensitive": self.field.sensitive,
            "freeForm": self.is_free_form,
        }


def reference_rows(event: EventType) -> list[Row]:
    """Every path of the event's payload, containers included, with effective nullability."""
    rows: list[Row] = []
    nullable_prefixes: list[str] = []
    for path, node in schema_paths(event):
        inherited = any(path.startswith(prefix) for prefix in nullable_prefixes)
        if node.nullable:
            nullable_prefixes.append(f"{path}.")
        rows.append(Row(path, path.count("."), node, node.nullable or inherited))
    return rows


def _clinic_events(request: HttpRequest) -> tuple[EventTypes, str]:
    """The event types of the clinic the page is for, and the query string naming it (for
    links): a clinic user's own; for whoever sees every clinic, `?organization=`."""
    if not sees_all_organizations(request.user):
        return event_types(organization_id=request_organization_id(request)), ""
    chosen = request.GET.get("organization", "")
    if not chosen.isdigit() or len(chosen) > 18:  # an id, not what bigint cannot hold
        return event_types(organization_id=None), ""
    return event_types(organization_id=int(chosen)), f"?organization={int(chosen)}"


def _categories(events: EventTypes) -> list[tuple[str, list[EventType]]]:
    groups: dict[str, list[EventType]] = {}
    for event in events.listed:
        groups.setdefault(event.category, []).append(event)
    return list(groups.items())


def _event_summary(event: EventType, query: str = "") -> dict[str, Any]:
    return {
        "name": event.name,
        "category": event.category,
        "description": event.description,
        "subject": event.subject,
        "url": reverse("careflow-reference-event", args=[event.name]) + query,
    }


def _wants_json(request: HttpRequest) -> bool:
    return request.GET.get("format") == "json"


def reference_index(request: HttpRequest) -> HttpResponse:
    clinic_events, query = _clinic_events(request)
    categories = _categories(clinic_events)
    if _wants_json(request):
        return JsonResponse(
            {
                "categories": [
                    {"name": name, "events": [_event_summary(event, query) for event in events]}
                    for name, events in categories
                ],
                "dates": DATES_NOTE,
            }
        )
    return TemplateResponse(
        request,
        "admin/careflow/reference_index.html",
        {
            **admin.site.each_context(request),
            "title": "Data reference",
            "categories": categories,
            "clinic_query": query,
            "dates_note": DATES_NOTE,
        },
    )


def reference_event(request: HttpRequest, name: str) -> HttpResponse:
    clinic_events, query = _clinic_events(request)
    event = clinic_events.get(name)
    if event is None:
        raise Http404(f"There is no trigger named {name!r}.")
    rows = reference_rows(event)
    if _wants_json(request):
        return JsonResponse(
            {
                **_event_summary(event, query),
                "variables": [row.as_json() for row in rows if row.is_variable],
                "fields": [row.as_json() for row in rows],
                "dates": DATES_NOTE,
            }
        )
    return TemplateResponse(
        request,
        "admin/careflow/reference_event.html",
        {
            **admin.site.each_context(request),
            "title": event.name,
            "subtitle": event.description,
            "event": event,
            "rows": rows,
            "dates_note": DATES_NOTE,
        },
    )
