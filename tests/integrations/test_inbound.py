"""The custom-event webhook: POST /webhooks/events/<organization uuid>/."""

import json
import uuid
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from patients.models import Organization, Patient
from patients.services import organization_webhook_token_issue
from tests.factories import OrganizationFactory, PatientFactory
from workflows.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient() -> Patient:
    return PatientFactory(email="ann@example.com", phone="+14155550123")


@pytest.fixture
def token(patient: Patient) -> str:
    return organization_webhook_token_issue(organization=patient.organization)


def _url(organization: Organization) -> str:
    return reverse("webhook-custom-event", kwargs={"organization_uuid": organization.uuid})


def _body(patient: Patient, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "lab_results_ready",
        "data": {"kitId": "KIT-2291", "panels": [{"code": "LP"}]},
        "customer": {"id": str(patient.uuid)},
        "idempotencyKey": "kit-2291-ready",
    }
    body.update(overrides)
    return body


def _post(
    organization: Organization,
    body: Any,
    token: str | None,
    *,
    client: Client | None = None,
    raw: bytes | None = None,
    **extra: Any,
) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    data = raw if raw is not None else json.dumps(body)
    return (client or Client()).post(
        _url(organization), data=data, content_type="application/json", **headers, **extra
    )


def test_records_a_webhook_event_with_the_resolved_customer(patient: Patient, token: str) -> None:
    response = _post(patient.organization, _body(patient), token)
    assert response.status_code == 202
    event = Event.objects.get(type="webhook.event")
    assert response.json() == {"status": "accepted", "event": str(event.uuid)}
    assert event.organization_id == patient.organization_id
    assert event.payload["webhook"] == {
        "name": "lab_results_ready",
        "data": {"kitId": "KIT-2291", "panels": [{"code": "LP"}]},
    }
    assert event.payload["customer"]["phone"] == "+14155550123"
    assert (event.subject_type, event.subject_id) == ("customer", str(patient.pk))


@pytest.mark.parametrize(
    "customer",
    [
        {"email": "ANN@example.com"},
        {"phone": "(415) 555-0123"},
        {"email": "", "phone": "+14155550123"},
    ],
)
def test_customer_by_email_or_phone(patient: Patient, token: str, customer: dict[str, str]) -> None:
    response = _post(patient.organization, _body(patient, customer=customer), token)
    assert response.status_code == 202
    assert Event.objects.get(type="webhook.event").payload["customer"]["id"] == str(patient.uuid)


def test_data_may_be_left_out(patient: Patient, token: str) -> None:
    body = _body(patient)
    del body["data"]
    assert _post(patient.organization, body, token).status_code == 202
    assert Event.objects.get(type="webhook.event").payload["webhook"]["data"] == {}


def test_same_idempotency_key_records_one_event(patient: Patient, token: str) -> None:
    first = _post(patient.organization, _body(patient), token)
    second = _post(patient.organization, _body(patient, data={"other": 1}), token)
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json() == {"status": "duplicate", "event": first.json()["event"]}
    assert Event.objects.filter(type="webhook.event").count() == 1


def test_same_idempotency_key_in_another_organization_is_another_event(
    patient: Patient, token: str
) -> None:
    other = PatientFactory()
    other_token = organization_webhook_token_issue(organization=other.organization)
    assert _post(patient.organization, _body(patient), token).status_code == 202
    assert _post(other.organization, _body(other), other_token).status_code == 202
    assert Event.objects.filter(type="webhook.event").count() == 2


def test_the_url_without_a_trailing_slash_works_too(patient: Patient, token: str) -> None:
    response = Client().post(
        _url(patient.organization).rstrip("/"),
        data=json.dumps(_body(patient)),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 202


def test_csrf_is_not_required(patient: Patient, token: str) -> None:
    client = Client(enforce_csrf_checks=True)
    assert _post(patient.organization, _body(patient), token, client=client).status_code == 202


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_only_post_is_allowed(patient: Patient, token: str, method: str) -> None:
    response = getattr(Client(), method)(
        _url(patient.organization), HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 405
    assert not Event.objects.filter(type="webhook.event").exists()


# --- authentication --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", "Basic dXNlcjpwYXNz", "token {token}", "{token}"],
)
def test_missing_or_wrong_token_is_401(
    patient: Patient, token: str, authorization: str | None
) -> None:
    extra = (
        {} if authorization is None else {"HTTP_AUTHORIZATION": authorization.format(token=token)}
    )
    response = Client().post(
        _url(patient.organization),
        data=json.dumps(_body(patient)),
        content_type="application/json",
        **extra,
    )
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not Event.objects.filter(type="webhook.event").exists()


def test_bearer_scheme_is_case_insensitive(patient: Patient, token: str) -> None:
    response = Client().post(
        _url(patient.organization),
        data=json.dumps(_body(patient)),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"bearer {token}",
    )
    assert response.status_code == 202


def test_another_organizations_token_is_401(patient: Patient, token: str) -> None:
    other = OrganizationFactory()
    organization_webhook_token_issue(organization=other)
    assert _post(other, _body(patient), token).status_code == 401


def test_organization_without_a_token_is_401(patient: Patient) -> None:
    assert _post(patient.organization, _body(patient), "").status_code == 401


def test_unknown_organization_is_401_like_a_bad_token(token: str) -> None:
    url = reverse("webhook-custom-event", kwargs={"organization_uuid": uuid.uuid4()})
    response = Client().post(
        url, data="{}", content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 401


def test_rotated_token_stops_working(patient: Patient, token: str) -> None:
    organization_webhook_token_issue(organization=patient.organization)
    assert _post(patient.organization, _body(patient), token).status_code == 401


def test_auth_is_checked_before_the_body_is_read(patient: Patient) -> None:
    response = _post(patient.organization, None, "wrong", raw=b"x" * (70 * 1024))
    assert response.status_code == 401


# --- malformed requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "the body is empty"),
        (b"   ", "the body is empty"),
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (b'{"name": NaN}', "not valid JSON"),
        (b'{"name": 1e999}', "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    ],
)
def test_malformed_json_is_400(patient: Patient, token: str, raw: bytes, message: str) -> None:
    response = _post(patient.organization, None, token, raw=raw)
    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": None}, "name must be a non-empty string"),
        ({"name": ""}, "name must be a non-empty string"),
        ({"name": 5}, "name must be a non-empty string"),
        ({"name": "x" * 101}, "name is longer than 100"),
        ({"name": "bad\nname"}, "name contains control characters"),
        ({"idempotencyKey": ""}, "idempotencyKey must be a non-empty string"),
        ({"idempotencyKey": "k" * 256}, "idempotencyKey is longer than 255"),
        ({"data": [1]}, "data must be a JSON object"),
        ({"data": "x"}, "data must be a JSON object"),
        ({"data": {"a": "nul\u0000"}}, "control character (U+0000)"),
        ({"data": {"nul\u0000": 1}}, "control character (U+0000)"),
        ({"customer": None}, "customer is required"),
        ({"customer": "ann@example.com"}, "customer must be an object"),
        ({"customer": {}}, "customer needs an id, email or phone"),
        ({"customer": {"id": 7}}, "customer.id must be a string"),
        ({"customer": {"id": "nope"}}, "customer.id is not a customer id"),
        ({"customer": {"phone": "12"}}, "customer.phone is not a valid phone number"),
        ({"customer": {"id": str(uuid.uuid4())}}, "no customer with this id"),
        ({"customer": {"email": "nobody@example.com"}}, "no customer with this email"),
    ],
)
def test_invalid_fields_are_400_with_a_specific_message(
    patient: Patient, token: str, change: dict[str, Any], message: str
) -> None:
    response = _post(patient.organization, _body(patient, **change), token)
    assert response.status_code == 400
    assert message in response.json()["error"]
    assert not Event.objects.filter(type="webhook.event").exists()


@pytest.mark.parametrize("field", ["name", "customer", "idempotencyKey"])
def test_missing_fields_are_400(patient: Patient, token: str, field: str) -> None:
    body = _body(patient)
    del body[field]
    response = _post(patient.organization, body, token)
    assert response.status_code == 400
    assert field in response.json()["error"]


def test_deeply_nested_data_is_400(patient: Patient, token: str) -> None:
    data: dict[str, Any] = {}
    node = data
    for _ in range(30):
        node["a"] = {}
        node = node["a"]
    response = _post(patient.organization, _body(patient, data=data), token)
    assert response.status_code == 400
    assert "nested more than" in response.json()["error"]


def test_a_customer_of_another_organization_is_not_found(patient: Patient, token: str) -> None:
    stranger = PatientFactory()
    response = _post(
        patient.organization, _body(patient, customer={"id": str(stranger.uuid)}), token
    )
    assert response.status_code == 400
    assert "no customer" in response.json()["error"]


def test_ambiguous_customer_is_400(patient: Patient, token: str) -> None:
    PatientFactory(organization=patient.organization, email="ann@example.com")
    response = _post(
        patient.organization, _body(patient, customer={"email": "ann@example.com"}), token
    )
    assert response.status_code == 400
    assert "several customers" in response.json()["error"]


# --- size ------------------------------------------------------------------------------------


def test_body_over_64_kb_is_413(patient: Patient, token: str) -> None:
    body = _body(patient, data={"blob": "x" * (64 * 1024)})
    response = _post(patient.organization, body, token)
    assert response.status_code == 413
    assert not Event.objects.filter(type="webhook.event").exists()


def test_body_just_under_the_limit_is_accepted(patient: Patient, token: str) -> None:
    body = _body(patient, data={"blob": ""})
    padding = 64 * 1024 - len(json.dumps(body))
    body["data"]["blob"] = "x" * padding
    assert len(json.dumps(body).encode()) == 64 * 1024
    assert _post(patient.organization, body, token).status_code == 202


def test_a_body_longer_than_declared_is_cut_at_the_declared_length(
    patient: Patient, token: str
) -> None:
    raw = json.dumps(_body(patient)).encode()
    response = _post(patient.organization, None, token, raw=raw, CONTENT_LENGTH="10")
    assert response.status_code == 400


def test_a_declared_length_over_the_limit_is_413_before_reading(
    patient: Patient, token: str
) -> None:
    raw = json.dumps(_body(patient, data={"blob": "x" * (70 * 1024)})).encode()
    # Refused on the declared length alone; at most limit+1 bytes are ever read anyway.
    response = _post(patient.organization, None, token, raw=raw, CONTENT_LENGTH=str(64 * 1024 + 1))
    assert response.status_code == 413


def test_invalid_content_length_is_400(patient: Patient, token: str) -> None:
    response = _post(patient.organization, _body(patient), token, CONTENT_LENGTH="lots")
    assert response.status_code == 400
