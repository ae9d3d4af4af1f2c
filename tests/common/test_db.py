"""Database helpers in common.db: rows_update writes each row's own values at once;
prepared_cursor has PostgreSQL plan a statement once per connection; model_insert writes a
new row as the ORM's save does; ReplacedRowReturned's UPDATE reads the row it replaces."""

import os
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.db import (
    insert_or_get,
    lazy_commits,
    model_insert,
    prepared_cursor,
    rows_update,
)
from integrations.models import OutboundMessage
from patients.models import AuditEntry, ConsentRecord, Order
from tests.factories import (
    IntegrationFactory,
    OrderFactory,
    OutboundMessageFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.listener import _connect
from workflows.models import Event, Run, StepRun

pytestmark = pytest.mark.django_db


def _step_runs(count: int) -> list[StepRun]:
    workflow = WorkflowFactory()
    SmsStepFactory(workflow=workflow)
    runs = []
    for i in range(count):
        event = Event.objects.create(
            organization=workflow.organization, type="order.shipped", dedupe_key=f"k{i}"
        )
        runs.append(Run.objects.create(workflow=workflow, event=event, definition={}))
    return [StepRun.objects.create(run=run, index=0) for run in runs]


def test_rows_update_writes_each_rows_own_values_in_one_statement() -> None:
    first, second, untouched = _step_runs(3)
    now = timezone.now()
    first.status, first.result, first.finished_at = "succeeded", {"sid": "SM1", "n": 1}, None
    second.status, second.result = "skipped", {"sid": None, "why": 'it\'s "quoted"'}
    second.finished_at = now - timedelta(minutes=1)
    with CaptureQueriesContext(connection) as queries:
        rows_update(StepRun, [first, second], ["status", "result", "finished_at"])
    assert len(queries.captured_queries) == 1
    rows = {row.pk: row for row in StepRun.objects.all()}
    assert (rows[first.pk].status, rows[first.pk].result) == ("succeeded", {"sid": "SM1", "n": 1})
    assert rows[first.pk].finished_at is None  # a NULL in the first row keeps its type
    assert rows[second.pk].result == {"sid": None, "why": 'it\'s "quoted"'}
    assert rows[second.pk].finished_at == second.finished_at
    assert rows[untouched.pk].status == untouched.status == StepRun.Status.PENDING
    assert rows[untouched.pk].result == {}


def test_rows_update_with_no_rows_says_nothing_to_the_database() -> None:
    with CaptureQueriesContext(connection) as queries:
        rows_update(StepRun, [], ["status"])
    assert queries.captured_queries == []


def test_rows_update_writes_guarded_fields_only_where_the_guard_still_holds() -> None:
    running, finished = _step_runs(2)
    StepRun.objects.filter(pk=finished.pk).update(status=StepRun.Status.SUCCEEDED)
    for step_run in (running, finished):
        step_run.status, step_run.result = StepRun.Status.FAILED, {"written": True}
    with CaptureQueriesContext(connection) as queries:
        rows_update(
            StepRun,
            [running, finished],
            ["status", "result"],
            guarded=["status"],
            only_where=("status", [StepRun.Status.PENDING, StepRun.Status.RUNNING]),
        )
    assert len(queries.captured_queries) == 1
    rows = {row.pk: row for row in StepRun.objects.all()}
    assert rows[running.pk].status == StepRun.Status.FAILED
    assert rows[finished.pk].status == StepRun.Status.SUCCEEDED  # kept: the guard failed
    assert rows[running.pk].result == rows[finished.pk].result == {"written": True}


def _prepared(text: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", [f"%{text}%"]
        )
        return int(cursor.fetchone()[0])


def test_a_statement_through_prepared_cursor_is_prepared_once_and_logged() -> None:
    sql = "SELECT %s::int + 1 AS careflow_probe"
    with CaptureQueriesContext(connection) as queries:
        for value in (1, 41):
            with prepared_cursor(connection) as cursor:
                cursor.execute(sql, [value])
                answer = cursor.fetchone()[0]
    assert answer == 42
    assert _prepared("careflow_probe") == 1  # one prepared statement, run twice
    # Logged as Django logs its own statements, with the values.
    assert [q["sql"] for q in queries.captured_queries] == [
        "SELECT 1::int + 1 AS careflow_probe",
        "SELECT 41::int + 1 AS careflow_probe",
    ]


def test_prepared_cursor_errors_are_djangos() -> None:
    first = OrderFactory()
    second = OrderFactory(organization=first.organization)
    with pytest.raises(IntegrityError), transaction.atomic(), prepared_cursor(connection) as cursor:
        cursor.execute(
            'UPDATE "patients_order" SET "number" = %s WHERE "id" = %s', [first.number, second.pk]
        )


def test_without_a_prepare_threshold_nothing_is_prepared(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection.connection, "prepare_threshold", None)
    for _ in range(2):
        with prepared_cursor(connection) as cursor:
            cursor.execute("SELECT %s::int AS careflow_unprepared", [7])
            assert cursor.fetchone()[0] == 7
    assert _prepared("careflow_unprepared") == 0


@pytest.mark.parametrize(("setting", "threshold"), [("true", "2147483647"), ("false", "None")])
def test_prepared_statements_can_be_turned_off_for_a_pooler(setting: str, threshold: str) -> None:
    code = (
        "import django; django.setup(); from django.conf import settings; "
        "print(settings.DATABASES['default'].get('OPTIONS', {}).get('prepare_threshold'))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    env["CAREFLOW_PREPARED_STATEMENTS"] = setting
    result = subprocess.run(  # noqa: S603 — this interpreter, a constant program
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == threshold


def test_the_outbox_insert_is_prepared() -> None:
    for _ in range(2):
        order = Order.objects.get(pk=OrderFactory().pk)
        order.status = Order.Status.SHIPPED
        order.save()
    assert _prepared('INSERT INTO "workflows_event"') >= 1


def test_model_insert_writes_the_row_the_orms_save_writes_in_one_prepared_statement() -> None:
    (template,) = _step_runs(1)
    StepRun.objects.all().delete()
    fields = {"run": template.run, "index": 3, "status": StepRun.Status.RUNNING}
    ours = StepRun(**fields, inputs={"body": 'it\'s "quoted" — ok'}, started_at=timezone.now())
    theirs = StepRun(**{**fields, "index": 4}, inputs=ours.inputs, started_at=ours.started_at)
    with CaptureQueriesContext(connection) as queries:
        model_insert(ours)
    assert len(queries.captured_queries) == 1
    assert queries.captured_queries[0]["sql"].startswith('INSERT INTO "workflows_steprun"')
    theirs.save(force_insert=True)
    assert ours.pk is not None and ours._state.adding is False and ours._state.db == "default"
    stored, saved = StepRun.objects.get(pk=ours.pk), StepRun.objects.get(pk=theirs.pk)
    for field in StepRun._meta.concrete_fields:
        if field.name not in ("id", "index", "created_at", "updated_at"):
            assert getattr(stored, field.attname) == getattr(saved, field.attname), field.name
        assert getattr(stored, field.attname) == getattr(ours, field.attname), field.name
    assert stored.updated_at == ours.updated_at  # auto_now, as the ORM sets it
    # Prepared once (per kinds of values: psycopg tells a NULL from a date), then reused.
    prepared = _prepared('INSERT INTO "workflows_steprun"')
    assert prepared >= 1
    model_insert(StepRun(**{**fields, "index": 5}, inputs={}, started_at=timezone.now()))
    assert _prepared('INSERT INTO "workflows_steprun"') == prepared


def test_model_insert_of_a_field_with_a_database_default_writes_a_given_value_prepared() -> None:
    given = OutboundMessageFactory.build(language="fr", integration=IntegrationFactory())
    with CaptureQueriesContext(connection) as queries:
        model_insert(given)
    assert len(queries.captured_queries) == 1
    assert queries.captured_queries[0]["sql"].startswith('INSERT INTO "integrations_outbound')
    assert OutboundMessage.objects.get(pk=given.pk).language == "fr"
    assert _prepared('INSERT INTO "integrations_outboundmessage"') >= 1
    # Not given: the database's default, through the ORM's save (the value is an expression).
    left = OutboundMessageFactory.build(integration=given.integration)
    model_insert(left)
    assert left.language == "" and OutboundMessage.objects.get(pk=left.pk).language == ""


def test_model_insert_of_a_model_with_save_receivers_is_the_orms_save() -> None:
    patient = PatientFactory()
    consent = ConsentRecord(
        patient=patient,
        purpose=ConsentRecord.Purpose.TRANSACTIONAL,
        action=ConsentRecord.Action.OPT_IN,
        source=ConsentRecord.Source.ADMIN,
        consent_text="Yes",
    )
    before = AuditEntry.objects.count()
    model_insert(consent)  # audited: the audit log's receivers must see it
    assert consent.pk is not None
    assert AuditEntry.objects.count() == before + 1


def test_model_insert_refuses_an_unsaved_related_object_as_save_does() -> None:
    (template,) = _step_runs(1)
    unsaved_run = Run(workflow=template.run.workflow, event=template.run.event, definition={})
    with pytest.raises(ValueError, match="unsaved related object"):
        model_insert(StepRun(run=unsaved_run, index=0))


def test_insert_or_get_returns_the_row_that_exists() -> None:
    (existing,) = _step_runs(1)
    row = insert_or_get(StepRun, {"run": existing.run, "index": 0}, {"status": "failed"})
    assert row.pk == existing.pk and row.status == StepRun.Status.PENDING
    assert StepRun.objects.count() == 1


def test_an_update_reads_the_row_it_replaces_in_the_same_statement() -> None:
    # Given an order loaded, then changed in the database behind its back
    order = Order.objects.get(pk=OrderFactory(coupon="", line_items=[{"name": "Kit"}]).pk)
    Order.objects.filter(pk=order.pk).update(coupon="LATER")
    # When the stale copy saves a change of its own (one that records no event)
    order.tracking_number = "1Z999"
    with CaptureQueriesContext(connection) as queries:
        order.save()
    # Then one statement wrote it and returned the row as the database had it (the other
    # statement is the audit trail's entry)
    statements = [q["sql"] for q in queries.captured_queries]
    assert statements[0].startswith('UPDATE "patients_order"') and len(statements) == 2
    assert statements[1].startswith('INSERT INTO "patients_auditentry"')
    replaced = order.replaced
    assert replaced.pk == order.pk and replaced._state.adding is False
    assert (replaced.tracking_number, replaced.coupon) == ("", "LATER")
    assert replaced.line_items == [{"name": "Kit"}]  # JSON, loaded as the ORM loads it
    stored = Order.objects.get(pk=order.pk)
    assert replaced.total_amount == stored.total_amount
    assert (stored.tracking_number, stored.coupon) == ("1Z999", "")  # the copy's, all of it


def test_an_update_of_only_some_fields_writes_only_those() -> None:
    order = Order.objects.get(pk=OrderFactory().pk)
    order.status, order.coupon = Order.Status.SHIPPED, "MEMORY"
    order.save(update_fields=["coupon"])
    stored = Order.objects.get(pk=order.pk)
    assert (stored.coupon, stored.status) == ("MEMORY", Order.Status.PROCESSING)
    assert order.replaced.coupon == ""


def test_an_update_with_an_expression_is_the_orms_after_a_read_of_the_row() -> None:
    order = Order.objects.get(pk=OrderFactory(total_amount=Decimal("10.00")).pk)
    order.total_amount = F("total_amount") + 1
    with CaptureQueriesContext(connection) as queries:
        order.save()
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    assert statements[:2] == ["SELECT", "UPDATE"]
    assert order.replaced.total_amount == Decimal("10.00")
    assert Order.objects.get(pk=order.pk).total_amount == Decimal("11.00")


def test_a_save_whose_row_is_gone_inserts_it_and_replaces_nothing() -> None:
    order = Order.objects.get(pk=OrderFactory().pk)
    Order.objects.filter(pk=order.pk).delete()
    AuditEntry.objects.all().delete()
    order.coupon = "BACK"
    order.save()
    assert order.replaced is None
    assert Order.objects.get(pk=order.pk).coupon == "BACK"
    assert AuditEntry.objects.get(object_id=str(order.pk)).action == "created"


def _synchronous_commit() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_lazy_commits_relax_only_the_block_and_its_writes_are_committed() -> None:
    first, second = _step_runs(2)
    assert _synchronous_commit() == "on"
    with lazy_commits():
        assert _synchronous_commit() == "off"
        StepRun.objects.filter(pk=first.pk).update(status=StepRun.Status.SUCCEEDED)
    assert _synchronous_commit() == "on"
    with lazy_commits(atomic=True):
        assert _synchronous_commit() == "off" and connection.in_atomic_block
        StepRun.objects.filter(pk=second.pk).update(status=StepRun.Status.SKIPPED)
    # The session's later commits (a message's claim) are durable again.
    assert _synchronous_commit() == "on"
    statuses = dict(StepRun.objects.values_list("pk", "status"))
    assert statuses == {first.pk: StepRun.Status.SUCCEEDED, second.pk: StepRun.Status.SKIPPED}


@pytest.mark.django_db(transaction=True)
def test_lazy_commits_leave_the_session_durable_after_an_error() -> None:
    (step_run,) = _step_runs(1)
    with pytest.raises(IntegrityError), lazy_commits(atomic=True):
        StepRun.objects.filter(pk=step_run.pk).update(status=StepRun.Status.SUCCEEDED)
        StepRun.objects.create(run=step_run.run, index=0)  # a duplicate: the block fails
    assert StepRun.objects.get(pk=step_run.pk).status == StepRun.Status.PENDING
    assert _synchronous_commit() == "on"
    with pytest.raises(IntegrityError), lazy_commits():
        StepRun.objects.create(run=step_run.run, index=0)
    assert _synchronous_commit() == "on"


def _lazy_step_run(run: Run, index: int) -> tuple[StepRun, list[str]]:
    step_run = StepRun(run=run, index=index)
    with CaptureQueriesContext(connection) as queries:
        model_insert(step_run, lazy=True)
    return step_run, [query["sql"] for query in queries.captured_queries]


_LAZY = "set_config('synchronous_commit', 'off', true)"


@pytest.mark.django_db(transaction=True)
def test_a_lazy_insert_makes_its_own_commit_lazy_in_its_one_statement() -> None:
    (step_run,) = _step_runs(1)
    inserted, statements = _lazy_step_run(step_run.run, 1)
    # no SET before nor RESET after it: the setting is made in the INSERT, for its own
    # transaction only
    assert len(statements) == 1 and _LAZY in statements[0]
    assert _synchronous_commit() == "on"
    with _connect() as other:  # committed: another session sees it
        row = other.execute("SELECT index FROM workflows_steprun WHERE id = %s", [inserted.pk])
        assert row.fetchone() == (1,)


@pytest.mark.django_db(transaction=True)
def test_a_lazy_insert_inside_a_callers_transaction_keeps_the_callers_durability() -> None:
    (step_run,) = _step_runs(1)
    with transaction.atomic():
        inserted, statements = _lazy_step_run(step_run.run, 1)
        assert _LAZY not in statements[0]
        # The caller's commit, which may be a claim, must still wait for the disk.
        assert _synchronous_commit() == "on"
    assert StepRun.objects.filter(pk=inserted.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_lazy_commits_inside_a_callers_transaction_keep_the_callers_durability() -> None:
    (step_run,) = _step_runs(1)
    with transaction.atomic(), lazy_commits(), lazy_commits(atomic=True):
        StepRun.objects.filter(pk=step_run.pk).update(status=StepRun.Status.SUCCEEDED)
        # The caller's commit, which may be a claim, must still wait for the disk.
        assert _synchronous_commit() == "on"
    assert StepRun.objects.get(pk=step_run.pk).status == StepRun.Status.SUCCEEDED
