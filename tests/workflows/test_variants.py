"""Message variants per language: which one a patient gets, how they are validated, and
that they survive the builder's save."""

import zoneinfo
from typing import Any

import pytest

from integrations.sms import segment_info
from patients.languages import language_choose
from tests.factories import OrganizationFactory, PatientFactory, sms_step_definition
from workflows.adapters import REGISTRY
from workflows.builder import builder_schema, definition_parse, message_previews
from workflows.steps import StepConfigError, adapter_inputs_render
from workflows.validation import workflow_validate
from workflows.variants import parameters_in, step_language, step_variants

pytestmark = pytest.mark.django_db

SMS = REGISTRY["twilio"].functions["sendSMS"]
DATA = {"customer": {"firstName": "Ana", "phone": "+14155550123"}, "order": {"number": "7"}}


def _step(**variants: dict[str, str]) -> dict[str, Any]:
    step = sms_step_definition("Hi {{customer.firstName}}, order {{order.number}} shipped!")
    if variants:
        step["parameters"]["variants"] = variants
    return step


def test_choose_the_patients_language_only_when_the_step_has_it_and_the_clinic_enables_it() -> None:
    assert language_choose(wanted="es", available=["es"], enabled=["en", "es"]) == "es"
    assert language_choose(wanted="es", available=["vi"], enabled=["en", "es"]) == ""
    assert language_choose(wanted="es", available=["es"], enabled=["en"]) == ""
    assert language_choose(wanted="", available=["es"], enabled=["en", "es"]) == ""


def test_step_language_falls_back_to_the_clinic_fallback() -> None:
    clinic = OrganizationFactory(languages=["es"], fallback_language="en")
    spanish = PatientFactory(organization=clinic, language="es")
    korean = PatientFactory(organization=clinic, language="ko")
    params = _step(es={"message": "Hola {{customer.firstName}}"})["parameters"]
    assert step_language(params, patient=spanish, organization=clinic) == "es"
    assert step_language(params, patient=korean, organization=clinic) == "en"
    assert step_language(params, patient=None, organization=clinic) == "en"
    # Spanish not enabled (any more): the fallback, even with a variant written.
    clinic.languages = []
    assert step_language(params, patient=spanish, organization=clinic) == "en"


def test_a_clinic_whose_fallback_is_spanish_sends_its_own_text_to_others() -> None:
    clinic = OrganizationFactory(languages=["en"], fallback_language="es")
    assert clinic.enabled_languages == ("es", "en")
    english = PatientFactory(organization=clinic, language="en")
    params = _step(en={"message": "Hello"})["parameters"]
    assert step_language(params, patient=english, organization=clinic) == "en"
    assert (
        step_language(params, patient=PatientFactory(organization=clinic), organization=clinic)
        == "es"
    )


def test_rendering_uses_the_variant_text_and_keeps_the_steps_recipient_and_sender() -> None:
    step = _step(es={"message": "Hola {{customer.firstName}}, pedido {{order.number}}"})
    inputs: dict[str, str] = {}
    adapter_inputs_render(step, DATA, into=inputs, tz=zoneinfo.ZoneInfo("UTC"), language="es")
    assert inputs["message"] == "Hola Ana, pedido 7"
    assert inputs["to"] == "+14155550123" and "variants" not in inputs
    fallback: dict[str, str] = {}
    adapter_inputs_render(step, DATA, into=fallback, tz=zoneinfo.ZoneInfo("UTC"), language="en")
    assert fallback["message"] == "Hi Ana, order 7 shipped!"


def test_a_blank_variant_is_not_translated_yet_and_a_variant_cannot_change_the_recipient() -> None:
    params = _step(es={"message": "  "}, fr={"message": "Bonjour", "to": "+15555550100"})[
        "parameters"
    ]
    assert set(step_variants(params)) == {"fr"}
    assert parameters_in(params, "es", function=SMS)["message"].startswith("Hi ")
    french = parameters_in(params, "fr", function=SMS)
    assert french["message"] == "Bonjour" and french["to"] == "{{customer.phone}}"


def test_a_variant_that_cannot_be_rendered_fails_the_step_naming_it() -> None:
    step = _step(es={"message": "Hola {{customer.lastName}}"})
    with pytest.raises(StepConfigError, match=r"customer\.lastName"):
        adapter_inputs_render(step, DATA, into={}, tz=zoneinfo.ZoneInfo("UTC"), language="es")


@pytest.mark.parametrize(
    ("variants", "problem"),
    [
        (
            {"es": {"message": "Hola {{customer.firstNam}}"}},
            "Spanish message: {{customer.firstNam}} is not a variable",
        ),
        ({"es": {"message": "Hola {% if x %}"}}, "Spanish message: a template tag"),
        ({"xx": {"message": "Hola"}}, "“xx” is not a language careflow knows"),
        ({"es": {"to": "+15555550100"}}, "cannot set 'to': only message can be translated"),
        ({"es": "Hola"}, "the Spanish variant must be an object of texts"),
        ({"es": {"message": 5}}, "the Spanish message must be text"),
        (["es"], "variants must be an object by language"),
    ],
)
def test_each_variant_is_validated_as_the_main_text(variants: Any, problem: str) -> None:
    step = _step()
    step["parameters"]["variants"] = variants
    report = workflow_validate(trigger="order.shipped", filter={}, steps=[step])
    problems = report.steps[0]["variants"]
    assert any(problem in text for text in problems), problems


def test_valid_variants_pass_and_old_definitions_stay_valid() -> None:
    assert workflow_validate(trigger="order.shipped", filter={}, steps=[_step()]).ok
    step = _step(es={"message": "Hola {{customer.firstName}}, su pedido {{order.number}} salió"})
    assert workflow_validate(trigger="order.shipped", filter={}, steps=[step]).ok


def test_the_builders_save_keeps_the_variants_posted_as_json_text() -> None:
    step = _step()
    step["parameters"]["variants"] = '{"es": {"message": "Hola"}}'
    parsed = definition_parse({"trigger": "order.shipped", "filter": "", "steps": [step]})
    assert parsed.steps[0]["parameters"]["variants"] == {"es": {"message": "Hola"}}
    broken = _step()
    broken["parameters"]["variants"] = '{"es": '
    parsed = definition_parse({"trigger": "order.shipped", "filter": "", "steps": [broken]})
    assert "variants" in parsed.problems.steps[0]


def test_a_condition_step_keeps_no_variants() -> None:
    condition = {
        "type": "condition",
        "parameters": {"query": '{"order.number": "7"}', "variants": '{"es": {}}'},
    }
    parsed = definition_parse({"trigger": "order.shipped", "filter": "", "steps": [condition]})
    assert "variants" not in parsed.steps[0]["parameters"]


def _sms_previews(clinic: Any, texts: dict[str, str]) -> dict[str, Any]:
    """The builder's previews of these SMS texts by key ("<step>" or "<step>:<language>")."""
    messages = {key: {"text": text, "function": "twilio.sendSMS"} for key, text in texts.items()}
    result = message_previews(
        trigger="order.shipped", patient=None, organization=clinic, messages=messages
    )
    previews: dict[str, Any] = result["previews"]
    return previews


def test_a_spanish_variant_previews_with_its_own_segment_count() -> None:
    clinic = OrganizationFactory()
    spanish = "¿Confirma su cita? Responda SÍ o NO."  # Í is not GSM-7: the whole text is UCS-2
    previews = _sms_previews(clinic, {"0": "Confirm your visit? Reply YES or NO.", "0:es": spanish})
    english, variant = previews["0"], previews["0:es"]
    assert english["encoding"] == "GSM-7" and variant["encoding"] == "UCS-2"
    assert segment_info(spanish).encoding == "UCS-2"
    assert segment_info("ñ" * 160).segments == 1  # ñ is in GSM-7
    assert segment_info("Í" * 71).segments == 2


def test_the_builder_schema_offers_the_languages_and_marks_what_can_be_translated() -> None:
    schema = builder_schema()
    assert ["es", "Spanish"] in schema["languages"]
    twilio = next(a for a in schema["adapters"] if a["name"] == "twilio")
    parameters = {p["name"]: p for p in twilio["functions"][0]["parameters"]}
    assert parameters["message"]["translatable"] is True
    assert parameters["to"]["translatable"] is False


def test_a_variants_preview_carries_the_clinics_wording_in_its_language() -> None:
    clinic = OrganizationFactory(name="Sol", languages=["es"])
    policy = clinic.messaging_policy
    policy.first_contact_enabled = True
    policy.translations = {"es": {"opt_out_wording": "Responda PARAR para cancelar."}}
    policy.save()
    previews = _sms_previews(clinic, {"3": "Shipped.", "3:es": "Enviado."})
    assert previews["3"]["text"] == "Sol: Shipped. Reply STOP to opt out."
    assert previews["3:es"]["text"] == "Sol: Enviado. Responda PARAR para cancelar."
