"""Clinic isolation over every endpoint and method: another clinic's key finds nothing of
this clinic (404, as if it did not exist), lists none of it, and cannot write to it."""

from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern, get_resolver

from integrations.api.auth import ApiKeyAuthentication
from integrations.api.keys import api_key_issue
from integrations.models import ApiKey
from patients.models import ConsentRecord, Patient
from tests.api.conftest import assert_error, key_client
from tests.factories import (
    AppointmentFactory,
    CartFactory,
    ConsentFactory,
    CustomEventTypeFactory,
    OrderFactory,
    OrganizationFactory,
    PatientFactory,
    PrescriptionFactory,
    RequisitionFactory,
    SmsStepFactory,
    SubscriptionFactory,
    WorkflowFactory,
)
from workflows.starts import workflow_start

pytestmark = pytest.mark.django_db

# A valid change of each kind of object, were it theirs.
CHANGES: dict[str, dict[str, Any]] = {
    "patients": {"first_name": "Mallory"},
    "consents": {"purpose": "transactional", "action": "opt_out", "source": "patient_portal"},
    "orders": {"number": "X-1", "status": "shipped"},
    "appointments": {"starts_at": "2030-01-01T10:00:00Z", "status": "cancelled"},
    "subscriptions": {"product_id": "p", "product_name": "P", "status": "cancelled"},
    "prescriptions": {"medication_name": "M", "status": "fulfilled"},
    "requisitions": {"lab_name": "L", "test_panel": "T", "status": "cancelled"},
    "carts": {"checked_out_at": "2025-01-01T10:00:00Z"},
    "events": {"type": "custom.lab_results_ready", "data": {"kitId": "KIT-1"}},
    "starts": {"data": {"order": {"number": "X-2"}}},
    "event-types": {},
    "workflows": {},
    "runs": {},
}


def api_routes() -> list[tuple[str, Any]]:
    """Every key-authenticated route under /api/v1/, found (not listed), with its view."""
    (resolver,) = [p for p in get_resolver().url_patterns if str(p.pattern) == "api/v1/"]
    routes = []
    for pattern in resolver.url_patterns:
        assert isinstance(pattern, URLPattern)
        view = getattr(pattern.callback, "cls", None)
        if ApiKeyAuthentication not in getattr(view, "authentication_classes", ()):
            continue  # the docs and the schema (staff sessions), the catch-all 404
        routes.append((str(pattern.pattern), view))
    return routes


@pytest.fixture
def sunrise(clinic: Any) -> dict[str, Any]:
    patient = PatientFactory(organization=clinic, email="ann@example.com", phone="+14155550100")
    ConsentFactory(patient=patient)
    CustomEventTypeFactory(organization=clinic)
    workflow = WorkflowFactory(organization=clinic)
    SmsStepFactory(workflow=workflow)
    start = workflow_start(
        workflow=workflow, patient=patient, data={"order": {"number": "1"}}, idempotency_key="s"
    )
    run = start.run
    return {
        "patients": patient,
        "orders": OrderFactory(patient=patient),
        "appointments": AppointmentFactory(patient=patient),
        "subscriptions": SubscriptionFactory(patient=patient, status="active"),
        "prescriptions": PrescriptionFactory(patient=patient),
        "requisitions": RequisitionFactory(patient=patient),
        "carts": CartFactory(patient=patient),
        "workflows": workflow,
        "runs": run,
    }


@pytest.fixture
def harbor() -> Client:
    other = OrganizationFactory(name="Harbor")
    PatientFactory(organization=other)
    issued = api_key_issue(organization=other, name="Harbor", scope=ApiKey.Scope.WRITE)
    return key_client(issued.token)


def _call(client: Client, method: str, url: str, body: dict[str, Any]) -> Any:
    if method == "get":
        return client.get(url, {"patient": body.get("patient", ""), "email": "ann@example.com"})
    return getattr(client, method)(url, data=body, content_type="application/json")


def test_another_clinics_key_finds_nothing_on_any_endpoint(
    sunrise: dict[str, Any], harbor: Client
) -> None:
    patient = sunrise["patients"]
    routes = api_routes()
    assert len(routes) >= 15
    calls = 0
    for route, view in routes:
        collection = route.split("/")[0]
        # A nested route (patients/<uuid>/consents/, workflows/<uuid>/runs/) writes its own kind.
        nested = route.rstrip("/").split("/")[2:]
        kind = {"consents": "consents", "runs": "starts"}[nested[0]] if nested else collection
        if "<str:uuid>" in route:
            route = route.replace("<str:uuid>", str(sunrise[collection].uuid))
        url = "/api/v1/" + route
        body = {**CHANGES[kind], "patient": str(patient.uuid)}
        if collection == "patients":
            body.pop("patient")
        for method in ("get", "post", "patch"):
            if method not in view.http_method_names or not hasattr(view, method):
                continue
            response = _call(harbor, method, url, body)
            calls += 1
            if url.count("/") > 4:  # names one of this clinic's objects
                assert_error(response, 404, "not_found")
            elif method == "get":
                assert response.status_code == 200, (url, response.content)
                assert response.json()["count"] == 0, (url, response.json())
            elif collection == "patients":
                assert response.status_code == 201  # a patient of their own clinic
            else:  # a record for this clinic's patient: there is no such patient for them
                error = assert_error(response, 400, "invalid_request")
                assert list(error["fields"]) == ["patient"], (url, error)
            # No answer names anything of this clinic but what the caller sent.
            for obj in sunrise.values():
                if str(obj.uuid) != body.get("patient"):
                    assert str(obj.uuid).encode() not in response.content, (method, url)
            assert b"ann@example.com" not in response.content
    assert calls >= 30

    # And nothing of this clinic changed.
    patient.refresh_from_db()
    assert patient.first_name != "Mallory"
    assert ConsentRecord.objects.filter(patient=patient).count() == 1
    mallory = Patient.objects.get(first_name="Mallory")
    assert mallory.organization.name == "Harbor"
    for name, obj in sunrise.items():
        status = getattr(obj, "status", None)
        obj.refresh_from_db()
        assert getattr(obj, "status", None) == status, name
    assert sunrise["carts"].checked_out_at is None


def test_a_read_key_of_another_clinic_is_refused_writes_before_anything(
    sunrise: dict[str, Any],
) -> None:
    other = OrganizationFactory()
    reader = key_client(api_key_issue(organization=other, name="r", scope="read").token)
    url = f"/api/v1/patients/{sunrise['patients'].uuid}/"
    assert_error(reader.patch(url, {}, content_type="application/json"), 403, "insufficient_scope")
    assert_error(reader.get(url), 404, "not_found")
