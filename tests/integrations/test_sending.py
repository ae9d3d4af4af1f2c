"""message_send against the sandbox over HTTP: every provider answer and transport fault."""

import re
from datetime import UTC, datetime, time, timedelta
from time import perf_counter
from typing import Any

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.models import MessagingPolicy, OutboundMessage, ShortLink
from integrations.policy import messaging_policy_forget
from integrations.sending import message_build, message_deliver, message_prepare, message_send
from integrations.throttle import throttle_backlog, throttle_key
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord
from tests.conftest import sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    PatientFactory,
    WorkflowFactory,
    step_run_create,
)

pytestmark = pytest.mark.django_db
Status = OutboundMessage.Status


@pytest.fixture
def make_message(sandbox: SandboxServer) -> Any:
    integration = sandbox_account(sandbox, IntegrationFactory())

    def make(
        to: str = "+14155550123",
        body: str = "Your order shipped",
        consent: bool = True,
        key: str = "run:1:step:0",
    ) -> OutboundMessage:
        patient = PatientFactory(organization=integration.organization, phone=to)
        if consent:
            ConsentFactory(patient=patient)
        return message_prepare(
            organization=integration.organization,
            integration=integration,
            idempotency_key=key,
            to=to,
            from_number="+15005550006",
            body=body,
            purpose="transactional",
            patient=patient,
        )

    return make


def _due_now(message: OutboundMessage) -> None:
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())


def test_prepare_is_idempotent_per_key(make_message: Any) -> None:
    first = make_message()
    again = message_prepare(
        organization=first.organization,
        integration=first.integration,
        idempotency_key=first.idempotency_key,
        to="+19999999999",
        body="different",
        purpose="transactional",
    )
    assert again.pk == first.pk and again.body == "Your order shipped"


def test_a_message_prepared_without_a_sender_or_language_records_neither(
    make_message: Any,
) -> None:
    first = make_message()
    pooled = message_prepare(
        organization=first.organization,
        integration=first.integration,
        idempotency_key="pool:1",
        to="+14155550123",
        messaging_service_sid="MG" + "0" * 32,
        body="Your order shipped",
        purpose="transactional",
    )
    # blank, not a made-up value: the pool's number is filled in by the first report naming it
    stored = OutboundMessage.objects.get(pk=pooled.pk)
    assert (stored.from_number, stored.language) == ("", "")


def test_sent_message_is_not_sent_again(make_message: Any, sandbox: SandboxServer) -> None:
    message = make_message()
    assert message_send(message_id=message.pk).status == Status.SENT
    assert message_send(message_id=message.pk).status == Status.SENT
    assert len(sandbox.messages()) == 1


def test_a_send_reads_the_message_with_its_integration_and_patient_in_one_query(
    make_message: Any, sandbox: SandboxServer
) -> None:
    # A worker sends thousands of these: the integration (credentials, adapter) and the
    # patient (consent, caps, time zone) come with the message, not a query each.
    message = make_message()
    with CaptureQueriesContext(connection) as queries:
        sent = message_send(message_id=message.pk)
    assert sent.status == Status.SENT
    read = [
        match.group(1)
        for query in queries.captured_queries
        if (match := re.match(r'SELECT .*? FROM "(\w+)"', query["sql"]))
    ]
    assert read[0] == "integrations_outboundmessage"
    assert "integrations_integration" not in read
    assert "patients_patient" not in read
    # no frequency cap, no first-contact wording: nothing to lock, so no transaction held
    # open around the decision
    sql = [query["sql"] for query in queries.captured_queries]
    assert not [q for q in sql if "FOR UPDATE" in q or "pg_advisory" in q or "SAVEPOINT" in q]


def test_a_first_text_to_a_number_carries_the_clinics_first_contact_wording(
    make_message: Any, sandbox: SandboxServer
) -> None:
    message = make_message()
    MessagingPolicy.objects.update_or_create(
        organization=message.organization,
        defaults={"first_contact_enabled": True, "brand_name": "Sunrise Telehealth"},
    )
    messaging_policy_forget()
    sent = message_send(message_id=message.pk)
    worded = "Sunrise Telehealth: Your order shipped Reply STOP to opt out."
    assert [m["body"] for m in sandbox.messages()] == [worded]
    assert (sent.status, sent.body, sent.first_contact) == (Status.SENT, worded, True)


def test_a_retry_keeps_the_body_it_was_claimed_with_and_takes_no_first_contact_lock(
    make_message: Any, sandbox: SandboxServer
) -> None:
    message = make_message()
    MessagingPolicy.objects.update_or_create(
        organization=message.organization,
        defaults={"first_contact_enabled": True, "brand_name": "Sunrise Telehealth"},
    )
    messaging_policy_forget()
    # claimed before as no first contact (its first attempt was refused, to be retried)
    OutboundMessage.objects.filter(pk=message.pk).update(first_contact=False, attempts=1)
    with CaptureQueriesContext(connection) as queries:
        sent = message_send(message_id=message.pk)
    assert [m["body"] for m in sandbox.messages()] == ["Your order shipped"]
    assert (sent.status, sent.attempts) == (Status.SENT, 2)
    assert not [q for q in queries.captured_queries if "pg_advisory" in q["sql"]]


def test_a_first_text_with_a_link_carries_the_wording_around_the_shortened_link(
    make_message: Any, sandbox: SandboxServer
) -> None:
    url = "https://sunrise.example/patients/appointments/confirm?appointment=8812"
    message = make_message(body=f"Confirm here: {url}")
    MessagingPolicy.objects.update_or_create(
        organization=message.organization,
        defaults={
            "first_contact_enabled": True,
            "first_contact_every_days": 30,
            "brand_name": "Sunrise Telehealth",
            "short_links_enabled": True,
            "short_link_domain": "https://go.sunrise.example",
            "short_link_days": 30,
        },
    )
    messaging_policy_forget()
    with time_machine.travel(T0, tick=False):
        sent = message_send(message_id=message.pk)
    link = ShortLink.objects.get()
    short = f"https://go.sunrise.example/l/{link.code}"
    worded = f"Sunrise Telehealth: Confirm here: {short} Reply STOP to opt out."
    assert [m["body"] for m in sandbox.messages()] == [worded]
    assert (sent.status, sent.body, sent.first_contact) == (Status.SENT, worded, True)
    assert (link.url, link.message_id, link.expires_at) == (
        url,
        message.pk,
        T0 + timedelta(days=30),
    )


def test_21610_records_an_opt_out_for_every_purpose_and_never_retries(
    make_message: Any, sandbox: SandboxServer
) -> None:
    message = make_message(to="+15005550004")
    result = message_send(message_id=message.pk)
    assert (result.status, result.error_code, result.next_attempt_at) == (
        Status.FAILED,
        "21610",
        None,
    )
    opt_outs = ConsentRecord.objects.filter(patient=message.patient, action="opt_out")
    assert {c.purpose for c in opt_outs} == {"transactional", "marketing"}
    assert all(c.source == "provider_error" for c in opt_outs)
    assert message_send(message_id=message.pk).status == Status.FAILED
    assert sandbox.stats()["creates"] == 1


def test_429_is_retried_with_backoff_then_sent_exactly_once(
    make_message: Any, sandbox: SandboxServer
) -> None:
    sandbox.add_fault({"kind": "error", "status": 429, "code": 20429, "count": 1})
    message = make_message()
    first = message_send(message_id=message.pk)
    assert (first.status, first.error_code) == (Status.PENDING, "20429")
    assert first.next_attempt_at is not None and first.next_attempt_at > timezone.now()
    assert message_send(message_id=message.pk).status == Status.PENDING  # not due yet
    _due_now(message)
    assert message_send(message_id=message.pk).status == Status.SENT
    assert len(sandbox.messages()) == 1
    assert OutboundMessage.objects.get(pk=message.pk).attempts == 2


def test_retries_give_up_after_the_limit(
    make_message: Any, sandbox: SandboxServer, settings: Any
) -> None:
    settings.CAREFLOW_SEND_MAX_RETRIES = 2
    sandbox.add_fault({"kind": "error", "status": 429, "code": 20429, "count": -1})
    message = make_message()
    message_send(message_id=message.pk)
    _due_now(message)
    final = message_send(message_id=message.pk)
    assert final.status == Status.FAILED
    assert final.error_message.startswith("gave up after 2 attempts")


@pytest.mark.parametrize(("to", "code"), [("+15005550009", "21614"), ("+15005550001", "21211")])
def test_other_4xx_fail_with_twilios_code_and_message(
    make_message: Any, to: str, code: str
) -> None:
    result = message_send(message_id=make_message(to=to).pk)
    assert (result.status, result.error_code) == (Status.FAILED, code)
    assert result.error_message


def test_wrong_credentials_fail_with_20003(make_message: Any, sandbox: SandboxServer) -> None:
    message = make_message()
    integration = message.integration
    integration.secrets = {"auth_token": "0" * 32}
    integration.save()
    result = message_send(message_id=message.pk)
    assert (result.status, result.error_code) == (Status.FAILED, "20003")
    assert sandbox.messages() == []


def test_unreachable_twilio_is_retried(make_message: Any, settings: Any) -> None:
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens: refused at once
    result = message_send(message_id=make_message().pk)
    assert (result.status, result.error_code) == (Status.PENDING, "network")
    assert result.next_attempt_at is not None


@pytest.mark.parametrize(
    "fault",
    [
        {"kind": "slow", "delay": 3.0},  # beyond the 2 s client timeout
        {"kind": "accept_then_drop"},
        {"kind": "accept_then_error", "status": 500, "code": 20500},
    ],
)
def test_ambiguous_outcome_is_reconciled_not_resent(
    make_message: Any, sandbox: SandboxServer, fault: dict[str, Any]
) -> None:
    sandbox.add_fault(fault)
    message = make_message()
    first = message_send(message_id=message.pk)
    assert first.status == Status.UNKNOWN
    wait_for(lambda: len(sandbox.messages()) == 1, what="the sandbox to store the message")
    _due_now(message)
    reconciled = message_send(message_id=message.pk)
    # sent, or already delivered: the look-up records what Twilio has reached meanwhile
    assert reconciled.status in (Status.SENT, Status.DELIVERED)
    assert reconciled.sent_at is not None
    assert reconciled.provider_sid == sandbox.messages()[0]["sid"]
    assert len(sandbox.messages()) == 1


def test_ambiguous_and_never_accepted_is_resent_after_the_grace_period(
    make_message: Any, sandbox: SandboxServer
) -> None:
    sandbox.add_fault({"kind": "drop"})
    message = make_message()
    assert message_send(message_id=message.pk).status == Status.UNKNOWN
    _due_now(message)
    assert message_send(message_id=message.pk).status == Status.UNKNOWN  # too early to tell
    OutboundMessage.objects.filter(pk=message.pk).update(
        sending_started_at=timezone.now() - timedelta(minutes=5), next_attempt_at=timezone.now()
    )
    assert message_send(message_id=message.pk).status == Status.PENDING
    assert message_send(message_id=message.pk).status == Status.SENT
    assert len(sandbox.messages()) == 1


def test_stale_sending_claim_is_reconciled(make_message: Any, sandbox: SandboxServer) -> None:
    message = make_message()
    message_send(message_id=message.pk)
    # pretend the worker died after Twilio's 201 but before recording it
    OutboundMessage.objects.filter(pk=message.pk).update(
        status=Status.SENDING,
        provider_sid=None,
        provider_status="",
        sending_started_at=timezone.now() - timedelta(minutes=10),
    )
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=None)
    message_send(message_id=message.pk)  # stale → unknown, reconciled at once
    result = OutboundMessage.objects.get(pk=message.pk)
    # sent, or already delivered: the look-up records what Twilio has reached meanwhile (on a
    # loaded machine the sandbox's delivery can come before it)
    assert result.status in (Status.SENT, Status.DELIVERED)
    assert result.sent_at is not None
    assert result.provider_sid == sandbox.messages()[0]["sid"]
    assert len(sandbox.messages()) == 1


def test_opt_out_after_prepare_but_before_send_stops_it(
    make_message: Any, sandbox: SandboxServer
) -> None:
    message = make_message()
    ConsentFactory(patient=message.patient, action="opt_out", source="admin")
    result = message_send(message_id=message.pk)
    assert result.status == Status.SKIPPED
    assert re.fullmatch(
        r"opted out of transactional SMS on \d{4}-\d\d-\d\d \(Recorded by staff\)",
        result.skip_reason,
    )
    assert sandbox.messages() == []


def test_twilios_answer_recorded_after_a_callback_keeps_the_callbacks_status(
    make_message: Any,
) -> None:
    from integrations.sending import _message_accepted, message_status_apply

    message = make_message()
    OutboundMessage.objects.filter(pk=message.pk).update(status=Status.SENDING)
    sid = "SM" + "5" * 32
    # the delivery callback for this very send arrives before the worker records the 201
    message_status_apply(message=message, provider_status="delivered", sid=sid)
    message.status = Status.SENDING
    _message_accepted(message, sid=sid, provider_status="queued", segments=1)
    assert (message.status, message.provider_status) == (Status.DELIVERED, "delivered")
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.status, stored.provider_status, stored.provider_sid) == (
        Status.DELIVERED,
        "delivered",
        sid,
    )
    assert stored.sent_at is not None


def test_twilios_answer_moves_a_claimed_message_to_sent(make_message: Any) -> None:
    from integrations.sending import _message_accepted

    message = make_message()
    OutboundMessage.objects.filter(pk=message.pk).update(status=Status.UNKNOWN)
    message.status = Status.UNKNOWN
    _message_accepted(message, sid="SM" + "6" * 32, provider_status="queued")
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.status, stored.provider_status, message.status) == (
        Status.SENT,
        "queued",
        Status.SENT,
    )


@pytest.mark.parametrize("by_then", [Status.SENDING, Status.SENT, Status.SKIPPED])
def test_a_worker_that_lost_its_claim_does_not_call_twilio(
    make_message: Any, sandbox: SandboxServer, by_then: str
) -> None:
    message = make_message()
    # this worker read the message pending; another claimed it (and maybe finished) meanwhile
    mine = OutboundMessage.objects.select_related("integration", "patient").get(pk=message.pk)
    OutboundMessage.objects.filter(pk=message.pk).update(
        status=by_then, attempts=1, sending_started_at=timezone.now()
    )
    result = message_deliver(mine)
    assert sandbox.stats()["creates"] == 0
    assert (result.status, result.attempts) == (by_then, 1)  # the other worker's, re-read
    assert OutboundMessage.objects.get(pk=message.pk).attempts == 1


@pytest.mark.parametrize("by_then", [Status.SENDING, Status.SENT])
def test_a_refusal_decided_after_another_worker_claimed_the_message_changes_nothing(
    make_message: Any, sandbox: SandboxServer, by_then: str
) -> None:
    """This worker read the message pending and now refuses it (the patient has no consent by
    the time it decides); another worker claimed it meanwhile and may have sent it. The
    refusal must not overwrite that claim: the log would say "skipped" for a text sent."""
    message = make_message(consent=False)
    mine = OutboundMessage.objects.select_related("integration", "patient").get(pk=message.pk)
    OutboundMessage.objects.filter(pk=message.pk).update(
        status=by_then, attempts=1, sending_started_at=timezone.now()
    )
    result = message_deliver(mine)
    row = OutboundMessage.objects.get(pk=message.pk)
    assert (row.status, row.skip_reason, row.attempts) == (by_then, "", 1)
    assert (result.status, result.skip_reason) == (by_then, "")  # the other worker's, re-read
    assert sandbox.stats()["creates"] == 0


def test_a_claim_is_stale_only_after_twice_the_send_timeout_and_30_seconds(
    make_message: Any, sandbox: SandboxServer, settings: Any
) -> None:
    settings.TWILIO_HTTP_TIMEOUT = 10
    message = make_message()
    started = timezone.now()
    OutboundMessage.objects.filter(pk=message.pk).update(
        status=Status.SENDING, attempts=1, sending_started_at=started
    )
    # 2 × 10 s + 30 s: the claiming worker may still be waiting for Twilio's answer
    with time_machine.travel(started + timedelta(seconds=50), tick=False):
        assert message_send(message_id=message.pk).status == Status.SENDING
    assert sandbox.stats()["creates"] == 0
    # a second later it has stopped: ambiguous, so looked up at Twilio and (not found there)
    # left for the grace period, never resent at once
    with time_machine.travel(started + timedelta(seconds=50, milliseconds=1), tick=False):
        result = message_send(message_id=message.pk)
    assert (result.status, result.error_code) == (Status.UNKNOWN, "stale")
    assert sandbox.stats()["creates"] == 0


def test_a_retry_waits_until_its_time_to_the_second(
    make_message: Any, sandbox: SandboxServer
) -> None:
    message = make_message()
    due = timezone.now() + timedelta(minutes=1)
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=due)
    with time_machine.travel(due - timedelta(milliseconds=1), tick=False):
        assert message_send(message_id=message.pk).status == Status.PENDING
    assert sandbox.stats()["creates"] == 0
    with time_machine.travel(due, tick=False):
        assert message_send(message_id=message.pk).status == Status.SENT
    assert sandbox.stats()["creates"] == 1


def test_a_prepared_message_records_everything_it_was_given(sandbox: SandboxServer) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = WorkflowFactory(organization=integration.organization)
    step_run = step_run_create(workflow)
    patient = PatientFactory(organization=integration.organization, phone="+14155550123")
    fields: dict[str, Any] = {
        "organization": integration.organization,
        "integration": integration,
        "to": patient.phone,
        "body": "Ćwiczenia " * 21,  # 210 characters, UCS-2 (Ć): 4 segments of 67 as a text
        "purpose": "marketing",
        "from_number": "+15005550006",
        "messaging_service_sid": "MG" + "1" * 32,
        "patient": patient,
        "step_run_id": step_run.pk,
        "workflow_id": workflow.pk,
        "step_index": 3,
        "is_test": True,
        "urgent": True,
        "content": {"note": "kept"},
        "media_url": "https://example.org/card.png",
        "language": "fr",
    }
    built = message_build(idempotency_key="built", **fields)
    assert (built.pk, built.idempotency_key) == (None, "built")  # for a batch to insert
    stored = message_prepare(idempotency_key="stored", **fields)
    for message in (built, OutboundMessage.objects.get(pk=stored.pk)):
        assert (message.organization, message.integration, message.patient) == (
            integration.organization,
            integration,
            patient,
        )
        assert (message.step_run_id, message.workflow_id, message.step_index) == (
            step_run.pk,
            workflow.pk,
            3,
        )
        assert (message.purpose, message.channel, message.content) == (
            "marketing",
            "sms",
            {"note": "kept"},
        )
        assert (message.to, message.from_number, message.messaging_service_sid) == (
            "+14155550123",
            "+15005550006",
            "MG" + "1" * 32,
        )
        assert (message.body, message.media_url, message.language) == (
            "Ćwiczenia " * 21,
            "https://example.org/card.png",
            "fr",
        )
        # with a picture it is one MMS, however long its text
        assert (message.characters, message.encoding, message.segments) == (210, "UCS-2", 1)
        assert (message.is_test, message.urgent, message.status) == (True, True, Status.PENDING)
    bare = message_prepare(idempotency_key="bare", **{**fields, "media_url": "", "content": None})
    assert (bare.segments, bare.content) == (4, {})


def test_a_message_deferred_by_quiet_hours_waits_then_is_skipped_if_consent_went_meanwhile(
    make_message: Any, sandbox: SandboxServer
) -> None:
    message = make_message()  # the patient's zone: New York
    MessagingPolicy.objects.filter(organization=message.organization).update(
        quiet_hours_start=time(8, 0), quiet_hours_end=time(21, 0)
    )
    messaging_policy_forget()
    eleven_pm = datetime(2026, 6, 2, 3, 0, tzinfo=UTC)  # 23:00 EDT
    with time_machine.travel(eleven_pm, tick=False):
        deferred = message_send(message_id=message.pk)
    eight_am = datetime(2026, 6, 2, 12, 0, tzinfo=UTC)
    assert (deferred.status, deferred.next_attempt_at, deferred.attempts) == (
        Status.PENDING,
        eight_am,
        0,
    )
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.next_attempt_at, stored.decision["allowed"]) == (eight_am, False)
    assert stored.consent_record == ConsentRecord.objects.get(patient=message.patient)
    ConsentFactory(patient=message.patient, action="opt_out", source="admin")
    with time_machine.travel(eight_am, tick=False):
        skipped = message_send(message_id=message.pk)
    assert (skipped.status, skipped.next_attempt_at) == (Status.SKIPPED, None)
    assert skipped.skip_reason.startswith("opted out of transactional SMS")
    assert OutboundMessage.objects.get(pk=message.pk).status == Status.SKIPPED
    assert sandbox.messages() == []


T0 = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)


@pytest.fixture
def paced(sandbox: SandboxServer) -> Any:
    """`paced(rate)`: a maker of messages from a sender Twilio lets send `rate` segments a
    second, with a throttle bucket of its own (`.key`)."""

    def pace(rate: float) -> Any:
        integration = sandbox_account(sandbox, IntegrationFactory(segments_per_second=rate))
        patient = PatientFactory(organization=integration.organization, phone="+14155550123")
        ConsentFactory(patient=patient)

        def prepare(key: str, **fields: Any) -> OutboundMessage:
            message = message_prepare(
                organization=integration.organization,
                integration=integration,
                idempotency_key=key,
                to=patient.phone,
                from_number="+15005550006",
                body=f"message {key}",
                purpose="transactional",
                patient=patient,
            )
            if fields:
                OutboundMessage.objects.filter(pk=message.pk).update(**fields)
            return message

        prepare.key = throttle_key(  # type: ignore[attr-defined]
            scope=twilio_account(integration).account_sid, sender="+15005550006"
        )
        return prepare

    return pace


@pytest.fixture
def one_a_second(paced: Any) -> Any:
    return paced(1.0)


def test_a_message_whose_slot_is_over_half_a_second_away_comes_back_for_it(
    one_a_second: Any, sandbox: SandboxServer
) -> None:
    first, second = one_a_second("1"), one_a_second("2")
    with time_machine.travel(T0, tick=False):
        assert message_send(message_id=first.pk).status == Status.SENT
        queued = message_send(message_id=second.pk)
    slot = T0 + timedelta(seconds=1)
    assert (queued.status, queued.next_attempt_at, queued.slot_at, queued.attempts) == (
        Status.PENDING,
        slot,
        slot,
        0,
    )
    with time_machine.travel(slot, tick=False):
        assert message_send(message_id=second.pk).status == Status.SENT
        # it went in the slot it had: none more was reserved (the bucket is booked to T0 + 2 s)
        assert throttle_backlog(key=one_a_second.key) == pytest.approx(1.0)
    assert len(sandbox.messages()) == 2


def test_a_first_contacts_slot_is_as_long_as_its_body_with_the_clinics_wording(
    one_a_second: Any, sandbox: SandboxServer
) -> None:
    # 150 characters are one segment; with the wording added at the claim, two
    first = one_a_second("1", body="x" * 150, segments=1)
    second = one_a_second("2")
    MessagingPolicy.objects.update_or_create(
        organization=first.organization,
        defaults={"first_contact_enabled": True, "brand_name": "Sunrise Telehealth"},
    )
    messaging_policy_forget()
    with time_machine.travel(T0, tick=False):
        sent = message_send(message_id=first.pk)
        queued = message_send(message_id=second.pk)
    assert (sent.status, sent.first_contact, sent.segments) == (Status.SENT, True, 2)
    assert (queued.status, queued.slot_at) == (Status.PENDING, T0 + timedelta(seconds=2))


@pytest.mark.parametrize(
    ("late", "reserves"),
    [(timedelta(milliseconds=250), False), (timedelta(milliseconds=250, microseconds=1), True)],
    ids=["in-its-slot", "missed"],
)
def test_a_message_back_over_a_quarter_second_after_its_slot_reserves_a_new_one(
    one_a_second: Any, sandbox: SandboxServer, late: timedelta, reserves: bool
) -> None:
    now = T0 + timedelta(hours=1)  # the bucket is idle: a new slot is now
    message = one_a_second("late", slot_at=now - late, next_attempt_at=now - late)
    with time_machine.travel(now, tick=False):
        assert message_send(message_id=message.pk).status == Status.SENT
        assert throttle_backlog(key=one_a_second.key) == pytest.approx(1.0 if reserves else 0.0)


def test_a_message_that_missed_its_slot_waits_behind_the_sender_queue_not_beside_it(
    one_a_second: Any, sandbox: SandboxServer
) -> None:
    """One a second: the late message's slot (T0) has passed and T0+3 s, T0+4 s are others';
    sending it at T0+3 s would make two texts in one second at the provider."""
    late = one_a_second("late", slot_at=T0, next_attempt_at=T0)
    others = [one_a_second(f"on-time:{n}") for n in range(2)]
    with time_machine.travel(T0 + timedelta(seconds=3), tick=False):
        assert [message_send(message_id=m.pk).status for m in others] == [
            Status.SENT,
            Status.PENDING,  # its slot is T0 + 4 s
        ]
        queued = message_send(message_id=late.pk)
    slot = T0 + timedelta(seconds=5)
    assert (queued.status, queued.slot_at, queued.next_attempt_at) == (Status.PENDING, slot, slot)
    assert len(sandbox.messages()) == 1


def test_a_slot_at_most_half_a_second_away_is_waited_for_in_the_worker(
    paced: Any, sandbox: SandboxServer
) -> None:
    two_a_second = paced(2.0)  # the second message's slot: exactly half a second on
    messages = [two_a_second(f"half:{n}") for n in range(2)]
    sent, took = [], []
    with time_machine.travel(T0, tick=False):
        for message in messages:
            started = perf_counter()  # real time: the clock above stands still
            sent.append(message_send(message_id=message.pk))
            took.append(perf_counter() - started)
    assert [(m.status, m.sending_started_at) for m in sent] == [(Status.SENT, T0)] * 2
    assert took[1] >= 0.45  # the second waited for its slot before Twilio was called
    assert len(sandbox.messages()) == 2


def test_an_unreachable_throttle_brings_the_message_back_in_five_seconds(
    one_a_second: Any, sandbox: SandboxServer, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CAREFLOW_THROTTLE_REDIS_URL = "redis://127.0.0.1:9/0"
    message = one_a_second("1")
    with time_machine.travel(T0, tick=False):
        waiting = message_send(message_id=message.pk)
    assert f"throttle unreachable; message {message.pk} waits 5 s" in caplog.messages
    assert (waiting.status, waiting.next_attempt_at, waiting.slot_at) == (
        Status.PENDING,
        T0 + timedelta(seconds=5),
        None,
    )
    assert sandbox.messages() == []


def test_a_claim_without_a_start_time_is_judged_by_its_last_update(
    make_message: Any, sandbox: SandboxServer, settings: Any
) -> None:
    settings.TWILIO_HTTP_TIMEOUT = 10
    message = make_message()
    OutboundMessage.objects.filter(pk=message.pk).update(
        status=Status.SENDING, sending_started_at=None, updated_at=T0, lookup_failures=3
    )
    with time_machine.travel(T0 + timedelta(seconds=50), tick=False):
        assert message_send(message_id=message.pk).status == Status.SENDING
    with time_machine.travel(T0 + timedelta(seconds=51), tick=False):
        stale = message_send(message_id=message.pk)
    assert (stale.status, stale.error_code, stale.lookup_failures) == (Status.UNKNOWN, "stale", 0)
    assert stale.error_message == (
        "the sending worker stopped before recording the provider's answer"
    )
    assert sandbox.stats()["creates"] == 0
