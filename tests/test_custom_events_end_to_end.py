"""Custom events and direct starts end to end: a clinic's custom event (or a start of one
workflow) → the outbox → Redis → a real Celery worker → the engine → twilio-python over HTTP →
the loopback sandbox. Exactly one text, with the event's data in it; a second workflow on the
same trigger is not started by a direct start."""

from typing import Any

import pytest

from integrations.models import Integration, OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import Patient
from tests.conftest import sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    CustomEventTypeFactory,
    IntegrationFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.custom_events import custom_event_record
from workflows.models import CustomEventType, Run, Workflow
from workflows.starts import workflow_start

pytestmark = pytest.mark.integration
Status = OutboundMessage.Status
KIT_TEXT = "Hi {{customer.firstName}}, kit {{data.kitId}} is in"


@pytest.fixture
def clinic(worker: Any, sandbox: SandboxServer) -> Integration:
    return sandbox_account(sandbox, IntegrationFactory())


def _custom_workflow(integration: Integration) -> tuple[CustomEventType, Workflow]:
    custom = CustomEventTypeFactory(organization=integration.organization)
    workflow = WorkflowFactory(organization=integration.organization, trigger=custom.type_name)
    SmsStepFactory(workflow=workflow, parameters={**_sms_parameters(), "message": KIT_TEXT})
    return custom, workflow


def _sms_parameters() -> dict[str, str]:
    return {"to": "{{customer.phone}}", "from": "+15005550006"}


def _patient(integration: Integration) -> Patient:
    patient = PatientFactory(
        organization=integration.organization, first_name="Ann", phone="+14155550123"
    )
    ConsentFactory(patient=patient)
    return patient


def test_a_custom_event_texts_its_data_exactly_once(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    custom, workflow = _custom_workflow(clinic)
    patient = _patient(clinic)
    for _ in range(2):  # the caller retries with the same key
        custom_event_record(
            organization=clinic.organization,
            type_name=custom.type_name,
            patient=patient,
            data={"kitId": "KIT-2291"},
            idempotency_key="lab-42",
        )
    wait_for(
        lambda: OutboundMessage.objects.filter(status=Status.DELIVERED).exists(),
        timeout=30,
        what="the delivered text",
    )
    assert [(m["to"], m["body"]) for m in sandbox.messages()] == [
        ("+14155550123", "Hi Ann, kit KIT-2291 is in")
    ]
    run = wait_for(
        lambda: Run.objects.filter(workflow=workflow, status=Run.Status.SUCCEEDED).first(),
        what="the run to succeed",
    )
    assert Run.objects.count() == 1 and run.workflow_id == workflow.pk


def test_a_direct_start_texts_once_and_starts_no_other_workflow(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _, workflow = _custom_workflow(clinic)
    sibling = WorkflowFactory(organization=clinic.organization, trigger=workflow.trigger)
    SmsStepFactory(workflow=sibling, parameters={**_sms_parameters(), "message": "sibling"})
    patient = _patient(clinic)
    result = workflow_start(
        workflow=workflow, patient=patient, data={"data": {"kitId": "K-7"}}, idempotency_key="s-1"
    )
    assert result.run is not None
    run = wait_for(
        lambda: Run.objects.filter(pk=result.run.pk, status=Run.Status.SUCCEEDED).first(),
        timeout=30,
        what="the started run to succeed",
    )
    wait_for(
        lambda: OutboundMessage.objects.filter(status=Status.DELIVERED).exists(),
        what="the delivered text",
    )
    assert [m["body"] for m in sandbox.messages()] == ["Hi Ann, kit K-7 is in"]
    assert not Run.objects.filter(workflow=sibling).exists()
    assert run.workflow_id == workflow.pk
