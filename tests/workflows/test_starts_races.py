"""Direct starts under concurrency, on PostgreSQL with a connection per thread: the same
idempotency key sent by several callers at the same instant starts one run (and every
caller gets that run back); different keys for one patient of a "once per patient" workflow
enroll once. Custom events posted at once with one key are recorded once."""

import pytest

from tests.factories import (
    CustomEventTypeFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from tests.workflows.test_enrollment_races import _at_once
from workflows.custom_events import custom_event_record
from workflows.models import EnrollmentSkip, Event, Run, Workflow
from workflows.starts import workflow_start

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_worker")]

WORKERS = 6
ORDER = {"order": {"id": "0b0c1c5e-51a4-4a1d-9a61-7d8a4b7d2e55", "number": "A-1"}}


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
    assert len(results) == WORKERS, "a thread raised"
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
    assert len(results) == WORKERS, "a thread raised"
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
    assert len(results) == WORKERS, "a thread raised"
    assert len({event.pk for event, _ in results}) == 1
    assert sorted(created for _, created in results) == [False] * (WORKERS - 1) + [True]
    assert Event.objects.filter(type=custom.type_name).count() == 1
