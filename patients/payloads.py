"""Event payloads in the field names of the platform's Customer Data Reference (camelCase).

A payload is a JSON snapshot taken when the event is recorded; it never carries secrets, and
no clinical free text (questionnaire answers stay in the database). Its shape is documented
in `workflows.catalogue` (the data reference); a test holds the two together.
"""

import uuid
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connections, models, router
from django.db.models.expressions import RawSQL

from common.db import model_get
from patients.consent import MARKETING_ALLOWED, consent_allowed_sql, patient_accepts_marketing
from patients.models import (
    Appointment,
    Cart,
    ConsentRecord,
    Lead,
    Order,
    Patient,
    Prescription,
    QuestionnaireSubmission,
    Requisition,
    Subscription,
    Task,
)
from patients.zones import display_zone


def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value else None


def _money(value: Decimal) -> float:
    # A JSON number, so filters can compare amounts ({"order.totalAmount": {"$gte": 50}});
    # the template filter `money` formats it back to $49.00.
    return float(Decimal(value).quantize(Decimal("0.01")))


# Patient model field → its variable path in the customer payload (customer.updated lists
# the paths that changed, so a filter can say {"changedFields": "phone"}).
CUSTOMER_FIELD_PATHS: dict[str, str] = {
    "first_name": "firstName",
    "last_name": "lastName",
    "email": "email",
    "phone": "phone",
    "dob": "dob",
    "gender": "gender",
    "timezone": "timezone",
    "language": "language",
    "address1": "defaultAddress.address1",
    "address2": "defaultAddress.address2",
    "city": "defaultAddress.city",
    "province": "defaultAddress.province",
    "province_code": "defaultAddress.provinceCode",
    "postal_code": "defaultAddress.postalCode",
    "country_code": "defaultAddress.countryCode",
    "source": "source",
}

ADDRESS_KEYS = (
    "address1",
    "address2",
    "city",
    "province",
    "provinceCode",
    "postalCode",
    "countryCode",
)


def address_payload(value: Any) -> dict[str, str]:
    """An address as stored in free JSON (orders), reduced to the documented keys."""
    value = value if isinstance(value, Mapping) else {}
    return {key: str(value.get(key) or "") for key in ADDRESS_KEYS}


def _price(value: Any) -> float:
    try:
        return _money(Decimal(str(value)))
    except (InvalidOperation, ValueError):
        return 0.0


def _quantity(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def line_items_payload(value: Any) -> list[dict[str, Any]]:
    """Line items as stored in free JSON, reduced to the documented keys and types.

    Never raises: it runs inside a signal receiver, where an odd value typed into the admin
    must not make the save fail.
    """
    items = value if isinstance(value, list) else []
    return [
        {
            "name": str(item.get("name") or ""),
            "productId": str(item.get("productId") or ""),
            "price": _price(item.get("price", "0")),
            "quantity": _quantity(item.get("quantity", 1)),
            "isSubscription": bool(item.get("isSubscription", False)),
        }
        for item in items
        if isinstance(item, Mapping)
    ]


def _patient(record: Any) -> Patient:
    """The record's patient: the one in hand, else read by a statement compiled once
    (`model_get`). A record saved in a request rarely has its patient loaded, and the ORM's
    lazy load rebuilt and compiled its query on every save: 0.3 ms of a trigger's cost."""
    field = type(record)._meta.get_field("patient")
    if not field.is_cached(record):
        field.set_cached_value(record, model_get(Patient, record.patient_id))
    return record.patient


# The customer objects, as {payload key: (Patient attribute, kind)} with nested objects as
# dicts and values read from other tables as `Derived`: one definition for the object built
# here from a patient in hand (`customer_build`) and for the one PostgreSQL builds from the
# patient's row (`customer_sql`).
Spec = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Derived:
    """A customer value derived from records beside the patient's row: computed here from
    the patient (`python`), and by PostgreSQL from the SQL of the patient's id (`sql`)."""

    python: Callable[[Patient], Any]
    sql: Callable[[str], str]


# customer.acceptMarketing: what the consent history allows, never a flag of its own.
ACCEPT_MARKETING = Derived(
    python=patient_accepts_marketing,
    sql=lambda patient_id: consent_allowed_sql(
        purpose=ConsentRecord.Purpose.MARKETING, patient_id=patient_id
    ),
)

CUSTOMER_SUMMARY: Spec = {
    "id": ("uuid", "uuid"),
    "email": ("email", "text"),
    "phone": ("phone", "text"),
    "firstName": ("first_name", "text"),
    "lastName": ("last_name", "text"),
}

CUSTOMER: Spec = {
    **CUSTOMER_SUMMARY,
    "gender": ("gender", "text"),
    "dob": ("dob", "date"),
    "timezone": ("timezone", "text"),
    "language": ("language", "text"),
    "defaultAddress": {
        "address1": ("address1", "text"),
        "address2": ("address2", "text"),
        "city": ("city", "text"),
        "province": ("province", "text"),
        "provinceCode": ("province_code", "text"),
        "postalCode": ("postal_code", "text"),
        "countryCode": ("country_code", "text"),
    },
    "source": ("source", "text"),
    "acceptMarketing": ACCEPT_MARKETING,
    "isTest": ("is_test", "boolean"),
    "createdAt": ("created_at", "datetime"),
    "updatedAt": ("updated_at", "datetime"),
}

_PYTHON: dict[str, Callable[[Any], Any]] = {
    "text": lambda value: value,
    "boolean": lambda value: value,
    "uuid": str,
    "date": _iso,
    "datetime": _iso,
}

# The same values as PostgreSQL expressions of a column ({}): datetimes as Python's
# isoformat() writes an aware UTC one (microseconds only when there are any).
_POSTGRESQL: dict[str, str] = {
    "text": "{}",
    "boolean": "{}",
    "uuid": "{}::text",
    "date": "to_char({}, 'YYYY-MM-DD')",
    "datetime": "to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
    " || CASE WHEN date_trunc('second', {0}) = {0} THEN ''"
    " ELSE to_char({0} AT TIME ZONE 'UTC', '.US') END || '+00:00'",
}


def customer_spec(*, summary: bool) -> Spec:
    """The short customer object nested in orders, subscriptions and carts, or the whole one."""
    return CUSTOMER_SUMMARY if summary else CUSTOMER


def customer_build(patient: Patient, spec: Spec = CUSTOMER) -> dict[str, Any]:
    return {
        key: customer_build(patient, part)
        if isinstance(part, Mapping)
        else part.python(patient)
        if isinstance(part, Derived)
        else _PYTHON[part[1]](getattr(patient, part[0]))
        for key, part in spec.items()
    }


def customer_sql(spec: Spec, column: Callable[[str], str]) -> str:
    """The object as a PostgreSQL `jsonb_build_object(…)` of the patient's row; `column`
    names an attribute's column as the query may refer to it."""
    pairs = [
        f"'{key}', "
        + (
            customer_sql(part, column)
            if isinstance(part, Mapping)
            else part.sql(column("id"))
            if isinstance(part, Derived)
            else _POSTGRESQL[part[1]].format(column(part[0]))
        )
        for key, part in spec.items()
    ]
    return f"jsonb_build_object({', '.join(pairs)})"


@dataclass(frozen=True, slots=True)
class StoredCustomer:
    """A customer object (the summary, or the whole) left for the outbox INSERT to build
    from the patient's row in its own statement (`workflows.outbox`): a record saved in a
    request rarely has its patient loaded, and reading it took a round trip of its own."""

    patient_id: int
    summary: bool

    @property
    def spec(self) -> Spec:
        return customer_spec(summary=self.summary)


def _customer(record: Any, *, summary: bool = False) -> dict[str, Any] | StoredCustomer:
    """The customer object of a record's patient: built here when the patient is in hand,
    else left to the outbox (only event payloads are built from records without it)."""
    if type(record)._meta.get_field("patient").is_cached(record):
        return customer_build(record.patient, customer_spec(summary=summary))
    return StoredCustomer(record.patient_id, summary)


def customer_summary(patient: Patient) -> dict[str, Any]:
    """The short customer object nested in orders, subscriptions and carts."""
    return customer_build(patient, CUSTOMER_SUMMARY)


def customer_payload(patient: Patient) -> dict[str, Any]:
    return customer_build(patient, CUSTOMER)


def stored_customers(
    payload: dict[str, Any],
) -> tuple[dict[str, Any], list[tuple[tuple[str, ...], StoredCustomer]]]:
    """A copy of the payload with each StoredCustomer replaced by null, and where each was
    (its path of keys)."""
    stored: list[tuple[tuple[str, ...], StoredCustomer]] = []

    def walk(value: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
        copy: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(item, StoredCustomer):
                stored.append(((*path, key), item))
                item = None
            elif isinstance(item, dict):
                item = walk(item, (*path, key))
            copy[key] = item
        return copy

    return walk(payload, ()), stored


def stored_customers_build(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with every StoredCustomer built here, reading its patient: for databases
    where the outbox INSERT does not build them itself."""
    payload, stored = stored_customers(payload)
    patients: dict[int, Patient] = {}
    for path, customer in stored:
        if customer.patient_id not in patients:
            patients[customer.patient_id] = model_get(Patient, customer.patient_id)
        parent = payload
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = customer_build(patients[customer.patient_id], customer.spec)
    return payload


def _timestamps(record: Any) -> dict[str, str | None]:
    return {"createdAt": _iso(record.created_at), "updatedAt": _iso(record.updated_at)}


def order_payload(order: Order) -> dict[str, Any]:
    return {
        "id": str(order.uuid),
        "number": order.number,
        "status": order.status,
        "statusHistory": [
            {"status": str(entry.get("status", "")), "at": entry.get("at")}
            for entry in order.status_history
            if isinstance(entry, Mapping)
        ],
        "customer": _customer(order, summary=True),
        "lineItems": line_items_payload(order.line_items),
        "shippingAddress": address_payload(order.shipping_address),
        "totalAmount": _money(order.total_amount),
        "discountAmount": _money(order.discount_amount),
        "coupon": order.coupon,
        "trackingNumber": order.tracking_number,
        **_timestamps(order),
    }


def subscription_payload(subscription: Subscription) -> dict[str, Any]:
    return {
        "id": str(subscription.uuid),
        "customer": _customer(subscription, summary=True),
        "product": {"id": subscription.product_id, "name": subscription.product_name},
        "status": subscription.status,
        "price": _money(subscription.price),
        "intervalDays": subscription.interval_days,
        "currentCycle": subscription.current_cycle,
        "nextCycleDate": _iso(subscription.next_cycle_date),
        **_timestamps(subscription),
    }


def cart_payload(cart: Cart) -> dict[str, Any]:
    return {
        "id": str(cart.uuid),
        "customer": _customer(cart, summary=True),
        "lineItems": line_items_payload(cart.line_items),
        "checkoutUrl": cart.checkout_url,
        "checkedOutAt": _iso(cart.checked_out_at),
        **_timestamps(cart),
    }


def questionnaire_payload(submission: QuestionnaireSubmission) -> dict[str, Any]:
    # Deliberately without `answers`: they can be clinical and must not reach templates.
    return {
        "id": str(submission.uuid),
        "name": submission.questionnaire_name,
        "submittedAt": _iso(submission.submitted_at),
    }


def prescription_payload(prescription: Prescription) -> dict[str, Any]:
    return {
        "id": str(prescription.uuid),
        "status": prescription.status,
        "medication": {"name": prescription.medication_name},
        **_timestamps(prescription),
    }


def requisition_payload(requisition: Requisition) -> dict[str, Any]:
    return {
        "id": str(requisition.uuid),
        "status": requisition.status,
        "labName": requisition.lab_name,
        "testPanel": requisition.test_panel,
        **_timestamps(requisition),
    }


def _display_zone(appointment: Appointment) -> str:
    # The zone the date filter renders in too, so startsAtLocal and startsAt | date agree.
    patient = _patient(appointment)
    return display_zone(
        patient_timezone=patient.timezone,
        province_code=patient.province_code,
        clinic_timezone=appointment.organization.timezone,
    )


def appointment_payload(appointment: Appointment) -> dict[str, Any]:
    zone = _display_zone(appointment)
    return {
        "id": str(appointment.uuid),
        "status": appointment.status,
        "startsAt": _iso(appointment.starts_at),
        "startsAtLocal": _iso(appointment.starts_at.astimezone(zoneinfo.ZoneInfo(zone))),
        "timezone": zone,
        "durationMinutes": appointment.duration_minutes,
        "providerName": appointment.provider_name,
        "location": appointment.location,
        "videoUrl": appointment.video_url,
        **_timestamps(appointment),
    }


def lead_payload(lead: Lead) -> dict[str, Any]:
    return {
        "id": str(lead.uuid),
        "firstName": lead.first_name,
        "lastName": lead.last_name,
        "email": lead.email,
        "phone": lead.phone,
        "source": lead.source,
        "status": lead.status,
        **_timestamps(lead),
    }


def task_payload(task: Task) -> dict[str, Any]:
    return {
        "id": str(task.uuid),
        "title": task.title,
        "status": task.status,
        "dueAt": _iso(task.due_at),
        **_timestamps(task),
    }


# --- whole event payloads: the subject's object plus the full customer ---------------------


def customer_event_payload(patient: Patient) -> dict[str, Any]:
    return {"customer": customer_payload(patient)}


def customer_updated_payload(patient: Patient, changed_fields: list[str]) -> dict[str, Any]:
    return {**customer_event_payload(patient), "changedFields": list(changed_fields)}


def order_event_payload(order: Order) -> dict[str, Any]:
    """Order events carry the full customer too, so `{{customer.phone}}` works on them, and
    the subscription a renewal order belongs to (null for one-off orders)."""
    return {
        "order": order_payload(order),
        "customer": _customer(order),
        "subscription": subscription_payload(order.subscription) if order.subscription else None,
    }


def subscription_event_payload(subscription: Subscription) -> dict[str, Any]:
    return {
        "subscription": subscription_payload(subscription),
        "customer": _customer(subscription),
    }


def cart_event_payload(cart: Cart) -> dict[str, Any]:
    return {"cart": cart_payload(cart), "customer": _customer(cart)}


def questionnaire_event_payload(submission: QuestionnaireSubmission) -> dict[str, Any]:
    return {
        "questionnaire": questionnaire_payload(submission),
        "customer": _customer(submission),
    }


def prescription_event_payload(prescription: Prescription) -> dict[str, Any]:
    return {
        "prescription": prescription_payload(prescription),
        "customer": _customer(prescription),
    }


def requisition_event_payload(requisition: Requisition) -> dict[str, Any]:
    return {
        "requisition": requisition_payload(requisition),
        "customer": _customer(requisition),
    }


def appointment_event_payload(appointment: Appointment) -> dict[str, Any]:
    return {
        "appointment": appointment_payload(appointment),
        "customer": _customer(appointment),
    }


def lead_event_payload(lead: Lead) -> dict[str, Any]:
    patient = lead.converted_patient
    return {"lead": lead_payload(lead), "customer": customer_payload(patient) if patient else None}


def task_event_payload(task: Task) -> dict[str, Any]:
    patient = task.patient
    return {"task": task_payload(task), "customer": customer_payload(patient) if patient else None}


def message_event_payload(
    *,
    channel: str,
    body: str,
    from_: str,
    to: str,
    sid: str,
    received_at: datetime,
    patient: Patient | None,
) -> dict[str, Any]:
    """An inbound message, with the sender resolved to a patient (None when unknown)."""
    return {
        "message": {
            "sid": sid,
            "channel": channel,
            "body": body,
            "from": from_,
            "to": to,
            "receivedAt": _iso(received_at),
            "customer": customer_summary(patient) if patient else None,
        },
        "customer": customer_payload(patient) if patient else None,
    }


def webhook_event_payload(*, name: str, data: dict[str, Any], patient: Patient) -> dict[str, Any]:
    return {"webhook": {"name": name, "data": data}, "customer": customer_payload(patient)}


# --- the current state of an event's subject -----------------------------------------------

_SUBJECTS: dict[
    str, tuple[type[models.Model], tuple[str, ...], Callable[[Any], dict[str, Any]]]
] = {
    "customer": (Patient, (), customer_event_payload),
    "order": (Order, ("patient", "subscription__patient"), order_event_payload),
    "subscription": (Subscription, ("patient",), subscription_event_payload),
    "cart": (Cart, ("patient",), cart_event_payload),
    "questionnaire": (QuestionnaireSubmission, ("patient",), questionnaire_event_payload),
    "prescription": (Prescription, ("patient",), prescription_event_payload),
    "requisition": (Requisition, ("patient",), requisition_event_payload),
    "appointment": (Appointment, ("patient", "organization"), appointment_event_payload),
    "lead": (Lead, ("converted_patient",), lead_event_payload),
    "task": (Task, ("patient",), task_event_payload),
}

SUBJECT_TYPES = tuple(_SUBJECTS)


def payload_for_subject(subject_type: str, subject_id: str) -> dict[str, Any] | None:
    """The payload an event about this record would carry now, or None if the record (or
    the subject type) no longer exists.

    Used after a delay, so conditions see current data. It rebuilds the subject's part of
    the payload (e.g. {"order", "customer", "subscription"}); keys only an event has
    (customer.updated's `changedFields`, message.inbound's `message`, webhook.event's
    `webhook`) are not rebuilt: merge the result over the recorded payload.
    """
    subject = _SUBJECTS.get(subject_type)
    # Ids are bigint primary keys; anything else cannot name a record (and must not reach SQL).
    if subject is None or not str(subject_id).isdecimal() or len(str(subject_id)) > 18:
        return None
    model, related, build = subject
    # The first related record is the patient whose whole customer object the payload
    # carries (none: the subject is that patient).
    owner = related[0] if related else None
    queryset = model._default_manager.select_related(*related).filter(pk=int(subject_id))
    record = _with_marketing_consent(queryset, owner).first()
    if record is None:
        return None
    patient = record if owner is None else getattr(record, owner)
    if patient is not None and MARKETING_ALLOWED in record.__dict__:
        patient.__dict__[MARKETING_ALLOWED] = record.__dict__[MARKETING_ALLOWED]
    return build(record)


def _with_marketing_consent(queryset: models.QuerySet[Any], owner: str | None) -> Any:
    """The records with whether their patient's consent allows marketing
    (`customer.acceptMarketing`) read in the same query, on PostgreSQL: a condition after a
    delay rebuilds the payload, and the consent history would cost a query of its own."""
    connection = connections[queryset.db or router.db_for_read(queryset.model)]
    if connection.vendor != "postgresql":
        return queryset
    meta = queryset.model._meta
    column = meta.pk.column if owner is None else meta.get_field(owner).column
    quote = connection.ops.quote_name
    patient_id = f"{quote(meta.db_table)}.{quote(column)}"
    sql = consent_allowed_sql(purpose=ConsentRecord.Purpose.MARKETING, patient_id=patient_id)
    return queryset.annotate(**{MARKETING_ALLOWED: RawSQL(sql, ())})  # noqa: S611 — names and constants, no input


def _latest_record(subject_type: str, patient: Patient) -> Any:
    """This patient's most recent record of `subject_type` (None: none, or no such kind)."""
    subject = _SUBJECTS.get(subject_type)
    if subject is None:
        return None
    model, related, _ = subject
    owner = "converted_patient" if model is Lead else "patient"
    return (
        model._default_manager.select_related(*related)
        .filter(**{owner: patient})
        .order_by("-pk")
        .first()
    )


def subject_for_patient(subject_type: str, patient: Patient) -> str:
    """The subject id (as events record it: the record's pk) of the record
    `payload_for_patient` describes; "" when there is none. For test mode."""
    if subject_type == "customer":
        return str(patient.pk)
    record = _latest_record(subject_type, patient)
    return str(record.pk) if record is not None else ""


def subject_of_patient(subject_type: str, patient: Patient, record_id: Any) -> str:
    """The subject id (the record's pk, as events record it) of the patient's record of
    `subject_type` whose payload id (its UUID) is `record_id`; "" when the patient has no
    such record. For events whose data a caller supplies (a workflow started directly)."""
    if subject_type == "customer":
        return str(patient.pk)
    subject = _SUBJECTS.get(subject_type)
    try:
        record_uuid = uuid.UUID(str(record_id))
    except ValueError:
        return ""
    if subject is None:
        return ""
    model = subject[0]
    owner = "converted_patient" if model is Lead else "patient"
    found = (
        model._default_manager.filter(**{owner: patient, "uuid": record_uuid})
        .values_list("pk", flat=True)
        .first()
    )
    return str(found) if found is not None else ""


def payload_for_patient(subject_type: str, patient: Patient) -> dict[str, Any] | None:
    """The payload an event about this patient's most recent record of `subject_type` would
    carry (their own record for "customer"); None when they have none. For test mode."""
    if subject_type == "customer":
        return customer_event_payload(patient)
    subject = _SUBJECTS.get(subject_type)
    record = _latest_record(subject_type, patient)
    return subject[2](record) if subject is not None and record is not None else None
