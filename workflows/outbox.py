"""Recording events: `event_record`, the one way an event enters the outbox (the Event table),
in the caller's transaction, with a NOTIFY for beat's listener on PostgreSQL."""

import functools
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connections, router, transaction

from common.db import prepared_cursor
from patients.models import Patient
from patients.payloads import customer_spec, customer_sql, stored_customers, stored_customers_build
from workflows.catalogue import CUSTOM_PREFIX, EVENT_TYPES
from workflows.models import CustomEventType, Event
from workflows.publishing import publisher

# The channel the outbox INSERT notifies with the event's id (workflows.listener listens).
EVENTS_CHANNEL = "careflow_events"


def events_notify_enabled() -> bool:
    """Whether event_record notifies (PostgreSQL) instead of publishing from the saving
    process; the embedded SQLite setup publishes from a background thread."""
    return bool(settings.CAREFLOW_EVENTS_NOTIFY) and connections["default"].vendor == "postgresql"


def event_record(
    *,
    organization_id: int,
    type: str,
    payload: dict[str, Any],
    dedupe_key: str,
    subject_type: str = "",
    subject_id: str = "",
    occurred_at: datetime | None = None,
) -> "Event | None":
    """Write an event into the outbox inside the caller's transaction.

    Returns None when an event with this dedupe key already exists (the change was already
    recorded). After commit the event is handed to Celery; if the broker is unreachable then,
    the periodic relay dispatches it later, so nothing is lost either way.
    """

    if type not in EVENT_TYPES and not _custom_type_exists(organization_id, type):
        raise ValueError(f"unknown event type {type!r}")
    fields: dict[str, Any] = {
        "organization_id": organization_id,
        "type": type,
        "payload": payload,
        "dedupe_key": dedupe_key,
        "subject_type": subject_type,
        "subject_id": subject_id,
    }
    if occurred_at is not None:
        fields["occurred_at"] = occurred_at
    event = Event(**fields)
    notify = events_notify_enabled()
    event.pk = _insert_unless_recorded(event, notify=notify)
    if event.pk is None:
        return None
    if not notify:
        transaction.on_commit(partial(publisher.submit, event.pk))
    return event


def _custom_type_exists(organization_id: int, type: str) -> bool:
    """Whether `type` is one of the clinic's custom types (`custom.<name>`): one indexed
    read, for custom events only; whether it is enabled is the recording service's to say."""
    return (
        type.startswith(CUSTOM_PREFIX)
        and CustomEventType.objects.filter(
            organization_id=organization_id, name=type.removeprefix(CUSTOM_PREFIX)
        ).exists()
    )


def _insert_unless_recorded(event: "Event", *, notify: bool) -> int | None:
    """INSERT … ON CONFLICT (dedupe_key) DO NOTHING RETURNING id: one statement on the
    request path, where a savepoint around a plain INSERT costs three, and a duplicate
    neither raises nor poisons the caller's transaction. With `notify` (PostgreSQL) the
    same statement queues a NOTIFY for the beat's listener (workflows.listener), which
    PostgreSQL delivers at commit.

    On PostgreSQL it also builds the payload's customer objects left to it
    (`patients.payloads.StoredCustomer`) from the patient's row: a record saved in a request
    rarely has its patient loaded, and reading it first cost a round trip of its own. That
    makes the statement long to plan (0.2 ms, more than it takes to run), so it is prepared:
    planned once per connection."""

    connection = connections[router.db_for_write(Event)]
    payload, stored = stored_customers(event.payload)
    if stored and connection.vendor != "postgresql":
        payload = event.payload = stored_customers_build(event.payload)
        stored = []
    values: list[Any] = []
    for column in _event_columns():
        if column.attname != "payload":
            values.append(column.get_db_prep_save(getattr(event, column.attname), connection))
            continue
        values.append(column.get_db_prep_save(payload, connection))
        for path, customer in stored:
            values += [list(path), customer.patient_id]
    sql = _insert_sql(notify, tuple((path, customer.summary) for path, customer in stored))
    with prepared_cursor(connection) as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    if stored:
        # What PostgreSQL built is in the row only: the field loads it when first read.
        del event.__dict__["payload"]
    return int(row[0]) if row else None


@functools.cache
def _event_columns() -> list[Any]:

    return [f for f in Event._meta.concrete_fields if not f.primary_key]


@functools.cache
def _insert_sql(notify: bool, stored: tuple[tuple[tuple[str, ...], bool], ...]) -> str:
    """The outbox INSERT, built once per shape. Its parameters: the event's columns, the
    payload followed by a path and a patient id for each customer left to it (`stored`:
    path, summary or not), which it sets into the payload from a scalar subquery on the
    patient's row (JSON null, as for a record without a patient, should the row be gone)."""

    quote = connections[router.db_for_write(Event)].ops.quote_name
    patients = quote(Patient._meta.db_table)
    columns = {field.attname: field.column for field in Patient._meta.concrete_fields}

    def column(attname: str) -> str:
        return f"{patients}.{quote(columns[attname])}"

    payload = "%s"
    for _, summary in stored:
        customer = customer_sql(customer_spec(summary=summary), column)
        subquery = f"SELECT {customer} FROM {patients} WHERE {column('id')} = %s"  # noqa: S608 — names from the models
        payload = f"jsonb_set({payload}, %s::text[], COALESCE(({subquery}), 'null'::jsonb))"
    event_columns = _event_columns()
    placeholders = [payload if c.attname == "payload" else "%s" for c in event_columns]
    sql = (
        f"INSERT INTO {quote(Event._meta.db_table)} "  # noqa: S608 — names from the model
        f"({', '.join(quote(c.column) for c in event_columns)}) "
        f"VALUES ({', '.join(placeholders)}) "
        f"ON CONFLICT ({quote('dedupe_key')}) DO NOTHING RETURNING {quote('id')}"
    )
    if notify:
        sql = (
            f"WITH inserted AS ({sql}) "  # noqa: S608 — a constant channel name
            f"SELECT id, pg_notify('{EVENTS_CHANNEL}', id::text) FROM inserted"
        )
    return sql
