"""Compliant first contact: the clinic's brand prefix and opt-out wording on the first text to a
number, not on the next, again after the clinic's interval; decided once, at the claim, with
the body as sent recorded before Twilio is called; two first texts at once: one carries it."""

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from integrations.first_contact import clinic_wording, keyword_reply, message_wording
from integrations.models import MessagingPolicy, OutboundMessage
from integrations.policy import messaging_policy, messaging_policy_forget
from integrations.sending import message_prepare_and_deliver, message_send
from integrations.twilio.sandbox import SandboxServer
from patients.models import Patient
from tests.conftest import at_once, sandbox_account
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

Status = OutboundMessage.Status
PREFIXED = "Sunrise Telehealth: Your order shipped Reply STOP to opt out."


def _policy(organization: Any, **fields: Any) -> None:
    values = {"first_contact_enabled": True, "brand_name": "Sunrise Telehealth", **fields}
    MessagingPolicy.objects.update_or_create(organization=organization, defaults=values)
    messaging_policy_forget()


@pytest.fixture
def send(sandbox: SandboxServer) -> Any:
    integration = sandbox_account(sandbox, IntegrationFactory())

    def send(
        patient: Patient,
        key: str,
        body: str = "Your order shipped",
        is_test: bool = False,
    ) -> OutboundMessage:
        return message_prepare_and_deliver(
            organization=integration.organization,
            integration=integration,
            idempotency_key=key,
            first_attempt=True,
            to=patient.phone,
            from_number="+15005550006",
            body=body,
            purpose="transactional",
            patient=patient,
            is_test=is_test,
        )

    send.organization = integration.organization  # type: ignore[attr-defined]
    send.integration = integration  # type: ignore[attr-defined]
    return send


def _patient(send: Any, phone: str = "+14155550123", **fields: Any) -> Patient:
    patient: Patient = PatientFactory(organization=send.organization, phone=phone, **fields)
    ConsentFactory(patient=patient)
    return patient


@pytest.mark.django_db
def test_first_text_carries_the_wording_the_second_does_not(
    send: Any, sandbox: SandboxServer
) -> None:
    _policy(send.organization)
    patient = _patient(send)
    first = send(patient, "k1")
    second = send(patient, "k2")
    assert (first.status, second.status) == (Status.SENT, Status.SENT)
    bodies = [m["body"] for m in sandbox.messages()]
    assert bodies == [PREFIXED, "Your order shipped"]
    # The message log shows the body as sent, measured as sent.
    stored = OutboundMessage.objects.get(pk=first.pk)
    assert (stored.body, stored.first_contact, stored.characters) == (
        PREFIXED,
        True,
        len(PREFIXED),
    )
    assert OutboundMessage.objects.get(pk=second.pk).first_contact is False


@pytest.mark.django_db
def test_after_the_interval_the_wording_comes_again(send: Any, sandbox: SandboxServer) -> None:
    _policy(send.organization, first_contact_every_days=30)
    patient = _patient(send)
    first = send(patient, "k1")
    OutboundMessage.objects.filter(pk=first.pk).update(
        sending_started_at=timezone.now() - timedelta(days=29)
    )
    assert send(patient, "k2").first_contact is False
    OutboundMessage.objects.filter(pk=first.pk).update(
        sending_started_at=timezone.now() - timedelta(days=31)
    )
    assert send(patient, "k3").first_contact is True
    assert [m["body"] for m in sandbox.messages()][2] == PREFIXED


@pytest.mark.django_db
def test_a_text_that_never_reached_the_number_does_not_count(send: Any) -> None:
    """A text refused by Twilio (never sent) or undelivered did not show the wording."""
    _policy(send.organization)
    patient = _patient(send)
    first = send(patient, "k1")
    OutboundMessage.objects.filter(pk=first.pk).update(status=Status.UNDELIVERED)
    assert send(patient, "k2").first_contact is True


@pytest.mark.django_db
def test_each_number_and_each_clinic_has_its_own_first_contact(
    send: Any, sandbox: SandboxServer
) -> None:
    _policy(send.organization)
    send(_patient(send), "k1")
    assert send(_patient(send, phone="+14155550124"), "k2").first_contact is True
    other = sandbox_account(sandbox, IntegrationFactory())
    _policy(other.organization)
    patient = PatientFactory(organization=other.organization, phone="+14155550123")
    ConsentFactory(patient=patient)
    message = message_prepare_and_deliver(
        organization=other.organization,
        integration=other,
        idempotency_key="other:1",
        first_attempt=True,
        to=patient.phone,
        from_number="+15005550006",
        body="Hello",
        purpose="transactional",
        patient=patient,
    )
    assert message.first_contact is True


@pytest.mark.django_db
def test_off_by_default_and_the_body_is_left_alone(send: Any, sandbox: SandboxServer) -> None:
    patient = _patient(send)
    message = send(patient, "k1")
    assert sandbox.messages()[0]["body"] == "Your order shipped"
    assert message.first_contact is False  # decided: nothing to add


@pytest.mark.django_db
def test_parts_already_in_the_text_are_not_repeated(send: Any, sandbox: SandboxServer) -> None:
    _policy(send.organization)
    patient = _patient(send)
    send(patient, "k1", body="Sunrise Telehealth: hi! Reply STOP to opt out.")
    assert sandbox.messages()[0]["body"] == "Sunrise Telehealth: hi! Reply STOP to opt out."


@pytest.mark.django_db
def test_prefix_or_wording_alone(send: Any, sandbox: SandboxServer) -> None:
    _policy(send.organization, brand_prefix=False)
    send(_patient(send), "k1")
    _policy(send.organization, brand_prefix=True, opt_out_wording="", brand_name="")
    send(_patient(send, phone="+14155550124"), "k2")
    assert [m["body"] for m in sandbox.messages()] == [
        "Your order shipped Reply STOP to opt out.",
        f"{send.organization.name}: Your order shipped",  # blank brand: the clinic's name
    ]


@pytest.mark.django_db
def test_test_messages_to_test_patients_behave_the_same(send: Any, sandbox: SandboxServer) -> None:
    _policy(send.organization)
    patient = _patient(send, is_test=True)
    assert send(patient, "k1", is_test=True).first_contact is True
    assert send(patient, "k2", is_test=True).first_contact is False
    assert sandbox.messages()[0]["body"] == PREFIXED


@pytest.mark.django_db
def test_a_retried_send_keeps_the_body_it_was_claimed_with(
    send: Any, sandbox: SandboxServer
) -> None:
    """Refused with a retryable error after the claim recorded the wording: the retry sends
    the recorded body as it is, even though the clinic changed its wording meanwhile."""
    _policy(send.organization)
    patient = _patient(send)
    sandbox.add_fault({"kind": "error", "status": 429, "code": 20429, "count": 1})
    message = send(patient, "k1")
    assert (message.status, message.first_contact) == (Status.PENDING, True)
    assert OutboundMessage.objects.get(pk=message.pk).body == PREFIXED
    _policy(send.organization, brand_name="Renamed Clinic")
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=None)
    assert message_send(message_id=message.pk).status == Status.SENT
    assert [m["body"] for m in sandbox.messages()] == [PREFIXED]


@pytest.mark.django_db
def test_a_message_deferred_before_its_claim_is_decided_when_claimed(send: Any) -> None:
    """No consent yet: skipped, and nothing about first contact is recorded (it was never
    claimed)."""
    _policy(send.organization)
    patient = PatientFactory(organization=send.organization, phone="+14155550123")
    message = send(patient, "k1")
    assert message.status == Status.SKIPPED
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.first_contact, stored.body) == (None, "Your order shipped")


@pytest.mark.django_db(transaction=True)
def test_two_first_texts_at_once_exactly_one_carries_the_wording(
    sandbox: SandboxServer,
) -> None:
    """Two workflows text a new number at the same instant. The decision is serialised on the
    clinic and number: the text claimed first (and so handed to Twilio first) carries the
    wording, the other sees it and goes plain. Without the lock both found no earlier text."""
    integration = sandbox_account(sandbox, IntegrationFactory())
    patient = PatientFactory(organization=integration.organization, phone="+14155550123")
    ConsentFactory(patient=patient)
    _policy(integration.organization)
    results = at_once(
        4,
        lambda n: message_prepare_and_deliver(
            organization=integration.organization,
            integration=integration,
            idempotency_key=f"run:{n}:step:0",
            first_attempt=True,
            to=patient.phone,
            from_number="+15005550006",
            body=f"Workflow {n}",
            purpose="transactional",
            patient=patient,
        ),
    )
    assert [m.status for m in results] == [Status.SENT] * 4
    stored = OutboundMessage.objects.order_by("sending_started_at", "id")
    assert [m.first_contact for m in stored] == [True, False, False, False]
    carried = [m["body"] for m in sandbox.messages() if m["body"].startswith("Sunrise")]
    assert len(carried) == 1


@pytest.mark.django_db
def test_email_carries_no_wording(send: Any) -> None:
    """Email has its own unsubscribe rules: its transport does not take the wording."""
    _policy(send.organization)
    email = IntegrationFactory(organization=send.organization, adapter="email", senders=[])
    message = OutboundMessage(
        organization=send.organization, integration=email, channel="email", to="a@example.com"
    )
    assert message_wording(message) is None


@pytest.mark.django_db
def test_keyword_replies_are_the_clinics() -> None:
    policy, _ = MessagingPolicy.objects.update_or_create(
        organization=PatientFactory().organization,
        defaults={
            "help_text_reply": "{clinic} help: call 555-0100.",
            "stop_confirmation_reply": "{clinic}: no more texts. START to resume.",
            "brand_name": "Sunrise Telehealth",
        },
    )
    organization = policy.organization
    assert keyword_reply(policy, organization, "help") == "Sunrise Telehealth help: call 555-0100."
    assert keyword_reply(policy, organization, "opt_out").startswith("Sunrise Telehealth: no more")


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("opt_out_wording", "Text NO to quit.", "must name the keyword STOP"),
        ("opt_out_wording", "Reply STOP {x}", "cannot contain braces"),
        ("brand_name", "Sun{rise}", "braces or line breaks"),
        ("brand_name", "Sun\nrise", "braces or line breaks"),
        ("stop_confirmation_reply", "   ", "cannot be blank"),
        ("first_contact_every_days", 0, "greater than or equal to 1"),
        ("first_contact_every_days", 400, "less than or equal to 366"),
    ],
)
@pytest.mark.django_db
def test_bad_wording_is_refused_with_a_clear_error(field: str, value: Any, error: str) -> None:
    policy = MessagingPolicy(organization=PatientFactory().organization, **{field: value})
    with pytest.raises(ValidationError) as raised:
        policy.full_clean()
    assert error in " ".join(raised.value.message_dict[field])


@pytest.mark.django_db
def test_no_wording_when_nothing_to_add() -> None:
    organization = PatientFactory().organization
    _policy(organization, brand_prefix=False, opt_out_wording="")
    assert clinic_wording(messaging_policy(organization.pk), organization) is None


@pytest.mark.django_db
def test_an_ambiguous_first_text_is_found_at_twilio_by_the_body_it_was_sent_with(
    send: Any, sandbox: SandboxServer
) -> None:
    """Twilio accepted the first text but the answer was lost: the message is looked up by
    the recorded body (with the wording) and found, so nothing is sent again, and the wording
    is not decided a second time."""
    _policy(send.organization)
    patient = _patient(send)
    sandbox.add_fault({"kind": "accept_then_drop", "count": 1})
    message = send(patient, "k1")
    assert (message.status, message.first_contact) == (Status.UNKNOWN, True)
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=None)
    reconciled = message_send(message_id=message.pk)
    assert reconciled.status == Status.SENT
    [at_twilio] = sandbox.messages()
    assert reconciled.provider_sid == at_twilio["sid"]
    assert at_twilio["body"] == OutboundMessage.objects.get(pk=message.pk).body == PREFIXED
