"""Fixtures of the API tests: a clinic, its keys, and clients that send them."""

from typing import Any

import pytest
from django.test import Client

from integrations.api.keys import IssuedApiKey, api_key_issue
from integrations.models import ApiKey
from patients.models import Organization
from tests.factories import OrganizationFactory


def key_client(token: str) -> Client:
    """A test client sending this API key with every request."""
    return Client(headers={"authorization": f"Bearer {token}"})


def post(client: Client, url: str, data: Any, **headers: str) -> Any:
    return client.post(url, data=data, content_type="application/json", headers=headers)


def patch(client: Client, url: str, data: Any, **headers: str) -> Any:
    return client.patch(url, data=data, content_type="application/json", headers=headers)


@pytest.fixture
def clinic() -> Organization:
    return OrganizationFactory(name="Sunrise")


@pytest.fixture
def write_key(clinic: Organization) -> IssuedApiKey:
    return api_key_issue(organization=clinic, name="Patient portal", scope=ApiKey.Scope.WRITE)


@pytest.fixture
def read_key(clinic: Organization) -> IssuedApiKey:
    return api_key_issue(organization=clinic, name="Reporting", scope=ApiKey.Scope.READ)


@pytest.fixture
def api(write_key: IssuedApiKey) -> Client:
    return key_client(write_key.token)


def assert_error(response: Any, status: int, type: str) -> dict[str, Any]:
    """The response is a `status` in the API's one error shape, of this type; its error."""
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["type"] == type, error
    assert isinstance(error["message"], str) and error["message"], error
    return error
