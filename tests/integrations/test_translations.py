"""The clinic's texts in other languages (MessagingPolicy.translations): what is accepted,
and which text a HELP, an opt-out or a first contact gets."""

from typing import Any

import pytest
from django.core.exceptions import ValidationError

from integrations.first_contact import clinic_wording, keyword_reply
from integrations.models import validate_translations
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

SPANISH = {
    "help_text_reply": "{clinic}: para ayuda llámenos. Responda PARAR para cancelar.",
    "stop_confirmation_reply": "{clinic}: ya no recibirá mensajes. Responda COMENZAR para volver.",
    "opt_out_wording": "Responda PARAR para cancelar.",
}


def test_texts_in_the_patients_language_else_the_clinics_own() -> None:
    organization = OrganizationFactory(name="Sunrise", languages=["es"])
    policy = organization.messaging_policy
    policy.translations = {"es": SPANISH}
    policy.first_contact_enabled = True
    assert keyword_reply(policy, organization, "help", language="es").startswith(
        "Sunrise: para ayuda"
    )
    assert "ya no recibirá" in keyword_reply(policy, organization, "opt_out", language="es")
    assert keyword_reply(policy, organization, "help", language="vi") == keyword_reply(
        policy, organization, "help"
    )
    wording = clinic_wording(policy, organization, language="es")
    assert wording is not None and wording.suffix == " Responda PARAR para cancelar."
    english = clinic_wording(policy, organization)
    assert english is not None and english.suffix == " Reply STOP to opt out."


def test_a_blank_translation_falls_back_to_the_clinics_own_text() -> None:
    organization = OrganizationFactory()
    policy = organization.messaging_policy
    policy.translations = {"es": {"help_text_reply": "  "}}
    assert keyword_reply(policy, organization, "help", language="es") == keyword_reply(
        policy, organization, "help"
    )


def test_valid_translations_pass() -> None:
    validate_translations({})
    validate_translations({"es": SPANISH, "fr": {"opt_out_wording": "Répondez ARRET."}})
    validate_translations({"vi": {"opt_out_wording": "Trả lời STOP để hủy."}})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["es"], "Must be an object by language"),
        ({"xx": {}}, "“xx” is not a language careflow knows"),
        ({"es": "hola"}, "The Spanish texts must be an object"),
        ({"es": {"brand_name": "Sol"}}, "“brand_name” cannot be translated"),
        ({"es": {"help_text_reply": 3}}, "Spanish help_text_reply must be text"),
        ({"es": {"help_text_reply": "x" * 321}}, "at most 320"),
        ({"es": {"opt_out_wording": "Responda para salir."}}, "must name an opt-out keyword"),
        ({"es": {"opt_out_wording": "Responda PARAR {x}"}}, "cannot contain braces"),
    ],
)
def test_bad_translations_get_a_specific_error(value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        validate_translations(value)
