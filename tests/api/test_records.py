"""A patient's records over the API: created and updated through the models, so each real
change records its event exactly once, and every write is audited with the key."""

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from integrations.api.keys import IssuedApiKey
from integrations.api.views import RECORD_ENDPOINTS
from patients.models import AuditEntry, Order, Patient
from tests.api.conftest import assert_error, patch, post
from tests.factories import OrderFactory, PatientFactory
from workflows.models import Event

pytestmark = pytest.mark.django_db


def _events(type: str) -> int:
    return Event.objects.filter(type=type).count()


@pytest.fixture
def patient(clinic: object) -> Patient:
    return PatientFactory(organization=clinic)


def test_an_order_created_shipped_then_shipped_again_records_each_event_once(
    api: Client, patient: Patient
) -> None:
    response = post(
        api,
        "/api/v1/orders/",
        {
            "patient": str(patient.uuid),
            "number": "1001",
            "status": "awaiting_shipment",
            "line_items": [{"name": "Vitamin D", "price": "49.00", "quantity": 1}],
            "total_amount": "49.00",
        },
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["patient"] == str(patient.uuid)
    assert body["total_amount"] == "49.00"
    url = f"/api/v1/orders/{body['uuid']}/"

    shipped = patch(api, url, {"status": "shipped", "tracking_number": "1Z999"})
    assert shipped.status_code == 200, shipped.content
    again = patch(api, url, {"status": "shipped"})
    assert again.status_code == 200

    assert _events("order.created") == 1
    assert _events("order.shipped") == 1
    order = Order.objects.get()
    assert [h["status"] for h in order.status_history][-1] == "shipped"
    assert again.json()["status_history"] == order.status_history


def test_an_order_number_is_unique_per_clinic(api: Client, patient: Patient) -> None:
    OrderFactory(patient=patient, number="1001")
    error = assert_error(
        post(api, "/api/v1/orders/", {"patient": str(patient.uuid), "number": "1001"}),
        400,
        "invalid_request",
    )
    assert "number" in error["fields"]


def test_a_record_stays_with_its_patient(api: Client, patient: Patient, clinic: object) -> None:
    order = OrderFactory(patient=patient)
    other = PatientFactory(organization=clinic)
    error = assert_error(
        patch(api, f"/api/v1/orders/{order.uuid}/", {"patient": str(other.uuid)}),
        400,
        "invalid_request",
    )
    assert "patient" in error["fields"]


RECORDS: dict[str, dict[str, Any]] = {
    "orders": {"number": "A-1", "status": "processing"},
    "appointments": {
        "starts_at": (timezone.now() + timedelta(days=2)).isoformat(),
        "status": "booked",
        "video_url": "https://meet.example.com/x",
    },
    "subscriptions": {"product_id": "p1", "product_name": "Vit D", "price": "19.00"},
    "prescriptions": {"medication_name": "Metformin"},
    "requisitions": {"lab_name": "Quest", "test_panel": "CMP"},
    "carts": {"line_items": [], "checkout_url": "https://shop.example.com/c/1"},
}
UPDATES = {
    "orders": ({"status": "shipped"}, "order.shipped"),
    "appointments": ({"status": "confirmed"}, "appointment.confirmed"),
    "subscriptions": ({"status": "active"}, "subscription.active"),
    "prescriptions": ({"status": "fulfilled"}, "prescription.fulfilled"),
    "requisitions": ({"status": "submitted"}, "requisition.submitted"),
    "carts": ({"checked_out_at": timezone.now().isoformat()}, "cart.checkout"),
}


def test_every_record_endpoint_is_covered() -> None:
    assert {endpoint.path for endpoint in RECORD_ENDPOINTS} == set(RECORDS) == set(UPDATES)


@pytest.mark.parametrize("path", sorted(RECORDS))
def test_each_record_is_created_read_updated_and_listed(
    api: Client, patient: Patient, write_key: IssuedApiKey, path: str
) -> None:
    created = post(api, f"/api/v1/{path}/", {"patient": str(patient.uuid), **RECORDS[path]})
    assert created.status_code == 201, created.content
    url = f"/api/v1/{path}/{created.json()['uuid']}/"
    assert api.get(url).json() == created.json()

    change, event = UPDATES[path]
    for _ in range(2):  # the second time changes nothing and records nothing
        updated = patch(api, url, change)
        assert updated.status_code == 200, updated.content
    assert _events(event) == 1

    listed = api.get(f"/api/v1/{path}/", {"patient": str(patient.uuid)}).json()
    assert [r["uuid"] for r in listed["results"]] == [created.json()["uuid"]]
    assert api.get(f"/api/v1/{path}/", {"patient": str(PatientFactory().uuid)}).json()["count"] == 0
    assert_error(api.get(f"/api/v1/{path}/", {"patient": "x"}), 400, "invalid_request")

    # Audited, named by the key that wrote, never as a user.
    model = next(e for e in RECORD_ENDPOINTS if e.path == path).serializer.Meta.model
    record = model.objects.get(uuid=created.json()["uuid"])
    entries = AuditEntry.objects.filter(model=model._meta.label, object_id=str(record.pk))
    assert [e.action for e in entries.order_by("at", "id")] == ["created", "updated"]
    assert {e.actor_repr for e in entries} == {str_actor(write_key)}
    assert all(e.actor is None for e in entries)


def test_a_patient_created_and_updated_is_audited_as_the_key(
    api: Client, write_key: IssuedApiKey
) -> None:
    uuid = post(api, "/api/v1/patients/", {"first_name": "Ann"}).json()["uuid"]
    patch(api, f"/api/v1/patients/{uuid}/", {"last_name": "Lee"})
    patient = Patient.objects.get(uuid=uuid)
    entries = AuditEntry.objects.filter(model="patients.Patient", object_id=str(patient.pk))
    assert [e.action for e in entries.order_by("at", "id")] == ["created", "updated"]
    assert {e.actor_repr for e in entries} == {str_actor(write_key)}


def str_actor(issued: IssuedApiKey) -> str:
    return f"API key “{issued.api_key.name}” ({issued.api_key.prefix}…)"
