"""integrations.selectors: a run's messages for the engine's run page, and the send
decision's checks as the run page and the dry run show them."""

from typing import Any

import pytest

from integrations.models import OutboundMessage
from integrations.policy import SEND_CHECKS
from integrations.selectors import decision_checks, run_step_messages
from tests.factories import IntegrationFactory, PatientFactory, SmsStepFactory, WorkflowFactory
from workflows.models import Event, Run, StepRun


def test_no_decision_has_no_checks() -> None:
    assert decision_checks(None) == [] and decision_checks({}) == []


def test_an_allowed_decision_lists_only_its_checks() -> None:
    decision = {"allowed": True, "checks": [{"check": "consent", "ok": True, "detail": "ok"}]}
    assert decision_checks(decision) == [
        {"check": "consent", "ok": True, "detail": "ok", "state": "passed"}
    ]


def test_a_refusal_lists_the_checks_it_never_reached() -> None:
    decision = {
        "allowed": False,
        "checks": [
            {"check": "consent", "ok": True, "detail": "ok"},
            {"check": "opt-out", "ok": False, "detail": "opted out"},
        ],
    }
    checks = decision_checks(decision)
    assert [c["check"] for c in checks] == list(SEND_CHECKS)
    assert [c["state"] for c in checks] == ["passed", "failed"] + ["skipped"] * 5
    assert checks[-1]["detail"] == "not checked"


@pytest.mark.django_db
def test_a_runs_messages_by_step_run_with_their_explanations() -> None:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization)
    SmsStepFactory(workflow=workflow)
    event = Event.objects.create(
        organization=workflow.organization, type="order.shipped", payload={}, dedupe_key="x"
    )
    run = Run.objects.create(workflow=workflow, event=event, definition={"steps": []})
    step_run = StepRun.objects.create(run=run, index=0)
    patient = PatientFactory(organization=workflow.organization)
    fields: dict[str, Any] = {
        "organization": workflow.organization,
        "integration": integration,
        "patient": patient,
        "to": patient.phone,
        "from_number": "+15005550006",
        "body": "Hi",
        "step_run": step_run,
    }
    failed = OutboundMessage.objects.create(
        **fields,
        idempotency_key="a",
        status=OutboundMessage.Status.FAILED,
        error_code="21610",
        decision={"allowed": True, "checks": [], "at": "2026-01-05T19:00:00+00:00"},
    )
    unexplained = OutboundMessage.objects.create(
        **fields, idempotency_key="b", status=OutboundMessage.Status.FAILED, error_code="99999"
    )
    [first, second] = run_step_messages(run)[step_run.pk]
    assert first["message"] == failed and "STOP" in first["explanation"]
    assert first["provider"] == "Twilio"
    assert first["decided"] != "" and first["checks"] == []
    assert second["message"] == unexplained and second["explanation"] == ""
    other = WorkflowFactory(organization=workflow.organization)
    assert run_step_messages(Run.objects.create(workflow=other, event=event)) == {}
