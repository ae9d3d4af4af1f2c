"""API contract tests generated from the OpenAPI schema the API serves (schemathesis): for
every operation, generated valid and invalid requests with a write key. No answer is a 5xx;
every status, content type and body is one the schema declares.

Fast enough for every CI run: a few examples per operation, in-process (the WSGI handler on
the test's own database transaction)."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings
from rest_framework.renderers import JSONRenderer
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from integrations.api.keys import IssuedApiKey
from tests.factories import (
    ConsentFactory,
    CustomEventTypeFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import CustomEventType, Workflow
from workflows.starts import workflow_start

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def served_schema() -> dict[str, Any]:
    """The document /api/v1/schema/ serves (generated from the same code), as JSON."""
    document = SchemaGenerator().get_schema(request=None, public=True)
    return json.loads(JSONRenderer().render(document))


# Loaded when the module is collected (schemathesis' lazy fixture loader does not work with
# this pytest); the generator needs the settings and the URLs, not the database.
schema = schemathesis.openapi.from_dict(served_schema())
schema.app = WSGIHandler()


@pytest.fixture(autouse=True)
def _connection_kept() -> Iterator[None]:
    # The WSGI handler closes the connection after each request, as it should in a server;
    # here that connection holds the test's transaction (Django's test client does the same).
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


def test_the_served_schema_is_the_generated_one(admin_client: Any) -> None:
    served = admin_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert served.json() == served_schema()


@pytest.mark.django_db
@schema.parametrize()
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_keeps_its_contract(
    case: Any, write_key: IssuedApiKey, clinic: Any
) -> None:
    # Something to find, so that not every read is a 404.
    patient = PatientFactory(organization=clinic)
    ConsentFactory(patient=patient)
    OrderFactory(patient=patient)
    # Once per test: hypothesis runs the body for every example in the same transaction.
    if not CustomEventType.objects.filter(organization=clinic).exists():
        CustomEventTypeFactory(organization=clinic)
    workflow = Workflow.objects.filter(organization=clinic).first() or WorkflowFactory(
        organization=clinic
    )
    if not workflow.steps.exists():
        SmsStepFactory(workflow=workflow)
    workflow_start(
        workflow=workflow, patient=patient, data={"order": {"number": "1"}}, idempotency_key="k"
    )
    case.call_and_validate(headers={"Authorization": f"Bearer {write_key.token}"}, checks=CHECKS)
