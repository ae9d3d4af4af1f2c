"""The send-time policy, check by check, in its order."""

from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from django.utils import timezone

from integrations import policy as policy_module
from integrations.messaging import TRANSPORTS, transport_register
from integrations.models import MessagingPolicy, OutboundMessage
from integrations.policy import (
    SEND_CHECKS,
    messaging_policy,
    messaging_policy_forget,
    send_decide,
    send_needs_lock,
)
from patients.models import ConsentRecord
from tests.factories import ConsentFactory, IntegrationFactory, OrganizationFactory, PatientFactory
from tests.integrations.fake_transport import ADAPTER, FakeTransport
from workflows.adapters import adapter_get

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
        ("smart sending", True),
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


def test_sends_under_no_cap_are_not_counted(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting a patient's earlier messages is built only for a cap that applies: building
    the query cost more than every other check of a send, and most sends are under no cap."""
    message = make()
    ConsentFactory(patient=message.patient)
    counted: list[dict[str, Any]] = []
    filter_ = OutboundMessage.objects.filter

    def spy(*args: Any, **kwargs: Any) -> Any:
        counted.append(kwargs)
        return filter_(*args, **kwargs)

    monkeypatch.setattr(OutboundMessage.objects, "filter", spy)
    assert send_decide(message=message, now=NOON_NY).allowed
    assert counted == []
    MessagingPolicy.objects.filter(organization=message.organization).update(
        transactional_per_week=5
    )
    messaging_policy_forget()
    assert send_decide(message=message, now=NOON_NY).allowed
    assert [kwargs["patient"] for kwargs in counted] == [message.patient]


def test_the_next_send_after_a_policy_edit_goes_by_the_new_rules(make: Any) -> None:
    """The policy a process keeps for a few seconds is dropped when it is saved, and the
    channel's own rules are judged afresh: no send after an edit goes by the old rules."""
    message = make()
    ConsentFactory(patient=message.patient)
    assert send_decide(message=message, now=NOON_NY).allowed  # the policy is now kept
    policy = MessagingPolicy.objects.get(organization=message.organization)
    policy.channel_rules = {
        "sms": {
            "quiet_hours": True,
            "transactional_per_day": 0,
            "transactional_per_week": None,
            "marketing_per_day": None,
            "marketing_per_week": None,
        }
    }
    policy.save()
    refused = send_decide(message=message, now=NOON_NY)
    assert refused.reason == (
        "frequency cap: at most 0 transactional text(s) per day for this patient "
        "(the clinic's sms rules)"
    )
    policy.channel_rules = {}
    policy.save()
    decision = send_decide(message=message, now=NOON_NY)
    assert decision.allowed and decision.rules == "the clinic's default rules"


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
    assert {
        "check": "quiet hours",
        "ok": True,
        "detail": "bypassed: urgent transactional step",
    } in urgent.checks


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
        assert refused.reason == "no email consent"  # not the patient's SMS consent
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


# --- rules per channel -------------------------------------------------------------------

ELEVEN_PM_NY = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)
EMAIL_RULES = {
    "quiet_hours": False,
    "transactional_per_day": None,
    "transactional_per_week": None,
    "marketing_per_day": None,
    "marketing_per_week": 2,
}


@pytest.fixture
def email_channel(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An email-like transport the rules for texts and calls do not bind (as email's own
    transport says), registered for the test."""
    transport = FakeTransport()
    transport.phone_rules = False
    for registered in list(TRANSPORTS.values()):
        if registered.channel == "email":
            monkeypatch.setattr(registered, "phone_rules", False)
    transport_register(ADAPTER, transport)
    yield transport
    del TRANSPORTS[ADAPTER]


def _policy(organization: Any, **fields: Any) -> None:
    MessagingPolicy.objects.filter(organization=organization).update(
        quiet_hours_start=time(8, 0), quiet_hours_end=time(21, 0), **fields
    )
    messaging_policy_forget()


def _email(make: Any, patient: Any = None, purpose: str = "transactional") -> OutboundMessage:
    text = make(patient=patient, purpose=purpose)
    email = make(patient=text.patient, purpose=purpose, to="pat@example.com", channel="email")
    email.integration = IntegrationFactory(
        organization=text.organization, adapter=ADAPTER, name="Letters"
    )
    ConsentFactory(patient=text.patient)
    ConsentFactory(patient=text.patient, channel="email")
    return email


def _sent(message: OutboundMessage, key: str, hours_ago: float) -> None:
    OutboundMessage.objects.create(
        organization=message.organization,
        integration=message.integration,
        patient=message.patient,
        purpose=message.purpose,
        channel=message.channel,
        to=message.to,
        body="x",
        idempotency_key=key,
        status="delivered",
        sending_started_at=NOON_NY - timedelta(hours=hours_ago),
    )


def test_an_email_goes_at_23_when_its_quiet_hours_are_off_and_a_text_still_waits(
    make: Any, email_channel: Any
) -> None:
    email = _email(make)
    _policy(email.organization, channel_rules={"email": EMAIL_RULES})
    decision = send_decide(message=email, now=ELEVEN_PM_NY)
    assert decision.allowed
    assert "off for email (the clinic's email rules)" in str(decision.checks)
    assert decision.as_dict(ELEVEN_PM_NY)["rules"] == "the clinic's email rules"

    text = make(patient=email.patient)
    deferred = send_decide(message=text, now=ELEVEN_PM_NY)
    assert deferred.defer_until == datetime(2026, 6, 2, 12, 0, tzinfo=UTC)  # 08:00 EDT
    assert deferred.rules == "the clinic's default rules"
    assert "rules)" not in deferred.reason  # SMS reasons read as before


def test_an_email_without_rules_of_its_own_follows_the_defaults(
    make: Any, email_channel: Any
) -> None:
    email = _email(make)
    _policy(email.organization)
    decision = send_decide(message=email, now=ELEVEN_PM_NY)
    assert decision.defer_until == datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
    assert decision.rules == "the clinic's default rules"
    _policy(email.organization, channel_rules={"email": {**EMAIL_RULES, "quiet_hours": True}})
    kept = send_decide(message=email, now=ELEVEN_PM_NY)
    assert kept.defer_until is not None
    assert kept.reason.endswith("(the clinic's email rules)")


def test_caps_are_counted_per_channel_with_each_channels_numbers(
    make: Any, email_channel: Any
) -> None:
    email = _email(make, purpose="marketing")
    ConsentFactory(
        patient=email.patient,
        purpose="marketing",
        consent_text="Yes, send me offers. Reply STOP to opt out.",
    )
    ConsentFactory(
        patient=email.patient,
        purpose="marketing",
        channel="email",
        consent_text="Yes, email me offers.",
    )
    text = make(patient=email.patient, purpose="marketing")
    # texts: at most 1 marketing a day (default rules); email: 2 a week, none a day
    _policy(email.organization, marketing_per_day=1, channel_rules={"email": EMAIL_RULES})
    _sent(email, "email-1", hours_ago=2)
    assert send_decide(message=email, now=NOON_NY).allowed  # a daily cap is not email's
    assert send_decide(message=text, now=NOON_NY).allowed  # an email is not a text
    _sent(email, "email-2", hours_ago=30)
    capped = send_decide(message=email, now=NOON_NY)
    assert capped.reason == (
        "frequency cap: at most 2 marketing email message(s) per week for this patient "
        "(the clinic's email rules)"
    )
    assert send_decide(message=text, now=NOON_NY).allowed
    _sent(text, "text-1", hours_ago=1)
    assert send_decide(message=text, now=NOON_NY).reason == (
        "frequency cap: at most 1 marketing text(s) per day for this patient"
    )


def test_the_state_rules_for_texts_do_not_bind_an_email(make: Any, email_channel: Any) -> None:
    florida = PatientFactory(
        organization=make.integration.organization,
        phone="+13055550123",
        province_code="FL",
        timezone="America/New_York",
    )
    email = _email(make, patient=florida)
    text = make(patient=florida)
    _policy(email.organization)
    for n in range(3):
        _sent(email, f"email-{n}", hours_ago=n + 1)
        _sent(text, f"text-{n}", hours_ago=n + 1)
    half_past_eight_pm = datetime(2026, 6, 2, 0, 30, tzinfo=UTC)
    assert send_decide(message=email, now=half_past_eight_pm).allowed
    assert send_decide(message=text, now=NOON_NY).reason == (
        "frequency cap: at most 3 texts in 24 hours for recipients in FL"
    )
    # a cap may apply only to the text: only the text's send takes the patient's lock
    assert send_needs_lock(message=text)
    assert not send_needs_lock(message=email)
    _policy(email.organization, channel_rules={"email": EMAIL_RULES})
    assert not send_needs_lock(message=email)  # marketing caps only
    email.purpose = "marketing"
    assert send_needs_lock(message=email)


def test_the_state_rules_bind_a_channel_that_has_not_said_otherwise(make: Any) -> None:
    """Email's own transport says they do not bind it; a channel that says nothing is held
    to them, and cannot have its quiet hours switched off."""
    transport_register(ADAPTER, FakeTransport())  # an email-like channel, phone_rules unset
    try:
        email = _email(make)
        _policy(email.organization, channel_rules={"email": EMAIL_RULES})
        decision = send_decide(message=email, now=ELEVEN_PM_NY)
        assert decision.defer_until is not None  # rules it may not have: the defaults
        assert decision.rules == "the clinic's default rules"
    finally:
        del TRANSPORTS[ADAPTER]


@pytest.mark.parametrize(
    "stored",
    [
        {"email": {**EMAIL_RULES, "marketing_per_week": -1}},
        {"email": {**EMAIL_RULES, "marketing_per_week": "2"}},
        {"email": {"quiet_hours": False}},
        {"email": "none"},
        {"email": {**EMAIL_RULES, "quiet_hours": "no"}},
    ],
)
def test_rules_stored_around_the_form_fall_back_to_the_defaults(
    make: Any, email_channel: Any, stored: dict[str, Any]
) -> None:
    email = _email(make)
    _policy(email.organization, channel_rules=stored)
    decision = send_decide(message=email, now=ELEVEN_PM_NY)
    assert decision.defer_until is not None
    assert decision.rules == "the clinic's default rules"


def test_rules_of_a_channel_that_does_not_exist_change_nothing(make: Any) -> None:
    message = make()
    ConsentFactory(patient=message.patient)
    _policy(message.organization, channel_rules={"fax": EMAIL_RULES, "sms": "x"})
    decision = send_decide(message=message, now=ELEVEN_PM_NY)
    assert decision.defer_until is not None and decision.rules == "the clinic's default rules"


def test_a_dry_run_of_an_email_shows_the_rules_it_went_under(email_channel: Any) -> None:
    integration = IntegrationFactory(adapter="email", name="Email")
    integration.senders = ["clinic@example.org"]
    integration.secrets = {"server_token": "t"}
    integration.save()
    patient = PatientFactory(
        organization=integration.organization,
        email="pat@example.org",
        timezone="America/New_York",
    )
    ConsentFactory(patient=patient, channel="email")
    _policy(integration.organization, channel_rules={"email": EMAIL_RULES})
    result = adapter_get("email").dry_run(
        "sendEmail",
        organization=integration.organization,
        patient=patient,
        inputs={
            "to": "pat@example.org",
            "from": "clinic@example.org",
            "subject": "Hi",
            "body": "x",
        },
        purpose="transactional",
        urgent=False,
        clock=ELEVEN_PM_NY,
    )
    assert result.outcome == "send", result.detail
    assert result.decision is not None
    assert result.decision["rules"] == "the clinic's email rules"
    assert {
        "check": "quiet hours",
        "ok": True,
        "detail": "off for email (the clinic's email rules)",
    } in result.decision["checks"]


def _sent_at(message: Any, started: datetime, key: str, **fields: Any) -> None:
    """A message this patient was sent, sending started at `started`."""
    OutboundMessage.objects.create(
        organization=message.organization,
        integration=message.integration,
        patient=message.patient,
        purpose=fields.pop("purpose", "transactional"),
        to=message.to,
        body="x",
        idempotency_key=key,
        status=fields.pop("status", "sent"),
        sending_started_at=started,
        **fields,
    )


@pytest.mark.parametrize(
    ("period", "days"),
    [("day", 1), ("week", 7)],
)
def test_a_cap_counts_the_sends_of_its_window_to_the_microsecond(
    make: Any, period: str, days: int
) -> None:
    message = make()
    ConsentFactory(patient=message.patient)
    MessagingPolicy.objects.filter(organization=message.organization).update(
        **{f"transactional_per_{period}": 1}
    )
    _sent_at(message, NOON_NY - timedelta(days=days), "edge")
    # a send exactly one window ago still counts
    assert send_decide(message=message, now=NOON_NY).reason == (
        f"frequency cap: at most 1 transactional text(s) per {period} for this patient"
    )
    # a microsecond later it has left the window
    assert send_decide(message=message, now=NOON_NY + timedelta(microseconds=1)).allowed


@pytest.mark.parametrize(
    ("status", "counted"),
    [
        ("sending", True),
        ("sent", True),
        ("delivered", True),
        ("undelivered", True),
        ("unknown", True),
        ("pending", False),
        ("failed", False),
        ("skipped", False),
    ],
)
def test_caps_count_what_reached_or_may_have_reached_the_provider(
    make: Any, status: str, counted: bool
) -> None:
    message = make()
    ConsentFactory(patient=message.patient)
    MessagingPolicy.objects.filter(organization=message.organization).update(
        transactional_per_day=1
    )
    _sent_at(message, NOON_NY - timedelta(hours=1), "earlier", status=status)
    assert send_decide(message=message, now=NOON_NY).allowed is not counted


def test_the_strict_state_limit_is_three_in_24_hours_to_the_microsecond(make: Any) -> None:
    patient = PatientFactory(
        organization=make.integration.organization,
        phone="+14055550123",  # Oklahoma City
        province_code="OK",
        timezone="America/Chicago",
    )
    ConsentFactory(patient=patient)
    message = make(patient=patient)
    _sent_at(message, NOON_NY - timedelta(hours=1), "ok1")
    _sent_at(message, NOON_NY - timedelta(hours=2), "ok2")
    assert send_decide(message=message, now=NOON_NY).allowed  # two: a third may go
    _sent_at(message, NOON_NY - timedelta(days=1), "ok3")
    assert send_decide(message=message, now=NOON_NY).reason == (
        "frequency cap: at most 3 texts in 24 hours for recipients in OK"
    )
    assert send_decide(message=message, now=NOON_NY + timedelta(microseconds=1)).allowed


def test_windows_that_never_overlap_fall_back_to_the_first_zones_window(make: Any) -> None:
    # nothing says where this patient is: every US zone, and 08:00–12:00 in New York
    # (12:00–16:00 UTC) never overlaps 08:00–12:00 in Honolulu (18:00–22:00 UTC)
    patient = PatientFactory(
        organization=make.integration.organization, phone="+15005550006", timezone=""
    )
    ConsentFactory(patient=patient)
    MessagingPolicy.objects.filter(organization=patient.organization).update(
        quiet_hours_start=time(8, 0), quiet_hours_end=time(12, 0)
    )
    message = make(patient=patient)
    nine_am_ny = datetime(2026, 6, 2, 13, 0, tzinfo=UTC)
    assert ("quiet hours", True) in _checks(send_decide(message=message, now=nine_am_ny))
    eleven_pm_ny = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)
    decision = send_decide(message=message, now=eleven_pm_ny)
    assert decision.defer_until == datetime(2026, 6, 2, 12, 0, tzinfo=UTC)  # 08:00 in New York
    assert "from unknown" in decision.reason


@pytest.mark.parametrize(
    ("moment", "deferred_to"),
    [
        (datetime(2026, 6, 2, 11, 59, 59, tzinfo=UTC), datetime(2026, 6, 2, 12, 0, tzinfo=UTC)),
        (datetime(2026, 6, 2, 12, 0, tzinfo=UTC), None),
        (datetime(2026, 6, 3, 0, 59, 59, tzinfo=UTC), None),
        (datetime(2026, 6, 3, 1, 0, tzinfo=UTC), datetime(2026, 6, 3, 12, 0, tzinfo=UTC)),
    ],
)
def test_quiet_hours_start_and_end_to_the_second(
    make: Any, moment: datetime, deferred_to: datetime | None
) -> None:
    message = make()  # in New York: UTC-4 in June
    ConsentFactory(patient=message.patient)
    MessagingPolicy.objects.filter(organization=message.organization).update(
        quiet_hours_start=time(8, 0), quiet_hours_end=time(21, 0)
    )
    decision = send_decide(message=message, now=moment)
    assert decision.defer_until == deferred_to
    assert decision.allowed is (deferred_to is None)


@pytest.mark.parametrize(
    ("fields", "smart_hours", "purpose", "locks"),
    [
        ({}, None, "transactional", False),  # no cap, no smart sending, New York
        ({}, 24, "transactional", False),  # smart sending weighs marketing only
        ({}, 24, "marketing", True),
        ({"province_code": "FL"}, None, "transactional", True),  # Florida's 3 a day
        ({"phone": "+13055550123"}, None, "transactional", True),  # a Miami number
        ({"province_code": "OK", "phone": "+12125550123"}, None, "transactional", True),
    ],
)
def test_a_send_needs_the_patients_lock_only_where_a_count_decides(
    make: Any, fields: dict[str, str], smart_hours: int | None, purpose: str, locks: bool
) -> None:
    MessagingPolicy.objects.update_or_create(
        organization=make.integration.organization,
        defaults={"smart_sending_hours": smart_hours},
    )
    messaging_policy_forget()
    patient = PatientFactory(
        organization=make.integration.organization,
        **{"phone": "+12125550123", "timezone": "America/New_York", **fields},
    )
    assert send_needs_lock(message=make(patient=patient, purpose=purpose)) is locks


def test_a_channel_whose_transport_is_not_registered_is_held_to_the_state_rules(
    make: Any,
) -> None:
    patient = PatientFactory(
        organization=make.integration.organization, phone="+13055550123", province_code="FL"
    )
    message = make(patient=patient)
    message.integration.adapter = "gone"  # a transport no longer installed
    assert send_needs_lock(message=message)


def test_a_failed_check_is_recorded_with_its_reason(make: Any) -> None:
    message = make()
    decision = send_decide(message=message, now=NOON_NY)
    assert decision.checks == [{"check": "consent", "ok": False, "detail": "no SMS consent"}]
    assert (decision.allowed, decision.reason) == (False, "no SMS consent")


def test_the_decision_recorded_with_a_message_says_everything_a_dry_run_shows(make: Any) -> None:
    message = make()
    consent = ConsentFactory(patient=message.patient)
    MessagingPolicy.objects.filter(organization=message.organization).update(
        quiet_hours_start=time(8, 0), quiet_hours_end=time(21, 0)
    )
    eleven_pm_ny = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)
    record = send_decide(message=message, now=eleven_pm_ny).as_dict(eleven_pm_ny)
    assert set(record) == {
        "at",
        "allowed",
        "reason",
        "defer_until",
        "consent_record_id",
        "rules",
        "checks",
    }
    assert record["at"] == "2026-06-02T03:00:00+00:00"
    assert record["allowed"] is False
    assert record["reason"].startswith("quiet hours (08:00–21:00 in America/New_York")
    assert record["defer_until"] == "2026-06-02T08:00:00-04:00"  # 08:00 in New York
    assert record["consent_record_id"] == consent.pk
    assert record["rules"] == "the clinic's default rules"
    assert [check["check"] for check in record["checks"]] == list(SEND_CHECKS[:5])
    allowed = send_decide(message=message, now=NOON_NY).as_dict(NOON_NY)
    assert (allowed["allowed"], allowed["reason"], allowed["defer_until"]) == (True, "", None)
    refused = send_decide(message=make(), now=NOON_NY).as_dict(NOON_NY)
    assert refused["consent_record_id"] is None


@pytest.mark.parametrize(
    ("hours", "ago", "said"),
    [
        (1, timedelta(seconds=30), "1 minute ago, within the clinic's 1 hour"),
        (1, timedelta(minutes=1), "1 minute ago, within the clinic's 1 hour"),
        (2, timedelta(minutes=2), "2 minutes ago, within the clinic's 2 hours"),
        (3, timedelta(minutes=119), "119 minutes ago, within the clinic's 3 hours"),
        (3, timedelta(minutes=120), "2 hours ago, within the clinic's 3 hours"),
    ],
)
def test_smart_sending_says_how_long_ago_in_minutes_then_hours(
    make: Any, hours: int, ago: timedelta, said: str
) -> None:
    MessagingPolicy.objects.filter(organization=make.integration.organization).update(
        smart_sending_hours=hours
    )
    messaging_policy_forget()
    message = make(purpose="marketing")
    ConsentFactory(patient=message.patient, purpose="marketing")
    _sent_at(message, NOON_NY - ago, "earlier")
    decision = send_decide(message=message, now=NOON_NY)
    assert decision.reason == (
        f"smart sending: this patient was sent a message {said} for marketing messages"
    )


def test_smart_sending_counts_this_patients_messages_and_leaves_care_texts_to_the_rest(
    make: Any,
) -> None:
    MessagingPolicy.objects.filter(organization=make.integration.organization).update(
        smart_sending_hours=24, quiet_hours_start=time(8, 0), quiet_hours_end=time(21, 0)
    )
    messaging_policy_forget()
    other = make()
    _sent_at(other, NOON_NY - timedelta(hours=1), "another patient's")
    message = make(purpose="marketing")
    ConsentFactory(patient=message.patient, purpose="marketing")
    assert send_decide(message=message, now=NOON_NY).allowed
    # a care text passes smart sending, and the checks after it still run
    care = make(patient=message.patient)
    ConsentFactory(patient=message.patient)
    eleven_pm_ny = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)
    assert send_decide(message=care, now=eleven_pm_ny).defer_until == datetime(
        2026, 6, 2, 12, 0, tzinfo=UTC
    )


def test_a_process_keeps_a_clinics_policy_for_five_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(policy_module.time, "monotonic", lambda: clock[0])
    messaging_policy_forget()
    clinic = OrganizationFactory()
    kept = messaging_policy(clinic.pk)
    assert kept.organization_id == clinic.pk and kept.pk is not None  # made on first read
    # an edit that skips save() (and its signal) is seen only when the kept copy expires
    MessagingPolicy.objects.filter(organization=clinic).update(transactional_per_day=1)
    clock[0] = 1004.999
    assert messaging_policy(clinic.pk) is kept
    clock[0] = 1005.0
    renewed = messaging_policy(clinic.pk)
    assert renewed is not kept and renewed.transactional_per_day == 1
    clock[0] = 1009.999  # kept five seconds from when it was read again
    assert messaging_policy(clinic.pk) is renewed


def test_forgetting_one_clinics_policy_keeps_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy_module.time, "monotonic", lambda: 1000.0)
    messaging_policy_forget()
    clinic, other = OrganizationFactory(), OrganizationFactory()
    kept = {org.pk: messaging_policy(org.pk) for org in (clinic, other)}
    messaging_policy_forget(clinic.pk)
    assert messaging_policy(clinic.pk) is not kept[clinic.pk]
    assert messaging_policy(other.pk) is kept[other.pk]
    messaging_policy_forget()
    assert messaging_policy(other.pk) is not kept[other.pk]


# --- what a decision records, check by check ------------------------------------------------


def _florida(make: Any) -> Any:
    return PatientFactory(
        organization=make.integration.organization,
        phone="+13055550123",
        province_code="FL",
        timezone="America/New_York",
    )


def _no_patient(make: Any) -> OutboundMessage:
    message = make()
    message.patient = None
    return message


def _over_the_day_cap(make: Any) -> OutboundMessage:
    message = make()
    ConsentFactory(patient=message.patient)
    _policy(message.organization, transactional_per_day=1)
    _sent_at(message, NOON_NY - timedelta(hours=1), "earlier")
    return message


def _over_floridas_three(make: Any) -> OutboundMessage:
    message = make(patient=_florida(make))
    ConsentFactory(patient=message.patient)
    for n in range(3):
        _sent_at(message, NOON_NY - timedelta(hours=n + 1), f"fl{n}")
    return message


def _integration_disabled(make: Any) -> OutboundMessage:
    message = make()
    ConsentFactory(patient=message.patient)
    message.integration.enabled = False
    return message


def _sender_not_approved(make: Any) -> OutboundMessage:
    message = make(from_number="+14155550000")
    ConsentFactory(patient=message.patient)
    return message


def _recipient_invalid(make: Any) -> OutboundMessage:
    message = make(to="12")
    ConsentFactory(patient=message.patient)
    return message


def _test_message_to_a_real_patient(make: Any) -> OutboundMessage:
    message = make(is_test=True)
    ConsentFactory(patient=message.patient)
    return message


@pytest.mark.parametrize(
    ("given", "check"),
    [
        (_no_patient, "consent"),
        (_over_the_day_cap, "frequency cap"),
        (_over_floridas_three, "frequency cap"),
        (_integration_disabled, "sender"),
        (_sender_not_approved, "sender"),
        (_recipient_invalid, "recipient"),
        (_test_message_to_a_real_patient, "recipient"),
    ],
)
def test_a_refusal_is_recorded_under_the_check_that_refused_after_those_that_passed(
    make: Any, given: Any, check: str
) -> None:
    """The message log and dry runs show a refusal as the check it failed: the checks before
    it passed, the ones after it were not made."""
    decision = send_decide(message=given(make), now=NOON_NY)
    assert not decision.allowed and decision.reason
    ran = SEND_CHECKS[: SEND_CHECKS.index(check) + 1]
    assert [(c["check"], c["ok"]) for c in decision.checks] == [
        *((name, True) for name in ran[:-1]),
        (check, False),
    ]
    assert decision.checks[-1]["detail"] == decision.reason


def test_an_allowed_decision_records_what_each_check_found(make: Any) -> None:
    message = make()
    consent = ConsentFactory(patient=message.patient, occurred_at=NOON_NY - timedelta(days=30))
    _policy(message.organization)
    decision = send_decide(message=message, now=NOON_NY)
    assert decision.checks == [
        {
            "check": "consent",
            "ok": True,
            "detail": f"transactional opt-in #{consent.pk} (Signup form, 2026-05-02)",
        },
        {"check": "opt-out", "ok": True, "detail": "no opt-out since"},
        {"check": "frequency cap", "ok": True, "detail": "within the clinic's caps"},
        {"check": "smart sending", "ok": True, "detail": "off"},
        {
            "check": "quiet hours",
            "ok": True,
            "detail": "08:00–21:00 in America/New_York (patient time zone)",
        },
        {"check": "sender", "ok": True, "detail": "+15005550006"},
        {"check": "recipient", "ok": True, "detail": "valid E.164 number"},
    ]


def test_a_cap_counts_only_this_patients_messages_of_this_purpose(make: Any) -> None:
    message = make()
    ConsentFactory(patient=message.patient)
    _policy(message.organization, transactional_per_day=1)
    _sent_at(make(), NOON_NY - timedelta(hours=1), "another patient's care text")
    _sent_at(message, NOON_NY - timedelta(hours=1), "an offer", purpose="marketing")
    assert send_decide(message=message, now=NOON_NY).allowed
    _sent_at(message, NOON_NY - timedelta(hours=1), "a care text")
    assert not send_decide(message=message, now=NOON_NY).allowed


@pytest.mark.parametrize(
    ("purpose", "policy"),
    [("transactional", {"transactional_per_day": 1}), ("marketing", {"smart_sending_hours": 1})],
)
def test_a_message_another_worker_claimed_meanwhile_is_not_counted_against_itself(
    make: Any, purpose: str, policy: dict[str, int]
) -> None:
    """A worker that read the message pending decides it after another worker claimed it
    (its row now says sending): counted against its own cap or smart sending, it would be
    recorded as skipped while it is being sent."""
    message = make(purpose=purpose)
    ConsentFactory(patient=message.patient, purpose=purpose)
    _policy(message.organization, **policy)
    message.save()
    OutboundMessage.objects.filter(pk=message.pk).update(
        status="sending", sending_started_at=NOON_NY - timedelta(minutes=1)
    )
    assert send_decide(message=message, now=NOON_NY).allowed


def test_the_patients_time_zone_outranks_the_area_code(make: Any) -> None:
    patient = PatientFactory(
        organization=make.integration.organization,
        phone="+12125550123",  # a New York number
        timezone="America/Los_Angeles",
    )
    ConsentFactory(patient=patient)
    _policy(patient.organization)
    nine_am_ny = datetime(2026, 6, 2, 13, 0, tzinfo=UTC)  # 06:00 in Los Angeles
    decision = send_decide(message=make(patient=patient), now=nine_am_ny)
    assert decision.defer_until == datetime(2026, 6, 2, 15, 0, tzinfo=UTC)  # 08:00 PDT
    assert "in America/Los_Angeles, from patient time zone" in decision.reason


def test_a_recipient_we_cannot_place_gets_the_strictest_window_and_limit(make: Any) -> None:
    """Nothing says where: a text must be within hours in every US zone, under the Florida
    and Oklahoma rules (until 20:00, at most 3 in 24 hours)."""
    patient = PatientFactory(
        organization=make.integration.organization, phone="+15005550006", timezone=""
    )
    ConsentFactory(patient=patient)
    _policy(patient.organization)
    message = make(patient=patient)
    nine_am_ny = datetime(2026, 6, 2, 13, 0, tzinfo=UTC)
    decision = send_decide(message=message, now=nine_am_ny)
    # 08:00 in Honolulu (18:00 UTC) is the first moment within 08:00–20:00 everywhere
    assert decision.reason == (
        "quiet hours (08:00–20:00 in America/New_York, America/Chicago, America/Denver, "
        "America/Phoenix, America/Los_Angeles, America/Anchorage, Pacific/Honolulu, from "
        "unknown): deferred to 2026-06-02T08:00:00-10:00"
    )
    assert decision.defer_until == datetime(2026, 6, 2, 18, 0, tzinfo=UTC)
    for n in range(3):
        _sent_at(message, NOON_NY - timedelta(hours=n + 1), f"sent{n}")
    assert send_decide(message=message, now=NOON_NY).reason == (
        "frequency cap: at most 3 texts in 24 hours for recipients in FL/OK"
    )


def test_a_window_a_states_rules_leave_no_time_of_is_refused_not_sent_at_night(
    make: Any,
) -> None:
    """A clinic sending from 20:00 to 21:00 has no time left for a Florida recipient (texts
    stop at 20:00 there): the text is refused, never sent at 03:00 nor deferred for ever."""
    florida = make(patient=_florida(make))
    ConsentFactory(patient=florida.patient)
    MessagingPolicy.objects.filter(organization=florida.organization).update(
        quiet_hours_start=time(20, 0), quiet_hours_end=time(21, 0)
    )
    three_am_ny = datetime(2026, 6, 2, 7, 0, tzinfo=UTC)
    decision = send_decide(message=florida, now=three_am_ny)
    assert (decision.allowed, decision.defer_until) == (False, None)
    assert decision.reason == (
        "quiet hours: the clinic's window (20:00–21:00) leaves no time to send to recipients "
        "in FL, where texts must stop at 20:00"
    )
    assert decision.checks[-1]["check"] == "quiet hours"
    new_york = make()
    ConsentFactory(patient=new_york.patient)
    assert send_decide(message=new_york, now=three_am_ny).defer_until == datetime(
        2026, 6, 3, 0, 0, tzinfo=UTC
    )  # 20:00 in New York
    # Nowhere known: held to both states' rules, and the reason names both.
    unknown = PatientFactory(organization=florida.organization, phone="+15005550006", timezone="")
    ConsentFactory(patient=unknown)
    assert send_decide(message=make(patient=unknown), now=three_am_ny).reason == (
        "quiet hours: the clinic's window (20:00–21:00) leaves no time to send to recipients "
        "in FL/OK, where texts must stop at 20:00"
    )


@pytest.mark.parametrize("cap", ["transactional_per_day", "transactional_per_week"])
def test_a_send_under_a_cap_of_its_purpose_takes_the_patients_lock(make: Any, cap: str) -> None:
    _policy(make.integration.organization, **{cap: 1})
    assert send_needs_lock(message=make())
    assert not send_needs_lock(message=make(purpose="marketing"))  # a New York number


def test_a_marketing_message_smart_sending_lets_through_still_waits_for_quiet_hours(
    make: Any,
) -> None:
    message = make(purpose="marketing")
    ConsentFactory(patient=message.patient, purpose="marketing")
    _policy(message.organization, smart_sending_hours=24)
    decision = send_decide(message=message, now=ELEVEN_PM_NY)
    assert decision.defer_until == datetime(2026, 6, 2, 12, 0, tzinfo=UTC)  # 08:00 EDT
    assert _checks(decision)[-2:] == [("smart sending", True), ("quiet hours", False)]


def test_the_number_texted_brings_its_states_rules(make: Any) -> None:
    """A Miami number is held to Florida's rules even when the patient's record says only a
    time zone: the recipient may be in Florida."""
    patient = PatientFactory(
        organization=make.integration.organization,
        phone="+13055550123",
        province_code="",
        timezone="America/New_York",
    )
    ConsentFactory(patient=patient)
    _policy(patient.organization)
    message = make(patient=patient)
    half_past_eight_pm = datetime(2026, 6, 2, 0, 30, tzinfo=UTC)
    assert "quiet hours (08:00–20:00 in America/New_York" in (
        send_decide(message=message, now=half_past_eight_pm).reason
    )
    for n in range(3):
        _sent_at(message, NOON_NY - timedelta(hours=n + 1), f"fl{n}")
    assert send_decide(message=message, now=NOON_NY).reason == (
        "frequency cap: at most 3 texts in 24 hours for recipients in FL"
    )
