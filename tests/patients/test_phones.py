import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from patients.models import Lead, Patient
from patients.phones import is_e164, phone_to_e164
from tests.factories import OrganizationFactory, UserFactory


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


# --- what people type is longer than what is stored ---------------------------------------

TYPED = [
    ("+1 (415) 555-0101 ext. ", "+14155550101"),
    ("+1 (415) 555-0101 ext. 12", "+14155550101"),
    ("001 415 555 0101", "+14155550101"),
    ("0044 20 7946 0958", "+442079460958"),
    ("(415) 555-0101", "+14155550101"),
    ("  +1   415   555   0101  ", "+14155550101"),
]


@pytest.mark.parametrize(("raw", "e164"), TYPED)
def test_common_formats_longer_than_e164_normalise(raw: str, e164: str) -> None:
    assert phone_to_e164(raw) == e164


def test_a_phone_too_long_to_be_one_is_refused_with_a_message() -> None:
    with pytest.raises(ValidationError) as excinfo:
        phone_to_e164("+1 " + "-" * 100 + " 415 555 0101")
    assert "too long for a phone number" in excinfo.value.messages[0]


def _superuser() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


@pytest.mark.django_db
@pytest.mark.parametrize(("raw", "e164"), TYPED[:3])
def test_the_patient_form_takes_a_long_typed_number_and_stores_e164(raw: str, e164: str) -> None:
    org = OrganizationFactory()
    client = _superuser()
    url = reverse("admin:patients_patient_add")
    prefix = client.get(url).context["inline_admin_formsets"][0].formset.prefix
    data = {
        "organization": org.pk,
        "first_name": "Ann",
        "phone": raw,
        "country_code": "US",
        f"{prefix}-TOTAL_FORMS": 0,
        f"{prefix}-INITIAL_FORMS": 0,
    }
    response = client.post(url, data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Patient.objects.get().phone == e164


@pytest.mark.django_db
def test_the_lead_form_takes_a_long_typed_number_and_stores_e164() -> None:
    org = OrganizationFactory()
    response = _superuser().post(
        reverse("admin:patients_lead_add"),
        {
            "organization": org.pk,
            "first_name": "Sam",
            "phone": "+1 (415) 555-0101 ext. 12",
            "status": "created",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Lead.objects.get().phone == "+14155550101"


@pytest.mark.django_db
def test_the_patient_form_refuses_a_long_non_number_with_the_phone_message() -> None:
    org = OrganizationFactory()
    client = _superuser()
    url = reverse("admin:patients_patient_add")
    prefix = client.get(url).context["inline_admin_formsets"][0].formset.prefix
    response = client.post(
        url,
        {
            "organization": org.pk,
            "first_name": "Ann",
            "phone": "call the front desk and ask for Ann",
            "country_code": "US",
            f"{prefix}-TOTAL_FORMS": 0,
            f"{prefix}-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    assert "phone number" in " ".join(response.context["adminform"].form.errors["phone"])
    assert not Patient.objects.exists()
