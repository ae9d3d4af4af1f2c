"""Failure alerts (integrations.alerts): each condition, its thresholds and minimum volume, one
alert per condition and period (also under concurrent evaluations), clinic scoping, and
delivery (staff email through Django's mail API, the signed webhook, failures recorded and
retried with backoff), all on PostgreSQL. The real worker, beat and email sandbox are in
tests/test_alerts_end_to_end.py."""

import hashlib
import hmac
import itertools
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.core import mail
from django.db import connection
from django.utils import timezone

from common.coordination import coordination_redis
from integrations import alerts
from integrations.alerts import alert_deliver, alerts_evaluate, period_start
from integrations.models import Alert, AlertSettings, Integration, OutboundMessage
from integrations.throttle import throttle_key, throttle_reserve
from integrations.twilio.account import twilio_account
from integrations.twilio.forms import TwilioIntegrationForm
from patients.models import Organization
from tests.conftest import WebhookReceiver, sandbox_account
from tests.factories import IntegrationFactory, OrganizationFactory, WorkflowFactory
from workflows.models import Event, Run, StepRun, Workflow

Condition = Alert.Condition
Status = OutboundMessage.Status
SECRET = "s3cret-signing-key-for-tests"
PATIENT_PHONE = "+14155550123"
PATIENT_BODY = "Hi Maria, your HIV test results are ready"
_keys = itertools.count()


@pytest.fixture(autouse=True)
def _no_delivery_task(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the deliveries queued instead of publishing them: these tests call the
    delivery service themselves."""
    queued: list[int] = []

    class Task:
        @staticmethod
        def delay(alert_id: int) -> None:
            queued.append(alert_id)

    monkeypatch.setattr(alerts, "_delivery_task", Task)
    return queued


def _settings(organization: Organization, **fields: Any) -> AlertSettings:
    values: dict[str, Any] = {"staff_emails": ["ops@clinic.example"], **fields}
    return AlertSettings.objects.create(organization=organization, **values)


def _run(workflow: Workflow, *, status: str = Run.Status.FAILED, **fields: Any) -> Run:
    event = Event.objects.create(
        organization=workflow.organization,
        type="order.shipped",
        dedupe_key=f"alerts-{next(_keys)}",
        payload={"customer": {"firstName": "Maria", "phone": PATIENT_PHONE}},
    )
    values: dict[str, Any] = {"finished_at": timezone.now(), **fields}
    return Run.objects.create(workflow=workflow, event=event, status=status, **values)


def _messages(
    workflow: Workflow, integration: Integration, statuses: dict[str, int], **fields: Any
) -> None:
    run = _run(workflow, status=Run.Status.SUCCEEDED)
    step_run = StepRun.objects.create(run=run, index=0, status="succeeded")
    for status, count in statuses.items():
        for _ in range(count):
            OutboundMessage.objects.create(
                organization=workflow.organization,
                integration=integration,
                step_run=step_run,
                idempotency_key=f"alerts-m{next(_keys)}",
                purpose="transactional",
                to=PATIENT_PHONE,
                body=PATIENT_BODY,
                status=status,
                **{"error_code": "30003" if status == Status.UNDELIVERED else "", **fields},
            )


# --- conditions ------------------------------------------------------------------------


def test_a_failed_run_raises_one_alert_however_often_it_is_evaluated(
    db: Any, _no_delivery_task: list[int], django_capture_on_commit_callbacks: Any
) -> None:
    workflow = WorkflowFactory(name="Shipping SMS")
    _settings(workflow.organization)
    _run(workflow)

    with django_capture_on_commit_callbacks(execute=True):
        raised = alerts_evaluate()
        _run(workflow)  # a second failure in the same period
        assert alerts_evaluate() == [] and alerts_evaluate() == []

    alert = Alert.objects.get()
    assert [a.pk for a in raised] == [alert.pk] and _no_delivery_task == [alert.pk]
    assert alert.condition == Condition.RUN_FAILED
    assert alert.subject == f"workflow:{workflow.pk}"
    assert alert.summary.startswith(f"Workflow “Shipping SMS” (id {workflow.pk}): 1 failed run")
    assert (
        alert.link
        == f"http://127.0.0.1:8000/admin/workflows/run/?status=failed&workflow={workflow.pk}"
    )


def test_the_next_period_alerts_again_and_test_runs_never_do(db: Any) -> None:
    workflow = WorkflowFactory()
    _settings(workflow.organization, period_minutes=60)
    earlier = timezone.now() - timedelta(minutes=61)
    _run(workflow, finished_at=earlier)
    _run(workflow, is_test=True)  # a live test from the builder

    first = alerts_evaluate(now=earlier + timedelta(seconds=1))
    _run(workflow)
    second = alerts_evaluate()

    assert len(first) == 1 and len(second) == 1
    assert first[0].period_start != second[0].period_start
    assert second[0].details["failed_runs"] == 1  # the test run is not counted


def test_a_failure_just_before_the_period_ends_is_alerted_in_its_own_period(db: Any) -> None:
    workflow = WorkflowFactory()
    _settings(workflow.organization, period_minutes=60)
    hour = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    _run(workflow, finished_at=hour - timedelta(seconds=1))

    [alert] = alerts_evaluate(now=hour + timedelta(seconds=30))

    assert alert.period_start == hour - timedelta(hours=1)


def test_no_alert_without_settings_recipients_or_when_switched_off(db: Any) -> None:
    silent = WorkflowFactory()
    _run(silent)
    nobody = WorkflowFactory()
    _settings(nobody.organization, staff_emails=[])
    _run(nobody)
    off = WorkflowFactory()
    _settings(off.organization, enabled=False)
    _run(off)

    assert alerts_evaluate() == []
    assert not Alert.objects.exists()


def test_another_clinics_failures_never_alert_this_clinic(db: Any) -> None:
    mine = WorkflowFactory()
    theirs = WorkflowFactory()
    _settings(mine.organization, staff_emails=["mine@clinic.example"])
    _settings(theirs.organization, staff_emails=["theirs@clinic.example"])
    _run(theirs)

    [alert] = alerts_evaluate()
    alert_deliver(alert_id=alert.pk)

    assert alert.organization_id == theirs.organization_id
    assert [m.to for m in mail.outbox] == [["theirs@clinic.example"]]


def test_failure_rate_over_threshold_with_enough_messages(db: Any) -> None:
    workflow = WorkflowFactory(name="Reminders")
    integration = IntegrationFactory(organization=workflow.organization)
    _settings(workflow.organization, failure_rate_percent=20, minimum_messages=10)
    _messages(workflow, integration, {Status.DELIVERED: 7, Status.FAILED: 3, Status.PENDING: 5})

    [alert] = alerts_evaluate()

    assert alert.condition == Condition.FAILURE_RATE
    assert alert.details["failed"] == 3 and alert.details["messages"] == 10
    assert "3 of 10 messages failed in the last hour (30% > 20%)" in alert.summary
    assert alert.link.endswith(
        f"/admin/integrations/outboundmessage/?status=failed&workflow={workflow.pk}"
    )


def test_a_rate_at_the_threshold_or_under_the_minimum_volume_does_not_alert(db: Any) -> None:
    at_threshold = WorkflowFactory()
    _settings(at_threshold.organization, failure_rate_percent=20, minimum_messages=10)
    _messages(
        at_threshold,
        IntegrationFactory(organization=at_threshold.organization),
        {Status.DELIVERED: 8, Status.FAILED: 2},
    )
    one_of_one = WorkflowFactory()
    _settings(one_of_one.organization, minimum_messages=10)
    _messages(
        one_of_one, IntegrationFactory(organization=one_of_one.organization), {Status.FAILED: 1}
    )
    old = WorkflowFactory()
    _settings(old.organization, minimum_messages=1)
    _messages(
        old,
        IntegrationFactory(organization=old.organization),
        {Status.FAILED: 5},
        created_at=timezone.now() - timedelta(minutes=61),
    )

    assert alerts_evaluate() == []


def test_undelivered_rate_names_the_error_codes_and_no_patient(db: Any) -> None:
    workflow = WorkflowFactory(name="Reminders")
    _settings(workflow.organization, undelivered_rate_percent=10, minimum_messages=10)
    _messages(
        workflow,
        IntegrationFactory(organization=workflow.organization),
        {Status.DELIVERED: 8, Status.UNDELIVERED: 4},
    )

    [alert] = alerts_evaluate()

    assert alert.condition == Condition.UNDELIVERED_RATE
    assert alert.details["error_codes"] == {"30003": 4}
    assert alert.link.endswith(f"?status=undelivered&workflow={workflow.pk}")
    text = json.dumps(alerts.alert_payload(alert))
    assert PATIENT_PHONE not in text and "Maria" not in text and "HIV" not in text


@pytest.fixture
def throttle_keys() -> Iterator[list[str]]:
    """Throttle buckets a test books; emptied afterwards (they live in Redis, not the DB)."""
    keys: list[str] = []
    yield keys
    client = coordination_redis()
    if client is not None and keys:
        client.delete(*keys)


def _book(integration: Integration, hours: float, keys: list[str]) -> str:
    """Book `hours` of sending ahead for the integration's first sender, at 1 segment/s."""
    sender = integration.senders[0]
    key = throttle_key(scope=twilio_account(integration).account_sid, sender=sender)
    keys.append(key)
    throttle_reserve(key=key, rate=1.0, segments=int(hours * 3600))
    return sender


def test_a_sender_queue_beyond_twilios_window_alerts(db: Any, throttle_keys: list[str]) -> None:
    integration = IntegrationFactory()
    _settings(integration.organization)
    # 11 hours booked ahead: Twilio keeps about 10 hours, then refuses with 21611.
    sender = _book(integration, 11, throttle_keys)

    [alert] = alerts_evaluate()

    assert alert.condition == Condition.QUEUE_WINDOW
    assert alert.subject == f"sender:{integration.pk}:{sender}"
    assert alert.details["limit_seconds"] == 36000
    assert alert.details["queued_seconds"] > 36000
    assert "beyond Twilio's 10-hour queue" in alert.summary
    assert alert.link.endswith("sender=%2B15005550006&status=pending")
    assert alerts_evaluate() == []  # still over, same period: no second alert


def test_a_sender_within_the_window_does_not_alert(db: Any, throttle_keys: list[str]) -> None:
    integration = IntegrationFactory()
    _settings(integration.organization)
    _book(integration, 9, throttle_keys)

    assert alerts_evaluate() == []


def test_rejected_credentials_on_send_alert_once_per_integration(db: Any) -> None:
    workflow = WorkflowFactory()
    integration = IntegrationFactory(organization=workflow.organization)
    _settings(workflow.organization)
    _messages(workflow, integration, {Status.FAILED: 2}, error_code="20003")
    # An error code that only means "credentials" for another provider does not count.
    email = IntegrationFactory(organization=workflow.organization, adapter="email", senders=[])
    _messages(workflow, email, {Status.FAILED: 1}, error_code="20003", channel="email")

    raised = alerts_evaluate()

    assert [(a.condition, a.subject) for a in raised] == [
        (Condition.CREDENTIALS, f"integration:{integration.pk}")
    ]
    assert "2 message(s) refused with error 20003" in raised[0].summary
    assert raised[0].link.endswith(f"/admin/integrations/integration/{integration.pk}/change/")


def test_evaluations_racing_on_postgresql_raise_one_alert(
    transactional_db: Any, no_worker: None, _no_delivery_task: list[int]
) -> None:
    # no_worker: the session worker's beat evaluates alerts too, and could raise this one.
    workflow = WorkflowFactory()
    _settings(workflow.organization)
    _run(workflow)
    barrier = threading.Barrier(6)
    raised: list[int] = []
    errors: list[BaseException] = []

    def evaluate() -> None:
        try:
            barrier.wait()
            raised.extend(a.pk for a in alerts_evaluate())
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(raised) == 1 and Alert.objects.count() == 1
    assert _no_delivery_task == raised  # only the claimant queued a delivery


# --- delivery --------------------------------------------------------------------------


def _alert(organization: Organization) -> Alert:
    return Alert.objects.create(
        organization=organization,
        condition=Condition.RUN_FAILED,
        subject="workflow:1",
        period_start=period_start(timezone.now(), 60),
        summary="Workflow “X” (id 1): 1 failed run(s)",
        link="http://127.0.0.1:8000/admin/workflows/run/?status=failed&workflow=1",
        next_attempt_at=timezone.now(),
    )


def _alert_for(organization: Organization, subject: str, due: datetime) -> Alert:
    return Alert.objects.create(
        organization=organization,
        condition=Condition.RUN_FAILED,
        subject=subject,
        period_start=period_start(timezone.now(), 60),
        summary="x",
        next_attempt_at=due,
    )


def _verify(secret: str, body: bytes, header: str) -> bool:
    parts = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(
        secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def test_delivery_emails_staff_and_posts_a_signed_webhook(
    db: Any, webhook_receiver: WebhookReceiver
) -> None:
    organization = OrganizationFactory(name="Sunrise Clinic")
    _settings(
        organization,
        staff_emails=["a@clinic.example", "b@clinic.example"],
        webhook_url=webhook_receiver.url + "/alerts",
        webhook_secret=SECRET,
    )
    alert = _alert(organization)

    delivered = alert_deliver(alert_id=alert.pk)

    assert delivered is not None
    assert (delivered.delivered_email, delivered.delivered_webhook) == (True, True)
    assert delivered.next_attempt_at is None and delivered.error == ""
    [email] = mail.outbox
    assert email.to == ["a@clinic.example", "b@clinic.example"]
    assert email.subject == "[careflow] Sunrise Clinic: A run failed"
    assert alert.link in email.body
    [request] = webhook_receiver.requests
    assert request.path == "/alerts"
    assert _verify(SECRET, request.body, request.headers["X-Careflow-Signature"])
    assert not _verify("another secret", request.body, request.headers["X-Careflow-Signature"])
    document = json.loads(request.body)
    assert document["id"] == str(alert.uuid) and document["condition"] == "run_failed"
    assert document["link"] == alert.link
    assert request.headers["Idempotency-Key"] == str(alert.uuid)
    # Delivered: a second task for it (a redelivery, a sweep) does nothing.
    assert alert_deliver(alert_id=alert.pk) is None
    assert len(mail.outbox) == 1 and len(webhook_receiver.requests) == 1


def test_a_failing_webhook_is_recorded_retried_with_backoff_and_then_given_up(
    db: Any, webhook_receiver: WebhookReceiver, settings: Any
) -> None:
    settings.CAREFLOW_ALERT_MAX_ATTEMPTS = 3
    organization = OrganizationFactory()
    _settings(organization, webhook_url=webhook_receiver.url, webhook_secret=SECRET)
    webhook_receiver.answer(503, "down")
    alert = _alert(organization)

    first = alert_deliver(alert_id=alert.pk)
    assert first is not None
    assert first.delivered_email is True and first.delivered_webhook is False
    assert first.error == "webhook: the webhook answered 503"
    assert first.next_attempt_at is not None and first.next_attempt_at > timezone.now()
    # Not due yet: another worker's attempt does nothing.
    assert alert_deliver(alert_id=alert.pk) is None

    for _ in range(2):
        Alert.objects.filter(pk=alert.pk).update(next_attempt_at=timezone.now())
        last = alert_deliver(alert_id=alert.pk)
    assert last is not None and last.next_attempt_at is None
    assert last.error.startswith("gave up after 3 attempts: webhook: the webhook answered 503")
    assert len(webhook_receiver.requests) == 3
    assert len(mail.outbox) == 1  # the email, delivered at once, was never sent again


def test_a_webhook_that_recovers_is_delivered_on_retry(
    db: Any, webhook_receiver: WebhookReceiver
) -> None:
    organization = OrganizationFactory()
    _settings(
        organization, staff_emails=[], webhook_url=webhook_receiver.url, webhook_secret=SECRET
    )
    webhook_receiver.answer(500)
    alert = _alert(organization)
    alert_deliver(alert_id=alert.pk)
    webhook_receiver.answer(200)
    Alert.objects.filter(pk=alert.pk).update(next_attempt_at=timezone.now())

    delivered = alert_deliver(alert_id=alert.pk)

    assert delivered is not None and delivered.delivered_webhook is True
    assert delivered.error == "" and delivered.attempts == 2


def test_an_email_backend_failure_is_recorded_not_raised(db: Any, settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 9  # nothing listens (discard)
    organization = OrganizationFactory()
    _settings(organization)
    alert = _alert(organization)

    delivered = alert_deliver(alert_id=alert.pk)

    assert delivered is not None and delivered.delivered_email is False
    assert delivered.error.startswith("email: ConnectionRefusedError")
    assert delivered.next_attempt_at is not None


def test_the_sweep_requeues_only_deliveries_that_are_due(
    db: Any, _no_delivery_task: list[int]
) -> None:
    organization = OrganizationFactory()
    due = _alert(organization)
    Alert.objects.filter(pk=due.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=1))
    # Due only just now: its own task is about to take it.
    _alert_for(organization, "workflow:2", timezone.now())
    later = Alert.objects.create(
        organization=organization,
        condition=Condition.CREDENTIALS,
        subject="integration:1",
        period_start=due.period_start,
        summary="x",
        next_attempt_at=timezone.now() + timedelta(minutes=5),
    )
    done = Alert.objects.create(
        organization=organization,
        condition=Condition.QUEUE_WINDOW,
        subject="sender:1:+15005550006",
        period_start=due.period_start,
        summary="x",
    )

    alerts_evaluate()

    assert _no_delivery_task == [due.pk]
    assert later.pk not in _no_delivery_task and done.pk not in _no_delivery_task


def test_workers_racing_to_deliver_one_alert_send_it_once(
    transactional_db: Any, webhook_receiver: WebhookReceiver
) -> None:
    organization = OrganizationFactory()
    _settings(organization, webhook_url=webhook_receiver.url, webhook_secret=SECRET)
    webhook_receiver.answer(200, delay=0.3)  # a slow receiver: the others arrive meanwhile
    alert = _alert(organization)
    barrier = threading.Barrier(4)
    results: list[Alert | None] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait()
            results.append(alert_deliver(alert_id=alert.pk))
        except BaseException as exc:  # noqa: BLE001 — reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sum(result is not None for result in results) == 1
    assert len(mail.outbox) == 1 and len(webhook_receiver.requests) == 1
    alert.refresh_from_db()
    assert alert.attempts == 1 and alert.delivered_webhook and alert.delivered_email


def test_a_broker_outage_when_queueing_leaves_the_alert_to_the_sweep(
    db: Any, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    class Down:
        @staticmethod
        def delay(alert_id: int) -> None:
            raise ConnectionError("broker unreachable")

    monkeypatch.setattr(alerts, "_delivery_task", Down)
    workflow = WorkflowFactory()
    _settings(workflow.organization)
    _run(workflow)

    with django_capture_on_commit_callbacks(execute=True):
        [alert] = alerts_evaluate()  # does not raise

    assert Alert.objects.get(pk=alert.pk).next_attempt_at is not None  # still due: swept


def test_only_refused_credentials_not_an_outage_count_as_rejected(
    db: Any, sandbox: Any, settings: Any
) -> None:
    known = sandbox_account(sandbox, IntegrationFactory())
    unknown = IntegrationFactory()  # credentials the sandbox has never seen: 401 / 20003

    assert TwilioIntegrationForm.credentials_verdict(known)[::2] == (True, False)
    accepted, said, rejected = TwilioIntegrationForm.credentials_verdict(unknown)
    assert (accepted, rejected) == (False, True) and said.startswith("Twilio error 20003")
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"  # nothing listens: an outage
    assert TwilioIntegrationForm.credentials_verdict(unknown)[::2] == (False, False)
