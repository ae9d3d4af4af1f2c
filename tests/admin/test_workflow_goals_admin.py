"""A workflow's goal and exit conditions in the admin builder: saved from the definition the
builder posts, refused with a specific error on the field it belongs to (unknown event,
filter that is not JSON or not the query language, a window outside 1 hour–365 days), and
nothing saved then."""

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import (
    IntegrationFactory,
    SmsStepFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows.builder import definition_initial
from workflows.models import Workflow

pytestmark = pytest.mark.django_db

SMS = {
    "type": "adapter",
    "adapter": "twilio",
    "function": "sendSMS",
    "parameters": {
        "message": "Hi {{customer.firstName}}",
        "to": "{{customer.phone}}",
        "from": "+15005550006",
    },
    "purpose": "transactional",
}
GOAL = {
    "event": "appointment.confirmed",
    "filter": '{"appointment.providerName": "Dr. Maria Gomez"}',
    "scope": "record",
    "windowHours": "72",
}
EXITS = [{"event": "appointment.cancelled", "filter": "", "scope": "record"}]


@pytest.fixture
def client_() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


def _post_data(org: Any, **definition: Any) -> dict[str, Any]:
    return {
        "organization": org.pk,
        "name": "Reminder",
        "description": "",
        "definition": json.dumps(
            {"trigger": "appointment.booked", "filter": "", "steps": [SMS], **definition}
        ),
    }


def _text(response: Any) -> str:
    return response.content.decode().replace("&quot;", '"').replace("&#x27;", "'")


def test_the_goal_and_exits_are_saved_and_shown_again(client_: Client) -> None:
    org = IntegrationFactory(senders=["+15005550006"]).organization
    response = client_.post(
        reverse("admin:workflows_workflow_add"), _post_data(org, goal=GOAL, exits=EXITS)
    )
    assert response.status_code == 302, _text(response)[:3000]
    workflow = Workflow.objects.get()
    assert workflow.goal_event == "appointment.confirmed"
    assert workflow.goal_filter == {"appointment.providerName": "Dr. Maria Gomez"}
    assert (workflow.goal_scope, workflow.goal_window_hours) == ("record", 72)
    assert workflow.exits == [{"event": "appointment.cancelled", "filter": {}, "scope": "record"}]
    initial = definition_initial(workflow)
    assert initial["goal"] == {**GOAL, "windowHours": 72}
    assert initial["exits"] == EXITS


def test_removing_the_goal_clears_it(client_: Client) -> None:
    org = IntegrationFactory(senders=["+15005550006"]).organization
    workflow = WorkflowFactory(
        organization=org,
        goal_event="appointment.confirmed",
        goal_filter={"appointment.status": "confirmed"},
        exits=EXITS,
    )
    SmsStepFactory(workflow=workflow)
    data = _post_data(org, goal={"event": "", "filter": ""}, exits=[])
    response = client_.post(reverse("admin:workflows_workflow_change", args=[workflow.pk]), data)
    assert response.status_code == 302, _text(response)[:3000]
    workflow.refresh_from_db()
    assert (workflow.goal_event, workflow.goal_filter, workflow.exits) == ("", {}, [])


@pytest.mark.parametrize(
    ("definition", "place", "message"),
    [
        (
            {"goal": {**GOAL, "event": "appointment.confimred"}},
            ("goal", "event"),
            "unknown event 'appointment.confimred'",
        ),
        ({"goal": {**GOAL, "filter": "{nope"}}, ("goal", "filter"), "the filter is not valid JSON"),
        ({"goal": {**GOAL, "filter": '{"a": {"$gtee": 1}}'}}, ("goal", "filter"), "$gtee"),
        ({"goal": {**GOAL, "filter": "[1]"}}, ("goal", "filter"), "must be a JSON object"),
        ({"goal": {**GOAL, "windowHours": "0"}}, ("goal", "window"), "from 1 hour to 365 days"),
        ({"goal": {**GOAL, "windowHours": "8761"}}, ("goal", "window"), "from 1 hour to 365 days"),
        (
            {"goal": {**GOAL, "windowHours": "a week"}},
            ("goal", "window"),
            "a whole number of hours",
        ),
        ({"goal": {**GOAL, "scope": "household"}}, ("goal", "scope"), "the same patient"),
        (
            {"goal": {"event": "", "filter": '{"a": 1}'}},
            ("goal", "event"),
            "choose the goal's event",
        ),
        (
            {"exits": [{"event": "", "scope": "patient"}]},
            ("exits", "0", "event"),
            "choose the event",
        ),
        (
            {"exits": [{"event": "order.cancelled"}]},
            ("exits", "0", "event"),
            "unknown event 'order.cancelled'",
        ),
        (
            {"exits": [{"event": "appointment.cancelled", "filter": "{x"}]},
            ("exits", "0", "filter"),
            "not valid JSON",
        ),
        ({"exits": [*EXITS, *EXITS]}, ("exits", "1", "event"), "listed twice"),
    ],
)
def test_a_bad_goal_or_exit_is_refused_on_its_field_and_nothing_is_saved(
    client_: Client, definition: dict[str, Any], place: tuple[str, ...], message: str
) -> None:
    org = IntegrationFactory(senders=["+15005550006"]).organization
    response = client_.post(reverse("admin:workflows_workflow_add"), _post_data(org, **definition))
    assert response.status_code == 200
    assert message in _text(response)  # in the form's error list, for pages without JS
    errors: Any = response.context["builder"]["errors"]
    for key in place:
        errors = errors[key]
    assert any(message in text for text in errors), errors
    assert not Workflow.objects.exists()


def test_a_goal_of_the_wrong_shape_is_an_error_on_the_definition(client_: Client) -> None:
    org = IntegrationFactory(senders=["+15005550006"]).organization
    response = client_.post(
        reverse("admin:workflows_workflow_add"), _post_data(org, goal="appointment.confirmed")
    )
    assert response.status_code == 200
    assert "the goal must be an object" in _text(response)
    assert not Workflow.objects.exists()


def test_the_builder_validate_endpoint_reports_goal_problems() -> None:
    workflow = WorkflowFactory(organization=IntegrationFactory().organization)
    staff = clinic_client(workflow.organization, "view_workflow", "change_workflow")
    url = reverse("admin:workflows_workflow_builder_validate", args=[workflow.pk])
    definition = {
        "trigger": "appointment.booked",
        "steps": [SMS],
        "goal": {"event": "appointment.confirmed", "windowHours": "9000"},
        "exits": [{"event": "nope.never"}],
    }
    response = staff.post(
        url, json.dumps({"definition": definition}), content_type="application/json"
    )
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is False
    assert report["goal"] == {"window": ["the window must be from 1 hour to 365 days (8760 hours)"]}
    assert report["exits"]["0"]["event"] == ["unknown event 'nope.never': choose one from the list"]
