"""A read key reads; only a write key writes."""

import pytest
from django.test import Client

from integrations.api.keys import IssuedApiKey
from patients.models import Order, Patient
from tests.api.conftest import assert_error, key_client, patch, post
from tests.factories import OrderFactory, PatientFactory

pytestmark = pytest.mark.django_db


def test_a_read_key_reads(read_key: IssuedApiKey, clinic: object) -> None:
    patient = PatientFactory(organization=clinic)
    client = key_client(read_key.token)
    assert client.get("/api/v1/patients/").status_code == 200
    assert client.get(f"/api/v1/patients/{patient.uuid}/").status_code == 200
    assert client.get(f"/api/v1/patients/{patient.uuid}/consents/").status_code == 200
    assert client.get("/api/v1/orders/").status_code == 200


def test_a_read_key_may_not_write(read_key: IssuedApiKey, clinic: object) -> None:
    patient = PatientFactory(organization=clinic)
    order = OrderFactory(patient=patient)
    client: Client = key_client(read_key.token)
    for response in (
        post(client, "/api/v1/patients/", {"first_name": "Ann"}),
        patch(client, f"/api/v1/patients/{patient.uuid}/", {"first_name": "Bo"}),
        post(
            client,
            f"/api/v1/patients/{patient.uuid}/consents/",
            {"purpose": "transactional", "action": "opt_out", "source": "patient_portal"},
        ),
        patch(client, f"/api/v1/orders/{order.uuid}/", {"status": "shipped"}),
    ):
        assert_error(response, 403, "insufficient_scope")
    assert Patient.objects.count() == 1
    assert Patient.objects.get().first_name == patient.first_name
    assert Order.objects.get().status == order.status
    assert not patient.consents.exists()
