"""First contact and MMS end to end, with a real worker and the loopback Twilio sandbox: the
first text to a number carries the clinic's brand prefix and opt-out wording, the next does
not, after the interval it does again; two workflows texting a new number at once send the
wording once; HELP and an opt-out are answered in the clinic's words; a step with a media URL
reaches Twilio as an MMS with MediaUrl, logged as one MMS."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from integrations.models import MessagingPolicy, OutboundMessage
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order, Patient
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import Run

pytestmark = pytest.mark.integration

Status = OutboundMessage.Status
SANDBOX_FROM = "+15005550006"
PREFIX = "Sunrise Telehealth: "
WORDING = " Reply STOP to opt out."


def _clinic(sandbox: SandboxServer, **policy: Any) -> Any:
    integration = sandbox_account(sandbox, IntegrationFactory())
    MessagingPolicy.objects.update_or_create(
        organization=integration.organization,
        defaults={"first_contact_enabled": True, "brand_name": "Sunrise Telehealth", **policy},
    )
    return integration


def _ship(patient: Patient) -> None:
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()


def _sent(sandbox: SandboxServer, count: int) -> list[dict[str, Any]]:
    return wait_for(
        lambda: (m := sandbox.messages()) and len(m) >= count and m,
        timeout=30,
        what=f"{count} message(s) at the sandbox",
    )


def test_first_text_carries_the_wording_then_not_then_again_after_the_interval(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = _clinic(sandbox, first_contact_every_days=30)
    workflow = WorkflowFactory(organization=integration.organization, trigger="order.shipped")
    SmsStepFactory(
        workflow=workflow,
        parameters={
            "message": "Your order shipped.",
            "to": "{{customer.phone}}",
            "from": SANDBOX_FROM,
        },
    )
    patient = PatientFactory(organization=integration.organization, phone="+14155550161")
    ConsentFactory(patient=patient)

    _ship(patient)
    first = _sent(sandbox, 1)[0]
    assert first["body"] == f"{PREFIX}Your order shipped.{WORDING}"
    _ship(patient)
    assert _sent(sandbox, 2)[1]["body"] == "Your order shipped."
    # The message log shows each body as sent.
    logged = list(OutboundMessage.objects.order_by("created_at").values_list("body", flat=True))
    assert logged == [first["body"], "Your order shipped."]

    # A month later: the last text that carried the wording is older than the interval.
    OutboundMessage.objects.filter(first_contact=True).update(
        sending_started_at=timezone.now() - timedelta(days=31)
    )
    _ship(patient)
    assert _sent(sandbox, 3)[2]["body"] == f"{PREFIX}Your order shipped.{WORDING}"


def test_two_workflows_texting_a_new_number_at_once_send_the_wording_once(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = _clinic(sandbox)
    for n in range(2):
        workflow = WorkflowFactory(
            organization=integration.organization, trigger="order.shipped", name=f"W{n}"
        )
        SmsStepFactory(
            workflow=workflow,
            parameters={"message": f"From W{n}.", "to": "{{customer.phone}}", "from": SANDBOX_FROM},
        )
    patient = PatientFactory(organization=integration.organization, phone="+14155550162")
    ConsentFactory(patient=patient)
    _ship(patient)
    bodies = sorted(m["body"] for m in _sent(sandbox, 2))
    carried = [body for body in bodies if body.startswith(PREFIX)]
    assert len(carried) == 1 and carried[0].endswith(WORDING)
    # The one with the wording is the one claimed (handed to Twilio) first.
    first = OutboundMessage.objects.order_by("sending_started_at", "id").first()
    assert first is not None and first.first_contact is True


def test_help_and_an_opt_out_are_answered_in_the_clinics_words(
    worker: WorkerProcess, sandbox: SandboxServer, live_server: Any
) -> None:
    integration = _clinic(
        sandbox,
        help_text_reply="{clinic}: call 555-0100 for help.",
        stop_confirmation_reply="{clinic}: you will get no more texts.",
    )
    patient = PatientFactory(organization=integration.organization, phone="+14155550163")
    ConsentFactory(patient=patient)
    url = f"{live_server.url}/webhooks/twilio/{integration.uuid}/inbound/"
    account_sid = twilio_account(integration).account_sid
    for body in ("HELP", "OPT OUT"):  # Twilio confirms a bare STOP itself; not "OPT OUT"
        answer = sandbox.send_inbound(
            account_sid=account_sid, from_=patient.phone, to=SANDBOX_FROM, body=body, url=url
        )
        assert answer["http_status"] == 200
    replies = [m["twiml_replies"] for m in sandbox.inbound_messages()]
    assert replies == [
        ["Sunrise Telehealth: call 555-0100 for help."],
        ["Sunrise Telehealth: you will get no more texts."],
    ]


def test_a_step_with_a_media_url_is_sent_as_an_mms(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = WorkflowFactory(organization=integration.organization, trigger="order.shipped")
    media = "https://cdn.example.com/orders/{{order.number}}.pdf"
    SmsStepFactory(
        workflow=workflow,
        parameters={
            "message": "Your instructions are attached.",
            "to": "{{customer.phone}}",
            "from": SANDBOX_FROM,
            "media": media,
        },
    )
    patient = PatientFactory(organization=integration.organization, phone="+14155550164")
    ConsentFactory(patient=patient)
    _ship(patient)
    sent = _sent(sandbox, 1)[0]
    number = Order.objects.get(patient=patient).number
    assert sent["media_urls"] == [f"https://cdn.example.com/orders/{number}.pdf"]
    assert sent["sid"].startswith("MM") and sent["num_segments"] == 1
    message = wait_for(
        lambda: OutboundMessage.objects.filter(status__in=[Status.SENT, Status.DELIVERED]).first(),
        what="the message to be recorded as sent",
    )
    assert (message.kind, message.media_url, message.segments) == ("MMS", sent["media_urls"][0], 1)


def test_a_templated_media_url_that_renders_to_http_fails_the_step_and_sends_nothing(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = WorkflowFactory(organization=integration.organization, trigger="order.shipped")
    SmsStepFactory(
        workflow=workflow,
        parameters={
            "message": "Hi",
            "to": "{{customer.phone}}",
            "from": SANDBOX_FROM,
            "media": "http://cdn.example.com/{{order.number}}.png",
        },
    )
    patient = PatientFactory(organization=integration.organization, phone="+14155550165")
    ConsentFactory(patient=patient)
    _ship(patient)
    run = wait_for(
        lambda: Run.objects.filter(status=Run.Status.FAILED).first(),
        timeout=30,
        what="the run to fail",
    )
    step = run.step_runs.get()
    assert "Media URL: the media URL must start with https://" in step.error
    assert sandbox.stats()["creates"] == 0
    assert not OutboundMessage.objects.exists()
