"""A clinic's custom event types (`custom.<name>`, declared in the admin as CustomEventType):
the event types a clinic's pages and checks resolve, and recording an event of one.

The catalogue (workflows.catalogue) stays data; this is the seam that adds a clinic's own
types to it. `event_types` reads them in one query: a request, a validation or a batch builds
the mapping once and passes it down, so nothing is cached across saves (an edited schema
shows on the next page).
"""

from typing import Any

from django.core.exceptions import ValidationError

from patients.inputs import json_problem
from patients.models import Organization, Patient
from patients.payloads import customer_payload
from patients.recording import RecordedEvent, event_record_once
from workflows.catalogue import (
    CATALOGUE,
    CUSTOM_CATEGORY,
    CUSTOM_PREFIX,
    CUSTOMER,
    EVENT_TYPES,
    EventType,
)
from workflows.custom_schemas import custom_data_problems, custom_schema_field
from workflows.models import CustomEventType


class EventTypes(dict[str, EventType]):
    """Every event type a clinic's workflows may use, by name: the catalogue's and the
    clinic's own. `listed` are those offered as triggers and in the data reference (its
    archived and disabled types are left out there, but still resolve, so a workflow that
    uses one keeps its variables)."""

    listed: tuple[EventType, ...]

    def __init__(self, types: dict[str, EventType], listed: tuple[EventType, ...]) -> None:
        super().__init__(types)
        self.listed = listed


def custom_event_type(record: CustomEventType) -> EventType:
    """The EventType a CustomEventType declares: about the patient (`customer`), with its
    `data` described by its schema."""
    described = record.description.strip()
    description = f"{record.label}: {described}" if described else record.label
    data = custom_schema_field(
        record.schema or {}, f"The data posted with the event (its schema: {record.label})."
    )
    return EventType(
        record.type_name,
        CUSTOM_CATEGORY,
        description,
        {"customer": CUSTOMER, "data": data},
        "customer",
    )


def event_types(*, organization_id: int | None) -> EventTypes:
    """The catalogue's types and, for a clinic, its custom types (one query); None: the
    catalogue's alone (no clinic chosen yet, e.g. support staff on a new workflow)."""
    if organization_id is None:
        return EventTypes(dict(EVENT_TYPES), CATALOGUE)
    records = list(CustomEventType.objects.filter(organization_id=organization_id))
    custom = {record.type_name: custom_event_type(record) for record in records}
    listed = tuple(custom[record.type_name] for record in records if record.active)
    return EventTypes({**EVENT_TYPES, **custom}, CATALOGUE + listed)


def event_type(name: str, organization_id: int | None) -> EventType | None:
    """The event type `name` as this clinic's workflows see it; None when there is none.
    A catalogue name costs no query."""
    if not name.startswith(CUSTOM_PREFIX) or organization_id is None:
        return EVENT_TYPES.get(name)
    record = CustomEventType.objects.filter(
        organization_id=organization_id, name=name.removeprefix(CUSTOM_PREFIX)
    ).first()
    return custom_event_type(record) if record is not None else None


def _custom_name(type_name: str) -> str:
    return type_name.removeprefix(CUSTOM_PREFIX)


def custom_event_record(
    *,
    organization: Organization,
    type_name: str,
    patient: Patient,
    data: Any,
    idempotency_key: str,
) -> tuple[RecordedEvent, bool]:
    """Record an event of one of the clinic's custom types (`custom.<name>`, or the bare
    name) for `patient`, with `data` checked against the type's schema; its workflows then
    run through the outbox as for any event.

    The same idempotency key within a clinic records once: the event recorded then is
    returned, with False. Raises ValidationError, with the place of each problem
    ("data.kitId: 12 is not of type 'string'"), for an unknown or disabled type, a patient
    of another clinic, data that breaks the schema or that careflow cannot store, or a
    missing key.
    """
    name = _custom_name(str(type_name or ""))
    record = (
        CustomEventType.objects.filter(organization=organization, name=name).first()
        if name
        else None
    )
    if record is None:
        raise ValidationError(
            f"{CUSTOM_PREFIX}{name} is not an event type of this clinic; declare it in the "
            "admin (Custom event types) first.",
            code="unknown_type",
        )
    if not record.active:
        state = "archived" if record.archived else "disabled"
        raise ValidationError(f"{record.type_name} is {state}.", code="disabled_type")
    if patient.organization_id != organization.pk:
        raise ValidationError("This patient belongs to another clinic.", code="patient")
    key = str(idempotency_key or "")
    if not key.strip():
        raise ValidationError("An idempotency key is required.", code="idempotency_key")
    problem = json_problem(data)
    if problem:
        raise ValidationError(f"data {problem}", code="invalid_data")
    problems = custom_data_problems(record.schema, data)
    if problems:
        raise ValidationError(
            [ValidationError(message, code="invalid_data") for message in problems]
        )
    return event_record_once(
        scope="custom.event",
        idempotency_key=key,
        organization_id=organization.pk,
        type=record.type_name,
        payload={"customer": customer_payload(patient), "data": data},
        subject_type="customer",
        subject_id=str(patient.pk),
    )
