"""message_prepare_and_deliver, the engine's way to send: a new message's first write is its
INSERT, already carrying the send-time decision; capped sends still decide under the
patient's lock; a message that exists goes on as it is."""

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from integrations.models import MessagingPolicy, OutboundMessage
from integrations.policy import messaging_policy_forget
from integrations.sending import (
    MessagesAccepted,
    message_prepare,
    message_prepare_and_deliver,
    message_send,
)
from integrations.throttle import throttle_backlog, throttle_key
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import Patient
from tests.conftest import sandbox_account
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

Status = OutboundMessage.Status
T0 = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)


@pytest.fixture
def send(sandbox: SandboxServer) -> Any:
    # A long code's 1 segment/s: each send's slot shows in the bucket for a second.
    integration = sandbox_account(sandbox, IntegrationFactory(segments_per_second=1))

    def send(
        patient: Patient,
        key: str = "run:1:step:0",
        first_attempt: bool = True,
        accepted: MessagesAccepted | None = None,
    ) -> OutboundMessage:
        return message_prepare_and_deliver(
            organization=integration.organization,
            integration=integration,
            idempotency_key=key,
            first_attempt=first_attempt,
            accepted=accepted,
            to=patient.phone,
            from_number="+15005550006",
            body="Your order shipped",
            purpose="transactional",
            patient=patient,
        )

    send.organization = integration.organization  # type: ignore[attr-defined]
    send.integration = integration  # type: ignore[attr-defined]
    send.throttle_key = throttle_key(  # type: ignore[attr-defined]
        scope=twilio_account(integration).account_sid, sender="+15005550006"
    )
    return send


def _patient(send: Any, *, consent: bool) -> Patient:
    patient: Patient = PatientFactory(organization=send.organization, phone="+14155550123")
    if consent:
        ConsentFactory(patient=patient)
    return patient


def _message_writes(queries: CaptureQueriesContext) -> list[str]:
    return [
        query["sql"]
        for query in queries.captured_queries
        if query["sql"].startswith(("INSERT", "UPDATE"))
        and "integrations_outboundmessage" in query["sql"]
    ]


@pytest.mark.django_db
def test_a_new_message_is_inserted_claimed_then_sent(send: Any, sandbox: SandboxServer) -> None:
    patient = _patient(send, consent=True)
    with CaptureQueriesContext(connection) as queries:
        message = send(patient)
    assert (message.status, message.attempts) == (Status.SENT, 1)
    assert message.decision["allowed"] is True
    inserted, accepted = _message_writes(queries)  # no separate claim UPDATE
    assert inserted.startswith("INSERT") and "'sending'" in inserted
    assert accepted.startswith("UPDATE") and message.provider_sid in accepted
    stored = OutboundMessage.objects.get()
    assert (stored.status, stored.provider_sid, stored.consent_record_id) == (
        Status.SENT,
        message.provider_sid,
        patient.consents.get().pk,
    )
    assert [m["to"] for m in sandbox.messages()] == ["+14155550123"]


@pytest.mark.django_db
def test_without_consent_the_message_is_inserted_skipped_and_nothing_is_sent(
    send: Any, sandbox: SandboxServer
) -> None:
    patient = _patient(send, consent=False)
    with CaptureQueriesContext(connection) as queries:
        message = send(patient)
    assert (message.status, message.skip_reason) == (Status.SKIPPED, "no SMS consent")
    assert len(_message_writes(queries)) == 1
    assert OutboundMessage.objects.get().status == Status.SKIPPED
    assert sandbox.messages() == []


@pytest.mark.django_db
def test_a_first_text_sent_at_the_first_attempt_carries_the_clinics_first_contact_wording(
    send: Any, sandbox: SandboxServer
) -> None:
    # Carriers' rules: the first text to a number says who sends it and how to stop them.
    MessagingPolicy.objects.update_or_create(
        organization=send.organization,
        defaults={"first_contact_enabled": True, "brand_name": "Sunrise Telehealth"},
    )
    messaging_policy_forget()
    message = send(_patient(send, consent=True))
    worded = "Sunrise Telehealth: Your order shipped Reply STOP to opt out."
    assert [m["body"] for m in sandbox.messages()] == [worded]
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.status, stored.body, stored.first_contact) == (Status.SENT, worded, True)


@pytest.mark.django_db
def test_a_new_message_whose_throttle_is_unreachable_is_inserted_to_come_back_in_five_seconds(
    send: Any, sandbox: SandboxServer, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CAREFLOW_THROTTLE_REDIS_URL = "redis://127.0.0.1:9/0"
    with time_machine.travel(T0, tick=False):
        message = send(_patient(send, consent=True))
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.status, stored.next_attempt_at) == (Status.PENDING, T0 + timedelta(seconds=5))
    assert "throttle unreachable; a new message waits 5 s" in caplog.messages
    assert sandbox.messages() == []


@pytest.mark.django_db
def test_a_message_that_exists_goes_on_as_it_is_and_is_not_sent_twice(
    send: Any, sandbox: SandboxServer
) -> None:
    patient = _patient(send, consent=True)
    first = send(patient)
    again = send(patient)
    assert again.pk == first.pk and again.status == Status.SENT
    assert OutboundMessage.objects.count() == 1
    assert len(sandbox.messages()) == 1


@pytest.mark.django_db
def test_a_later_attempt_of_the_step_reserves_no_throttle_slot_for_its_sent_message(
    send: Any, sandbox: SandboxServer
) -> None:
    patient = _patient(send, consent=True)
    first = send(patient)
    booked = throttle_backlog(key=send.throttle_key)  # the first send's slot
    assert booked > 0
    again = send(patient, first_attempt=False)  # the run resumed after the send
    assert (again.pk, again.status) == (first.pk, Status.SENT)
    assert throttle_backlog(key=send.throttle_key) <= booked  # nothing more reserved
    assert len(sandbox.messages()) == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_under_a_cap_are_decided_one_at_a_time(
    send: Any, sandbox: SandboxServer
) -> None:
    patient = _patient(send, consent=True)
    MessagingPolicy.objects.update_or_create(
        organization=send.organization, defaults={"transactional_per_day": 1}
    )
    messaging_policy_forget()
    barrier = threading.Barrier(4)
    results: list[OutboundMessage] = []

    def one(n: int) -> None:
        try:
            barrier.wait()
            results.append(send(patient, key=f"run:{n}:step:0"))
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(message.status for message in results)
    assert statuses == [Status.SENT, Status.SKIPPED, Status.SKIPPED, Status.SKIPPED]
    skipped = [m for m in results if m.status == Status.SKIPPED]
    assert all(m.skip_reason.startswith("frequency cap") for m in skipped)
    assert len(sandbox.messages()) == 1


@pytest.mark.django_db(transaction=True)
def test_a_send_waits_for_one_to_the_same_patient_being_decided_and_keeps_to_its_cap(
    send: Any, sandbox: SandboxServer
) -> None:
    patient = _patient(send, consent=True)
    MessagingPolicy.objects.update_or_create(
        organization=send.organization, defaults={"transactional_per_day": 1}
    )
    messaging_policy_forget()
    first, second = (
        message_prepare(
            organization=send.organization,
            integration=send.integration,
            idempotency_key=f"run:{n}:step:0",
            to=patient.phone,
            from_number="+15005550006",
            body=f"Reminder {n}",
            purpose="transactional",
            patient=patient,
        )
        for n in (1, 2)
    )
    deciding = threading.Event()

    def other_worker() -> None:
        # another worker holds the patient while it decides and sends the first message
        try:
            with transaction.atomic():
                Patient.objects.select_for_update().get(pk=patient.pk)
                deciding.set()
                time.sleep(0.5)
                message_send(message_id=first.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=other_worker)
    thread.start()
    deciding.wait(5)
    later = message_send(message_id=second.pk)
    thread.join()
    assert (later.status, later.skip_reason[:13]) == (Status.SKIPPED, "frequency cap")
    assert OutboundMessage.objects.get(pk=first.pk).status == Status.SENT
    assert len(sandbox.messages()) == 1


@pytest.mark.django_db
def test_a_batchs_acceptances_are_recorded_at_its_end(send: Any, sandbox: SandboxServer) -> None:
    patient = _patient(send, consent=True)
    accepted = MessagesAccepted()
    message = send(patient, accepted=accepted)
    (at_twilio,) = sandbox.messages()
    # Twilio took it; the row says so only when the batch writes what it was told
    assert (message.status, message.provider_sid) == (Status.SENT, at_twilio["sid"])
    assert OutboundMessage.objects.get(pk=message.pk).status == Status.SENDING
    accepted.write()
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.status, stored.provider_sid) == (Status.SENT, at_twilio["sid"])
