"""Messages in the patient's language end to end, with a real worker, the live server and the
loopback Twilio sandbox: a Spanish-speaking patient gets the step's Spanish variant (with the
clinic's Spanish opt-out wording on first contact), texts PARAR through the signed inbound
webhook, is confirmed in Spanish, and the next text to her is skipped; an English-speaking
patient of the same clinic gets the English text."""

from typing import Any

import pytest

from integrations.models import InboundMessage, MessagingPolicy, OutboundMessage
from integrations.twilio.account import twilio_account
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

pytestmark = pytest.mark.integration

Status = OutboundMessage.Status
SANDBOX_FROM = "+15005550006"


def _ship(patient: Patient, number: str) -> None:
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT, number=number)
    order.status = Order.Status.SHIPPED
    order.save()


def test_a_spanish_speaking_patient_gets_spanish_and_opts_out_with_parar(
    worker: WorkerProcess, sandbox: SandboxServer, live_server: Any
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    organization = integration.organization
    organization.languages = ["es"]
    organization.save()
    MessagingPolicy.objects.update_or_create(
        organization=organization,
        defaults={
            "first_contact_enabled": True,
            "brand_name": "Sunrise",
            "translations": {
                "es": {
                    "opt_out_wording": "Responda PARAR para cancelar.",
                    "stop_confirmation_reply": "{clinic}: no recibirá más mensajes.",
                }
            },
        },
    )
    workflow = WorkflowFactory(organization=organization, trigger="order.shipped")
    SmsStepFactory(
        workflow=workflow,
        parameters={
            "message": "Hi {{customer.firstName}}, order {{order.number}} shipped.",
            "to": "{{customer.phone}}",
            "from": SANDBOX_FROM,
            "variants": {
                "es": {"message": "Hola {{customer.firstName}}, su pedido {{order.number}} salió."}
            },
        },
    )
    ana = PatientFactory(
        organization=organization, first_name="Ana", phone="+14155550171", language="es"
    )
    bo = PatientFactory(organization=organization, first_name="Bo", phone="+14155550172")
    for patient in (ana, bo):
        ConsentFactory(patient=patient)

    _ship(ana, "A1")
    _ship(bo, "B1")
    sent = wait_for(
        lambda: (m := sandbox.messages()) and len(m) >= 2 and m, timeout=30, what="2 texts"
    )
    bodies = {m["to"]: m["body"] for m in sent}
    assert bodies == {
        ana.phone: "Sunrise: Hola Ana, su pedido A1 salió. Responda PARAR para cancelar.",
        bo.phone: "Sunrise: Hi Bo, order B1 shipped. Reply STOP to opt out.",
    }
    languages = dict(OutboundMessage.objects.values_list("to", "language"))
    assert languages == {ana.phone: "es", bo.phone: "en"}

    url = f"{live_server.url}/webhooks/twilio/{integration.uuid}/inbound/"
    answer = sandbox.send_inbound(
        account_sid=twilio_account(integration).account_sid,
        from_=ana.phone,
        to=SANDBOX_FROM,
        body="Parar",
        url=url,
    )
    assert answer["http_status"] == 200
    assert sandbox.inbound_messages()[-1]["twiml_replies"] == ["Sunrise: no recibirá más mensajes."]
    assert InboundMessage.objects.get(from_number=ana.phone).action == InboundMessage.Action.OPT_OUT
    assert ConsentRecord.objects.filter(
        patient=ana, action=ConsentRecord.Action.OPT_OUT, evidence__keyword="PARAR"
    ).exists()

    _ship(ana, "A2")
    skipped = wait_for(
        lambda: OutboundMessage.objects.filter(to=ana.phone, status=Status.SKIPPED).first(),
        timeout=30,
        what="the next text to Ana, skipped",
    )
    assert "opt" in skipped.skip_reason.lower() or "consent" in skipped.skip_reason.lower()
    assert len(sandbox.messages()) == 2
