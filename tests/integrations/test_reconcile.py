"""Statuses that settle: messages whose final status callback was lost are looked up at
Twilio (the sandbox, with its status callbacks switched off) and settled; acceptance found
by a look-up is dated by Twilio."""

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests
from django.conf import settings as django_settings
from django.utils import timezone

from integrations import tasks
from integrations.models import OutboundMessage
from integrations.sending import message_prepare, message_send, sent_messages_reconcile
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from tests.conftest import sandbox_account, wait_for
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

Status = OutboundMessage.Status
FINAL = {"delivered", "undelivered", "failed"}


@pytest.fixture
def lost_callbacks(sandbox: SandboxServer, settings: Any) -> SandboxServer:
    """The sandbox moves messages on but posts no status callback; no grace period."""
    sandbox.status_callbacks = False
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 0.0
    return sandbox


@pytest.fixture
def send(sandbox: SandboxServer) -> Any:
    integration = sandbox_account(sandbox, IntegrationFactory())

    def send(to: str, key: str) -> OutboundMessage:
        patient = PatientFactory(organization=integration.organization, phone=to)
        ConsentFactory(patient=patient)
        message = message_prepare(
            organization=integration.organization,
            integration=integration,
            idempotency_key=key,
            to=to,
            from_number="+15005550006",
            body="Your order shipped",
            purpose="transactional",
            patient=patient,
        )
        return message_send(message_id=message.pk)

    return send


def _settled_at_twilio(sandbox: SandboxServer, count: int) -> list[dict[str, Any]]:
    def settled() -> list[dict[str, Any]]:
        messages = sandbox.messages()
        done = [m for m in messages if m["status"] in FINAL]
        return messages if len(done) == count else []

    return wait_for(settled, what="Twilio to settle the messages")


@pytest.mark.django_db
def test_messages_whose_final_callback_was_lost_are_settled_from_twilio(
    lost_callbacks: SandboxServer, send: Any
) -> None:
    delivered = send("+14155550123", "k1")
    undelivered = send("+15005550301", "k2")
    failed = send("+15005550305", "k3")
    assert {m.status for m in (delivered, undelivered, failed)} == {Status.SENT}
    at_twilio = _settled_at_twilio(lost_callbacks, 3)
    assert all(c.get("not_posted") for m in at_twilio for c in m["callbacks"])

    assert sent_messages_reconcile() == 3

    for message in (delivered, undelivered, failed):
        message.refresh_from_db()
    assert (delivered.status, delivered.provider_status) == (Status.DELIVERED, "delivered")
    assert delivered.delivered_at is not None
    assert (undelivered.status, undelivered.error_code) == (Status.UNDELIVERED, "30003")
    assert "Unreachable handset" in undelivered.error_message  # explained as a callback is
    assert (failed.status, failed.error_code) == (Status.FAILED, "30005")
    assert all(m.sent_at is not None for m in (delivered, undelivered, failed))
    # safe to run again: nothing left to settle, nothing changed
    assert sent_messages_reconcile() == 0


@pytest.mark.django_db
def test_a_message_is_not_looked_up_within_the_grace_period(
    lost_callbacks: SandboxServer, send: Any, settings: Any
) -> None:
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 600.0
    message = send("+14155550123", "k1")
    _settled_at_twilio(lost_callbacks, 1)
    assert sent_messages_reconcile() == 0
    message.refresh_from_db()
    assert (message.status, message.status_checks) == (Status.SENT, 0)


@pytest.mark.django_db
def test_look_ups_back_off_and_stop_after_the_maximum(
    sandbox: SandboxServer, settings: Any
) -> None:
    """A message Twilio cannot find (or still reports "sent", as for carriers without
    delivery receipts) is asked about again later each time, then no more."""
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 60.0
    settings.CAREFLOW_STATUS_RECONCILE_MAX_CHECKS = 3
    integration = sandbox_account(sandbox, IntegrationFactory())
    message = OutboundMessage.objects.create(
        organization=integration.organization,
        integration=integration,
        idempotency_key="k1",
        purpose="transactional",
        to="+14155550123",
        from_number="+15005550006",
        body="hi",
        status=Status.SENT,
        provider_status="sent",
        provider_sid="SM" + "0" * 32,  # unknown at Twilio: a 404
    )
    OutboundMessage.objects.filter(pk=message.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    waits = []
    for checks in range(1, 4):
        before = timezone.now()
        assert sent_messages_reconcile() == 0
        message.refresh_from_db()
        assert message.status_checks == checks
        assert message.status_check_at is not None
        waits.append(message.status_check_at - before)
        assert sent_messages_reconcile() == 0  # not due again yet
        message.refresh_from_db()
        assert message.status_checks == checks
        OutboundMessage.objects.filter(pk=message.pk).update(status_check_at=timezone.now())
    assert [round(w.total_seconds() / 60) for w in waits] == [1, 2, 4]
    assert sent_messages_reconcile() == 0
    message.refresh_from_db()
    assert (message.status, message.status_checks) == (Status.SENT, 3)  # given up


@pytest.mark.django_db
def test_a_run_looks_up_at_most_its_batch(lost_callbacks: SandboxServer, send: Any) -> None:
    messages = [send(f"+1415555012{i}", f"k{i}") for i in range(3)]
    _settled_at_twilio(lost_callbacks, 3)
    assert sent_messages_reconcile(limit=2) == 2
    assert sent_messages_reconcile(limit=2) == 1
    assert {OutboundMessage.objects.get(pk=m.pk).status for m in messages} == {Status.DELIVERED}


@pytest.mark.django_db
def test_twilio_unreachable_postpones_the_look_up(
    lost_callbacks: SandboxServer, send: Any, settings: Any
) -> None:
    message = send("+14155550123", "k1")
    _settled_at_twilio(lost_callbacks, 1)
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"
    assert sent_messages_reconcile() == 0
    message.refresh_from_db()
    assert (message.status, message.status_checks) == (Status.SENT, 1)


@pytest.mark.django_db
def test_an_ambiguous_send_found_at_twilio_is_dated_by_twilio_and_settled(
    sandbox: SandboxServer, send: Any
) -> None:
    """The create's answer was lost (Twilio accepted it): the look-up before any resend
    records when Twilio accepted it, and the status Twilio has reached since."""
    sandbox.status_callbacks = False
    sandbox.add_fault({"kind": "accept_then_error", "status": 500, "code": 20500})
    message = send("+15005550301", "k1")
    assert (message.status, message.sent_at) == (Status.UNKNOWN, None)
    (at_twilio,) = _settled_at_twilio(sandbox, 1)
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())

    reconciled = message_send(message_id=message.pk)

    assert (reconciled.status, reconciled.error_code) == (Status.UNDELIVERED, "30003")
    reconciled.refresh_from_db()
    assert reconciled.status == Status.UNDELIVERED
    assert reconciled.provider_sid == at_twilio["sid"]
    assert reconciled.sent_at == _sandbox_date_created(sandbox, reconciled)


def _sandbox_date_created(sandbox: SandboxServer, message: OutboundMessage) -> datetime:
    """Twilio's own date_created of the message (second precision, as Twilio gives it)."""
    integration = message.integration
    resource = requests.get(
        f"{sandbox.url}/2010-04-01/Accounts/{twilio_account(integration).account_sid}/Messages/"
        f"{message.provider_sid}.json",
        auth=(twilio_account(integration).account_sid, twilio_account(integration).auth_token),
        timeout=5,
    ).json()
    return parsedate_to_datetime(resource["date_created"]).astimezone(UTC)


def test_reconciliation_runs_on_beat_through_the_sends_queue() -> None:
    entry = django_settings.CELERY_BEAT_SCHEDULE["sent-messages-reconcile"]
    assert entry["task"] == tasks.sent_messages_reconcile.name
    assert django_settings.CELERY_TASK_ROUTES[entry["task"]] == {"queue": "sends"}


def test_a_settled_message_through_the_real_worker(
    worker: Any, lost_callbacks: SandboxServer, send: Any
) -> None:
    message = send("+15005550306", "k1")
    _settled_at_twilio(lost_callbacks, 1)
    # The worker's own grace period is the default; this message's look-up is due now.
    OutboundMessage.objects.filter(pk=message.pk).update(status_check_at=timezone.now())
    tasks.sent_messages_reconcile.delay()
    wait_for(
        lambda: OutboundMessage.objects.get(pk=message.pk).status == Status.UNDELIVERED,
        what="the worker to settle the message",
    )
    assert OutboundMessage.objects.get(pk=message.pk).error_code == "30006"
