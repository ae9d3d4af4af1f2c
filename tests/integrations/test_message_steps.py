"""integrations.message_steps: what every messaging adapter's step shares (the memoised
integration and batch acceptances, the message's Outcome, the dry run's decision)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from integrations import message_steps
from integrations.message_steps import (
    message_dry_run,
    message_step_outcome,
    step_accepted,
    step_deliver,
    step_integration,
)
from integrations.models import Integration, OutboundMessage
from integrations.sending import MessagesAccepted
from patients.models import Organization, Patient
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrganizationFactory,
    PatientFactory,
)
from workflows.adapters import StepContext

Status = OutboundMessage.Status
CLOCK = datetime(2026, 1, 5, 19, tzinfo=UTC)
QUEUED = "queued: waiting for the sender's turn"


def _context(organization: Organization, **overrides: Any) -> StepContext:
    fields: dict[str, Any] = {
        "organization": organization,
        "idempotency_key": "run-1:step-1",
        "inputs": {},
        "purpose": "transactional",
        **overrides,
    }
    return StepContext(**fields)


def _outcome(message: OutboundMessage, **overrides: Any) -> Any:
    fields: dict[str, Any] = {"provider_label": "Acme", "result": {"provider_id": "p-1"}}
    return message_step_outcome(message, **{**fields, **overrides})


@pytest.mark.django_db
def test_step_integration_is_looked_up_once_per_organization_in_a_batch() -> None:
    organization = OrganizationFactory()
    other = OrganizationFactory()
    memo: dict[Any, Any] = {}
    looked_up: list[Organization] = []

    def lookup(found: Organization) -> Integration | None:
        looked_up.append(found)
        return None

    for clinic in (organization, organization, other):
        assert step_integration(_context(clinic, memo=memo), adapter="acme", lookup=lookup) is None
    # A clinic without an integration is remembered too: None is not looked up again.
    assert looked_up == [organization, other]
    assert memo[("acme-integration", organization.pk)] is None


def test_step_accepted_is_one_record_per_batch_and_none_outside_a_batch() -> None:
    organization = Organization(pk=1)
    assert step_accepted(_context(organization), adapter="acme") is None
    memo: dict[Any, Any] = {}
    at_batch_end: list[Any] = []
    first = step_accepted(
        _context(organization, memo=memo, at_batch_end=at_batch_end), adapter="acme"
    )
    again = step_accepted(
        _context(organization, memo=memo, at_batch_end=at_batch_end), adapter="acme"
    )
    other = step_accepted(
        _context(organization, memo=memo, at_batch_end=at_batch_end), adapter="beta"
    )
    assert isinstance(first, MessagesAccepted) and again is first and other is not first
    assert at_batch_end == [first.write, other.write]


@pytest.mark.django_db
def test_step_deliver_hands_the_core_the_runs_fields_and_the_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    integration = IntegrationFactory()
    calls: list[dict[str, Any]] = []

    def deliver(**fields: Any) -> OutboundMessage:
        calls.append(fields)
        return OutboundMessage(status=Status.SENT)

    monkeypatch.setattr(message_steps, "message_prepare_and_deliver", deliver)
    context = _context(
        integration.organization,
        attempt=2,
        step_run_id=7,
        workflow_id=3,
        step_index=1,
        is_test=True,
        urgent=True,
    )
    step_deliver(context, integration=integration, accepted=None, to="+14155550177", body="Hi")
    assert calls == [
        {
            "accepted": None,
            "organization": integration.organization,
            "integration": integration,
            "idempotency_key": "run-1:step-1",
            "first_attempt": False,
            "purpose": "transactional",
            "step_run_id": 7,
            "workflow_id": 3,
            "step_index": 1,
            "is_test": True,
            "urgent": True,
            "language": "",
            "to": "+14155550177",
            "body": "Hi",
        }
    ]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.SENT, "succeeded"),
        (Status.DELIVERED, "succeeded"),
        (Status.SKIPPED, "skipped"),
        (Status.FAILED, "failed"),
        (Status.UNDELIVERED, "failed"),
        (Status.PENDING, "retry"),
        (Status.UNKNOWN, "retry"),
    ],
)
def test_outcome_by_status_carries_the_message_and_the_providers_fields(
    status: str, expected: str
) -> None:
    outcome = _outcome(OutboundMessage(pk=3, status=status))
    assert outcome.status == expected
    assert outcome.result == {"message_id": 3, "status": status, "provider_id": "p-1"}


def test_a_failure_names_the_provider() -> None:
    message = OutboundMessage(status=Status.FAILED, error_code="21211", error_message="bad To")
    assert _outcome(message).reason == "Acme error 21211: bad To"
    assert _outcome(OutboundMessage(status=Status.FAILED)).reason == "Acme error :"


def test_a_skip_says_why() -> None:
    message = OutboundMessage(status=Status.SKIPPED, skip_reason="no consent")
    assert _outcome(message).reason == "no consent"


def test_a_retry_says_what_it_waits_for() -> None:
    slot = CLOCK + timedelta(seconds=2)
    queued = OutboundMessage(status=Status.PENDING, slot_at=slot, next_attempt_at=slot)
    assert _outcome(queued, queued_reason=QUEUED).reason == QUEUED
    assert _outcome(queued, queued_reason=QUEUED).retry_at == slot
    # Without the provider's wording a throttled message is just in progress.
    assert _outcome(queued).reason == "send in progress"
    deferred = OutboundMessage(
        status=Status.PENDING,
        slot_at=slot,
        next_attempt_at=CLOCK + timedelta(hours=9),
        decision={"defer_until": "2026-01-06T08:00:00+00:00", "reason": "quiet hours"},
    )
    assert _outcome(deferred, queued_reason=QUEUED).reason == "waiting: quiet hours"
    failed_once = OutboundMessage(status=Status.PENDING, error_code="20429", error_message="busy")
    assert _outcome(failed_once).reason == "retrying after error 20429: busy"


def _message(integration: Integration, patient: Patient) -> OutboundMessage:
    return OutboundMessage(
        organization=integration.organization,
        integration=integration,
        patient=patient,
        to=patient.phone,
        from_number="+15005550006",
        body="Hi",
        purpose="transactional",
    )


@pytest.mark.django_db
def test_dry_run_without_consent_would_not_send_and_lists_every_check() -> None:
    integration = IntegrationFactory()
    patient = PatientFactory(organization=integration.organization, phone="+14155550177")
    message = _message(integration, patient)
    result = message_dry_run(message, clock=CLOCK, preview={"body": "Hi"})
    assert result.outcome == "skip" and result.detail.startswith("would not send: ")
    assert result.preview == {"body": "Hi"}
    assert result.decision is not None and result.decision["allowed"] is False
    assert result.checks[0]["check"] == "consent" and result.checks[0]["state"] == "failed"
    assert OutboundMessage.objects.count() == 0  # nothing saved


@pytest.mark.django_db
def test_dry_run_with_consent_would_send_now() -> None:
    integration = IntegrationFactory()
    patient = PatientFactory(organization=integration.organization, phone="+14155550177")
    ConsentFactory(patient=patient, occurred_at=datetime(2025, 1, 1, tzinfo=UTC))
    message = _message(integration, patient)
    result = message_dry_run(message, clock=CLOCK, preview={})
    assert (result.outcome, result.detail) == ("send", "would send now")
    assert result.checks and {check["state"] for check in result.checks} == {"passed"}
