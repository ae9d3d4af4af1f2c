"""The schema and Swagger UI: for staff of any role (an admin login), not for API keys or
visitors; served from our own static files (no CDN)."""

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from integrations.api.keys import IssuedApiKey
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.api.conftest import key_client
from tests.factories import StaffMembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

PAGES = ["/api/v1/docs/", "/api/v1/schema/"]


@pytest.mark.parametrize("role", [CLINIC_STAFF, CLINIC_ADMIN, SUPPORT_STAFF])
def test_staff_of_every_role_read_the_docs(role: str, clinic: object) -> None:
    user = StaffMembershipFactory(organization=clinic).user
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)

    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower() and "//unpkg" not in html
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert "Error" in document["components"]["schemas"]
    create = document["paths"]["/api/v1/patients/"]["post"]
    assert create["summary"] == "Create a patient"
    assert create["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert any(p["name"] == "Idempotency-Key" for p in create["parameters"])


@pytest.mark.parametrize("page", PAGES)
def test_visitors_and_api_keys_are_sent_to_the_admin_login(
    page: str, write_key: IssuedApiKey
) -> None:
    for client in (Client(), key_client(write_key.token)):
        response = client.get(page)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


@pytest.mark.parametrize("page", PAGES)
def test_a_user_who_is_not_staff_is_sent_to_the_login(page: str) -> None:
    client = Client()
    client.force_login(UserFactory(is_staff=False))
    assert client.get(page).status_code == 302


def test_the_swagger_ui_files_are_ours() -> None:
    from django.contrib.staticfiles import finders

    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
