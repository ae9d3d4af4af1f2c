"""integrations.twilio.adapter: the engine's hooks as Twilio answers them (set-up, senders,
previews, dry runs, error codes)."""

from datetime import UTC, datetime
from typing import Any

import pytest

from integrations.twilio.adapter import SEND_SMS, TwilioAdapter
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrganizationFactory,
    PatientFactory,
)

pytestmark = pytest.mark.django_db
TWILIO = TwilioAdapter()
# A Monday afternoon in the clinics' zone: outside quiet hours.
CLOCK = datetime(2026, 1, 5, 19, tzinfo=UTC)


def test_send_sms_names_its_sender_preview_and_channel() -> None:
    assert (SEND_SMS.sender_parameter, SEND_SMS.preview_parameter, SEND_SMS.channel) == (
        "from",
        "message",
        "sms",
    )


def test_setup_problem_until_the_clinic_has_an_enabled_integration() -> None:
    organization = OrganizationFactory()
    assert TWILIO.setup_problem(organization) == "this clinic has no enabled Twilio integration"
    integration = IntegrationFactory(organization=organization, enabled=False)
    assert TWILIO.setup_problem(organization) != ""
    integration.enabled = True
    integration.save()
    assert TWILIO.setup_problem(organization) == ""


def test_senders_are_the_enabled_integrations_numbers_by_clinic() -> None:
    sunrise = IntegrationFactory(senders=["+15005550006", "+14155550100"])
    IntegrationFactory(senders=["+14155550199"], enabled=False)
    dawn = IntegrationFactory(senders=[])
    assert TWILIO.senders([sunrise.organization_id, dawn.organization_id]) == {
        sunrise.organization_id: ["+15005550006", "+14155550100"],
        dawn.organization_id: [],
    }
    assert TWILIO.senders([]) == {}
    assert sunrise.organization_id in TWILIO.senders(None)


def test_error_explanations_are_twilios() -> None:
    assert "STOP" in TWILIO.error_explanation("21610")
    assert TWILIO.error_explanation("99999") == ""


def test_preview_is_the_sms_preview() -> None:
    preview = TWILIO.preview("sendSMS", "Hi")
    assert (preview["text"], preview["segments"], preview["encoding"]) == ("Hi", 1, "GSM-7")


def _dry_run(organization: Any, patient: Any, **inputs: str) -> Any:
    return TWILIO.dry_run(
        inputs.pop("function", "sendSMS"),
        organization=organization,
        patient=patient,
        inputs={"message": "Hi", "to": patient.phone, "from": "+15005550006", **inputs},
        purpose="transactional",
        urgent=False,
        clock=CLOCK,
    )


def test_dry_run_of_an_unknown_function_is_an_error() -> None:
    patient = PatientFactory()
    result = _dry_run(patient.organization, patient, function="sendFax")
    assert (result.outcome, result.detail) == ("error", "Twilio has no function 'sendFax'")


def test_dry_run_without_an_integration_is_an_error() -> None:
    patient = PatientFactory()
    result = _dry_run(patient.organization, patient)
    assert (result.outcome, result.detail) == (
        "error",
        "this clinic has no enabled Twilio integration",
    )


def test_dry_run_skips_a_number_that_cannot_be_texted_before_any_check() -> None:
    integration = IntegrationFactory()
    patient = PatientFactory(organization=integration.organization)
    result = _dry_run(integration.organization, patient, to="ann@example.com")
    assert result.outcome == "skip"
    assert result.detail == "would not send: To Phone “ann@example.com” is not a valid phone number"
    assert (result.preview, result.decision, result.checks) == (None, None, [])


def test_dry_run_lists_the_checks_never_reached_after_a_refusal() -> None:
    integration = IntegrationFactory()
    patient = PatientFactory(organization=integration.organization, phone="+14155550177")
    result = _dry_run(integration.organization, patient)
    assert result.outcome == "skip" and result.detail.startswith("would not send: ")
    assert result.preview is not None and result.preview["to"] == "+14155550177"
    assert result.decision is not None and result.decision["allowed"] is False
    states = [(check["check"], check["state"]) for check in result.checks]
    assert states[0] == ("consent", "failed")
    assert {state for _, state in states[1:]} == {"skipped"}


def test_dry_run_with_consent_would_send_and_every_check_passed() -> None:
    integration = IntegrationFactory()
    patient = PatientFactory(organization=integration.organization, phone="+14155550177")
    ConsentFactory(patient=patient, occurred_at=datetime(2025, 1, 1, tzinfo=UTC))
    result = _dry_run(integration.organization, patient)
    assert (result.outcome, result.detail) == ("send", "would send now")
    assert result.checks and {check["state"] for check in result.checks} == {"passed"}
