"""Database helpers in patients.models: rows_update writes each row's own values at once."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from patients.models import rows_update
from tests.factories import SmsStepFactory, WorkflowFactory
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
