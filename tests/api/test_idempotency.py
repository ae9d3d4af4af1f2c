"""Idempotency-Key: a retried write does its work once; the key with another request is
refused; two concurrent requests with one key write once."""

import threading
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.test import Client

from integrations.api.idempotency import idempotency_records_purge
from integrations.api.keys import IssuedApiKey, api_key_issue
from integrations.models import ApiKey, IdempotencyRecord
from integrations.tasks import idempotency_records_purge as idempotency_purge_task
from patients.models import ConsentRecord, Order, Patient
from tests.api.conftest import assert_error, key_client, patch, post
from tests.factories import OrganizationFactory, PatientFactory
from workflows.models import Event

SIGNUP = {
    "first_name": "Ann",
    "phone": "+14155550123",
    "consents": [
        {
            "purpose": "transactional",
            "action": "opt_in",
            "source": "signup_form",
            "consent_text": "ok",
        }
    ],
}


@pytest.mark.django_db
def test_a_retried_signup_creates_one_patient_and_one_event(api: Client) -> None:
    first = post(api, "/api/v1/patients/", SIGNUP, **{"Idempotency-Key": "signup-1"})
    retry = post(api, "/api/v1/patients/", SIGNUP, **{"Idempotency-Key": "signup-1"})

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert Patient.objects.count() == 1
    assert ConsentRecord.objects.count() == 1
    assert Event.objects.filter(type="customer.signup").count() == 1


@pytest.mark.django_db
def test_the_key_with_another_request_is_refused(api: Client, clinic: object) -> None:
    post(api, "/api/v1/patients/", SIGNUP, **{"Idempotency-Key": "k1"})
    error = assert_error(
        post(api, "/api/v1/patients/", {**SIGNUP, "first_name": "Bo"}, **{"Idempotency-Key": "k1"}),
        422,
        "idempotency_key_reused",
    )
    assert "another request" in error["message"]
    patient = PatientFactory(organization=clinic)
    assert_error(
        patch(
            api,
            f"/api/v1/patients/{patient.uuid}/",
            {"first_name": "Ann"},
            **{"Idempotency-Key": "k1"},
        ),
        422,
        "idempotency_key_reused",
    )
    assert Patient.objects.filter(first_name="Bo").count() == 0


@pytest.mark.django_db
def test_the_same_body_in_another_key_order_is_the_same_request(api: Client) -> None:
    post(
        api,
        "/api/v1/patients/",
        {"first_name": "Ann", "last_name": "Lee"},
        **{"Idempotency-Key": "k2"},
    )
    again = api.post(
        "/api/v1/patients/",
        data='{ "last_name":"Lee",  "first_name":"Ann" }',
        content_type="application/json",
        headers={"Idempotency-Key": "k2"},
    )
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert Patient.objects.count() == 1


@pytest.mark.django_db
def test_a_refused_request_keeps_no_outcome_so_it_can_be_fixed(api: Client) -> None:
    assert_error(
        post(
            api,
            "/api/v1/patients/",
            {"first_name": "Ann", "phone": "12"},
            **{"Idempotency-Key": "k3"},
        ),
        400,
        "invalid_request",
    )
    fixed = post(
        api,
        "/api/v1/patients/",
        {"first_name": "Ann", "phone": "+14155550123"},
        **{"Idempotency-Key": "k3"},
    )
    assert fixed.status_code == 201
    assert not fixed.has_header("Idempotent-Replayed")


@pytest.mark.django_db
def test_keys_are_per_clinic(api: Client) -> None:
    other = api_key_issue(organization=OrganizationFactory(), name="x", scope=ApiKey.Scope.WRITE)
    post(api, "/api/v1/patients/", SIGNUP, **{"Idempotency-Key": "shared"})
    theirs = post(
        key_client(other.token), "/api/v1/patients/", SIGNUP, **{"Idempotency-Key": "shared"}
    )
    assert theirs.status_code == 201 and not theirs.has_header("Idempotent-Replayed")
    assert Patient.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["x" * 256, "tab\there", " "])
def test_a_bad_key_is_refused(api: Client, key: str) -> None:
    assert_error(
        post(api, "/api/v1/patients/", SIGNUP, **{"Idempotency-Key": key}), 400, "invalid_request"
    )
    assert not Patient.objects.exists()


@pytest.mark.django_db
def test_old_outcomes_are_purged(api: Client) -> None:
    from datetime import timedelta

    from django.utils import timezone

    post(api, "/api/v1/patients/", SIGNUP, **{"Idempotency-Key": "old"})
    post(api, "/api/v1/patients/", {"first_name": "Bo"}, **{"Idempotency-Key": "new"})
    IdempotencyRecord.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=25)
    )
    assert idempotency_records_purge() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    # Hourly, by beat.
    entry = django_settings.CELERY_BEAT_SCHEDULE["idempotency-records-purge"]
    assert entry["task"] == idempotency_purge_task.name
    assert idempotency_purge_task() == 0


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_write_once(
    write_key: IssuedApiKey, clinic: object
) -> None:
    """Real PostgreSQL, real threads: the second request's INSERT of the key waits for the
    first's transaction, then replays its outcome."""
    patient = PatientFactory(organization=clinic)
    body = {"patient": str(patient.uuid), "number": "R-1", "status": "shipped"}
    barrier = threading.Barrier(4)
    responses: list[Any] = []

    def call() -> None:
        try:
            barrier.wait()
            responses.append(
                post(
                    key_client(write_key.token),
                    "/api/v1/orders/",
                    body,
                    **{"Idempotency-Key": "race"},
                )
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert [r.status_code for r in responses] == [201] * 4, [r.content for r in responses]
    assert all(r.json() == responses[0].json() for r in responses)
    assert sum(r.has_header("Idempotent-Replayed") for r in responses) == 3
    assert Order.objects.count() == 1
    assert Event.objects.filter(type="order.created").count() == 1
