"""Enrollment rules, as the dispatch applies them (workflows.enrollment), on PostgreSQL: each
rule refuses what it should, with a skip and its reason, and enrolls again when it allows."""

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from patients.models import Order, Patient
from tests.factories import OrderFactory, PatientFactory, SmsStepFactory, WorkflowFactory
from workflows.engine import event_dispatch, events_dispatch
from workflows.enrollment import (
    enrollment_check,
    enrollment_problems,
    workflow_enrollments_backfill,
)
from workflows.models import Enrollment, EnrollmentSkip, Event, Run, Workflow

pytestmark = pytest.mark.django_db

Rule = Workflow.Enrollment


def _workflow(
    rule: str = Rule.EVERY, *, days: int | None = None, exclusive: bool = False
) -> Workflow:
    workflow = WorkflowFactory(
        trigger="order.shipped",
        enrollment=rule,
        enrollment_days=days,
        enrollment_exclusive=exclusive,
    )
    SmsStepFactory(workflow=workflow)
    return workflow


def _ship(patient: Patient, order: Order | None = None) -> Event:
    """An order.shipped event (a new order, or `order` shipped again after a flip back)."""
    if order is None:
        order = OrderFactory(
            patient=patient,
            organization=patient.organization,
            status=Order.Status.AWAITING_SHIPMENT,
        )
    else:
        order.status = Order.Status.AWAITING_SHIPMENT
        order.save()
    order.status = Order.Status.SHIPPED
    order.save()
    return Event.objects.filter(type="order.shipped", subject_id=str(order.pk)).order_by("-id")[0]


def _skips(workflow: Workflow) -> list[tuple[str, str]]:
    return list(workflow.skips.order_by("id").values_list("reason", "detail"))


def _age(workflow: Workflow, days: float) -> None:
    """Move the workflow's enrollments (and their runs) `days` into the past."""
    then = timezone.now() - timedelta(days=days)
    Enrollment.objects.filter(workflow=workflow).update(enrolled_at=then)
    Run.objects.filter(workflow=workflow).update(created_at=then)


def _finish(workflow: Workflow) -> None:
    Run.objects.filter(workflow=workflow).update(status=Run.Status.SUCCEEDED)


def test_every_time_enrolls_each_event_and_claims_nothing() -> None:
    workflow = _workflow()
    patient = PatientFactory(organization=workflow.organization)
    order = OrderFactory(patient=patient, organization=patient.organization)
    assert event_dispatch(event_id=_ship(patient, order).pk)
    assert event_dispatch(event_id=_ship(patient, order).pk)
    assert workflow.runs.count() == 2
    assert not Enrollment.objects.exists() and not EnrollmentSkip.objects.exists()


def test_once_per_record_refuses_the_same_order_again_but_not_another_order() -> None:
    workflow = _workflow(Rule.RECORD)
    patient = PatientFactory(organization=workflow.organization)
    order = OrderFactory(patient=patient, organization=patient.organization)
    (first,) = event_dispatch(event_id=_ship(patient, order).pk)
    assert event_dispatch(event_id=_ship(patient, order).pk) == []  # the status flipped back
    assert _skips(workflow) == [("record", f"this record was enrolled moments ago (run {first})")]
    assert len(event_dispatch(event_id=_ship(patient).pk)) == 1  # another order
    assert workflow.runs.count() == 2


def test_once_per_patient_refuses_forever_and_only_that_patient() -> None:
    workflow = _workflow(Rule.PATIENT)
    patient = PatientFactory(organization=workflow.organization)
    (first,) = event_dispatch(event_id=_ship(patient).pk)
    _finish(workflow)
    _age(workflow, 400)
    assert event_dispatch(event_id=_ship(patient).pk) == []
    ((reason, detail),) = _skips(workflow)
    assert reason == "patient" and detail.startswith("enrolled 1") and f"(run {first})" in detail
    other = PatientFactory(organization=workflow.organization)
    assert len(event_dispatch(event_id=_ship(other).pk)) == 1


def test_once_per_period_refuses_within_n_days_and_enrolls_after() -> None:
    workflow = _workflow(Rule.PERIOD, days=30)
    patient = PatientFactory(organization=workflow.organization)
    (first,) = event_dispatch(event_id=_ship(patient).pk)
    _finish(workflow)
    _age(workflow, 2)
    assert event_dispatch(event_id=_ship(patient).pk) == []
    assert _skips(workflow) == [
        ("period", f"enrolled 2 days ago (run {first}); at most once per 30 days")
    ]
    _age(workflow, 31)
    (second,) = event_dispatch(event_id=_ship(patient).pk)
    claim = Enrollment.objects.get(workflow=workflow)
    assert claim.event_id == Run.objects.get(pk=second).event_id  # the claim moved on
    assert claim.enrolled_at > timezone.now() - timedelta(minutes=1)
    assert event_dispatch(event_id=_ship(patient).pk) == []  # and counts from the new run


def test_not_while_active_refuses_during_a_run_and_enrolls_once_it_ended() -> None:
    workflow = _workflow(exclusive=True)
    patient = PatientFactory(organization=workflow.organization)
    (first,) = event_dispatch(event_id=_ship(patient).pk)
    Run.objects.filter(pk=first).update(status=Run.Status.WAITING)
    assert event_dispatch(event_id=_ship(patient).pk) == []
    assert _skips(workflow) == [
        ("active", f"a run of this workflow is still waiting (run {first})")
    ]
    for ended in (Run.Status.SUCCEEDED, Run.Status.FAILED, Run.Status.CANCELLED, Run.Status.EXITED):
        Run.objects.filter(workflow=workflow).update(status=ended)
        assert len(event_dispatch(event_id=_ship(patient).pk)) == 1, ended
    assert workflow.runs.count() == 5


def test_period_and_not_while_active_need_both() -> None:
    workflow = _workflow(Rule.PERIOD, days=1, exclusive=True)
    patient = PatientFactory(organization=workflow.organization)
    event_dispatch(event_id=_ship(patient).pk)
    _age(workflow, 2)  # past the period, but its run is still pending
    assert event_dispatch(event_id=_ship(patient).pk) == []
    assert [reason for reason, _ in _skips(workflow)] == ["active"]
    _finish(workflow)
    assert len(event_dispatch(event_id=_ship(patient).pk)) == 1


def test_once_per_record_and_not_while_active_gives_the_record_back_when_refused() -> None:
    """Order B shipped while order A's run is in progress is refused as "active"; B has not
    enrolled, so once A's run ended, B shipped again enrolls."""
    workflow = _workflow(Rule.RECORD, exclusive=True)
    patient = PatientFactory(organization=workflow.organization)
    event_dispatch(event_id=_ship(patient).pk)
    order_b = OrderFactory(patient=patient, organization=patient.organization)
    assert event_dispatch(event_id=_ship(patient, order_b).pk) == []
    assert [reason for reason, _ in _skips(workflow)] == ["active"]
    _finish(workflow)
    assert len(event_dispatch(event_id=_ship(patient, order_b).pk)) == 1
    assert event_dispatch(event_id=_ship(patient, order_b).pk) == []
    assert [reason for reason, _ in _skips(workflow)] == ["active", "record"]


def test_several_events_of_one_patient_in_one_batch_enroll_the_first() -> None:
    workflow = _workflow(Rule.PERIOD, days=30)
    patient = PatientFactory(organization=workflow.organization)
    other = PatientFactory(organization=workflow.organization)
    events = [_ship(patient), _ship(other), _ship(patient), _ship(patient)]
    claimed, runs = events_dispatch(event_ids=[e.pk for e in events], claim_per_event=1)
    assert claimed == 4
    assert sorted(run.event_id for run in runs) == sorted([events[0].pk, events[1].pk])
    first = next(run for run in runs if run.event_id == events[0].pk)
    skips = list(workflow.skips.order_by("event_id"))
    assert [s.event_id for s in skips] == [events[2].pk, events[3].pk]
    assert {s.reason for s in skips} == {"period"}
    assert all(f"(run {first.pk})" in s.detail for s in skips)


def test_an_event_without_a_customer_enrolls_whatever_the_rule() -> None:
    workflow = _workflow(Rule.PATIENT, exclusive=True)
    workflow.trigger = "webhook.received"
    workflow.save()
    events = [
        Event.objects.create(
            organization=workflow.organization,
            type="webhook.received",
            payload={"data": {}},
            dedupe_key=f"hook:{n}",
        )
        for n in range(2)
    ]
    for event in events:
        assert len(event_dispatch(event_id=event.pk)) == 1
    assert not Enrollment.objects.exists()


def test_rules_are_per_workflow() -> None:
    once = _workflow(Rule.PATIENT)
    every = WorkflowFactory(organization=once.organization, trigger="order.shipped")
    patient = PatientFactory(organization=once.organization)
    event_dispatch(event_id=_ship(patient).pk)
    event_dispatch(event_id=_ship(patient).pk)
    assert once.runs.count() == 1 and every.runs.count() == 2
    assert every.skips.count() == 0 and once.skips.count() == 1


def test_a_live_test_neither_claims_nor_is_refused() -> None:
    from workflows.dry_run import workflow_live_test

    workflow = _workflow(Rule.PATIENT)
    patient = PatientFactory(organization=workflow.organization, is_test=True)
    event_dispatch(event_id=_ship(patient).pk)
    claim = Enrollment.objects.get()
    for _ in range(2):
        run = workflow_live_test(workflow=workflow, patient=patient)
        assert run.is_test
    assert Enrollment.objects.get() == claim and claim.event_id == Enrollment.objects.get().event_id
    assert not EnrollmentSkip.objects.exists()
    assert workflow.runs.count() == 3


def _dispatch_statements(workflow: Workflow) -> list[str]:
    patient = PatientFactory(organization=workflow.organization)
    event = _ship(patient)
    with CaptureQueriesContext(connection) as queries:
        events_dispatch(event_ids=[event.pk], claim_per_event=1)
    return [query["sql"] for query in queries.captured_queries]


def test_the_default_rule_costs_no_statement() -> None:
    every = _dispatch_statements(_workflow())
    Workflow.objects.update(enabled=False)
    limited = _dispatch_statements(_workflow(Rule.PERIOD, days=30))
    # The statements dispatch made before rules existed: claim the event, read the
    # workflows and their steps, insert the runs (and the test's savepoint around them).
    assert len(every) == 6
    assert not [sql for sql in every if "workflows_enrollment" in sql]
    # A limited workflow adds its one claim (a skip-free batch writes no skip).
    assert len(limited) == len(every) + 1
    assert next(sql for sql in limited if "workflows_enrollment" in sql).startswith(
        'INSERT INTO "workflows_enrollment"'
    )


@pytest.mark.parametrize(
    ("rule", "days", "problem"),
    [
        ("period", None, "say after how many days a patient may enroll again"),
        ("period", 0, "the number of days must be between 1 and 3650"),
        ("period", 3651, "the number of days must be between 1 and 3650"),
        ("period", "7", "the number of days must be a whole number"),
        ("patient", 7, "a number of days only goes with “at most once per patient per N days”"),
        ("sometimes", None, "unknown enrollment rule 'sometimes': choose one of the list"),
    ],
)
def test_enrollment_problems(rule: str, days: Any, problem: str) -> None:
    assert enrollment_problems(rule=rule, days=days, exclusive=False) == [problem]


def test_enrollment_settings_that_are_fine() -> None:
    assert enrollment_problems(rule="period", days=30, exclusive=True) == []
    assert enrollment_problems(rule="every", days=None, exclusive=True) == []


def test_a_rule_set_after_runs_were_made_counts_them() -> None:
    """Runs made under "every time" are claimed when a rule is set: the latest of each
    patient, each record; a claim newer than the runs is kept."""
    workflow = _workflow()
    ann, bob = (PatientFactory(organization=workflow.organization) for _ in range(2))
    order = OrderFactory(patient=ann, organization=ann.organization)
    for event in (_ship(ann, order), _ship(ann), _ship(bob)):
        event_dispatch(event_id=event.pk)
    runs = list(workflow.runs.order_by("id"))
    for age, run in zip((10, 3, 5), runs, strict=True):
        Run.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(days=age))
    workflow.enrollment, workflow.enrollment_days = Rule.PERIOD, 30
    workflow.save()
    assert workflow_enrollments_backfill(workflow=workflow) == 2
    claims = {c.key: c.event_id for c in Enrollment.objects.filter(workflow=workflow)}
    assert claims == {
        f"patient:{ann.uuid}": runs[1].event_id,
        f"patient:{bob.uuid}": runs[2].event_id,
    }
    assert event_dispatch(event_id=_ship(ann).pk) == []
    assert _skips(workflow) == [
        ("period", f"enrolled 3 days ago (run {runs[1].pk}); at most once per 30 days")
    ]
    # A claim newer than the runs (a dispatch claimed meanwhile) is kept.
    Enrollment.objects.filter(key=f"patient:{ann.uuid}").update(enrolled_at=timezone.now())
    assert workflow_enrollments_backfill(workflow=workflow) == 0
    assert Enrollment.objects.get(key=f"patient:{ann.uuid}").enrolled_at > runs[1].created_at
    # Under "once per record", each record that had a run is claimed.
    workflow.enrollment, workflow.enrollment_days = Rule.RECORD, None
    workflow.save()
    assert workflow_enrollments_backfill(workflow=workflow) == 3
    assert event_dispatch(event_id=_ship(ann, order).pk) == []
    assert _skips(workflow)[-1][0] == "record"


def test_the_read_only_check_agrees_with_the_claim() -> None:
    workflow = _workflow(Rule.RECORD)
    patient = PatientFactory(organization=workflow.organization)
    order = OrderFactory(patient=patient, organization=patient.organization)
    (run_id,) = event_dispatch(event_id=_ship(patient, order).pk)

    def check(subject_id: str) -> Any:
        return enrollment_check(
            workflow=workflow,
            patient_key=str(patient.uuid),
            subject_type="order",
            subject_id=subject_id,
            now=timezone.now(),
        )

    refusal = check(str(order.pk))
    assert refusal is not None and refusal.reason == "record"
    assert refusal.detail == f"this record was enrolled moments ago (run {run_id})"
    assert check(str(order.pk + 1000)) is None
    assert not EnrollmentSkip.objects.exists()  # read only


@pytest.mark.parametrize("exclusive", [False, True])
def test_one_record_twice_in_one_batch_enrolls_once_and_keeps_its_claim(exclusive: bool) -> None:
    workflow = _workflow(Rule.RECORD, exclusive=exclusive)
    patient = PatientFactory(organization=workflow.organization)
    order = OrderFactory(patient=patient, organization=patient.organization)
    other = OrderFactory(patient=patient, organization=patient.organization)
    events = [_ship(patient, order), _ship(patient, order), _ship(patient, other)]
    _, runs = events_dispatch(event_ids=[e.pk for e in events], claim_per_event=0)
    reasons = dict(workflow.skips.values_list("event_id", "reason"))
    claims = set(Enrollment.objects.values_list("key", flat=True))
    assert f"record:order:{order.pk}" in claims  # kept: the order did enroll
    if exclusive:
        # The other order is refused while the first one's run is in progress, and gives
        # its record's claim back: it has not enrolled.
        assert [run.event_id for run in runs] == [events[0].pk]
        assert reasons == {events[1].pk: "record", events[2].pk: "active"}
        assert f"record:order:{other.pk}" not in claims
    else:
        assert [run.event_id for run in runs] == [events[0].pk, events[2].pk]
        assert reasons == {events[1].pk: "record"}
        assert f"record:order:{other.pk}" in claims
