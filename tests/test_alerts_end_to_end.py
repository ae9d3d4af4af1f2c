"""Failure alerts end to end: a real `celery worker -B` whose beat evaluates the alerts every
half second, sending staff email through Django's mail API (django-anymail's Postmark backend)
to the email sandbox and signed webhooks to a loopback receiver; runs fail and credentials are
refused by the Twilio sandbox over HTTP."""

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from common.coordination import coordination_redis
from integrations.email.sandbox import SandboxServer as EmailSandbox
from integrations.models import Alert, AlertSettings, Integration, OutboundMessage
from integrations.throttle import throttle_key, throttle_reserve
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order, Organization
from patients.roles import SUPPORT_STAFF
from tests.conftest import WebhookReceiver, WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    OrganizationFactory,
    PatientFactory,
    SmsStepFactory,
    StaffMembershipFactory,
    WorkflowFactory,
)
from workflows.models import Run, Workflow

pytestmark = pytest.mark.integration
Condition = Alert.Condition
TOKEN = "alerts-postmark-token"
SECRET = "alerts-webhook-signing-secret"
INVALID_NUMBER = "+15005550001"  # the sandbox refuses it with 21211
STAFF = "ops@sunrise.example"


@pytest.fixture(scope="module")
def email_sandbox() -> Iterator[EmailSandbox]:
    with EmailSandbox(webhook_delay=None) as server:
        yield server


@pytest.fixture(scope="module")
def alerts_worker_process(
    celery_worker_process: WorkerProcess,
    email_sandbox: EmailSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """The session's worker with staff email going to the email sandbox and the alerts
    evaluated every half second; the session one is stopped meanwhile (one consumer of the
    queues, one beat), and the next `worker` user starts it again."""
    celery_worker_process.stop()
    env = {
        **celery_worker_process.env,
        "EMAIL_BACKEND": "anymail.backends.postmark.EmailBackend",
        "POSTMARK_SERVER_TOKEN": TOKEN,
        "CAREFLOW_POSTMARK_API_URL": email_sandbox.url + "/",
        "CAREFLOW_EMAIL_HTTP_TIMEOUT": "2",
        "DEFAULT_FROM_EMAIL": "alerts@careflow.example",
        "CAREFLOW_ALERTS_INTERVAL": "0.5",
        "CAREFLOW_ALERT_MAX_ATTEMPTS": "4",
    }
    worker = WorkerProcess(env, Path(tmp_path_factory.mktemp("alerts-worker")))
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def alerts_worker(
    alerts_worker_process: WorkerProcess,
    transactional_db: Any,
    sandbox: SandboxServer,
    email_sandbox: EmailSandbox,
    webhook_receiver: WebhookReceiver,
) -> WorkerProcess:
    if not alerts_worker_process.alive():
        alerts_worker_process.start()
    email_sandbox.reset()
    email_sandbox.add_server(TOKEN)  # no sender signatures: any From is accepted
    return alerts_worker_process


def _clinic(
    sandbox: SandboxServer, receiver: WebhookReceiver, *, registered: bool = True, **fields: Any
) -> Integration:
    integration = IntegrationFactory()
    if registered:
        sandbox_account(sandbox, integration)
    AlertSettings.objects.create(
        organization=integration.organization,
        staff_emails=[STAFF],
        webhook_url=receiver.url + "/alerts",
        webhook_secret=SECRET,
        **fields,
    )
    return integration


def _workflow(organization: Organization) -> Workflow:
    workflow = WorkflowFactory(organization=organization, name="Shipping SMS")
    SmsStepFactory(workflow=workflow)
    return workflow


def _ship(organization: Organization, phone: str, number: str) -> None:
    patient = PatientFactory(organization=organization, first_name="Maria", phone=phone)
    ConsentFactory(patient=patient)
    order = OrderFactory(patient=patient, number=number, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()


def _failed_runs(workflow: Workflow, count: int) -> None:
    wait_for(
        lambda: Run.objects.filter(workflow=workflow, status=Run.Status.FAILED).count() == count,
        timeout=30,
        what=f"{count} failed run(s)",
    )


def _delivered(**filters: Any) -> Alert:
    return wait_for(
        lambda: Alert.objects.filter(
            delivered_email=True, delivered_webhook=True, **filters
        ).first(),
        timeout=30,
        what=f"an alert {filters} delivered by email and webhook",
    )


def _signature_valid(request: Any) -> bool:
    parts = dict(p.split("=", 1) for p in request.headers["X-Careflow-Signature"].split(","))
    expected = hmac.new(
        SECRET.encode(), f"{parts['t']}.".encode() + request.body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 60


def _beat_ticks(count: int = 4) -> None:
    """Let beat evaluate the alerts `count` more times (every 0.5 s)."""
    time.sleep(0.5 * count + 0.5)


def test_a_failing_run_raises_exactly_one_alert_by_email_and_signed_webhook(
    alerts_worker: WorkerProcess,
    sandbox: SandboxServer,
    email_sandbox: EmailSandbox,
    webhook_receiver: WebhookReceiver,
) -> None:
    clinic = _clinic(sandbox, webhook_receiver)
    workflow = _workflow(clinic.organization)
    # Another clinic that wants alerts too, with nothing failing: it hears nothing.
    other = OrganizationFactory()
    AlertSettings.objects.create(organization=other, staff_emails=["ops@other.example"])

    _ship(clinic.organization, INVALID_NUMBER, "A-1")
    _failed_runs(workflow, 1)
    alert = _delivered(condition=Condition.RUN_FAILED)
    _ship(clinic.organization, INVALID_NUMBER, "A-2")  # a second failure, same period
    _failed_runs(workflow, 2)
    _beat_ticks()

    assert list(Alert.objects.values_list("condition", "subject")) == [
        (Condition.RUN_FAILED, f"workflow:{workflow.pk}")
    ]
    assert alert.organization_id == clinic.organization_id and alert.error == ""
    [email] = email_sandbox.messages()
    assert email["to"] == [STAFF]
    assert email["from"] == "alerts@careflow.example"
    assert email["subject"] == f"[careflow] {clinic.organization.name}: A run failed"
    assert alert.link in email["text_body"]
    assert f"/admin/workflows/run/?status=failed&workflow={workflow.pk}" in alert.link
    [request] = webhook_receiver.requests
    assert request.path == "/alerts" and _signature_valid(request)
    document = json.loads(request.body)
    assert document["id"] == str(alert.uuid)
    assert document["details"] == {
        "workflow_id": workflow.pk,
        "workflow": "Shipping SMS",
        "failed_runs": 1,
    }
    # No patient data in either: not the name, the number or the message.
    for text in (email["text_body"], email["subject"], request.body.decode()):
        assert "Maria" not in text and INVALID_NUMBER not in text and "shipped" not in text


def test_a_failure_rate_alert_waits_for_the_minimum_volume(
    alerts_worker: WorkerProcess, sandbox: SandboxServer, webhook_receiver: WebhookReceiver
) -> None:
    clinic = _clinic(sandbox, webhook_receiver, minimum_messages=5, failure_rate_percent=50)
    workflow = _workflow(clinic.organization)
    for n in range(4):
        _ship(clinic.organization, INVALID_NUMBER, f"R-{n}")
    _failed_runs(workflow, 4)
    _delivered(condition=Condition.RUN_FAILED)
    _beat_ticks()
    assert not Alert.objects.filter(condition=Condition.FAILURE_RATE).exists()

    _ship(clinic.organization, INVALID_NUMBER, "R-4")
    alert = _delivered(condition=Condition.FAILURE_RATE)

    assert alert.details["failed"] == 5 and alert.details["messages"] == 5
    assert alert.details["error_codes"] == {"21211": 5}
    assert Alert.objects.filter(condition=Condition.RUN_FAILED).count() == 1


def test_a_sender_queue_beyond_the_window_alerts_once(
    alerts_worker: WorkerProcess,
    sandbox: SandboxServer,
    email_sandbox: EmailSandbox,
    webhook_receiver: WebhookReceiver,
) -> None:
    clinic = _clinic(sandbox, webhook_receiver)
    key = throttle_key(scope=twilio_account(clinic).account_sid, sender=clinic.senders[0])
    try:
        throttle_reserve(key=key, rate=1.0, segments=11 * 3600)
        alert = _delivered(condition=Condition.QUEUE_WINDOW)
        _beat_ticks()
    finally:
        client = coordination_redis()
        assert client is not None
        client.delete(key)

    assert Alert.objects.count() == 1
    assert alert.subject == f"sender:{clinic.pk}:{clinic.senders[0]}"
    assert len(email_sandbox.messages()) == 1 and len(webhook_receiver.requests) == 1


def test_credentials_refused_by_the_check_and_by_sends_alert_once(
    alerts_worker: WorkerProcess,
    sandbox: SandboxServer,
    email_sandbox: EmailSandbox,
    webhook_receiver: WebhookReceiver,
) -> None:
    # Credentials the sandbox does not know: it answers 401 with Twilio's 20003.
    clinic = _clinic(sandbox, webhook_receiver, registered=False)
    workflow = _workflow(clinic.organization)
    support = StaffMembershipFactory(organization=OrganizationFactory()).user
    support.groups.add(Group.objects.get(name=SUPPORT_STAFF))
    client = Client()
    client.force_login(support)

    response = client.post(
        reverse("admin:integrations_integration_changelist"),
        {"action": "check_credentials", "_selected_action": [clinic.pk]},
        follow=True,
    )
    assert "Twilio error 20003" in response.content.decode()
    alert = _delivered(condition=Condition.CREDENTIALS)
    _ship(clinic.organization, "+14155550123", "C-1")
    message = wait_for(
        lambda: OutboundMessage.objects.filter(status="failed").first(), what="the refused send"
    )
    _failed_runs(workflow, 1)
    _delivered(condition=Condition.RUN_FAILED)
    _beat_ticks()

    assert message.error_code == "20003"
    assert Alert.objects.filter(condition=Condition.CREDENTIALS).count() == 1
    assert alert.subject == f"integration:{clinic.pk}"
    assert alert.link.endswith(f"/admin/integrations/integration/{clinic.pk}/change/")
    subjects = sorted(m["subject"] for m in email_sandbox.messages())
    assert subjects == [
        f"[careflow] {clinic.organization.name}: A run failed",
        f"[careflow] {clinic.organization.name}: Credentials rejected",
    ]


def test_a_failing_webhook_is_recorded_and_retried_until_delivered(
    alerts_worker: WorkerProcess,
    sandbox: SandboxServer,
    email_sandbox: EmailSandbox,
    webhook_receiver: WebhookReceiver,
) -> None:
    clinic = _clinic(sandbox, webhook_receiver)
    workflow = _workflow(clinic.organization)
    webhook_receiver.answer(503, "busy")

    _ship(clinic.organization, INVALID_NUMBER, "W-1")
    failed = wait_for(
        lambda: Alert.objects.filter(error__contains="503").first(),
        timeout=30,
        what="the webhook's failure recorded",
    )
    assert failed.delivered_email is True and failed.next_attempt_at is not None
    webhook_receiver.answer(200)
    alert = _delivered(condition=Condition.RUN_FAILED)

    assert alert.error == "" and alert.attempts >= 2 and alert.next_attempt_at is None
    keys = {request.headers["Idempotency-Key"] for request in webhook_receiver.requests}
    assert keys == {str(alert.uuid)} and len(webhook_receiver.requests) == alert.attempts
    assert all(_signature_valid(request) for request in webhook_receiver.requests)
    assert len(email_sandbox.messages()) == 1  # the email went once, on the first attempt
    assert Run.objects.get(workflow=workflow).status == Run.Status.FAILED
