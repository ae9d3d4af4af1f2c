"""Consent over the API: append-only history, the sources a caller may claim, marketing needs
its consent text, no future times; what is recorded is what the next send checks."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from patients.consent import consent_verdict, sms_consent_history
from patients.models import ConsentRecord, Patient
from tests.api.conftest import assert_error, patch, post
from tests.factories import ConsentFactory, PatientFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(clinic: object) -> Patient:
    return PatientFactory(organization=clinic)


def _url(patient: Patient) -> str:
    return f"/api/v1/patients/{patient.uuid}/consents/"


def test_an_opt_out_is_appended_and_wins_at_the_next_send(api: Client, patient: Patient) -> None:
    ConsentFactory(patient=patient, occurred_at=timezone.now() - timedelta(days=3))
    assert consent_verdict(sms_consent_history(patient), purpose="transactional").allowed

    response = post(
        api,
        _url(patient),
        {"purpose": "transactional", "action": "opt_out", "source": "patient_portal"},
    )

    assert response.status_code == 201, response.content
    assert response.json()["action"] == "opt_out"
    verdict = consent_verdict(sms_consent_history(patient), purpose="transactional")
    assert not verdict.allowed and "opted out" in verdict.reason
    history = api.get(_url(patient)).json()
    assert [r["action"] for r in history["results"]] == ["opt_out", "opt_in"]
    assert ConsentRecord.objects.filter(patient=patient).count() == 2


def test_a_marketing_opt_in_needs_the_consent_text(api: Client, patient: Patient) -> None:
    bare = {"purpose": "marketing", "action": "opt_in", "source": "checkout"}
    error = assert_error(post(api, _url(patient), bare), 400, "invalid_request")
    assert "consent text" in error["fields"]["consent_text"][0]
    assert_error(post(api, _url(patient), {**bare, "consent_text": "  "}), 400, "invalid_request")
    assert not ConsentRecord.objects.exists()

    text = "Yes, send me offers by text. Msg & data rates may apply. Reply STOP to stop."
    assert post(api, _url(patient), {**bare, "consent_text": text}).status_code == 201
    assert consent_verdict(sms_consent_history(patient), purpose="marketing").allowed


@pytest.mark.parametrize(
    "source", ["admin", "inbound_keyword", "provider_error", "provider_event", "x"]
)
def test_a_caller_claims_only_its_own_sources(api: Client, patient: Patient, source: str) -> None:
    error = assert_error(
        post(
            api, _url(patient), {"purpose": "transactional", "action": "opt_out", "source": source}
        ),
        400,
        "invalid_request",
    )
    assert "source" in error["fields"]


def test_when_it_happened_defaults_to_now_and_is_not_in_the_future(
    api: Client, patient: Patient
) -> None:
    base = {"purpose": "transactional", "action": "opt_in", "source": "signup_form"}
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    error = assert_error(
        post(api, _url(patient), {**base, "occurred_at": future}), 400, "invalid_request"
    )
    assert "future" in error["fields"]["occurred_at"][0]

    past = timezone.now() - timedelta(days=1)
    assert post(api, _url(patient), {**base, "occurred_at": past.isoformat()}).status_code == 201
    before = timezone.now()
    assert post(api, _url(patient), base).status_code == 201
    times = sorted(ConsentRecord.objects.values_list("occurred_at", flat=True))
    assert abs(times[0] - past) < timedelta(seconds=1)
    assert times[1] >= before


def test_evidence_is_kept_and_checked(api: Client, patient: Patient) -> None:
    base = {"purpose": "transactional", "action": "opt_in", "source": "signup_form"}
    assert_error(post(api, _url(patient), {**base, "ip": "300.1.1.1"}), 400, "invalid_request")
    assert_error(
        post(api, _url(patient), {**base, "user_agent": "x" * 501}), 400, "invalid_request"
    )
    response = post(api, _url(patient), {**base, "ip": "2001:db8::1", "user_agent": "curl/8"})
    assert response.json()["evidence"]["ip"] == "2001:db8::1"
    assert ConsentRecord.objects.get().evidence["user_agent"] == "curl/8"


def test_the_history_is_never_edited(api: Client, patient: Patient) -> None:
    ConsentFactory(patient=patient)
    url = _url(patient)
    assert_error(patch(api, url, {"action": "opt_out"}), 405, "method_not_allowed")
    assert_error(api.put(url, {}, content_type="application/json"), 405, "method_not_allowed")
    assert_error(api.delete(url), 405, "method_not_allowed")
    assert ConsentRecord.objects.get().action == "opt_in"
