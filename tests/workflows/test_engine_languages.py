"""A Spanish-speaking patient gets the Spanish variant and can opt out with PARAR: the engine
in-process, talking to the loopback Twilio sandbox over HTTP (the worker version is in
tests/test_languages_end_to_end.py)."""

from typing import Any

import pytest

from integrations.models import InboundMessage, OutboundMessage
from integrations.twilio.keywords import inbound_sms_receive
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord, Order
from tests.conftest import sandbox_account
from tests.factories import (
    SANDBOX_FROM,
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, Run

pytestmark = pytest.mark.django_db
ENGLISH = "Hi {{customer.firstName}}, order {{order.number}} has shipped!"
SPANISH = "Hola {{customer.firstName}}, su pedido {{order.number}} fue enviado."


@pytest.fixture
def clinic(sandbox: SandboxServer) -> dict[str, Any]:
    integration = sandbox_account(sandbox, IntegrationFactory())
    org = integration.organization
    org.languages = ["es"]
    org.save()
    workflow = WorkflowFactory(organization=org, trigger="order.shipped")
    SmsStepFactory(
        workflow=workflow,
        parameters={
            "message": ENGLISH,
            "to": "{{customer.phone}}",
            "from": SANDBOX_FROM,
            "variants": {"es": {"message": SPANISH}},
        },
    )
    return {"org": org, "integration": integration, "workflow": workflow}


def _ship(patient: Any, number: str) -> Run | None:
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT, number=number)
    order.status = Order.Status.SHIPPED
    order.save()
    event = Event.objects.get(type="order.shipped", subject_id=str(order.pk))
    (run_id,) = event_dispatch(event_id=event.pk)
    return run_advance(run_id=run_id)


def _text(clinic: dict[str, Any], phone: str, body: str, *, sid: str) -> Any:
    """The patient's text to the clinic, as the inbound webhook hands it over."""
    return inbound_sms_receive(
        integration=clinic["integration"],
        sid="SM" + sid * 32,
        from_=phone,
        to=SANDBOX_FROM,
        body=body,
    )


def test_spanish_patient_gets_the_spanish_variant_and_parar_stops_the_next_text(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ana = PatientFactory(
        organization=clinic["org"], first_name="Ana", phone="+14155550123", language="es"
    )
    ConsentFactory(patient=ana)
    run = _ship(ana, "7001")
    assert run is not None and run.status == Run.Status.SUCCEEDED
    assert [m["body"] for m in sandbox.messages()] == ["Hola Ana, su pedido 7001 fue enviado."]
    message = OutboundMessage.objects.get()
    assert message.language == "es" and message.status == OutboundMessage.Status.SENT

    # PARAR: Twilio does not know it, so careflow records the opt-out and confirms it once.
    result = _text(clinic, ana.phone, "Parar", sid="p")
    assert result.message.action == InboundMessage.Action.OPT_OUT
    assert result.reply  # the clinic's confirmation
    assert ConsentRecord.objects.filter(
        patient=ana, action=ConsentRecord.Action.OPT_OUT, evidence__keyword="PARAR"
    ).exists()

    run = _ship(ana, "7002")
    assert run is not None
    skipped = OutboundMessage.objects.exclude(pk=message.pk).get()
    assert skipped.status == OutboundMessage.Status.SKIPPED
    assert len(sandbox.messages()) == 1


def test_patients_without_an_enabled_variant_get_the_fallback_text(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    for name, phone, language in [("Bo", "+14155550124", ""), ("Kim", "+14155550125", "ko")]:
        patient = PatientFactory(
            organization=clinic["org"], first_name=name, phone=phone, language=language
        )
        ConsentFactory(patient=patient)
        _ship(patient, name)
    assert sorted(m["body"] for m in sandbox.messages()) == [
        "Hi Bo, order Bo has shipped!",
        "Hi Kim, order Kim has shipped!",
    ]
    assert set(OutboundMessage.objects.values_list("language", flat=True)) == {"en"}


def test_parar_is_free_text_where_the_clinic_has_not_enabled_spanish(
    clinic: dict[str, Any],
) -> None:
    clinic["org"].languages = []
    clinic["org"].save()
    patient = PatientFactory(organization=clinic["org"], phone="+14155550126", language="es")
    ConsentFactory(patient=patient)
    result = _text(clinic, patient.phone, "PARAR", sid="q")
    assert result.message.action == InboundMessage.Action.NONE
    assert not ConsentRecord.objects.filter(action=ConsentRecord.Action.OPT_OUT).exists()


def test_parar_is_confirmed_in_spanish_when_the_clinic_worded_it_and_help_follows_the_patient(
    clinic: dict[str, Any],
) -> None:
    policy = clinic["org"].messaging_policy
    policy.translations = {
        "es": {
            "stop_confirmation_reply": "{clinic}: no recibirá más mensajes.",
            "help_text_reply": "{clinic}: llámenos para ayuda.",
        }
    }
    policy.save()
    ana = PatientFactory(organization=clinic["org"], phone="+14155550127", language="es")
    stop = _text(clinic, ana.phone, "PARAR", sid="r")
    assert stop.reply == f"{clinic['org'].name}: no recibirá más mensajes."
    # HELP in English from a Spanish-speaking patient: answered in her language.
    help_reply = _text(clinic, ana.phone, "HELP", sid="s")
    assert help_reply.reply == f"{clinic['org'].name}: llámenos para ayuda."
    # An English speaker's AYUDA is answered in Spanish: who texts it reads it.
    bo = PatientFactory(organization=clinic["org"], phone="+14155550128")
    ayuda = _text(clinic, bo.phone, "ayuda", sid="t")
    assert ayuda.message.action == InboundMessage.Action.HELP
    assert ayuda.reply == f"{clinic['org'].name}: llámenos para ayuda."
