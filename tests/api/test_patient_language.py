"""The patient's preferred language over the API, and in the customer payload."""

import pytest
from django.test import Client

from patients.models import Patient
from tests.api.conftest import assert_error, patch, post
from tests.factories import OrganizationFactory, PatientFactory
from workflows.models import Event

pytestmark = pytest.mark.django_db


def test_a_patient_signs_up_with_a_language_and_it_is_in_the_event(api: Client) -> None:
    response = post(
        api, "/api/v1/patients/", {"first_name": "Ana", "phone": "+14155550123", "language": "es"}
    )
    assert response.status_code == 201, response.content
    assert response.json()["language"] == "es"
    patient = Patient.objects.get(uuid=response.json()["uuid"])
    event = Event.objects.get(type="customer.signup", subject_id=str(patient.pk))
    assert event.payload["customer"]["language"] == "es"


def test_changing_the_language_records_customer_updated(api: Client, clinic: object) -> None:
    patient = PatientFactory(organization=clinic)
    response = patch(api, f"/api/v1/patients/{patient.uuid}/", {"language": "vi"})
    assert response.status_code == 200, response.content
    patient.refresh_from_db()
    assert patient.language == "vi"
    event = Event.objects.get(type="customer.updated", subject_id=str(patient.pk))
    assert "language" in event.payload["changedFields"]


@pytest.mark.parametrize("value", ["spanish", "es-MX", "xx", 5])
def test_an_unknown_language_is_a_clear_400(api: Client, clinic: object, value: object) -> None:
    patient = PatientFactory(organization=clinic)
    error = assert_error(
        patch(api, f"/api/v1/patients/{patient.uuid}/", {"language": value}),
        400,
        "invalid_request",
    )
    assert "language" in error["fields"]
    patient.refresh_from_db()
    assert patient.language == ""


def test_another_clinics_patient_cannot_be_given_a_language(api: Client) -> None:
    other = PatientFactory(organization=OrganizationFactory())
    response = patch(api, f"/api/v1/patients/{other.uuid}/", {"language": "es"})
    assert response.status_code == 404
    other.refresh_from_db()
    assert other.language == ""
