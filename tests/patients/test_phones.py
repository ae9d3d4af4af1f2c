import pytest
from django.core.exceptions import ValidationError

from patients.models import Patient
from patients.phones import is_e164, phone_to_e164
from tests.factories import OrganizationFactory


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("(415) 555-0123", "+14155550123"),
        ("+1 415 555 0123", "+14155550123"),
        ("415.555.0123", "+14155550123"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_phone_to_e164_normalises(raw: str, e164: str) -> None:
    assert phone_to_e164(raw) == e164


@pytest.mark.parametrize("raw", ["", "hello", "555-0123", "+1 555 555 0123", "+999 1234"])
def test_phone_to_e164_rejects_with_a_specific_message(raw: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        phone_to_e164(raw)
    assert excinfo.value.messages[0]
    assert "phone number" in excinfo.value.messages[0]


def test_is_e164_requires_the_canonical_form() -> None:
    assert is_e164("+14155550123")
    assert not is_e164("4155550123")
    assert not is_e164("+1 415 555 0123")


@pytest.mark.django_db
def test_patient_full_clean_normalises_and_rejects() -> None:
    org = OrganizationFactory()
    patient = Patient(organization=org, first_name="Ann", phone="(415) 555-0199")
    patient.full_clean()
    assert patient.phone == "+14155550199"
    patient.phone = "12"
    with pytest.raises(ValidationError) as excinfo:
        patient.full_clean()
    assert "phone" in excinfo.value.message_dict
