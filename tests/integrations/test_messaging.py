"""The transport registry, the protocol's neutral defaults, and the messaging core driven by
a transport that is not Twilio (an email-like channel)."""

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.messaging import (
    TRANSPORTS,
    Accepted,
    Ambiguous,
    Found,
    LookupRefused,
    Refused,
    Transport,
    transport_get,
)
from integrations.models import Integration, OutboundMessage
from integrations.sending import (
    MessagesAccepted,
    _message_refused,
    message_deliver,
    message_prepare,
    message_prepare_and_deliver,
    message_send,
    message_status_apply,
    messages_of_ended_runs_skip,
    sent_messages_reconcile,
)
from patients.consent import consent_history_prefetch
from patients.models import ConsentRecord, Patient
from tests.factories import ConsentFactory, PatientFactory, WorkflowFactory, step_run_create
from tests.integrations.fake_transport import FakeTransport, fake_integration, fake_transport

pytestmark = pytest.mark.django_db
Status = OutboundMessage.Status
__all__ = ["fake_transport"]  # the fixture, used by name


def _message(channel_consent: bool = True, patient: Any = None) -> OutboundMessage:
    """A message of the fake channel, to a new patient with consent (or to `patient`)."""
    integration = fake_integration()
    if patient is None:
        patient = PatientFactory(organization=integration.organization, timezone="UTC")
        ConsentFactory(patient=patient)  # SMS
        if channel_consent:
            ConsentFactory(patient=patient, channel="email")
    return message_prepare(
        organization=integration.organization,
        integration=integration,
        idempotency_key=f"letters:{patient.pk}:{OutboundMessage.objects.count()}",
        to=patient.email,
        from_number="clinic@letters.test",
        body="Your results are ready",
        purpose="transactional",
        patient=patient,
        channel="email",
        content={"subject": "Results"},
        urgent=True,  # quiet hours aside
    )


def test_an_unregistered_adapter_has_no_transport() -> None:
    with pytest.raises(LookupError):
        transport_get("no-such-adapter")


def test_the_base_transport_is_neutral() -> None:
    transport = Transport()
    message = OutboundMessage(to="someone@example.com", from_number="x")
    assert transport.throttle(message) is None
    assert transport.units(message) == 1
    assert transport.explain_error("123") == ""
    assert transport.provider_id_valid("abc") and not transport.provider_id_valid("x" * 256)
    assert not transport.provider_id_valid("")
    with pytest.raises(Ambiguous):
        transport.lookup(message, since=timezone.now())
    with pytest.raises(NotImplementedError):
        transport.send(message)


def test_a_message_is_sent_through_its_adapters_transport(fake_transport: FakeTransport) -> None:
    message = _message()
    assert (message.channel, message.content) == ("email", {"subject": "Results"})
    sent = message_send(message_id=message.pk)
    assert (sent.status, sent.provider_status) == (Status.SENT, "accepted")
    assert sent.provider_sid == f"<{message.uuid}@letters.test>"
    assert message_send(message_id=message.pk).status == Status.SENT
    assert fake_transport.sent == [message.pk]


def test_consent_is_by_channel(fake_transport: FakeTransport) -> None:
    message = _message(channel_consent=False)  # an SMS opt-in only
    skipped = message_send(message_id=message.pk)
    assert skipped.status == Status.SKIPPED
    assert fake_transport.sent == []


def test_a_provider_status_is_applied_through_the_transports_words(
    fake_transport: FakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="integrations.sending")
    message = message_send(message_id=_message().pk)
    assert message_status_apply(message=message, provider_status="delivered")
    assert not message_status_apply(message=message, provider_status="accepted")  # backwards
    assert not message_status_apply(message=message, provider_status="queued")  # not its word
    assert not message_status_apply(message=message, provider_status="")  # ranked, not a word
    assert f"ignoring unknown provider status 'queued' for message {message.pk}" in (
        caplog.messages
    )
    message.refresh_from_db()
    assert message.status == Status.DELIVERED


def test_an_opt_out_refusal_records_an_opt_out_on_the_messages_channel(
    fake_transport: FakeTransport,
) -> None:
    fake_transport.outcome = Refused("hard_bounce", "no such mailbox", opted_out=True)
    message = message_send(message_id=_message().pk)
    assert (message.status, message.error_code) == (Status.FAILED, "hard_bounce")
    opt_outs = ConsentRecord.objects.filter(patient=message.patient, action="opt_out")
    assert {(c.channel, c.purpose) for c in opt_outs} == {
        ("email", "transactional"),
        ("email", "marketing"),
    }
    assert opt_outs[0].evidence["error_code"] == "hard_bounce"


def test_a_retryable_refusal_is_retried(fake_transport: FakeTransport) -> None:
    fake_transport.outcome = Refused("busy", "slow down", retryable=True)
    message = message_send(message_id=_message().pk)
    assert (message.status, message.error_code) == (Status.PENDING, "busy")
    assert message.next_attempt_at is not None


def test_an_ambiguous_send_is_looked_up_before_any_resend(
    fake_transport: FakeTransport,
) -> None:
    fake_transport.outcome = Ambiguous("timeout", "no answer")
    message = message_send(message_id=_message().pk)
    assert message.status == Status.UNKNOWN
    fake_transport.found = Found(provider_id="<found@letters.test>", provider_status="delivered")
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())
    found = message_send(message_id=message.pk)
    assert (found.status, found.provider_sid) == (Status.DELIVERED, "<found@letters.test>")
    assert fake_transport.sent == [message.pk]


def test_a_status_report_during_an_ambiguous_send_is_not_undone(
    fake_transport: FakeTransport,
) -> None:
    message = _message()
    original_send = fake_transport.send

    def delivered_then_no_answer(sending: OutboundMessage) -> Accepted:
        # The provider accepted it and reported delivery before our request timed out.
        original_send(sending)
        row = OutboundMessage.objects.get(pk=sending.pk)
        assert message_status_apply(
            message=row, provider_status="delivered", sid=f"<{sending.uuid}@letters.test>"
        )
        raise Ambiguous("timeout", "no answer")

    fake_transport.send = delivered_then_no_answer  # type: ignore[method-assign]
    sent = message_send(message_id=message.pk)
    assert sent.status == Status.DELIVERED
    assert OutboundMessage.objects.get(pk=message.pk).status == Status.DELIVERED


def test_without_lookup_an_ambiguous_send_stays_unknown_and_is_never_resent(
    fake_transport: FakeTransport,
) -> None:
    fake_transport.can_lookup = False
    fake_transport.outcome = Ambiguous("timeout", "no answer")
    message = message_send(message_id=_message().pk)
    assert message.status == Status.UNKNOWN
    OutboundMessage.objects.filter(pk=message.pk).update(
        next_attempt_at=timezone.now(), sending_started_at=timezone.now() - timedelta(hours=1)
    )
    fake_transport.outcome = None
    again = message_send(message_id=message.pk)
    assert (again.status, again.next_attempt_at) == (Status.UNKNOWN, None)
    assert message_send(message_id=message.pk).status == Status.UNKNOWN
    assert fake_transport.sent == [message.pk]


# --- status reports and look-ups, through the protocol ------------------------------------

T0 = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)


@contextmanager
def _in_another_session(
    hold: Callable[[], None], *, commit_after: float | None = None
) -> Iterator[None]:
    """Run `hold` in a transaction of another database session (a thread) and keep that
    transaction open while the block runs, or commit it `commit_after` seconds into it."""
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with transaction.atomic():
                hold()
                holding.set()
                release.wait(timeout=30)
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)
            holding.set()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert holding.wait(timeout=30)
        if commit_after is not None:
            threading.Timer(commit_after, release.set).start()
        yield
    finally:
        release.set()
        thread.join()
    assert errors == []


def _row(**fields: Any) -> OutboundMessage:
    """A message row of the fake channel, in whatever state the test needs."""
    integration = fake_integration()
    values: dict[str, Any] = {
        "organization": integration.organization,
        "integration": integration,
        "idempotency_key": f"row:{OutboundMessage.objects.count()}",
        "purpose": "transactional",
        "channel": "email",
        "to": "pat@example.com",
        "from_number": "clinic@letters.test",
        "body": "x",
    }
    return OutboundMessage.objects.create(**{**values, **fields})


def test_a_status_report_moves_a_message_only_forwards(fake_transport: FakeTransport) -> None:
    message = _row(status=Status.SENT, provider_status="accepted", provider_sid="<a@l>")
    assert message_status_apply(message=message, provider_status="delivered")
    # "bounced" ranks with "delivered": a report of the same rank changes nothing
    assert not message_status_apply(message=message, provider_status="bounced")
    message.refresh_from_db()
    assert (message.status, message.provider_status) == (Status.DELIVERED, "delivered")


def test_a_status_report_records_when_it_was_accepted_and_reached(
    fake_transport: FakeTransport,
) -> None:
    accepted_at, reached_at = T0 - timedelta(minutes=5), T0 - timedelta(minutes=1)
    message = _row(status=Status.SENDING)
    with time_machine.travel(T0, tick=False):
        assert message_status_apply(
            message=message, provider_status="accepted", accepted_at=accepted_at
        )
        message.refresh_from_db()
        assert (message.status, message.sent_at, message.updated_at) == (
            Status.SENT,
            accepted_at,
            T0,
        )
        # a later report does not move when it was accepted; it says when it was delivered
        assert message_status_apply(
            message=message, provider_status="delivered", accepted_at=T0, reported_at=reached_at
        )
        message.refresh_from_db()
        assert (message.sent_at, message.delivered_at) == (accepted_at, reached_at)
        # reports that say neither: accepted and delivered now
        other = _row(status=Status.SENDING)
        assert message_status_apply(message=other, provider_status="delivered")
        other.refresh_from_db()
        assert (other.sent_at, other.delivered_at) == (T0, T0)
        # only a delivery is dated as one
        bounced = _row(status=Status.SENT, provider_status="accepted")
        assert message_status_apply(message=bounced, provider_status="bounced", reported_at=T0)
        bounced.refresh_from_db()
        assert (bounced.status, bounced.delivered_at) == (Status.UNDELIVERED, None)


def test_a_status_report_with_an_error_code_is_explained(
    fake_transport: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_transport, "explain_error", lambda code: f"mailbox full ({code})")
    message = _row(status=Status.SENT, provider_status="accepted", error_message="earlier")
    assert message_status_apply(message=message, provider_status="bounced", error_code="552")
    message.refresh_from_db()
    assert (message.status, message.error_code, message.error_message) == (
        Status.UNDELIVERED,
        "552",
        "mailbox full (552)",
    )
    quiet = _row(status=Status.SENT, provider_status="accepted", error_message="earlier")
    assert message_status_apply(message=quiet, provider_status="delivered")
    quiet.refresh_from_db()
    assert (quiet.error_code, quiet.error_message) == ("", "earlier")  # no code: left alone


def test_a_report_naming_a_message_id_must_name_this_messages_own(
    fake_transport: FakeTransport,
) -> None:
    mine = _row(status=Status.SENT, provider_status="accepted", provider_sid="<mine@l>")
    assert not message_status_apply(message=mine, provider_status="delivered", sid="x" * 256)
    assert not message_status_apply(message=mine, provider_status="delivered", sid="<other@l>")
    mine.refresh_from_db()
    assert (mine.status, mine.provider_sid) == (Status.SENT, "<mine@l>")
    assert message_status_apply(message=mine, provider_status="delivered", sid="<mine@l>")
    mine.refresh_from_db()
    assert (mine.status, mine.provider_sid) == (Status.DELIVERED, "<mine@l>")


def test_a_report_fills_a_missing_message_id_that_no_other_message_holds(
    fake_transport: FakeTransport,
) -> None:
    unconfirmed = _row(status=Status.UNKNOWN)
    assert message_status_apply(message=unconfirmed, provider_status="accepted", sid="<new@l>")
    unconfirmed.refresh_from_db()
    assert (unconfirmed.status, unconfirmed.provider_sid) == (Status.SENT, "<new@l>")
    another = _row(status=Status.UNKNOWN)
    assert not message_status_apply(message=another, provider_status="accepted", sid="<new@l>")
    another.refresh_from_db()
    assert (another.status, another.provider_sid, another.sent_at) == (Status.UNKNOWN, None, None)


def test_other_messages_without_an_id_do_not_stop_a_report_filling_this_ones(
    fake_transport: FakeTransport,
) -> None:
    """Only a message holding the report's id makes it not ours; messages that have no id
    yet (pending, or unconfirmed like this one) are no reason to refuse it."""
    waiting = _row(status=Status.PENDING)
    unconfirmed = _row(status=Status.UNKNOWN)
    assert message_status_apply(message=unconfirmed, provider_status="accepted", sid="<u@l>")
    unconfirmed.refresh_from_db()
    waiting.refresh_from_db()
    assert (unconfirmed.status, unconfirmed.provider_sid) == (Status.SENT, "<u@l>")
    assert (waiting.status, waiting.provider_sid) == (Status.PENDING, None)


@pytest.mark.django_db(transaction=True)
def test_a_report_whose_id_another_message_takes_meanwhile_changes_nothing(
    fake_transport: FakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """The id check and the write are one statement, but another transaction can give the
    id to another message after the check saw it free: the unique index then refuses the
    write, and the report is not ours (False, nothing changed, a warning naming the
    message)."""
    unconfirmed = _row(status=Status.UNKNOWN)
    other = _row(status=Status.UNKNOWN)

    def take_the_id() -> None:
        OutboundMessage.objects.filter(pk=other.pk).update(provider_sid="<race@l>")

    # The report's UPDATE waits on the index until the other session commits.
    with (
        _in_another_session(take_the_id, commit_after=0.5),
        caplog.at_level(logging.WARNING, logger="integrations.sending"),
    ):
        changed = message_status_apply(
            message=unconfirmed, provider_status="accepted", sid="<race@l>"
        )
    assert changed is False
    unconfirmed.refresh_from_db()
    assert (unconfirmed.status, unconfirmed.provider_sid) == (Status.UNKNOWN, None)
    assert [r.getMessage() for r in caplog.records if r.name == "integrations.sending"] == [
        f"status report for message {unconfirmed.pk} names another message's SID"
    ]


def test_a_stale_report_still_fills_a_missing_message_id(fake_transport: FakeTransport) -> None:
    # delivered by a report without the id; the send's own "accepted" arrives after it
    message = _row(status=Status.DELIVERED, provider_status="delivered")
    with time_machine.travel(T0, tick=False):
        changed = message_status_apply(message=message, provider_status="accepted", sid="<s@l>")
    assert changed is False
    message.refresh_from_db()
    assert (message.status, message.provider_sid, message.sent_at) == (
        Status.DELIVERED,
        "<s@l>",
        T0,
    )
    # with its id recorded, a stale report changes nothing more
    assert not message_status_apply(message=message, provider_status="accepted", sid="<s@l>")


def test_a_report_names_the_sender_of_a_message_sent_from_a_pool(
    fake_transport: FakeTransport,
) -> None:
    pooled = _row(status=Status.SENT, provider_status="accepted", from_number="")
    assert message_status_apply(message=pooled, provider_status="delivered", sender="pool-1@l")
    # a stale report names its sender too, and the first one named stays
    assert not message_status_apply(message=pooled, provider_status="accepted", sender="pool-2@l")
    pooled.refresh_from_db()
    assert pooled.from_number == "pool-1@l"
    stale = _row(status=Status.DELIVERED, provider_status="delivered", from_number="")
    assert not message_status_apply(message=stale, provider_status="accepted", sender="pool-3@l")
    stale.refresh_from_db()
    assert stale.from_number == "pool-3@l"
    unsaid = _row(status=Status.SENT, provider_status="accepted", from_number="")
    assert message_status_apply(message=unsaid, provider_status="delivered")
    unsaid.refresh_from_db()
    assert unsaid.from_number == ""  # a report that names no sender fills in nothing
    named = _row(status=Status.SENT, provider_status="accepted")
    message_status_apply(message=named, provider_status="delivered", sender="pool-4@l")
    named.refresh_from_db()
    assert named.from_number == "clinic@letters.test"


def test_a_skipped_message_is_never_moved_by_a_report(fake_transport: FakeTransport) -> None:
    skipped = _row(status=Status.SKIPPED, skip_reason="no consent")
    assert not message_status_apply(message=skipped, provider_status="delivered")
    skipped.refresh_from_db()
    assert (skipped.status, skipped.provider_status) == (Status.SKIPPED, "")


class _LookUps:
    """What the fake provider answers to look-ups, in turn (an exception is raised), and the
    look-ups made: (message id, since)."""

    def __init__(self, transport: FakeTransport, *answers: Found | Exception | None) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[int, datetime]] = []
        transport.lookup = self  # type: ignore[method-assign]

    def __call__(self, message: OutboundMessage, *, since: datetime) -> Found | None:
        self.asked.append((message.pk, since))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _ambiguous(**fields: Any) -> OutboundMessage:
    values = {"status": Status.UNKNOWN, "sending_started_at": T0, "next_attempt_at": T0}
    return _row(**{**values, **fields})


def test_failed_look_ups_back_off_doubling_to_an_hour_then_leave_it_to_staff(
    fake_transport: FakeTransport, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CAREFLOW_RECONCILE_MAX_FAILURES = 10
    lookups = _LookUps(fake_transport, Ambiguous("timeout", "no answer"))
    message = _ambiguous()
    waits, now = [], T0
    for failures in range(1, 10):
        with time_machine.travel(now, tick=False):
            message = message_send(message_id=message.pk)
        assert (message.status, message.lookup_failures) == (Status.UNKNOWN, failures)
        assert message.next_attempt_at is not None
        waits.append((message.next_attempt_at - now).total_seconds())
        now = message.next_attempt_at
    assert waits == [15, 30, 60, 120, 240, 480, 960, 1920, 3600]
    with time_machine.travel(now, tick=False):
        message = message_send(message_id=message.pk)
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.status, stored.lookup_failures, stored.next_attempt_at) == (
        Status.UNKNOWN,
        10,
        None,
    )
    assert stored.error_code == "timeout"
    assert stored.error_message == (
        "Not confirmed: careflow could not find out whether the provider accepted this message "
        "(10 look-ups failed; last answer timeout: no answer). It was not sent again, as it may "
        "have gone out: check it in the provider's console."
    )
    assert len(lookups.asked) == 10
    # each failure is logged with the message and the provider's code, for whoever is on call
    assert caplog.messages.count(f"reconciling message {message.pk} failed: timeout") == 10
    assert f"message {message.pk} left unconfirmed: 10 look-ups failed" in caplog.messages
    # given up: never looked up (nor sent) again
    with time_machine.travel(now + timedelta(days=1), tick=False):
        assert message_send(message_id=message.pk).status == Status.UNKNOWN
    assert len(lookups.asked) == 10 and fake_transport.sent == []


def test_a_provider_that_refuses_look_ups_leaves_the_message_to_staff_at_once(
    fake_transport: FakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    _LookUps(fake_transport, LookupRefused("forbidden-for-test-keys", ""))
    message = _ambiguous()
    with time_machine.travel(T0, tick=False):
        message_send(message_id=message.pk)
    message.refresh_from_db()
    assert (message.status, message.lookup_failures, message.next_attempt_at) == (
        Status.UNKNOWN,
        1,
        None,
    )
    assert message.error_code == "forbidden-for-te"  # the field's 16 characters
    assert (
        f"message {message.pk} left unconfirmed: the provider refuses to look it up"
        in caplog.messages
    )
    assert "(the provider refuses to look it up; last answer forbidden-for-test-keys)" in (
        message.error_message
    )


def test_an_ambiguous_send_is_looked_up_only_when_due_and_by_when_it_started(
    fake_transport: FakeTransport,
) -> None:
    lookups = _LookUps(fake_transport, None)
    message = _ambiguous(next_attempt_at=T0 + timedelta(seconds=1))
    with time_machine.travel(T0, tick=False):
        assert message_send(message_id=message.pk).next_attempt_at == T0 + timedelta(seconds=1)
    assert lookups.asked == []
    with time_machine.travel(T0 + timedelta(seconds=1), tick=False):
        message_send(message_id=message.pk)
    assert lookups.asked == [(message.pk, T0)]
    # a message that never recorded when sending started: since it was created
    unstarted = _ambiguous(sending_started_at=None)
    with time_machine.travel(T0, tick=False):
        message_send(message_id=unstarted.pk)
    assert lookups.asked[-1] == (unstarted.pk, unstarted.created_at)


def test_not_found_is_asked_again_until_the_grace_period_then_sent_again(
    fake_transport: FakeTransport,
) -> None:
    _LookUps(fake_transport, None)
    message = _ambiguous()
    # another unconfirmed message, not due for its look-up: left as it is throughout
    other = _ambiguous(next_attempt_at=T0 + timedelta(hours=1))
    almost = T0 + timedelta(minutes=2) - timedelta(microseconds=1)
    with time_machine.travel(almost, tick=False):
        asked = message_send(message_id=message.pk)
    assert (asked.status, asked.next_attempt_at) == (
        Status.UNKNOWN,
        almost + timedelta(seconds=15),
    )
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=T0)
    with time_machine.travel(T0 + timedelta(minutes=2), tick=False):
        again = message_send(message_id=message.pk)
    assert (again.status, again.next_attempt_at) == (Status.PENDING, None)
    assert OutboundMessage.objects.get(pk=message.pk).updated_at == T0 + timedelta(minutes=2)
    assert fake_transport.sent == []  # sent again by the next attempt, not by the look-up
    assert OutboundMessage.objects.get(pk=other.pk).status == Status.UNKNOWN


@pytest.mark.parametrize(
    ("answer", "after"),
    [
        (Ambiguous("timeout", "no answer"), timedelta(minutes=3)),  # the look-up failed
        (None, timedelta(minutes=1)),  # not found yet: asked again later
        (None, timedelta(minutes=3)),  # not found after the grace period
    ],
)
def test_a_status_report_arriving_during_a_look_up_is_not_undone(
    fake_transport: FakeTransport, answer: Exception | None, after: timedelta
) -> None:
    # The provider's search lags behind its status callbacks: the delivery report comes in
    # while the look-up is out, which then fails or does not find the message yet.
    message = _ambiguous()

    def reported_meanwhile(looked_up: OutboundMessage, *, since: datetime) -> Found | None:
        row = OutboundMessage.objects.get(pk=looked_up.pk)
        assert message_status_apply(message=row, provider_status="delivered", sid="<late@l>")
        if answer is not None:
            raise answer
        return None

    fake_transport.lookup = reported_meanwhile  # type: ignore[method-assign]
    with time_machine.travel(T0 + after, tick=False):
        message_send(message_id=message.pk)
        message_send(message_id=message.pk)
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.status, stored.provider_status, stored.provider_sid) == (
        Status.DELIVERED,
        "delivered",
        "<late@l>",
    )
    assert stored.delivered_at == T0 + after
    assert fake_transport.sent == []  # and a later attempt leaves it be


def test_a_message_found_at_the_provider_is_recorded_as_it_found_it(
    fake_transport: FakeTransport,
) -> None:
    accepted_at, reported_at = T0 - timedelta(seconds=40), T0 - timedelta(seconds=10)
    _LookUps(
        fake_transport,
        Found(provider_id="<f1@l>", provider_status="", accepted_at=accepted_at),
        Found(
            provider_id="<f2@l>",
            provider_status="bounced",
            error_code="550",
            accepted_at=accepted_at,
            reported_at=reported_at,
        ),
        Found(provider_id="<f3@l>", provider_status="delivered", reported_at=reported_at),
    )
    no_status, bounced, delivered = _ambiguous(), _ambiguous(), _ambiguous()
    with time_machine.travel(T0, tick=False):
        found = [message_send(message_id=m.pk) for m in (no_status, bounced, delivered)]
    # no status said: accepted, as far as "accepted" goes
    assert (found[0].status, found[0].provider_status, found[0].provider_sid) == (
        Status.SENT,
        "accepted",
        "<f1@l>",
    )
    assert found[0].sent_at == accepted_at
    # further on: the status it reached, by a status report's path
    assert (found[1].status, found[1].provider_status, found[1].error_code) == (
        Status.UNDELIVERED,
        "bounced",
        "550",
    )
    assert (found[1].provider_sid, found[1].sent_at) == ("<f2@l>", accepted_at)
    assert (found[2].status, found[2].delivered_at, found[2].sent_at) == (
        Status.DELIVERED,
        reported_at,
        T0,
    )
    for message in found:
        stored = OutboundMessage.objects.get(pk=message.pk)
        assert (stored.status, stored.provider_status) == (message.status, message.provider_status)


def test_a_found_message_is_accepted_as_far_as_the_providers_accepted_words_go(
    fake_transport: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a provider with two words for "accepted" (and one it does not rank)
    monkeypatch.setattr(
        fake_transport,
        "status_map",
        {"queued": "sent", "unranked": "sent", "accepted": "sent", "delivered": "delivered"},
    )
    monkeypatch.setattr(
        fake_transport, "status_rank", {"": 0, "queued": 1, "accepted": 2, "delivered": 3}
    )
    _LookUps(
        fake_transport,
        Found(provider_id="<q@l>", provider_status=""),
        Found(provider_id="<r@l>", provider_status="queued"),
        Found(provider_id="<d@l>", provider_status="delivered"),
    )
    said_nothing, queued, delivered = _ambiguous(), _ambiguous(), _ambiguous()
    with time_machine.travel(T0, tick=False):
        found = [message_send(message_id=m.pk) for m in (said_nothing, queued, delivered)]
    assert [(m.status, m.provider_status) for m in found] == [
        (Status.SENT, "accepted"),
        (Status.SENT, "queued"),
        (Status.DELIVERED, "delivered"),
    ]


def test_a_found_message_keeps_the_providers_word_and_a_word_careflow_does_not_rank_is_accepted(
    fake_transport: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a provider with two "accepted" words of one rank, and one it does not rank, listed first
    monkeypatch.setattr(
        fake_transport,
        "status_map",
        {"unranked": "sent", "accepted": "sent", "queued": "sent", "delivered": "delivered"},
    )
    monkeypatch.setattr(
        fake_transport, "status_rank", {"": 0, "accepted": 1, "queued": 1, "delivered": 2}
    )
    _LookUps(
        fake_transport,
        Found(provider_id="<n@l>", provider_status=""),
        Found(provider_id="<q@l>", provider_status="queued"),
        Found(provider_id="<h@l>", provider_status="held"),  # a status careflow does not know
    )
    said_nothing, queued, held = _ambiguous(), _ambiguous(), _ambiguous()
    with time_machine.travel(T0, tick=False):
        for message in (said_nothing, queued, held):
            message_send(message_id=message.pk)
    stored = [OutboundMessage.objects.get(pk=m.pk) for m in (said_nothing, queued, held)]
    # no status said: as far as a ranked "accepted" word goes; else the provider's own word
    assert [(m.status, m.provider_status) for m in stored[:2]] == [
        (Status.SENT, "accepted"),
        (Status.SENT, "queued"),
    ]
    # a status careflow cannot place: the provider has the message, so it was accepted
    assert (stored[2].status, stored[2].provider_sid, stored[2].sent_at) == (
        Status.SENT,
        "<h@l>",
        T0,
    )
    assert fake_transport.sent == []


def _sent(**fields: Any) -> OutboundMessage:
    """A message the provider accepted, not heard of since `updated_at` (default: T0)."""
    values = {
        "status": Status.SENT,
        "provider_status": "accepted",
        "provider_sid": f"<sent{OutboundMessage.objects.count()}@l>",
    }
    updated_at = fields.pop("updated_at", T0)
    message = _row(**{**values, **fields})
    OutboundMessage.objects.filter(pk=message.pk).update(updated_at=updated_at)
    return message


def test_sent_messages_are_looked_up_once_their_grace_period_has_passed(
    fake_transport: FakeTransport, settings: Any
) -> None:
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 60.0
    settings.CAREFLOW_STATUS_RECONCILE_MAX_CHECKS = 3
    grace = timedelta(seconds=60)
    due = [
        _sent(updated_at=T0 - grace),  # heard of exactly a grace period ago
        _sent(updated_at=T0, status_check_at=T0),  # its next check is now
        _sent(updated_at=T0, status_check_at=T0 - timedelta(hours=1), status_checks=2),
    ]
    not_due = [
        _sent(updated_at=T0 - grace + timedelta(microseconds=1)),
        _sent(updated_at=T0 - grace, status_check_at=T0 + timedelta(microseconds=1)),
        _sent(updated_at=T0 - grace, status_checks=3),  # checked as often as it may be
        _sent(updated_at=T0 - grace, provider_sid=None),  # nothing to look up by
        _sent(updated_at=T0 - grace, status=Status.DELIVERED, provider_status="delivered"),
    ]
    lookups = _LookUps(fake_transport, None)
    with time_machine.travel(T0, tick=False):
        assert sent_messages_reconcile() == 0
    assert sorted(pk for pk, _ in lookups.asked) == sorted(m.pk for m in due)
    for message in due:
        before = message.status_checks
        message.refresh_from_db()
        assert message.status_checks == before + 1
        assert message.status_check_at == T0 + grace * 2**before  # 1, 1, 4 grace periods
    for message in not_due:
        before = (message.status_checks, message.status_check_at)
        message.refresh_from_db()
        assert (message.status_checks, message.status_check_at) == before


def test_the_wait_between_status_look_ups_doubles_to_at_most_12_hours(
    fake_transport: FakeTransport, settings: Any
) -> None:
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 3600.0
    _LookUps(fake_transport, None)
    fourth = _sent(status_check_at=T0, status_checks=3)  # 8 hours
    fifth = _sent(status_check_at=T0, status_checks=4)  # 16 hours: 12
    with time_machine.travel(T0, tick=False):
        sent_messages_reconcile()
    fourth.refresh_from_db()
    fifth.refresh_from_db()
    assert fourth.status_check_at == T0 + timedelta(hours=8)
    assert fifth.status_check_at == T0 + timedelta(hours=12)


def test_a_reconciliation_run_looks_up_its_batch_longest_unchecked_first(
    fake_transport: FakeTransport, settings: Any
) -> None:
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 60.0
    settings.CAREFLOW_STATUS_RECONCILE_BATCH = 2
    later = _sent(status_check_at=T0 - timedelta(minutes=1))
    earlier = _sent(status_check_at=T0 - timedelta(minutes=2))
    never_a = _sent(updated_at=T0 - timedelta(hours=1))
    never_b = _sent(updated_at=T0 - timedelta(hours=2))
    # never_a's row written again after never_b's, to a new place (an indexed column
    # changed): neither the table's nor an index's order is the ids' any more, so only the
    # id breaks their tie.
    OutboundMessage.objects.filter(pk=never_a.pk).update(to="pat+a@example.com")  # not HOT
    lookups = _LookUps(fake_transport, None)
    with time_machine.travel(T0, tick=False):
        sent_messages_reconcile()  # the setting's batch
        assert [pk for pk, _ in lookups.asked] == [never_a.pk, never_b.pk]  # never checked: by id
        sent_messages_reconcile(limit=1)
        assert [pk for pk, _ in lookups.asked][2:] == [earlier.pk]
        sent_messages_reconcile(limit=5)
        assert [pk for pk, _ in lookups.asked][3:] == [later.pk]


def test_status_look_ups_settle_what_the_provider_has_settled(
    fake_transport: FakeTransport,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 60.0
    monkeypatch.setattr(fake_transport, "explain_error", lambda code: f"explained {code}")
    accepted_at, reported_at = T0 - timedelta(hours=2), T0 - timedelta(hours=1)
    unreachable, missing, still, bounced, delivered = (
        _sent(updated_at=T0 - timedelta(hours=1), sending_started_at=T0 - timedelta(hours=3))
        for _ in range(5)
    )
    lookups = _LookUps(
        fake_transport,
        Ambiguous("timeout", "no answer"),
        None,
        Found(provider_id="<x@l>", provider_status="accepted"),
        Found(provider_id="<x@l>", provider_status="bounced", error_code="550"),
        Found(
            provider_id="<x@l>",
            provider_status="delivered",
            accepted_at=accepted_at,
            reported_at=reported_at,
            sender="pool@l",
        ),
    )
    OutboundMessage.objects.filter(pk=delivered.pk).update(from_number="")
    with time_machine.travel(T0, tick=False):
        assert sent_messages_reconcile() == 2  # one look-up failing does not stop the rest
    assert f"status look-up of message {unreachable.pk} failed: timeout" in caplog.messages
    assert [since for _, since in lookups.asked] == [T0 - timedelta(hours=3)] * 5
    for message in (unreachable, missing, still):
        message.refresh_from_db()
        assert (message.status, message.status_checks) == (Status.SENT, 1)
    bounced.refresh_from_db()
    assert (bounced.status, bounced.error_code, bounced.error_message) == (
        Status.UNDELIVERED,
        "550",
        "explained 550",
    )
    delivered.refresh_from_db()
    assert (delivered.status, delivered.delivered_at, delivered.from_number) == (
        Status.DELIVERED,
        reported_at,
        "pool@l",
    )
    assert delivered.sent_at == accepted_at  # not recorded before: the provider's date


def test_a_provider_that_cannot_look_up_is_not_asked_but_its_checks_are_counted(
    fake_transport: FakeTransport, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 60.0
    fake_transport.can_lookup = False
    lookups = _LookUps(fake_transport, Found(provider_id="<x@l>", provider_status="delivered"))
    message = _sent(updated_at=T0 - timedelta(hours=2))
    # another provider's message, due after it, is still looked up
    other_transport = FakeTransport()
    monkeypatch.setitem(TRANSPORTS, "fake-letters-2", other_transport)
    others = _LookUps(other_transport, None)
    other = _sent(updated_at=T0 - timedelta(hours=1))
    Integration.objects.filter(pk=other.integration_id).update(adapter="fake-letters-2")
    with time_machine.travel(T0, tick=False):
        assert sent_messages_reconcile() == 0
    message.refresh_from_db()
    assert (message.status, message.status_checks, lookups.asked) == (Status.SENT, 1, [])
    assert [pk for pk, _ in others.asked] == [other.pk]


def test_acceptances_recorded_together_advance_only_messages_still_being_sent(
    fake_transport: FakeTransport,
) -> None:
    sending = _row(status=Status.SENDING, segments=1, error_code="busy", error_message="retry")
    unknown = _row(status=Status.UNKNOWN, segments=1, next_attempt_at=T0)
    # a status report got to this one first: it keeps its status, and gets its id
    reported = _row(status=Status.DELIVERED, provider_status="delivered", segments=1)
    accepted = MessagesAccepted()
    with time_machine.travel(T0, tick=False):
        accepted.add(sending, sid="<1@l>", provider_status="accepted", segments=3)
        accepted.add(unknown, sid="<2@l>", provider_status="accepted", segments=0)
        accepted.add(reported, sid="<3@l>", provider_status="accepted", segments=1)
    assert (sending.status, sending.provider_sid, sending.segments) == (Status.SENT, "<1@l>", 3)
    assert OutboundMessage.objects.get(pk=sending.pk).status == Status.SENDING  # not yet
    accepted.write()
    rows = {m.pk: m for m in OutboundMessage.objects.filter(pk__in=[sending.pk, unknown.pk])}
    assert [
        (m.status, m.provider_status, m.provider_sid, m.segments, m.sent_at, m.next_attempt_at)
        for m in (rows[sending.pk], rows[unknown.pk])
    ] == [
        (Status.SENT, "accepted", "<1@l>", 3, T0, None),
        (Status.SENT, "accepted", "<2@l>", 1, T0, None),  # no count said: its own kept
    ]
    assert (rows[sending.pk].error_code, rows[sending.pk].error_message) == ("", "")
    reported.refresh_from_db()
    assert (reported.status, reported.provider_status, reported.provider_sid) == (
        Status.DELIVERED,
        "delivered",
        "<3@l>",
    )
    accepted.write()  # written once: nothing left to write


def test_one_acceptance_recorded_at_a_batchs_end_is_one_conditional_update(
    fake_transport: FakeTransport,
) -> None:
    sending = _row(status=Status.SENDING, segments=1)
    reported = _row(status=Status.DELIVERED, provider_status="delivered")
    for message, sid in ((sending, "<1@l>"), (reported, "<2@l>")):
        accepted = MessagesAccepted()
        with time_machine.travel(T0, tick=False):
            accepted.add(message, sid=sid, provider_status="accepted", segments=2)
            accepted.write()
    sending.refresh_from_db()
    assert (sending.status, sending.provider_sid, sending.segments, sending.sent_at) == (
        Status.SENT,
        "<1@l>",
        2,
        T0,
    )
    assert (reported.status, reported.provider_status, reported.provider_sid) == (
        Status.DELIVERED,
        "delivered",
        "<2@l>",
    )


def test_the_unsent_messages_of_runs_that_ended_early_are_skipped(
    fake_transport: FakeTransport,
) -> None:
    workflow = WorkflowFactory()
    ended, other = step_run_create(workflow), step_run_create(workflow)
    deferred = _row(step_run=ended, next_attempt_at=T0)
    being_sent = _row(step_run=ended, status=Status.SENDING)
    of_another_run = _row(step_run=other)
    with time_machine.travel(T0, tick=False):
        assert messages_of_ended_runs_skip({ended.run_id}, "its goal was reached") == 1
    deferred.refresh_from_db()
    assert (deferred.status, deferred.skip_reason, deferred.next_attempt_at) == (
        Status.SKIPPED,
        "the run ended early: its goal was reached",
        None,
    )
    assert deferred.updated_at == T0
    for message, status in ((being_sent, Status.SENDING), (of_another_run, Status.PENDING)):
        message.refresh_from_db()
        assert message.status == status
    later = _row(step_run=ended)
    messages_of_ended_runs_skip({ended.run_id}, "x" * 300)
    later.refresh_from_db()
    assert later.skip_reason == f"the run ended early: {'x' * 300}"[:200]


def _due(**fields: Any) -> OutboundMessage:
    """A message of the fake channel that passes every check and is due now."""
    message = _message()
    if fields:
        OutboundMessage.objects.filter(pk=message.pk).update(**fields)
    return message


@pytest.mark.parametrize(("units", "segments"), [(0, 1), (3, 3)])
def test_the_providers_count_of_units_is_recorded_when_it_gives_one(
    fake_transport: FakeTransport, monkeypatch: pytest.MonkeyPatch, units: int, segments: int
) -> None:
    send = fake_transport.send

    def counted(message: OutboundMessage) -> Accepted:
        answer = send(message)
        return Accepted(answer.provider_id, answer.provider_status, units=units)

    monkeypatch.setattr(fake_transport, "send", counted)
    message = _due(segments=1)
    sent = message_send(message_id=message.pk)
    assert (sent.status, sent.segments) == (Status.SENT, segments)
    assert OutboundMessage.objects.get(pk=message.pk).segments == segments


def test_the_providers_count_of_units_is_recorded_for_a_message_sent_in_a_batch(
    fake_transport: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    send = fake_transport.send

    def counted(message: OutboundMessage) -> Accepted:
        answer = send(message)
        return Accepted(answer.provider_id, answer.provider_status, units=3)

    monkeypatch.setattr(fake_transport, "send", counted)
    integration = fake_integration()
    patient = PatientFactory(organization=integration.organization, timezone="UTC")
    ConsentFactory(patient=patient, channel="email")
    accepted = MessagesAccepted()
    message = message_prepare_and_deliver(
        organization=integration.organization,
        integration=integration,
        idempotency_key="batch:1",
        first_attempt=True,
        accepted=accepted,
        to=patient.email,
        from_number="clinic@letters.test",
        body="Your results are ready",
        purpose="transactional",
        patient=patient,
        channel="email",
        urgent=True,
    )
    assert fake_transport.sent == [message.pk]
    accepted.write()
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert (stored.status, stored.segments) == (Status.SENT, 3)


def test_a_stale_claim_is_taken_for_a_dead_workers_and_no_other(
    fake_transport: FakeTransport,
) -> None:
    _LookUps(fake_transport, Ambiguous("timeout", "no answer"))  # left unknown: not resent
    long_ago = T0 - timedelta(minutes=10)  # beyond twice the send timeout and 30 s
    stale = _row(status=Status.SENDING, sending_started_at=long_ago)
    busy = _row(status=Status.SENDING, sending_started_at=T0)  # another worker mid-call
    answered = _row(status=Status.SENDING, sending_started_at=long_ago)
    in_hand = OutboundMessage.objects.select_related("integration").get(pk=answered.pk)
    # its worker was only slow: it records the provider's answer after we read the message
    OutboundMessage.objects.filter(pk=answered.pk).update(
        status=Status.SENT, provider_status="accepted", provider_sid="<slow@l>"
    )
    with time_machine.travel(T0, tick=False):
        message_send(message_id=stale.pk)
        message_deliver(in_hand)
    stored = {m.pk: m for m in OutboundMessage.objects.all()}
    assert (stored[stale.pk].status, stored[stale.pk].error_code) == (Status.UNKNOWN, "stale")
    assert (stored[busy.pk].status, stored[busy.pk].error_code) == (Status.SENDING, "")
    assert (stored[answered.pk].status, stored[answered.pk].error_code) == (Status.SENT, "")
    assert fake_transport.sent == []


def test_a_claim_records_when_the_message_last_changed(fake_transport: FakeTransport) -> None:
    message = _due()
    seen: list[tuple[str, datetime]] = []
    send = fake_transport.send

    def watched(sending: OutboundMessage) -> Accepted:
        row = OutboundMessage.objects.get(pk=sending.pk)
        seen.append((row.status, row.updated_at))
        return send(sending)

    fake_transport.send = watched  # type: ignore[method-assign]
    with time_machine.travel(T0 + timedelta(days=1), tick=False):
        message_send(message_id=message.pk)
    assert seen == [(Status.SENDING, T0 + timedelta(days=1))]


@pytest.mark.parametrize("opted_out", [False, True])
def test_a_refusal_fails_the_message_for_good_with_the_providers_words(
    fake_transport: FakeTransport, opted_out: bool
) -> None:
    fake_transport.outcome = Refused("521", "recipient refuses", opted_out=opted_out)
    message = _due(next_attempt_at=T0)  # an earlier attempt was retried
    failed = message_send(message_id=message.pk)
    stored = OutboundMessage.objects.get(pk=message.pk)
    for row in (failed, stored):
        assert (row.status, row.error_code, row.error_message, row.next_attempt_at) == (
            Status.FAILED,
            "521",
            "recipient refuses",
            None,
        )
    opt_outs = ConsentRecord.objects.filter(patient=message.patient, action="opt_out")
    assert opt_outs.count() == (2 if opted_out else 0)
    if opted_out:
        # a numeric code is kept as a number, with the message and the sender refused
        assert [c.evidence for c in opt_outs] == [
            {"error_code": 521, "message_id": message.pk, "from": "clinic@letters.test"}
        ] * 2
        # and the next message to this patient is refused at once, not sent
        assert (
            message_send(message_id=_message(patient=message.patient).pk).status == Status.SKIPPED
        )
    assert fake_transport.sent == [message.pk]


def test_an_opt_out_refusal_of_a_message_to_no_patient_records_no_consent(
    fake_transport: FakeTransport,
) -> None:
    fake_transport.outcome = Refused("521", "recipient refuses", opted_out=True)
    message = _row(status=Status.SENDING)
    _message_refused(message, fake_transport.outcome)
    assert (message.status, ConsentRecord.objects.count()) == (Status.FAILED, 0)


def test_a_retryable_refusal_waits_its_backoff_until_the_last_attempt(
    fake_transport: FakeTransport, settings: Any
) -> None:
    settings.CAREFLOW_SEND_MAX_RETRIES = 3
    fake_transport.outcome = Refused("busy", "slow down", retryable=True)
    message = _due(lookup_failures=0)
    now = T0
    for attempt in (1, 2):
        with time_machine.travel(now, tick=False):
            retried = message_send(message_id=message.pk)
        assert (retried.status, retried.attempts) == (Status.PENDING, attempt)
        assert (retried.error_code, retried.error_message) == ("busy", "slow down")
        wait = (retried.next_attempt_at - now).total_seconds()  # type: ignore[operator]
        assert 2.0 * 2 ** (attempt - 1) * 0.5 <= wait <= 2.0 * 2 ** (attempt - 1)  # jittered
        now = retried.next_attempt_at  # type: ignore[assignment]
    # the last answer is the one recorded
    fake_transport.outcome = Refused("overloaded", "try much later", retryable=True)
    with time_machine.travel(now, tick=False):
        final = message_send(message_id=message.pk)
    assert (final.status, final.attempts, final.next_attempt_at) == (Status.FAILED, 3, None)
    assert (final.error_code, final.error_message) == (
        "overloaded",
        "gave up after 3 attempts: try much later",
    )
    assert OutboundMessage.objects.get(pk=message.pk).status == Status.FAILED


def test_an_ambiguous_send_is_marked_unknown_to_be_looked_up_shortly(
    fake_transport: FakeTransport,
) -> None:
    fake_transport.outcome = Ambiguous("timeout", "no answer in 30 s")
    message = _due(lookup_failures=2)  # from an earlier attempt, found never accepted
    elsewhere = _row(status=Status.SENDING)  # another worker's send, under way
    with time_machine.travel(T0, tick=False):
        unknown = message_send(message_id=message.pk)
    stored = OutboundMessage.objects.get(pk=message.pk)
    for row in (unknown, stored):
        assert (row.status, row.error_code, row.error_message) == (
            Status.UNKNOWN,
            "timeout",
            "no answer in 30 s",
        )
        assert (row.next_attempt_at, row.lookup_failures, row.updated_at) == (
            T0 + timedelta(seconds=15),
            0,
            T0,
        )
    elsewhere.refresh_from_db()
    assert elsewhere.status == Status.SENDING


def test_an_opt_out_refusal_is_heeded_by_the_rest_of_a_batch_read_with_its_consents(
    fake_transport: FakeTransport,
) -> None:
    first = _message()
    second = _message(patient=first.patient)
    # a batch reads its patients once, with their consent histories
    patient = Patient.objects.prefetch_related(consent_history_prefetch()).get(pk=first.patient_id)
    fake_transport.outcome = Refused("521", "recipient refuses", opted_out=True)
    first.patient = patient
    assert message_deliver(first).status == Status.FAILED
    fake_transport.outcome = None
    second.patient = patient
    skipped = message_deliver(second)
    assert (skipped.status, fake_transport.sent) == (Status.SKIPPED, [first.pk])
    assert skipped.skip_reason.startswith("opted out of transactional email")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_worker")  # the session worker's beat reconciles too
def test_a_reconciliation_run_skips_messages_another_run_holds_but_not_their_integration(
    fake_transport: FakeTransport, settings: Any
) -> None:
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 60.0
    held = _sent(updated_at=timezone.now() - timedelta(hours=1))
    free = _sent(updated_at=timezone.now() - timedelta(hours=1))
    lookups = _LookUps(fake_transport, None)

    def other_run() -> None:
        # another run has claimed `held`, and staff are saving `free`'s integration
        OutboundMessage.objects.select_for_update().filter(pk=held.pk).get()
        Integration.objects.select_for_update().filter(pk=free.integration_id).get()

    with _in_another_session(other_run):
        sent_messages_reconcile()
        asked = [pk for pk, _ in lookups.asked]
    assert asked == [free.pk]


def test_a_reconciliation_run_reads_its_messages_integrations_with_them(
    fake_transport: FakeTransport, settings: Any
) -> None:
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 60.0
    fake_transport.can_lookup = False  # only the claim and the transports are read
    counts = []
    for due in (1, 3):
        for _ in range(due):
            _sent(updated_at=T0 - timedelta(hours=1))
        with time_machine.travel(T0, tick=False), CaptureQueriesContext(connection) as queries:
            sent_messages_reconcile()
        counts.append(len(queries.captured_queries))
        OutboundMessage.objects.update(status=Status.DELIVERED)
    assert counts[0] == counts[1]  # no query per message
