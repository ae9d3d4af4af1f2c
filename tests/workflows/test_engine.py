"""The engine in-process, talking to the sandbox over HTTP (no worker needed here)."""

from typing import Any

import pytest

from integrations.models import OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord, Order
from tests.conftest import sandbox_account
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, Run, StepRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic(sandbox: SandboxServer) -> dict[str, Any]:
    integration = sandbox_account(sandbox, IntegrationFactory())
    org = integration.organization
    workflow = WorkflowFactory(organization=org, trigger="order.shipped")
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=org, first_name="Ann", phone="+14155550123")
    return {"org": org, "integration": integration, "workflow": workflow, "patient": patient}


def _ship(patient: Any) -> Event:
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT, number="7001")
    order.status = Order.Status.SHIPPED
    order.save()
    return Event.objects.get(type="order.shipped", subject_id=str(order.pk))


def test_shipped_order_sends_one_sms_with_right_to_from_body(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    event = _ship(clinic["patient"])
    (run_id,) = event_dispatch(event_id=event.pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.SUCCEEDED
    received = sandbox.messages()
    assert [(m["to"], m["from"], m["body"]) for m in received] == [
        ("+14155550123", "+15005550006", "Hi Ann, order 7001 has shipped!")
    ]
    message = OutboundMessage.objects.get()
    assert message.status == OutboundMessage.Status.SENT
    assert message.provider_sid == received[0]["sid"]
    assert message.segments == 1 and message.encoding == "GSM-7"
    assert message.consent_record is not None
    step_run = StepRun.objects.get(run_id=run_id)
    assert step_run.inputs["to"] == "+14155550123"
    assert step_run.result["sid"] == received[0]["sid"]


def test_dispatching_the_same_event_twice_makes_one_run(clinic: dict[str, Any]) -> None:
    event = _ship(clinic["patient"])
    assert len(event_dispatch(event_id=event.pk)) == 1
    assert event_dispatch(event_id=event.pk) == []
    assert Run.objects.filter(event=event).count() == 1
    event.refresh_from_db()
    assert event.dispatched_at is not None


def test_advancing_a_finished_run_again_sends_nothing_more(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run_advance(run_id=run_id)
    assert run_advance(run_id=run_id) is None  # not claimable: already finished
    assert len(sandbox.messages()) == 1


def test_no_consent_skips_with_the_reason_recorded(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.SKIPPED
    step_run = StepRun.objects.get(run_id=run_id)
    assert (step_run.status, step_run.skip_reason) == (StepRun.Status.SKIPPED, "no SMS consent")
    message = OutboundMessage.objects.get()
    assert (message.status, message.skip_reason) == (
        OutboundMessage.Status.SKIPPED,
        "no SMS consent",
    )
    assert sandbox.messages() == []


def test_marketing_step_needs_marketing_consent(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"], purpose=ConsentRecord.Purpose.TRANSACTIONAL)
    clinic["workflow"].steps.update(purpose=ConsentRecord.Purpose.MARKETING)
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run_advance(run_id=run_id)
    assert OutboundMessage.objects.get().skip_reason == "no SMS consent"
    assert sandbox.messages() == []


def test_disabled_or_other_trigger_or_filtered_workflows_do_not_run(clinic: dict[str, Any]) -> None:
    org = clinic["org"]
    WorkflowFactory(organization=org, trigger="order.shipped", enabled=False)
    WorkflowFactory(organization=org, trigger="order.created")
    WorkflowFactory(organization=org, trigger="order.shipped", filter={"order.number": "other"})
    matching = WorkflowFactory(
        organization=org, trigger="order.shipped", filter={"order.number": "7001"}
    )
    WorkflowFactory(trigger="order.shipped")  # another clinic's
    event = _ship(clinic["patient"])
    runs = Run.objects.filter(pk__in=event_dispatch(event_id=event.pk))
    assert {r.workflow_id for r in runs} == {clinic["workflow"].pk, matching.pk}


def test_unapproved_sender_is_skipped(clinic: dict[str, Any], sandbox: SandboxServer) -> None:
    ConsentFactory(patient=clinic["patient"])
    step = clinic["workflow"].steps.get()
    step.parameters = {**step.parameters, "from": "+14155550000"}
    step.save()
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run_advance(run_id=run_id)
    message = OutboundMessage.objects.get()
    assert message.skip_reason == "sender +14155550000 is not an approved number for this clinic"
    assert sandbox.messages() == []


def test_invalid_recipient_is_skipped(clinic: dict[str, Any], sandbox: SandboxServer) -> None:
    ConsentFactory(patient=clinic["patient"])
    step = clinic["workflow"].steps.get()
    step.parameters = {**step.parameters, "to": "+1555"}
    step.save()
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run_advance(run_id=run_id)
    # +1555 is not the customer's number, so no patient with consent is the recipient
    assert OutboundMessage.objects.get().status == OutboundMessage.Status.SKIPPED
    assert sandbox.messages() == []


def test_template_error_fails_the_step_and_sends_nothing(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    step = clinic["workflow"].steps.get()
    step.parameters = {**step.parameters, "message": "Hi {{customer.nickname}}"}
    step.save()
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.FAILED
    assert "customer.nickname is not in this event's data" in run.error
    assert not OutboundMessage.objects.exists()
    assert sandbox.messages() == []


def test_runs_pin_the_definition_they_started_with(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    step = clinic["workflow"].steps.get()
    step.parameters = {**step.parameters, "message": "edited after the run started"}
    step.save()
    run_advance(run_id=run_id)
    assert sandbox.messages()[0]["body"] == "Hi Ann, order 7001 has shipped!"
