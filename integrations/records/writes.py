"""What an "Update record" step writes, and writing it exactly once.

A write is planned first (`write_plan`: find the record, check it is the run's patient's in
the run's clinic, check the value with the model's own validation) and then made through the
model's `save`, so the receivers record the catalogue's events, ChangeTracked sees the change
and the audit trail names the workflow run as the actor. The dry run shows the plan and
writes nothing.

Exactly once: the write and its ledger row (`RecordWrite`, unique on the step's idempotency
key) commit together. The ledger row is inserted first, so a second worker running the same
step waits on the unique key until the first commits, then finds the row and returns the
first outcome; a retried or redelivered step does the same. A write that is refused or not
needed rolls back with nothing written and no ledger row.
"""

import copy
import uuid
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone

from common.db import insert_or_get
from patients.audit import audit_actor
from patients.models import (
    Appointment,
    Organization,
    Patient,
    PatientNote,
    RecordWrite,
    Subscription,
    Task,
)
from workflows.adapters import Outcome

# The appointments this step may change: those not over yet. A late "C" must not bring a
# cancelled appointment back, nor undo "completed" or "no-show".
CHANGEABLE_APPOINTMENTS = (
    Appointment.Status.BOOKED,
    Appointment.Status.CONFIRMED,
    Appointment.Status.RESCHEDULE_REQUESTED,
)
# What setAppointmentStatus may set.
APPOINTMENT_STATUSES = (
    Appointment.Status.CONFIRMED,
    Appointment.Status.CANCELLED,
    Appointment.Status.RESCHEDULE_REQUESTED,
)

# setField's allow-list: "record.field" → label. Nothing else of any model is ever written:
# no identity (names, phone: the conversation's routing key), no consent, no clinical data.
SETTABLE_FIELDS: dict[str, str] = {
    "patient.email": "Patient: email",
    "patient.timezone": "Patient: time zone",
    "patient.postal_code": "Patient: postal code",
    "appointment.status": "Appointment: status",
    "appointment.location": "Appointment: location",
    "subscription.status": "Subscription: status",
    "subscription.next_cycle_date": "Subscription: renewal date",
}
RECORD_MODELS: dict[str, type[models.Model]] = {
    "patient": Patient,
    "appointment": Appointment,
    "subscription": Subscription,
}

NOTE_LENGTH = PatientNote._meta.get_field("text").max_length or 4000
TITLE_LENGTH = Task._meta.get_field("title").max_length or 200
MAX_DUE_HOURS = 24 * 366


class WriteRefused(Exception):
    """A write that must not happen; the message says why, for the clinic's admin."""


@dataclass(frozen=True, slots=True)
class Write:
    """One planned write: `record` carries the change in memory (a new row, or one loaded,
    locked when the plan is for writing); `skip` says why nothing is to be written."""

    action: str
    kind: str  # "appointment", "patient", "subscription", "task", "note"
    record: Any
    summary: str
    field: str = ""
    before: Any = None
    after: Any = None
    skip: str = ""
    new: bool = False  # a row to create (a note, a task)

    @property
    def changed(self) -> bool:
        return self.new or self.before != self.after

    def result(self) -> dict[str, Any]:
        result = {
            "action": self.action,
            "record": self.kind,
            "id": str(self.record.uuid),
            "changed": self.changed,
            "summary": self.summary,
        }
        if self.field:
            result.update(
                field=self.field, before=_jsonable(self.before), after=_jsonable(self.after)
            )
        return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    return value


def _clinic_time(moment: datetime, organization: Organization) -> str:
    return f"{moment.astimezone(zoneinfo.ZoneInfo(organization.timezone)):%Y-%m-%d %H:%M}"


def _shown(value: Any) -> str:
    return f"“{value}”" if value not in (None, "") else "blank"


def reference_problem(value: str) -> str:
    """Save-time check of a record id written without {{variables}}: a UUID, or blank."""
    try:
        uuid.UUID(value.strip())
    except ValueError:
        return "write a record id (a UUID) or a {{variable}} such as {{appointment.id}}"
    return ""


def hours_problem(value: str) -> str:
    """Save-time check of "Due in (hours)" written without {{variables}}."""
    try:
        _due_hours(value)
    except WriteRefused as exc:
        return str(exc)
    return ""


def _due_hours(value: str) -> float | None:
    text = value.strip()
    if not text:
        return None
    try:
        hours = float(text)
    except ValueError:
        raise WriteRefused(f"“{text[:20]}” is not a number of hours") from None
    if not 0 <= hours <= MAX_DUE_HOURS:
        raise WriteRefused(f"due in must be between 0 and {MAX_DUE_HOURS} hours")
    return hours


def _locked(records: models.QuerySet[Any], lock: bool) -> models.QuerySet[Any]:
    return records.select_for_update(of=("self",)) if lock else records


def _named(
    model: type[Any],
    reference: str,
    *,
    organization: Organization,
    patient: Patient,
    lock: bool,
) -> Any:
    """The record a step names by id, if it is this patient's in this clinic; None for blank
    (the caller's default record). Another clinic's record reads as unknown: a clinic learns
    nothing of another's ids."""
    noun = model._meta.model_name
    text = reference.strip()
    if not text:
        return None
    try:
        named = uuid.UUID(text)
    except ValueError:
        raise WriteRefused(
            f"“{text[:60]}” is not a{'n' if noun[0] in 'aeiou' else ''} {noun} id; use "
            f"{{{{{noun}.id}}}} or leave it blank"
        ) from None
    found = _locked(model.objects.filter(organization=organization, uuid=named), lock).first()
    if found is None:
        raise WriteRefused(f"no {noun} {named} in this clinic")
    if found.patient_id != patient.pk:
        raise WriteRefused(f"{noun} {named} is another patient's, not this run's patient's")
    return found


def _appointment(
    reference: str, *, organization: Organization, patient: Patient, lock: bool, now: datetime
) -> Appointment:
    """The appointment named, or blank: the patient's next upcoming one."""
    named = _named(Appointment, reference, organization=organization, patient=patient, lock=lock)
    if named is not None:
        return cast(Appointment, named)
    upcoming = Appointment.objects.filter(
        organization=organization,
        patient=patient,
        starts_at__gte=now,
        status__in=CHANGEABLE_APPOINTMENTS,
    ).order_by("starts_at", "id")
    next_one = _locked(upcoming, lock).first()
    if next_one is None:
        raise WriteRefused("the patient has no upcoming appointment")
    return cast(Appointment, next_one)


def _subscription(
    reference: str, *, organization: Organization, patient: Patient, lock: bool
) -> Subscription:
    """The subscription named, or blank: the patient's one active subscription."""
    named = _named(Subscription, reference, organization=organization, patient=patient, lock=lock)
    if named is not None:
        return cast(Subscription, named)
    active = Subscription.objects.filter(
        organization=organization, patient=patient, status=Subscription.Status.ACTIVE
    ).order_by("id")
    found = list(_locked(active, lock)[:2])
    if len(found) != 1:
        raise WriteRefused(
            "the patient has no active subscription"
            if not found
            else "the patient has several active subscriptions: name one with {{subscription.id}}"
        )
    return cast(Subscription, found[0])


def _patient(patient: Patient, *, lock: bool) -> Patient:
    if not lock:
        return copy.copy(patient)  # a dry run changes its own copy, never the caller's
    # The run's copy may be stale (read with the batch); the write starts from the row.
    locked: Patient = Patient.objects.select_for_update().get(pk=patient.pk)
    return locked


def _chosen(inputs: Mapping[str, str], name: str, allowed: Iterable[str], what: str) -> str:
    """The value of a parameter with choices, which a template may have filled in."""
    value = inputs.get(name, "").strip()
    if value not in allowed:
        raise WriteRefused(f"“{value[:60]}” is not {what}; choose one of {', '.join(allowed)}")
    return value


def _set_status(
    inputs: Mapping[str, str],
    *,
    organization: Organization,
    patient: Patient,
    lock: bool,
    now: datetime,
) -> Write:
    status = _chosen(inputs, "status", APPOINTMENT_STATUSES, "a status this step sets")
    appointment = _appointment(
        inputs.get("appointment", ""),
        organization=organization,
        patient=patient,
        lock=lock,
        now=now,
    )
    before = appointment.status
    label = Appointment.Status(status).label.lower()
    when = _clinic_time(appointment.starts_at, organization)
    skip = ""
    if before not in CHANGEABLE_APPOINTMENTS:
        skip = (
            f"the appointment of {when} is {appointment.get_status_display().lower()}: not changed"
        )
    appointment.status = status
    return Write(
        "setAppointmentStatus",
        "appointment",
        appointment,
        f"set the appointment of {when} to {label}",
        "status",
        before,
        status,
        skip,
    )


def _add_note(
    inputs: Mapping[str, str], *, organization: Organization, patient: Patient, actor: str
) -> Write:
    text = inputs.get("text", "").strip()
    if not text:
        raise WriteRefused("the note is empty")
    if len(text) > NOTE_LENGTH:
        raise WriteRefused(f"the note is {len(text)} characters; at most {NOTE_LENGTH}")
    note = PatientNote(organization=organization, patient=patient, text=text, written_by=actor)
    shown = text if len(text) <= 60 else text[:59] + "…"
    return Write("addNote", "note", note, f"add a note for staff: “{shown}”", new=True)


def _create_task(
    inputs: Mapping[str, str], *, organization: Organization, patient: Patient, now: datetime
) -> Write:
    title = " ".join(inputs.get("title", "").split())
    if not title:
        raise WriteRefused("the task has no title")
    if len(title) > TITLE_LENGTH:
        raise WriteRefused(f"the title is {len(title)} characters; at most {TITLE_LENGTH}")
    hours = _due_hours(inputs.get("due_in_hours", ""))
    due_at = now + timedelta(hours=hours) if hours is not None else None
    task = Task(organization=organization, patient=patient, title=title, due_at=due_at)
    due = f" due {_clinic_time(due_at, organization)}" if due_at else ""
    return Write("createTask", "task", task, f"create the task “{title}”{due}", new=True)


def _set_field(
    inputs: Mapping[str, str],
    *,
    organization: Organization,
    patient: Patient,
    lock: bool,
    now: datetime,
) -> Write:
    chosen = _chosen(inputs, "field", SETTABLE_FIELDS, "a field this step may set")
    kind, name = chosen.split(".", 1)
    record: Any
    if kind == "patient":
        record = _patient(patient, lock=lock)
    elif kind == "appointment":
        record = _appointment(
            inputs.get("record", ""),
            organization=organization,
            patient=patient,
            lock=lock,
            now=now,
        )
    else:
        record = _subscription(
            inputs.get("record", ""), organization=organization, patient=patient, lock=lock
        )
    field = record._meta.get_field(name)
    before = getattr(record, name)
    raw: Any = inputs.get("value", "").strip()
    if raw == "" and field.null:
        raw = None
    setattr(record, name, raw)
    others = [f.name for f in record._meta.fields if f.name != name]
    try:
        # The model's own validation of this one field (type, choices, length, validators)
        # and of the record as a whole (its clinic).
        record.full_clean(exclude=others, validate_unique=False)
    except ValidationError as exc:
        messages = exc.message_dict.get(name) or exc.messages
        raise WriteRefused(f"{SETTABLE_FIELDS[chosen]}: {' '.join(messages)}") from None
    after = getattr(record, name)
    what = "the patient's" if kind == "patient" else f"the {kind}'s"
    label = SETTABLE_FIELDS[chosen].split(": ", 1)[1]
    return Write(
        "setField",
        kind,
        record,
        f"set {what} {label} to {_shown(_jsonable(after))}",
        name,
        before,
        after,
    )


def write_plan(
    action: str,
    *,
    organization: Organization,
    patient: Patient,
    inputs: Mapping[str, str],
    actor: str = "",
    lock: bool = False,
    now: datetime | None = None,
) -> Write:
    """What `action` with these rendered inputs would write; raise WriteRefused if it must
    not. With `lock`, the record to change is locked (inside the caller's transaction)."""
    now = now or timezone.now()
    if action == "setAppointmentStatus":
        return _set_status(inputs, organization=organization, patient=patient, lock=lock, now=now)
    if action == "addNote":
        return _add_note(inputs, organization=organization, patient=patient, actor=actor)
    if action == "createTask":
        return _create_task(inputs, organization=organization, patient=patient, now=now)
    if action == "setField":
        return _set_field(inputs, organization=organization, patient=patient, lock=lock, now=now)
    raise WriteRefused(f"careflow records has no function {action!r}")


class _NotWritten(Exception):
    """Leaves the write's transaction (rolled back, ledger row included) with a skip."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def record_write(
    action: str,
    *,
    organization: Organization,
    patient: Patient,
    inputs: Mapping[str, str],
    idempotency_key: str,
    actor: str,
) -> Outcome:
    """Make the write `action` plans, once for `idempotency_key`, as `actor` (the audit
    trail's and the note's author): the first outcome is returned to every later attempt."""
    try:
        with transaction.atomic():
            ledger = insert_or_get(
                RecordWrite,
                {"idempotency_key": idempotency_key},
                {"organization": organization, "patient": patient, "action": action},
            )
            if ledger.result:  # written already, by an earlier attempt or another worker
                return Outcome("succeeded", result=ledger.result)
            write = write_plan(
                action,
                organization=organization,
                patient=patient,
                inputs=inputs,
                actor=actor,
                lock=True,
            )
            if write.skip:
                raise _NotWritten(write.skip)
            if write.changed:
                with audit_actor(actor):
                    if write.new:
                        write.record.save()
                    else:
                        write.record.save(update_fields=[write.field, "updated_at"])
            ledger.model, ledger.object_id = write.kind, str(write.record.uuid)
            ledger.result = write.result()
            ledger.save(update_fields=["model", "object_id", "result"])
            return Outcome("succeeded", result=ledger.result)
    except WriteRefused as exc:
        return Outcome("failed", reason=str(exc))
    except _NotWritten as exc:
        return Outcome("skipped", reason=exc.reason)
