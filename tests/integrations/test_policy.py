"""The send-time policy, check by check, in its order."""

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from django.utils import timezone

from integrations.messaging import TRANSPORTS, transport_register
from integrations.models import MessagingPolicy, OutboundMessage
from integrations.policy import SEND_CHECKS, messaging_policy_forget, send_decide
from patients.models import ConsentRecord
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory
from tests.integrations.fake_transport import ADAPTER, FakeTransport

pytestmark = pytest.mark.django_db
NOON_NY = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)


@pytest.fixture
def make() -> Any:
    integration = IntegrationFactory()

    def message(
        patient: Any = None, purpose: str = "transactional", **fields: Any
    ) -> OutboundMessage:
        patient = patient or PatientFactory(
            organization=integration.organization, phone="+12125550123", timezone="America/New_York"
        )
        defaults = {
            "to": patient.phone if patient else "+12125550123",
            "from_number": "+15005550006",
            "body": "hi",
        }
        return OutboundMessage(
            organization=integration.organization,
            integration=integration,
            patient=patient,
            purpose=purpose,
            idempotency_key=str(fields),
            **{**defaults, **fields},
        )

    message.integration = integration  # type: ignore[attr-defined]
    return message


def _checks(decision: Any) -> list[tuple[str, bool]]:
    return [(c["check"], c["ok"]) for c in decision.checks]


def test_all_checks_pass_in_order_and_the_consent_is_recorded(make: Any) -> None:
    message = make()
    consent = ConsentFactory(patient=message.patient)
    decision = send_decide(message=message, now=NOON_NY)
    assert decision.allowed and decision.consent_record == consent
    assert _checks(decision) == [
        ("consent", True),
        ("opt-out", True),
        ("frequency cap", True),
        ("quiet hours", True),
        ("sender", True),
        ("recipient", True),
    ]
    assert [name for name, _ in _checks(decision)] == list(SEND_CHECKS)  # what dry runs list
    record = decision.as_dict(NOON_NY)
    assert record["consent_record_id"] == consent.pk and record["allowed"] is True


def test_marketing_needs_express_written_consent(make: Any) -> None:
    message = make(purpose="marketing")
    ConsentFactory(patient=message.patient, purpose="transactional")
    assert send_decide(message=message, now=NOON_NY).reason == "no SMS consent"
    ConsentFactory(patient=message.patient, purpose="marketing", consent_text="")
    assert "express written consent" in send_decide(message=message, now=NOON_NY).reason
    ConsentFactory(
        patient=message.patient,
        purpose="marketing",
        consent_text="Yes, send me offers. Reply STOP to opt out.",
    )
    assert send_decide(message=message, now=NOON_NY).allowed


def test_a_marketing_opt_out_does_not_stop_care_texts_but_stop_does(make: Any) -> None:
    message = make()
    ConsentFactory(patient=message.patient, occurred_at=NOON_NY - timedelta(days=2))
    ConsentFactory(
        patient=message.patient,
        purpose="marketing",
        action="opt_out",
        source="patient_portal",
        occurred_at=NOON_NY - timedelta(days=1),
    )
    assert send_decide(message=message, now=NOON_NY).allowed
    # a STOP recorded (say) only under marketing still stops everything
    ConsentFactory(
        patient=message.patient,
        purpose="marketing",
        action="opt_out",
        source="inbound_keyword",
        occurred_at=NOON_NY - timedelta(hours=1),
    )
    decision = send_decide(message=message, now=NOON_NY)
    assert decision.reason.startswith("opted out of marketing SMS on")
    assert _checks(decision)[-1] == ("opt-out", False)


def test_frequency_caps_per_purpose_per_day_and_week(make: Any) -> None:
    message = make()
    ConsentFactory(patient=message.patient)
    MessagingPolicy.objects.filter(organization=message.organization).update(
        transactional_per_day=2, transactional_per_week=3
    )
    for hours_ago in (1, 2):
        OutboundMessage.objects.create(
            organization=message.organization,
            integration=message.integration,
            patient=message.patient,
            purpose="transactional",
            to=message.to,
            body="x",
            idempotency_key=f"old{hours_ago}",
            status="delivered",
            sending_started_at=NOON_NY - timedelta(hours=hours_ago),
        )
    decision = send_decide(message=message, now=NOON_NY)
    assert (
        decision.reason == "frequency cap: at most 2 transactional text(s) per day for this patient"
    )
    later = NOON_NY + timedelta(days=1, hours=1)
    assert send_decide(message=message, now=later).allowed  # the day rolled over
    OutboundMessage.objects.create(
        organization=message.organization,
        integration=message.integration,
        patient=message.patient,
        purpose="transactional",
        to=message.to,
        body="x",
        idempotency_key="old3",
        status="sent",
        sending_started_at=NOON_NY - timedelta(days=3),
    )
    assert "per week" in send_decide(message=message, now=later).reason
    assert (
        send_decide(message=make(patient=message.patient, purpose="marketing"), now=later).reason
        == "no SMS consent"
    )  # caps are per purpose


def test_florida_recipients_get_at_most_three_a_day(make: Any) -> None:
    patient = PatientFactory(
        organization=make.integration.organization,
        phone="+13055550123",
        province_code="FL",
        timezone="America/New_York",
    )
    ConsentFactory(patient=patient)
    for n in range(3):
        OutboundMessage.objects.create(
            organization=patient.organization,
            integration=make.integration,
            patient=patient,
            purpose="transactional",
            to=patient.phone,
            body="x",
            idempotency_key=f"fl{n}",
            status="sent",
            sending_started_at=NOON_NY - timedelta(hours=n + 1),
        )
    decision = send_decide(message=make(patient=patient), now=NOON_NY)
    assert decision.reason == "frequency cap: at most 3 texts in 24 hours for recipients in FL"


def test_quiet_hours_defer_never_refuse_and_urgent_bypasses(make: Any) -> None:
    message = make()
    ConsentFactory(patient=message.patient)
    MessagingPolicy.objects.filter(organization=message.organization).update(
        quiet_hours_start=time(8, 0), quiet_hours_end=time(21, 0)
    )
    eleven_pm_ny = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)
    decision = send_decide(message=message, now=eleven_pm_ny)
    assert not decision.allowed
    assert decision.defer_until == datetime(2026, 6, 2, 12, 0, tzinfo=UTC)  # 08:00 EDT
    assert "quiet hours (08:00–21:00 in America/New_York" in decision.reason
    message.urgent = True
    urgent = send_decide(message=message, now=eleven_pm_ny)
    assert urgent.allowed
    assert ("quiet hours", True) in _checks(urgent)
    assert "bypassed: urgent transactional step" in str(urgent.checks)


def test_florida_window_ends_at_20(make: Any) -> None:
    patient = PatientFactory(
        organization=make.integration.organization,
        phone="+13055550199",
        province_code="FL",
        timezone="America/New_York",
    )
    ConsentFactory(patient=patient)
    MessagingPolicy.objects.filter(organization=patient.organization).update(
        quiet_hours_start=time(8, 0), quiet_hours_end=time(21, 0)
    )
    half_past_eight_pm = datetime(2026, 6, 2, 0, 30, tzinfo=UTC)
    assert (
        send_decide(message=make(patient=patient), now=half_past_eight_pm).defer_until is not None
    )


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"from_number": "+14155550000"}, "sender +14155550000 is not an approved number"),
        ({"from_number": ""}, "no sender: the message has no From number"),
        ({"to": "12"}, "recipient '12' is not a valid phone number"),
    ],
)
def test_sender_and_recipient(make: Any, fields: dict[str, str], reason: str) -> None:
    message = make(**fields)
    ConsentFactory(patient=message.patient)
    assert send_decide(message=message, now=NOON_NY).reason.startswith(reason)


def test_disabled_integration_and_test_messages(make: Any) -> None:
    message = make()
    ConsentFactory(patient=message.patient)
    message.is_test = True
    assert (
        send_decide(message=message, now=NOON_NY).reason == "test messages only go to test patients"
    )
    message.integration.enabled = False
    assert "integration is disabled" in send_decide(message=message, now=NOON_NY).reason


def test_unknown_recipient_is_refused(make: Any) -> None:
    message = make()
    message.patient = None
    assert send_decide(message=message, now=timezone.now()).reason == (
        "recipient is not a patient of this clinic"
    )
    assert ConsentRecord.objects.count() == 0


def test_consent_and_caps_are_per_channel(make: Any) -> None:
    """An email needs email consent, and the patient's texts do not use up its cap."""

    transport_register(ADAPTER, FakeTransport())
    try:
        text = make()
        ConsentFactory(patient=text.patient)  # SMS consent
        email = make(patient=text.patient, to="pat@example.com", channel="email")
        email.integration = IntegrationFactory(adapter=ADAPTER, name="Letters")
        refused = send_decide(message=email, now=NOON_NY)
        assert not refused.allowed and _checks(refused) == [("consent", False)]
        ConsentFactory(patient=text.patient, channel="email")
        assert send_decide(message=email, now=NOON_NY).allowed
        MessagingPolicy.objects.filter(organization=text.organization).update(
            transactional_per_day=1
        )
        messaging_policy_forget()  # read above, before the cap was set
        OutboundMessage.objects.create(
            organization=text.organization,
            integration=text.integration,
            patient=text.patient,
            purpose="transactional",
            to=text.to,
            body="x",
            idempotency_key="sms-sent",
            status="delivered",
            sending_started_at=NOON_NY - timedelta(hours=1),
        )
        assert send_decide(message=email, now=NOON_NY).allowed  # a text: not this channel's
        assert not send_decide(message=text, now=NOON_NY).allowed  # but the SMS cap is used
        OutboundMessage.objects.create(
            organization=text.organization,
            integration=email.integration,
            patient=text.patient,
            purpose="transactional",
            channel="email",
            to=email.to,
            body="x",
            idempotency_key="email-sent",
            status="delivered",
            sending_started_at=NOON_NY - timedelta(hours=1),
        )
        assert "frequency cap" in send_decide(message=email, now=NOON_NY).reason
    finally:
        del TRANSPORTS[ADAPTER]
