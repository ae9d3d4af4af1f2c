"""Email end to end on real parts, for each ESP: a patient change → outbox → a real Celery
worker → engine → sendEmail → django-anymail's Postmark or Mailgun backend over HTTP → the
loopback email sandbox's API of that ESP → its delivery / bounce webhooks (basic auth for
Postmark, signed for Mailgun) → careflow's events endpoint on a live server. Consent is by
channel: a bounced address stops email, never SMS."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from integrations.email.sandbox import SandboxServer as EmailSandbox
from integrations.models import Integration, OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord, Order, Patient
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.dry_run import workflow_dry_run, workflow_live_test
from workflows.models import Run, Step, Workflow

pytestmark = pytest.mark.integration
Status = OutboundMessage.Status
TOKEN = "pm-e2e-server-token"
SECRET = "pm-e2e-webhook-secret"
SENDER = "care@clinic.example"
MAILGUN_KEY = "0123456789abcdef0123456789abcdef-0a1b2c3d-4e5f6a7b"
MAILGUN_SIGNING_KEY = "mg-e2e-webhook-signing-key"
EMAIL_STEP = {
    "subject": "Order {{order.number}} shipped, {{customer.firstName}}",
    "body": "Hi {{customer.firstName}}, order {{order.number}} is on its way.",
    "html": "<p>Hi {{customer.firstName}}, order <b>{{order.number}}</b> is on its way.</p>",
    "to": "{{customer.email}}",
    "from": SENDER,
}


@pytest.fixture(scope="module")
def email_sandbox() -> Iterator[EmailSandbox]:
    with EmailSandbox(webhook_delay=0.05) as server:
        yield server


@pytest.fixture(scope="module")
def email_worker_process(
    celery_worker_process: WorkerProcess,
    email_sandbox: EmailSandbox,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """The session's worker, its environment pointed at the email sandbox: the session one
    is stopped meanwhile (one consumer of the queues), and the next `worker` user starts it
    again."""
    celery_worker_process.stop()
    env = {
        **celery_worker_process.env,
        "CAREFLOW_EMAIL_DELIVERY": "postmark",
        "CAREFLOW_POSTMARK_API_URL": email_sandbox.url + "/",
        "CAREFLOW_MAILGUN_API_URL": email_sandbox.url + "/v3",
        "CAREFLOW_EMAIL_HTTP_TIMEOUT": "2",
    }
    worker = WorkerProcess(env, Path(tmp_path_factory.mktemp("email-worker")))
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(params=["postmark", "mailgun"])
def clinic(
    request: pytest.FixtureRequest,
    email_worker_process: WorkerProcess,
    transactional_db: Any,
    sandbox: SandboxServer,
    email_sandbox: EmailSandbox,
    live_server: Any,
    settings: Any,
) -> Integration:
    """A clinic with SMS and email (through each ESP in turn), both at their sandboxes; its
    email integration's webhooks reach the live server with the integration's credentials
    (Postmark) or signed with its signing key (Mailgun)."""
    if not email_worker_process.alive():
        email_worker_process.start()
    email_sandbox.reset()
    settings.CAREFLOW_EMAIL_DELIVERY = "postmark"
    settings.CAREFLOW_POSTMARK_API_URL = email_sandbox.url + "/"
    settings.CAREFLOW_MAILGUN_API_URL = email_sandbox.url + "/v3"
    sms = sandbox_account(sandbox, IntegrationFactory())
    if request.param == "mailgun":
        esp_settings: dict[str, Any] = {"esp": "mailgun", "mailgun_domain": "clinic.example"}
        secrets = {
            "mailgun_api_key": MAILGUN_KEY,
            "mailgun_webhook_signing_key": MAILGUN_SIGNING_KEY,
        }
    else:
        esp_settings = {"esp": "postmark", "message_stream": "outbound"}
        secrets = {"server_token": TOKEN, "webhook_secret": SECRET}
    email: Integration = IntegrationFactory(
        organization=sms.organization,
        adapter="email",
        name="Email",
        senders=[SENDER],
        settings=esp_settings,
        secrets=secrets,
    )
    path = reverse("email-events", kwargs={"integration_uuid": email.uuid})
    origin = live_server.url.removeprefix("http://")
    if request.param == "mailgun":
        email_sandbox.add_mailgun_domain(
            "clinic.example",
            api_key=MAILGUN_KEY,
            signing_key=MAILGUN_SIGNING_KEY,
            senders=[SENDER],
            webhook_url=f"http://{origin}{path}",
        )
    else:
        email_sandbox.add_server(
            TOKEN, senders=[SENDER], webhook_url=f"http://postmark:{SECRET}@{origin}{path}"
        )
    return email


def _email_workflow(integration: Integration, *, purpose: str = "transactional") -> Workflow:
    workflow: Workflow = WorkflowFactory(
        organization=integration.organization, trigger="order.shipped"
    )
    Step.objects.create(
        workflow=workflow,
        adapter="email",
        function="sendEmail",
        parameters=EMAIL_STEP,
        purpose=purpose,
    )
    return workflow


def _patient(
    integration: Integration, email: str, *, channels: tuple[str, ...] = ("sms", "email"), **kw: Any
) -> Patient:
    patient: Patient = PatientFactory(
        organization=integration.organization, first_name="Ann", email=email, **kw
    )
    for channel in channels:
        ConsentFactory(patient=patient, channel=channel)
    return patient


def _ship(patient: Patient, number: str) -> Order:
    order: Order = OrderFactory(
        patient=patient, number=number, status=Order.Status.AWAITING_SHIPMENT
    )
    order.status = Order.Status.SHIPPED
    order.save()
    return order


def _email_to(to: str, *statuses: str) -> OutboundMessage | None:
    return OutboundMessage.objects.filter(channel="email", to=to, status__in=statuses).first()


def test_a_shipped_order_emails_once_and_the_webhook_marks_it_delivered(
    clinic: Integration, email_sandbox: EmailSandbox
) -> None:
    _email_workflow(clinic)
    _ship(_patient(clinic, "ann@patients.example"), "E-1")
    message = wait_for(
        lambda: _email_to("ann@patients.example", Status.DELIVERED),
        timeout=30,
        what="the email delivered",
    )
    [received] = email_sandbox.messages()
    assert (received["from"], received["to"]) == (SENDER, ["ann@patients.example"])
    assert received["subject"] == "Order E-1 shipped, Ann"
    assert received["text_body"] == "Hi Ann, order E-1 is on its way."
    assert received["html_body"] == "<p>Hi Ann, order <b>E-1</b> is on its way.</p>"
    assert message.provider_sid == received["id"]
    assert message.content["subject"] == "Order E-1 shipped, Ann"
    assert email_sandbox.stats()["accepted"] == 1
    wait_for(lambda: email_sandbox.messages()[0]["webhooks"], what="the delivery webhook")
    assert [w["http_status"] for w in email_sandbox.messages()[0]["webhooks"]] == [200]


def test_a_hard_bounce_stops_email_but_not_sms(
    clinic: Integration, email_sandbox: EmailSandbox, sandbox: SandboxServer
) -> None:
    workflow = _email_workflow(clinic)
    SmsStepFactory(workflow=workflow, position=2)
    patient = _patient(clinic, "bounce@patients.example", phone="+14155550123")
    _ship(patient, "B-1")
    wait_for(
        lambda: ConsentRecord.objects.filter(
            patient=patient, channel="email", action="opt_out"
        ).exists(),
        timeout=30,
        what="the bounce's email opt-out",
    )
    wait_for(lambda: len(sandbox.messages()) == 1, timeout=30, what="the first SMS")
    # the next order: the email is skipped with its reason, the SMS still goes
    _ship(patient, "B-2")
    skipped = wait_for(
        lambda: _email_to("bounce@patients.example", Status.SKIPPED),
        timeout=30,
        what="the second email skipped",
    )
    assert "opt" in skipped.skip_reason.lower() or "consent" in skipped.skip_reason.lower()
    wait_for(lambda: len(sandbox.messages()) == 2, timeout=30, what="the second SMS")
    assert len(email_sandbox.messages()) == 1  # the bounced address was never mailed again
    assert not ConsentRecord.objects.filter(patient=patient, channel="sms", action="opt_out")


def test_marketing_email_needs_email_marketing_consent(
    clinic: Integration, email_sandbox: EmailSandbox
) -> None:
    _email_workflow(clinic, purpose="marketing")
    sms_only = _patient(clinic, "sms-marketing@patients.example")
    ConsentFactory(patient=sms_only, channel="sms", purpose="marketing")
    emailable = _patient(clinic, "email-marketing@patients.example")
    ConsentFactory(patient=emailable, channel="email", purpose="marketing")
    _ship(sms_only, "M-1")
    _ship(emailable, "M-2")
    wait_for(
        lambda: _email_to("email-marketing@patients.example", Status.SENT, Status.DELIVERED),
        timeout=30,
        what="the consented marketing email",
    )
    skipped = wait_for(
        lambda: _email_to("sms-marketing@patients.example", Status.SKIPPED),
        timeout=30,
        what="the unconsented marketing email skipped",
    )
    assert skipped.skip_reason
    assert [m["to"] for m in email_sandbox.messages()] == [["email-marketing@patients.example"]]


def test_a_live_test_of_an_email_workflow_sends_for_real(
    clinic: Integration, email_sandbox: EmailSandbox
) -> None:
    workflow = _email_workflow(clinic)
    workflow.enabled = False
    workflow.save()
    tester = _patient(clinic, "tester@clinic.example", is_test=True)
    OrderFactory(patient=tester, number="T-1")
    run = workflow_live_test(workflow=workflow, patient=tester)
    wait_for(
        lambda: Run.objects.get(pk=run.pk).status == Run.Status.SUCCEEDED,
        timeout=30,
        what="the live test run",
    )
    message = OutboundMessage.objects.get(channel="email")
    assert message.is_test and message.to == "tester@clinic.example"
    [received] = email_sandbox.messages()
    assert received["subject"].endswith("shipped, Ann")


def test_the_dry_run_explains_an_email_steps_send_and_skip(clinic: Integration) -> None:
    workflow = _email_workflow(clinic)
    consented = _patient(clinic, "dry@patients.example")
    OrderFactory(patient=consented, number="D-1")
    [step] = workflow_dry_run(workflow=workflow, patient=consented).steps
    assert step.outcome == "send", step.detail
    assert step.message is not None and step.message["subject"] == "Order D-1 shipped, Ann"
    assert step.checks and {c["state"] for c in step.checks} == {"passed"}
    assert "consent" in [c["check"] for c in step.checks]
    no_email_consent = _patient(clinic, "dry-sms@patients.example", channels=("sms",))
    OrderFactory(patient=no_email_consent, number="D-2")
    [step] = workflow_dry_run(workflow=workflow, patient=no_email_consent).steps
    assert step.outcome == "skip"
    assert "consent" in step.detail.lower()
    failed = [c["check"] for c in step.checks if c["state"] == "failed"]
    assert failed == ["consent"]
