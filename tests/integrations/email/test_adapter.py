"""EmailAdapter: the sendEmail function's schema, address checks, execute() handing the core
an email message, and the builder/dry-run hooks."""

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from integrations import message_steps
from integrations.email import adapter as email_adapter
from integrations.email.account import EmailAccount
from integrations.email.adapter import (
    SEND_EMAIL,
    EmailAdapter,
    addresses_problem,
    email_problem,
    recipient_patient,
)
from integrations.models import Integration, OutboundMessage
from tests.factories import IntegrationFactory, OrganizationFactory, PatientFactory
from workflows.adapters import StepContext

SENDER = "clinic@example.com"
adapter = EmailAdapter()
Status = OutboundMessage.Status
needs_boundary = pytest.mark.skipif(
    not hasattr(OutboundMessage, "content"),
    reason="needs OutboundMessage.channel/content (issue 15's messaging core)",
)


def inputs(**overrides: str) -> dict[str, str]:
    return {
        "subject": "Your\nappointment  tomorrow",
        "body": "See you at 9.",
        "html": "<p>See you at 9.</p>",
        "to": "pat@example.org",
        "from": SENDER,
        **overrides,
    }


@pytest.fixture
def integration(monkeypatch: pytest.MonkeyPatch, db: None) -> Integration:
    found: Integration = IntegrationFactory(adapter="email")
    if hasattr(Integration, "senders"):  # the provider-neutral settings (issue 15, section 3)
        found.senders = [SENDER]  # type: ignore[attr-defined]
        found.secrets = json.dumps({"server_token": "t"})  # type: ignore[attr-defined]
        found.save()
    else:  # until they land, the account reader stands in
        account = EmailAccount(
            esp="postmark",
            server_token="t",
            webhook_auth="",
            message_stream="outbound",
            senders=(SENDER,),
            send_rate=None,
        )
        monkeypatch.setattr(email_adapter, "email_account", lambda integration: account)
    return found


def test_send_email_schema() -> None:
    assert (SEND_EMAIL.channel, SEND_EMAIL.preview_parameter, SEND_EMAIL.sender_parameter) == (
        "email",
        "body",
        "from",
    )
    assert not SEND_EMAIL.clinical_data_allowed
    assert "email" in SEND_EMAIL.clinical_data_note
    assert [p.name for p in SEND_EMAIL.parameters] == ["subject", "body", "html", "to", "from"]
    html = SEND_EMAIL.parameter("html")
    assert html is not None and not html.required
    to = SEND_EMAIL.parameter("to")
    assert to is not None and to.example == "{{customer.email}}" and to.check is email_problem
    assert adapter.functions == {"sendEmail": SEND_EMAIL}
    assert (adapter.name, adapter.label) == ("email", "Email")


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("pat@example.org", True),
        (" pat@example.org ", True),
        ("pat@localhost", False),
        ("not an address", False),
        ("", False),
        ("a" * 250 + "@example.org", False),
        ("a@b.c\nBcc: x@y.z", False),
    ],
)
def test_email_problem(value: str, ok: bool) -> None:
    assert (email_problem(value) == "") is ok


def test_addresses_problem() -> None:
    assert addresses_problem(inputs(), [SENDER]) == ""
    assert addresses_problem(inputs(), ["CLINIC@example.com"]) == ""
    assert "To “nope”" in addresses_problem(inputs(to="nope"), [SENDER])
    assert "From" in addresses_problem(inputs(**{"from": "x"}), [SENDER])
    assert "verified senders" in addresses_problem(inputs(), ["other@example.com"])
    long = addresses_problem(inputs(to="x" * 60), [SENDER])
    assert "…" in long and len(long) < 100


def test_preview_and_error_explanation() -> None:
    preview = adapter.preview("sendEmail", "Hi\nthere")
    assert preview == {"text": "Hi\nthere", "characters": 8, "lines": 2, "warnings": []}
    assert adapter.preview("sendEmail", " ")["warnings"] == ["the body is empty"]
    assert "inactive" in adapter.error_explanation("406")
    assert adapter.error_explanation("nope") == ""


@pytest.mark.django_db
def test_recipient_patient_by_email() -> None:
    organization = OrganizationFactory()
    customer = PatientFactory(organization=organization, email="Pat@Example.org")
    assert recipient_patient(organization, customer, "pat@example.org") == customer
    assert recipient_patient(organization, None, "pat@example.org") == customer
    PatientFactory(organization=organization, email="pat@example.org")
    assert recipient_patient(organization, None, "pat@example.org") is None


@pytest.mark.django_db
def test_setup_problem_and_senders(integration: Integration) -> None:
    assert adapter.setup_problem(integration.organization) == ""
    assert "no enabled email integration" in adapter.setup_problem(OrganizationFactory())
    assert adapter.senders([integration.organization_id]) == {integration.organization_id: [SENDER]}
    assert adapter.senders([]) == {}
    Integration.objects.filter(pk=integration.pk).update(enabled=False)
    assert adapter.senders(None) == {}


def context(integration: Integration, **overrides: Any) -> StepContext:
    return StepContext(
        organization=integration.organization,
        idempotency_key="run-1:step-1",
        inputs=overrides.pop("inputs", inputs()),
        purpose="transactional",
        **overrides,
    )


@pytest.mark.django_db
def test_execute_hands_the_core_an_email(
    integration: Integration, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = PatientFactory(organization=integration.organization, email="pat@example.org")
    calls: list[dict[str, Any]] = []

    def deliver(**fields: Any) -> OutboundMessage:
        calls.append(fields)
        return OutboundMessage(status=Status.SENT, provider_sid="abc")

    monkeypatch.setattr(message_steps, "message_prepare_and_deliver", deliver)
    outcome = adapter.execute(function="sendEmail", context=context(integration, patient=patient))
    assert outcome.status == "succeeded"
    [call] = calls
    assert call["channel"] == "email"
    assert call["content"] == {
        "subject": "Your appointment tomorrow",
        "html": "<p>See you at 9.</p>",
    }
    assert (call["to"], call["from_number"], call["body"]) == (
        "pat@example.org",
        SENDER,
        "See you at 9.",
    )
    assert call["patient"] == patient
    assert call["integration"] == integration
    assert call["first_attempt"] is True


@pytest.mark.django_db
def test_execute_skips_bad_addresses_and_fails_without_integration(
    integration: Integration, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        message_steps, "message_prepare_and_deliver", lambda **f: pytest.fail("sent")
    )
    skipped = adapter.execute(
        function="sendEmail", context=context(integration, inputs=inputs(to="{{oops}}"))
    )
    assert (skipped.status, skipped.reason) == (
        "skipped",
        "To “{{oops}}” is not a valid email address",
    )
    unverified = adapter.execute(
        function="sendEmail",
        context=context(integration, inputs=inputs(**{"from": "x@example.com"})),
    )
    assert unverified.status == "skipped"
    assert adapter.execute(function="sendSMS", context=context(integration)).status == "failed"
    other = StepContext(
        organization=OrganizationFactory(), idempotency_key="k", inputs=inputs(), purpose="x"
    )
    failed = adapter.execute(function="sendEmail", context=other)
    assert (failed.status, failed.reason) == (
        "failed",
        "this clinic has no enabled email integration",
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (Status.DELIVERED, "succeeded"),
        (Status.SKIPPED, "skipped"),
        (Status.FAILED, "failed"),
        (Status.UNDELIVERED, "failed"),
        (Status.UNKNOWN, "retry"),
        (Status.PENDING, "retry"),
    ],
)
def test_outcomes(status: str, expected: str) -> None:
    message = OutboundMessage(status=status, error_code="406", error_message="inactive")
    assert email_adapter._outcome(message).status == expected


CLOCK = datetime(2026, 12, 6, 15, 0, tzinfo=UTC)


@pytest.mark.django_db
def test_dry_run_error_and_skip(integration: Integration) -> None:
    patient = PatientFactory(organization=integration.organization, email="pat@example.org")
    kwargs: dict[str, Any] = {"purpose": "transactional", "urgent": False, "clock": CLOCK}
    missing = adapter.dry_run(
        "sendEmail", organization=OrganizationFactory(), patient=patient, inputs=inputs(), **kwargs
    )
    assert (missing.outcome, missing.detail) == (
        "error",
        "this clinic has no enabled email integration",
    )
    skipped = adapter.dry_run(
        "sendEmail",
        organization=integration.organization,
        patient=patient,
        inputs=inputs(to="x"),
        **kwargs,
    )
    assert skipped.outcome == "skip"
    assert skipped.detail.startswith("would not send: To")


@needs_boundary
@pytest.mark.django_db
def test_dry_run_decides_like_a_send(integration: Integration) -> None:
    patient = PatientFactory(organization=integration.organization, email="pat@example.org")
    result = adapter.dry_run(
        "sendEmail",
        organization=integration.organization,
        patient=patient,
        inputs=inputs(subject="x" * 90),
        purpose="transactional",
        urgent=False,
        clock=CLOCK,
    )
    assert result.outcome in ("send", "skip", "defer")
    assert result.preview is not None
    assert result.preview["subject"] == "x" * 90
    assert any("78" in warning for warning in result.preview["warnings"])
    assert result.decision is not None
    # the decision's checks in policy order, as the dry-run page lists them
    assert [c["check"] for c in result.checks][:1] == ["consent"]
    assert {c["state"] for c in result.checks} <= {"passed", "failed", "skipped"}
