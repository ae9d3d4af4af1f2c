"""Starting one workflow for one patient directly (workflows.starts.workflow_start): only
that workflow runs, with the patient as customer and the caller's data for the rest, under
the workflow's enrollment rule, once per idempotency key; bad input is refused, saying
where, and records nothing."""

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from patients.models import Order, Patient
from tests.factories import (
    CustomEventTypeFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.engine import event_dispatch
from workflows.models import EnrollmentSkip, Event, Run, Workflow
from workflows.starts import workflow_start

pytestmark = pytest.mark.django_db

ORDER = {"order": {"id": "0b0c1c5e-51a4-4a1d-9a61-7d8a4b7d2e55", "number": "A-1"}}


def _workflow(**fields: Any) -> Workflow:
    workflow = WorkflowFactory(trigger="order.shipped", **fields)
    SmsStepFactory(workflow=workflow)
    return workflow


def _patient(workflow: Workflow) -> Patient:
    return PatientFactory(organization=workflow.organization, first_name="Ann")


def test_only_this_workflow_starts_for_the_patient(
    django_capture_on_commit_callbacks: Any,
) -> None:
    workflow = _workflow()
    sibling = _workflow(organization=workflow.organization)  # the same trigger, enabled
    patient = _patient(workflow)
    with django_capture_on_commit_callbacks() as callbacks:
        result = workflow_start(workflow=workflow, patient=patient, data=ORDER, idempotency_key="k")
    assert result.started and result.created and result.skip is None
    assert result.run is not None and result.run.status == Run.Status.PENDING
    assert list(Run.objects.values_list("workflow_id", flat=True)) == [workflow.pk]
    event = Event.objects.get(pk=result.event.pk)
    assert event.dispatched_at is not None  # no dispatcher matches it to another workflow
    assert event_dispatch(event_id=event.pk) == []
    assert not Run.objects.filter(workflow=sibling).exists()
    assert event.type == "order.shipped"
    assert event.payload["order"] == ORDER["order"]
    assert event.payload["customer"]["id"] == str(patient.uuid)
    assert event.payload["customer"]["firstName"] == "Ann"
    assert result.run.patient_key == str(patient.uuid)
    # the run is handed to a worker once committed (and the outbox's publish finds it done)
    assert len(callbacks) >= 1


def test_the_workflows_filter_does_not_apply_to_a_direct_start() -> None:
    workflow = _workflow(filter={"order.number": "never"})
    result = workflow_start(
        workflow=workflow, patient=_patient(workflow), data=ORDER, idempotency_key="k"
    )
    assert result.started


def test_the_same_key_returns_the_same_run_and_records_nothing_more() -> None:
    workflow = _workflow()
    patient = _patient(workflow)
    first = workflow_start(workflow=workflow, patient=patient, data=ORDER, idempotency_key="k")
    again = workflow_start(workflow=workflow, patient=patient, data=ORDER, idempotency_key="k")
    assert again.run == first.run and again.event.pk == first.event.pk
    assert (first.created, again.created) == (True, False)
    assert Run.objects.count() == 1
    assert Event.objects.filter(type="order.shipped").count() == 1
    # another clinic may use the same key
    other = _workflow()
    assert workflow_start(
        workflow=other, patient=_patient(other), data=ORDER, idempotency_key="k"
    ).created


def test_a_key_used_to_start_another_workflow_is_refused() -> None:
    workflow = _workflow()
    other = _workflow(organization=workflow.organization)
    patient = _patient(workflow)
    workflow_start(workflow=workflow, patient=patient, data=ORDER, idempotency_key="k")
    with pytest.raises(ValidationError, match="already used to start another workflow"):
        workflow_start(workflow=other, patient=patient, data=ORDER, idempotency_key="k")
    assert not Run.objects.filter(workflow=other).exists()


def test_the_enrollment_rule_applies_and_its_skip_is_returned() -> None:
    workflow = _workflow(enrollment=Workflow.Enrollment.PATIENT)
    patient = _patient(workflow)
    first = workflow_start(workflow=workflow, patient=patient, data=ORDER, idempotency_key="1")
    second = workflow_start(workflow=workflow, patient=patient, data=ORDER, idempotency_key="2")
    assert first.started and not second.started
    assert second.skip is not None and second.skip.reason == EnrollmentSkip.Reason.PATIENT
    assert second.skip.detail.startswith("enrolled moments ago (run ")
    # the same key again: the same skip back
    again = workflow_start(workflow=workflow, patient=patient, data=ORDER, idempotency_key="2")
    assert (again.run, again.skip, again.created) == (None, second.skip, False)
    # another patient enrolls
    assert workflow_start(
        workflow=workflow, patient=_patient(workflow), data=ORDER, idempotency_key="3"
    ).started


def test_once_per_record_knows_the_patients_own_order() -> None:
    workflow = _workflow(enrollment=Workflow.Enrollment.RECORD)
    patient = _patient(workflow)
    order = OrderFactory(patient=patient, status=Order.Status.SHIPPED)
    data = {"order": {"id": str(order.uuid), "number": order.number}}
    first = workflow_start(workflow=workflow, patient=patient, data=data, idempotency_key="1")
    assert Event.objects.get(pk=first.event.pk).subject_id == str(order.pk)
    second = workflow_start(workflow=workflow, patient=patient, data=data, idempotency_key="2")
    assert second.skip is not None and second.skip.reason == EnrollmentSkip.Reason.RECORD
    # an order id that is not the patient's names no record: it enrolls
    stranger = OrderFactory(status=Order.Status.SHIPPED)
    data = {"order": {"id": str(stranger.uuid)}}
    third = workflow_start(workflow=workflow, patient=patient, data=data, idempotency_key="3")
    assert third.started and Event.objects.get(pk=third.event.pk).subject_id == ""


def test_a_custom_trigger_takes_data_checked_against_its_schema() -> None:
    custom = CustomEventTypeFactory()
    workflow = WorkflowFactory(organization=custom.organization, trigger=custom.type_name)
    patient = PatientFactory(organization=custom.organization)
    with pytest.raises(ValidationError) as raised:
        workflow_start(
            workflow=workflow, patient=patient, data={"data": {"kitId": 12}}, idempotency_key="k"
        )
    assert raised.value.messages == ["data.kitId: 12 is not of type 'string'"]
    with pytest.raises(ValidationError, match="'kitId' is a required property"):
        workflow_start(workflow=workflow, patient=patient, data={}, idempotency_key="k")
    result = workflow_start(
        workflow=workflow, patient=patient, data={"data": {"kitId": "K-1"}}, idempotency_key="k"
    )
    assert Event.objects.get(pk=result.event.pk).payload["data"] == {"kitId": "K-1"}


def _refused(workflow: Workflow, patient: Patient, data: Any, key: str = "k") -> list[str]:
    events = Event.objects.count()
    with pytest.raises(ValidationError) as raised:
        workflow_start(workflow=workflow, patient=patient, data=data, idempotency_key=key)
    assert Event.objects.count() == events and not Run.objects.exists()
    return raised.value.messages


def test_bad_data_is_refused_saying_where() -> None:
    workflow = _workflow()
    patient = _patient(workflow)
    assert _refused(workflow, patient, {**ORDER, "cart": {}}) == [
        "cart: not part of order.shipped (its keys: order, subscription)"
    ]
    assert _refused(workflow, patient, {**ORDER, "customer": {"id": "x"}}) == [
        "customer: leave it out; it is the patient's own data"
    ]
    assert _refused(workflow, patient, {"order": "A-1"}) == ["order: must be an object"]
    assert _refused(workflow, patient, {}) == ["order: required (The order.)"]
    assert _refused(workflow, patient, {"order": None}) == ["order: may not be null"]
    assert _refused(workflow, patient, ["order"]) == ["data must be an object."]
    (message,) = _refused(workflow, patient, {"order": {"number": "A\x00"}})
    assert message.startswith("data contains an invisible control character")
    # a nullable key may be null
    assert workflow_start(
        workflow=workflow,
        patient=patient,
        data={**ORDER, "subscription": None},
        idempotency_key="ok",
    ).started


def test_a_disabled_workflow_another_clinics_patient_and_a_blank_key_are_refused() -> None:
    workflow = _workflow()
    patient = _patient(workflow)
    assert _refused(workflow, PatientFactory(), ORDER) == [
        "This patient belongs to another clinic."
    ]
    assert _refused(workflow, patient, ORDER, key="  ") == ["An idempotency key is required."]
    workflow.enabled = False
    workflow.save()
    assert _refused(workflow, patient, ORDER) == [
        "This workflow is disabled; enable it before starting it."
    ]
