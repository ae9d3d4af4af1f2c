"""Direct starts under concurrency, on PostgreSQL with a connection per thread: the same
idempotency key sent by several callers at the same instant starts one run (and every
caller gets that run back); different keys for one patient of a "once per patient" workflow
enroll once. Custom events posted at once with one key are recorded once."""

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from tests.factories import (
    CustomEventTypeFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.custom_events import custom_event_record
from workflows.models import EnrollmentSkip, Event, Run, Workflow
from workflows.starts import workflow_start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_worker")]

WORKERS = 6
ORDER = {"order": {"id": "0b0c1c5e-51a4-4a1d-9a61-7d8a4b7d2e55", "number": "A-1"}}


def _at_once(targets: list[Callable[[], Any]]) -> list[Any]:
    """Call each target in its own thread (its own database connection), all released at
    the same instant; an exception is returned as the thread's result."""
    results: list[Any] = []
    barrier = threading.Barrier(len(targets))

    def run(target: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results.append(target())
        except Exception as exc:  # noqa: BLE001 — the test asserts there are none
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_one_key_sent_at_once_starts_one_run_for_every_caller() -> None:
    workflow = WorkflowFactory(trigger="order.shipped")
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=workflow.organization)
    results = _at_once(
        [
            lambda: workflow_start(
                workflow=workflow, patient=patient, data=ORDER, idempotency_key="same"
            )
        ]
        * WORKERS
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert Run.objects.count() == 1
    run = Run.objects.get()
    assert {r.run.pk for r in results} == {run.pk}
    assert sorted(r.created for r in results) == [False] * (WORKERS - 1) + [True]
    assert Event.objects.filter(type="order.shipped").count() == 1


def test_different_keys_for_one_patient_enroll_once_per_patient() -> None:
    workflow = WorkflowFactory(trigger="order.shipped", enrollment=Workflow.Enrollment.PATIENT)
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=workflow.organization)
    results = _at_once(
        [
            lambda key=str(n): workflow_start(
                workflow=workflow, patient=patient, data=ORDER, idempotency_key=key
            )
            for n in range(WORKERS)
        ]
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r.started for r in results) == 1
    assert Run.objects.count() == 1
    assert EnrollmentSkip.objects.filter(workflow=workflow, reason="patient").count() == (
        WORKERS - 1
    )


def test_one_custom_event_key_posted_at_once_is_recorded_once() -> None:
    custom = CustomEventTypeFactory()
    patient = PatientFactory(organization=custom.organization)
    results = _at_once(
        [
            lambda: custom_event_record(
                organization=custom.organization,
                type_name=custom.type_name,
                patient=patient,
                data={"kitId": "K"},
                idempotency_key="same",
            )
        ]
        * WORKERS
    )
    assert not [r for r in results if isinstance(r, Exception)], results
    assert len({event.pk for event, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * (WORKERS - 1) + [True]
    assert Event.objects.filter(type=custom.type_name).count() == 1
