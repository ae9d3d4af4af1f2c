"""Patients over the API: create (with consent, in one transaction), read, update, list."""

from typing import Any

import pytest
from django.test import Client

from integrations.api.keys import IssuedApiKey
from patients.models import ConsentRecord, Patient
from tests.api.conftest import assert_error, patch, post
from tests.factories import PatientFactory
from workflows.models import Event

pytestmark = pytest.mark.django_db

SIGNUP: dict[str, Any] = {
    "first_name": "Ann",
    "last_name": "Lee",
    "email": "ann.lee@example.com",
    "phone": "(415) 555-0123",
    "consents": [
        {
            "channel": "sms",
            "purpose": "transactional",
            "action": "opt_in",
            "source": "signup_form",
            "consent_text": "Texts about my orders.",
            "ip": "203.0.113.7",
            "user_agent": "Mozilla/5.0 (X11)",
        }
    ],
}


def test_a_patient_signs_up_with_consent_in_one_request(
    api: Client, write_key: IssuedApiKey
) -> None:
    response = post(api, "/api/v1/patients/", SIGNUP)

    assert response.status_code == 201, response.content
    body = response.json()
    patient = Patient.objects.get(uuid=body["uuid"])
    assert body["phone"] == patient.phone == "+14155550123"
    assert "consents" not in body and "id" not in body
    consent = ConsentRecord.objects.get(patient=patient)
    assert (consent.channel, consent.purpose, consent.action, consent.source) == (
        "sms",
        "transactional",
        "opt_in",
        "signup_form",
    )
    assert consent.consent_text == "Texts about my orders."
    assert consent.evidence == {
        "api_key": write_key.api_key.prefix,
        "ip": "203.0.113.7",
        "user_agent": "Mozilla/5.0 (X11)",
    }
    assert consent.recorded_by is None
    assert Event.objects.filter(type="customer.signup", subject_id=str(patient.pk)).count() == 1


def test_a_bad_consent_leaves_no_patient_behind(api: Client) -> None:
    bad = {**SIGNUP, "consents": [{**SIGNUP["consents"][0], "source": "inbound_keyword"}]}

    error = assert_error(post(api, "/api/v1/patients/", bad), 400, "invalid_request")

    assert "consents.0.source" in error["fields"]
    assert not Patient.objects.exists()
    assert not Event.objects.exists()


def test_an_invalid_phone_is_refused_with_what_is_wrong(api: Client) -> None:
    error = assert_error(
        post(api, "/api/v1/patients/", {"first_name": "Ann", "phone": "12"}), 400, "invalid_request"
    )
    assert "phone" in error["fields"]
    assert "is not" in error["fields"]["phone"][0]
    assert error["message"].startswith("phone: ")


def test_time_zone_and_choices_are_checked(api: Client) -> None:
    error = assert_error(
        post(
            api, "/api/v1/patients/", {"first_name": "A", "timezone": "Mars/Olympus", "gender": "x"}
        ),
        400,
        "invalid_request",
    )
    assert set(error["fields"]) == {"timezone", "gender"}


def test_read_update_and_list(api: Client, clinic: object) -> None:
    patient = PatientFactory(organization=clinic, email="bo@example.com", phone="+14155550199")
    PatientFactory(organization=clinic)
    url = f"/api/v1/patients/{patient.uuid}/"

    assert api.get(url).json()["email"] == "bo@example.com"
    response = patch(api, url, {"city": "Oakland", "phone": "415 555 0188"})
    assert response.status_code == 200, response.content
    patient.refresh_from_db()
    assert (patient.city, patient.phone) == ("Oakland", "+14155550188")
    assert Event.objects.filter(type="customer.updated").count() == 1
    # The same values again change nothing, and record nothing.
    patch(api, url, {"city": "Oakland"})
    assert Event.objects.filter(type="customer.updated").count() == 1

    listed = api.get("/api/v1/patients/", {"email": "BO@example.com"}).json()
    assert [p["uuid"] for p in listed["results"]] == [str(patient.uuid)]
    listed = api.get("/api/v1/patients/", {"phone": "(415) 555-0188"}).json()
    assert [p["uuid"] for p in listed["results"]] == [str(patient.uuid)]
    assert api.get("/api/v1/patients/").json()["count"] == 2
    assert_error(api.get("/api/v1/patients/", {"phone": "abc"}), 400, "invalid_request")


def test_consent_is_not_a_field_of_an_update(api: Client, clinic: object) -> None:
    patient = PatientFactory(organization=clinic)
    error = assert_error(
        patch(api, f"/api/v1/patients/{patient.uuid}/", {"consents": SIGNUP["consents"]}),
        400,
        "invalid_request",
    )
    assert "consents" in error["fields"]
    assert not ConsentRecord.objects.exists()


def test_read_only_and_unknown_fields_are_refused_not_ignored(api: Client, clinic: object) -> None:
    patient = PatientFactory(organization=clinic)
    for field in ("uuid", "created_at", "organization", "frist_name"):
        error = assert_error(
            patch(api, f"/api/v1/patients/{patient.uuid}/", {field: "x"}), 400, "invalid_request"
        )
        assert field in error["fields"]


def test_put_is_not_offered(api: Client, clinic: object) -> None:
    patient = PatientFactory(organization=clinic)
    url = f"/api/v1/patients/{patient.uuid}/"
    assert_error(api.put(url, {}, content_type="application/json"), 405, "method_not_allowed")
    assert_error(api.delete(url), 405, "method_not_allowed")


def test_the_signup_event_carries_the_consent_sent_with_the_patient(api: Client) -> None:
    marketing = {
        "channel": "sms",
        "purpose": "marketing",
        "action": "opt_in",
        "source": "checkout",
        "consent_text": "Yes, text me offers. Reply STOP to stop.",
    }
    uuid = post(api, "/api/v1/patients/", {**SIGNUP, "consents": [marketing]}).json()["uuid"]
    without = post(api, "/api/v1/patients/", {"first_name": "Bo"}).json()["uuid"]

    signups = {
        event.subject_id: event.payload["customer"]
        for event in Event.objects.filter(type="customer.signup")
    }
    ann, bo = Patient.objects.get(uuid=uuid), Patient.objects.get(uuid=without)
    assert signups[str(ann.pk)]["acceptMarketing"] is True
    assert signups[str(ann.pk)]["phone"] == "+14155550123"
    assert signups[str(bo.pk)]["acceptMarketing"] is False
