"""Recording events: `event_record`, the one way an event enters the outbox (the Event table),
in the caller's transaction, with a NOTIFY for beat's listener on PostgreSQL."""

import functools
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connections, models, router, transaction

from common.db import model_insert, model_insert_statement, model_inserted, prepared_cursor
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
    rows: Sequence[models.Model] = (),
) -> "Event | None":
    """Write an event into the outbox inside the caller's transaction.

    Returns None when an event with this dedupe key already exists (the change was already
    recorded). After commit the event is handed to Celery; if the broker is unreachable then,
    the periodic relay dispatches it later, so nothing is lost either way.

    `rows` are new rows of the same change written with it, whether or not the event was
    recorded before (the audit entry of the save that records it): on PostgreSQL in the
    same statement, each as `common.db.model_insert` writes it, where a statement of their
    own cost a round trip each on the request path.
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
    event.pk = _insert_unless_recorded(event, notify=notify, rows=rows)
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


def _insert_unless_recorded(
    event: "Event", *, notify: bool, rows: Sequence[models.Model] = ()
) -> int | None:
    """INSERT … ON CONFLICT (dedupe_key) DO NOTHING RETURNING id: one statement on the
    request path, where a savepoint around a plain INSERT costs three, and a duplicate
    neither raises nor poisons the caller's transaction. With `notify` (PostgreSQL) the
    same statement queues a NOTIFY for the beat's listener (workflows.listener), which
    PostgreSQL delivers at commit.

    On PostgreSQL it also builds the payload's customer objects left to it
    (`patients.payloads.StoredCustomer`) from the patient's row: a record saved in a request
    rarely has its patient loaded, and reading it first cost a round trip of its own. That
    makes the statement long to plan (0.2 ms, more than it takes to run), so it is prepared:
    planned once per connection.

    `rows` (see event_record) come first, as WITH clauses; a row that model_insert writes
    with the ORM's save (or another database) is written by it, before."""

    alias = router.db_for_write(Event)
    connection = connections[alias]
    payload, stored = stored_customers(event.payload)
    if stored and connection.vendor != "postgresql":
        payload = event.payload = stored_customers_build(event.payload)
        stored = []
    values: list[Any] = []
    with_rows: list[tuple[models.Model, str]] = []
    for obj in rows:
        statement = None
        if connection.vendor == "postgresql" and router.db_for_write(type(obj)) == alias:
            statement = model_insert_statement(obj, alias)
        if statement is None:
            model_insert(obj)
            continue
        with_rows.append((obj, statement[0]))
        values += statement[1]
    for column in _event_columns():
        if column.attname != "payload":
            values.append(column.get_db_prep_save(getattr(event, column.attname), connection))
            continue
        values.append(column.get_db_prep_save(payload, connection))
        for path, customer in stored:
            values += [list(path), customer.patient_id]
    sql = _insert_sql(
        notify,
        tuple((path, customer.summary) for path, customer in stored),
        tuple(row_sql for _, row_sql in with_rows),
    )
    with prepared_cursor(connection) as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    if stored:
        # What PostgreSQL built is in the row only: the field loads it when first read.
        del event.__dict__["payload"]
    if with_rows:
        pks = row[2 if notify else 1 :]
        for (obj, _), pk in zip(with_rows, pks, strict=True):
            model_inserted(obj, pk, alias)
    return int(row[0]) if row and row[0] is not None else None


@functools.cache
def _event_columns() -> list[Any]:

    return [f for f in Event._meta.concrete_fields if not f.primary_key]


@functools.cache
def _insert_sql(
    notify: bool,
    stored: tuple[tuple[tuple[str, ...], bool], ...],
    rows: tuple[str, ...] = (),
) -> str:
    """The outbox INSERT, built once per shape. Its parameters: those of the `rows`' INSERTs
    (one column returned each), then the event's columns, the payload followed by a path
    and a patient id for each customer left to it (`stored`: path, summary or not), which
    it sets into the payload from a scalar subquery on the patient's row (JSON null, as for
    a record without a patient, should the row be gone).

    With neither `notify` nor `rows` it returns the event's id, or no row for a duplicate;
    otherwise always one row: the event's id or NULL, pg_notify's void if `notify`, and
    each row's pk."""

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
    if not (notify or rows):
        return sql
    clauses = [f"row{i} AS ({row})" for i, row in enumerate(rows)] + [f"inserted AS ({sql})"]
    # Scalar subqueries, so that the row's pks come back for a duplicate event too; the
    # NOTIFY's is run only for an event inserted.
    results = ["(SELECT id FROM inserted)"]
    if notify:
        results.append(f"(SELECT pg_notify('{EVENTS_CHANNEL}', id::text) FROM inserted)")  # noqa: S608 — a constant channel name
    results += [f"(SELECT * FROM row{i})" for i in range(len(rows))]  # noqa: S608 — no value
    return f"WITH {', '.join(clauses)} SELECT {', '.join(results)}"
