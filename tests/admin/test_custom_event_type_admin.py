"""Custom event types in the admin: a clinic admin declares their clinic's types with a JSON
Schema edited as JSON; a schema careflow cannot describe is a form error that says where, the
name is fixed once saved, and a type a workflow uses cannot be deleted."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from patients.models import Organization
from patients.roles import CLINIC_ADMIN
from tests.factories import (
    CustomEventTypeFactory,
    OrganizationFactory,
    StaffMembershipFactory,
    WorkflowFactory,
)
from workflows.models import CustomEventType

pytestmark = pytest.mark.django_db

ADD = reverse("admin:workflows_customeventtype_add")
SCHEMA = {
    "type": "object",
    "properties": {"kitId": {"type": "string", "description": "The kit."}},
    "required": ["kitId"],
}


def _clinic_admin(organization: Organization) -> Client:
    user = StaffMembershipFactory(organization=organization).user
    user.groups.add(Group.objects.get(name=CLINIC_ADMIN))
    client = Client()
    client.force_login(user)
    return client


def _form(organization: Organization, **fields: Any) -> dict[str, Any]:
    return {
        "organization": organization.pk,
        "name": "lab_results_ready",
        "label": "Lab results ready",
        "description": "",
        "schema": json.dumps(SCHEMA),
        "enabled": "on",
        **fields,
    }


def _text(response: Any) -> str:
    return response.content.decode().replace("&#x27;", "'").replace("&quot;", '"')


def test_a_clinic_admin_declares_a_type_for_their_clinic() -> None:
    org = OrganizationFactory()
    client = _clinic_admin(org)
    response = client.post(ADD, _form(org))
    assert response.status_code == 302, _text(response)[:2000]
    record = CustomEventType.objects.get()
    assert (record.organization, record.type_name, record.schema) == (
        org,
        "custom.lab_results_ready",
        SCHEMA,
    )
    page = _text(client.get(reverse("admin:workflows_customeventtype_change", args=[record.pk])))
    assert "No workflow yet." in page
    assert f"/admin/careflow/reference/custom.lab_results_ready/?organization={org.pk}" in page


def test_a_clinic_admin_cannot_declare_one_for_another_clinic() -> None:
    org, other = OrganizationFactory(), OrganizationFactory()
    response = _clinic_admin(org).post(ADD, _form(other))
    assert response.status_code == 200
    assert "Select a valid choice" in _text(response)
    assert not CustomEventType.objects.exists()


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"type": "object", "properties": {"kitId": {"type": "string", "format": "uuid"}}},
            "properties.kitId.format: 'uuid' is not supported; use date or date-time",
        ),
        ({"type": "object", "patternProperties": {}}, "patternProperties: not supported"),
        ({"type": "array"}, "type: the event's data is an object"),
        ("{not json", "This is not valid JSON: Expecting property name"),
    ],
)
def test_a_schema_careflow_cannot_describe_is_a_form_error_saying_where(
    schema: Any, message: str
) -> None:
    org = OrganizationFactory()
    text = schema if isinstance(schema, str) else json.dumps(schema)
    response = _clinic_admin(org).post(ADD, _form(org, schema=text))
    assert response.status_code == 200
    assert message in _text(response)
    assert not CustomEventType.objects.exists()


def test_schema_json_too_deep_or_with_a_nul_is_a_form_error_not_a_500() -> None:
    org = OrganizationFactory()
    client = _clinic_admin(org)
    deep = "[" * 5000 + "]" * 5000
    for text, message in ((deep, "nested more than"), ('{"a": "\\u0000"}', "control character")):
        response = client.post(ADD, _form(org, schema=text))
        assert response.status_code == 200
        assert message in _text(response)
    assert not CustomEventType.objects.exists()


def test_a_bad_name_and_a_name_taken_in_the_clinic_are_form_errors() -> None:
    org = OrganizationFactory()
    client = _clinic_admin(org)
    response = client.post(ADD, _form(org, name="Lab-Results"))
    assert "Use lowercase letters, digits and underscores" in _text(response)
    CustomEventTypeFactory(organization=org)
    response = client.post(ADD, _form(org))
    assert response.status_code == 200
    assert "already exists" in _text(response)
    assert CustomEventType.objects.count() == 1


def test_the_name_cannot_be_changed_once_saved() -> None:
    record = CustomEventTypeFactory()
    client = _clinic_admin(record.organization)
    url = reverse("admin:workflows_customeventtype_change", args=[record.pk])
    response = client.post(url, _form(record.organization, name="renamed", label="Renamed"))
    assert response.status_code == 302, _text(response)[:2000]
    record.refresh_from_db()
    assert (record.name, record.label) == ("lab_results_ready", "Renamed")


def test_a_type_a_workflow_uses_cannot_be_deleted_in_the_admin() -> None:
    record = CustomEventTypeFactory()
    workflow = WorkflowFactory(organization=record.organization, trigger=record.type_name)
    client = _clinic_admin(record.organization)
    url = reverse("admin:workflows_customeventtype_delete", args=[record.pk])
    page = _text(client.get(url))
    assert f"Workflow: {workflow.name} (uses custom.lab_results_ready)" in page
    response = client.post(url, {"post": "yes"})
    assert CustomEventType.objects.filter(pk=record.pk).exists(), response.status_code
    # the bulk action refuses alike
    changelist = reverse("admin:workflows_customeventtype_changelist")
    client.post(
        changelist,
        {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"},
    )
    assert CustomEventType.objects.filter(pk=record.pk).exists()
    page = _text(client.get(reverse("admin:workflows_customeventtype_change", args=[record.pk])))
    assert str(workflow.name) in page
    workflow.delete()
    assert client.post(url, {"post": "yes"}).status_code == 302
    assert not CustomEventType.objects.exists()


def test_another_clinics_types_are_not_listed_or_opened() -> None:
    mine, theirs = CustomEventTypeFactory(label="Mine"), CustomEventTypeFactory(label="Theirs")
    client = _clinic_admin(mine.organization)
    listing = _text(client.get(reverse("admin:workflows_customeventtype_changelist")))
    assert "Mine" in listing and "Theirs" not in listing
    response = client.get(reverse("admin:workflows_customeventtype_change", args=[theirs.pk]))
    assert response.status_code == 302  # the admin's "does not exist"
