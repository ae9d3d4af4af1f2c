"""Starting one workflow for one patient directly (a clinic's system asking for it, through
the API); `workflows.selectors.run_status` reads where the run is then.

A start is an event of the workflow's trigger type, recorded for the patient with the data
given, that only this workflow sees: the engine claims it as dispatched in the same
transaction and makes this workflow's run (`engine.workflow_event_start`), so the workflow's
enrollment rule decides as it does for any event, and nothing else is triggered. Consent,
quiet hours and the rest are checked when each message is sent, as always.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from patients.inputs import json_problem
from patients.models import Patient
from patients.payloads import customer_payload, subject_of_patient
from patients.recording import idempotency_dedupe_key
from workflows.catalogue import CUSTOM_PREFIX, EventType, Field
from workflows.custom_events import event_type
from workflows.custom_schemas import custom_data_problems
from workflows.engine import workflow_event_start
from workflows.models import CustomEventType, EnrollmentSkip, Event, Run, Workflow
from workflows.outbox import event_record
from workflows.tasks import run_advance

# What a top-level value of each catalogue type must be, in words and as a Python check.
_SHAPES: dict[str, tuple[str, type | tuple[type, ...]]] = {
    "object": ("an object", dict),
    "array": ("a list", list),
    "string": ("text", str),
    "date": ("a date (YYYY-MM-DD)", str),
    "datetime": ("a date and time (ISO 8601)", str),
    "number": ("a number", (int, float)),
    "boolean": ("true or false", bool),
}


@dataclass(frozen=True)
class StartResult:
    """What a start did: the run it made, or the enrollment skip (reason and detail) that
    refused it; `created` is False when the idempotency key had started it before, and
    this is what that start did."""

    event: Event
    run: Run | None
    skip: EnrollmentSkip | None
    created: bool

    @property
    def started(self) -> bool:
        return self.run is not None


def _data_problems(event: EventType, data: Mapping[str, Any], schema: Any) -> list[str]:
    """What is wrong with a start's data for this trigger: keys it does not have, the
    customer (it is the patient's own), values of the wrong kind, keys it needs."""
    problems: list[str] = []
    keys = [key for key in event.schema if key != "customer"]
    for key in data:
        if key == "customer":
            problems.append("customer: leave it out; it is the patient's own data")
        elif key not in event.schema:
            allowed = ", ".join(keys) or "none"
            problems.append(f"{key}: not part of {event.name} (its keys: {allowed})")
    for key in keys:
        node: Field = event.schema[key]
        value = data.get(key)
        if value is None:
            if not node.nullable and key in data:
                problems.append(f"{key}: may not be null")
            elif not node.nullable and key == event.subject:
                problems.append(f"{key}: required ({node.description})")
            continue
        word, kind = _SHAPES.get(node.type, ("a value", object))
        if not isinstance(value, kind) or (node.type == "number" and isinstance(value, bool)):
            problems.append(f"{key}: must be {word}")
    if schema is not None and not problems:
        problems += custom_data_problems(schema, data.get("data", {}))
    return problems


def _subject_id(event: EventType, patient: Patient, data: Mapping[str, Any]) -> str:
    """The record the start is about, as events name it (its pk): the patient's own record
    of the trigger's kind with the id given, if there is one ("" otherwise, so "once per
    record" enrolls and later steps keep the data given rather than re-read a record)."""
    if event.subject in ("", "customer"):
        return str(patient.pk) if event.subject else ""
    entity = data.get(event.subject)
    record_id = entity.get("id") if isinstance(entity, Mapping) else None
    return subject_of_patient(event.subject, patient, record_id) if record_id else ""


def _earlier(workflow: Workflow, dedupe_key: str) -> StartResult:
    """What the start with this key did before (its key was seen: the same run back)."""
    event = Event.objects.get(dedupe_key=dedupe_key)
    run = Run.objects.filter(workflow=workflow, event=event).first()
    skip = None if run else EnrollmentSkip.objects.filter(workflow=workflow, event=event).first()
    if run is None and skip is None:
        raise ValidationError(
            "This idempotency key was already used to start another workflow.",
            code="idempotency_key",
        )
    return StartResult(event, run, skip, created=False)


def workflow_start(
    *, workflow: Workflow, patient: Patient, data: Any, idempotency_key: str
) -> StartResult:
    """Start this workflow, and only it, for `patient`, with `data` for the trigger's other
    top-level keys (an order.* trigger: {"order": {...}}; a custom type: {"data": {...}},
    checked against its schema). The customer is the patient's own record.

    Applies the workflow's enrollment rule (a refusal is returned as the skip recorded);
    the workflow's filter does not apply: the caller chose the workflow. The same
    idempotency key within a clinic returns what its first start did. Raises
    ValidationError, saying where, for a disabled workflow, a patient of another clinic,
    unknown keys, a value of the wrong kind, data the custom type's schema refuses or
    careflow cannot store, or a missing key.
    """
    if not workflow.enabled:
        raise ValidationError(
            "This workflow is disabled; enable it before starting it.", code="disabled"
        )
    if patient.organization_id != workflow.organization_id:
        raise ValidationError("This patient belongs to another clinic.", code="patient")
    key = str(idempotency_key or "")
    if not key.strip():
        raise ValidationError("An idempotency key is required.", code="idempotency_key")
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ValidationError("data must be an object.", code="invalid_data")
    problem = json_problem(data)
    if problem:
        raise ValidationError(f"data {problem}", code="invalid_data")
    event = event_type(workflow.trigger, workflow.organization_id)
    if event is None:
        raise ValidationError(f"{workflow.trigger} is no longer an event type.", code="trigger")
    schema = None
    if event.name.startswith(CUSTOM_PREFIX):
        schema = (
            CustomEventType.objects.filter(
                organization_id=workflow.organization_id,
                name=event.name.removeprefix(CUSTOM_PREFIX),
            )
            .values_list("schema", flat=True)
            .first()
        )
    problems = _data_problems(event, data, schema)
    if problems:
        raise ValidationError([ValidationError(p, code="invalid_data") for p in problems])
    dedupe_key = idempotency_dedupe_key(
        scope="workflow.start", organization_id=workflow.organization_id, idempotency_key=key
    )
    payload = {**data, "customer": customer_payload(patient)}
    if schema is not None:
        payload.setdefault("data", {})
    with transaction.atomic():
        recorded = event_record(
            organization_id=workflow.organization_id,
            type=workflow.trigger,
            payload=payload,
            dedupe_key=dedupe_key,
            subject_type=event.subject,
            subject_id=_subject_id(event, patient, data),
        )
        if recorded is None:
            return _earlier(workflow, dedupe_key)
        run = workflow_event_start(workflow=workflow, event_id=recorded.pk)
        skip = None
        if run is None:
            skip = EnrollmentSkip.objects.filter(workflow=workflow, event_id=recorded.pk).first()
        elif run.status == Run.Status.PENDING:
            run_id = run.pk
            transaction.on_commit(lambda: run_advance.delay(run_id))
    return StartResult(recorded, run, skip, created=True)
