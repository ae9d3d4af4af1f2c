"""Enrollment claims under concurrency, on PostgreSQL with a connection per thread: events
of one patient dispatched by several workers at the same instant enroll once, whether the
claim is new or taken over (after the period, after the last run ended)."""

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from patients.models import Order, Patient
from tests.factories import OrderFactory, PatientFactory, SmsStepFactory, WorkflowFactory
from workflows.engine import event_dispatch
from workflows.models import Enrollment, EnrollmentSkip, Event, Run, Workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_worker")]

Rule = Workflow.Enrollment
WORKERS = 6


def _at_once(targets: list[Callable[[], Any]]) -> list[Any]:
    """Call each target in its own thread (its own database connection), all released at
    the same instant."""
    results: list[Any] = []
    barrier = threading.Barrier(len(targets))

    def run(target: Callable[[], Any]) -> None:
        try:
            barrier.wait()
            results.append(target())
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _events(patient: Patient, count: int) -> list[Event]:
    events = []
    for _ in range(count):
        order = OrderFactory(
            patient=patient,
            organization=patient.organization,
            status=Order.Status.AWAITING_SHIPMENT,
        )
        order.status = Order.Status.SHIPPED
        order.save()
        events.append(Event.objects.get(type="order.shipped", subject_id=str(order.pk)))
    return events


def _race(patient: Patient) -> list[list[int]]:
    events = _events(patient, WORKERS)
    return _at_once(
        [lambda event_id=event.pk: event_dispatch(event_id=event_id) for event in events]
    )


@pytest.mark.parametrize(
    ("rule", "days", "exclusive"),
    [(Rule.PATIENT, None, False), (Rule.PERIOD, 30, False), (Rule.EVERY, None, True)],
)
def test_events_of_one_patient_dispatched_at_once_enroll_once(
    rule: str, days: int | None, exclusive: bool
) -> None:
    workflow = WorkflowFactory(
        trigger="order.shipped",
        enrollment=rule,
        enrollment_days=days,
        enrollment_exclusive=exclusive,
    )
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=workflow.organization)
    results = _race(patient)
    assert sorted(len(r) for r in results) == [0] * (WORKERS - 1) + [1]
    assert workflow.runs.count() == 1
    assert EnrollmentSkip.objects.filter(workflow=workflow).count() == WORKERS - 1
    expected = {Rule.PATIENT: "patient", Rule.PERIOD: "period", Rule.EVERY: "active"}[rule]
    assert set(EnrollmentSkip.objects.values_list("reason", flat=True)) == {expected}
    claim = Enrollment.objects.get(workflow=workflow)
    assert claim.event_id == workflow.runs.get().event_id


@pytest.mark.parametrize(
    ("rule", "days", "exclusive"), [(Rule.PERIOD, 1, True), (Rule.EVERY, None, True)]
)
def test_a_claim_taken_over_at_once_is_taken_over_once(
    rule: str, days: int | None, exclusive: bool
) -> None:
    """The patient may enroll again (the period is over, the run ended): of the workers
    taking the claim over at the same instant, one does; the others see its new run as in
    progress (or within the new period), though it committed after their statement began."""
    workflow = WorkflowFactory(
        trigger="order.shipped",
        enrollment=rule,
        enrollment_days=days,
        enrollment_exclusive=exclusive,
    )
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=workflow.organization)
    (first,) = event_dispatch(event_id=_events(patient, 1)[0].pk)
    for round_ in range(3):
        Run.objects.filter(workflow=workflow).update(status=Run.Status.SUCCEEDED)
        Enrollment.objects.filter(workflow=workflow).update(
            enrolled_at=timezone.now() - timedelta(days=2)
        )
        results = _race(patient)
        assert sorted(len(r) for r in results) == [0] * (WORKERS - 1) + [1], round_
        assert workflow.runs.count() == 2 + round_
    assert EnrollmentSkip.objects.filter(workflow=workflow).count() == 3 * (WORKERS - 1)
    assert first in workflow.runs.values_list("pk", flat=True)


def test_one_order_shipped_again_and_again_at_once_enrolls_once() -> None:
    """Once per record: events of the same order (its status flipping back and forth),
    dispatched by several workers at the same instant."""
    workflow = WorkflowFactory(trigger="order.shipped", enrollment=Rule.RECORD)
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=workflow.organization)
    order = OrderFactory(patient=patient, organization=patient.organization)
    for _ in range(WORKERS):
        order.status = Order.Status.AWAITING_SHIPMENT
        order.save()
        order.status = Order.Status.SHIPPED
        order.save()
    events = list(Event.objects.filter(type="order.shipped", subject_id=str(order.pk)))
    assert len(events) == WORKERS
    results = _at_once(
        [lambda event_id=event.pk: event_dispatch(event_id=event_id) for event in events]
    )
    assert sorted(len(r) for r in results) == [0] * (WORKERS - 1) + [1]
    assert set(workflow.skips.values_list("reason", flat=True)) == {"record"}
    assert workflow.skips.count() == WORKERS - 1
