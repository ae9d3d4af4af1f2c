"""Building a workflow in the admin: invalid filters and templates are refused at save,
with messages a clinic admin understands, and nothing is saved."""

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import OrganizationFactory, SmsStepFactory, UserFactory, WorkflowFactory
from workflows.models import Step, Workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def client_() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


def _post_data(org: Any, steps: list[dict[str, Any]], **workflow: Any) -> dict[str, Any]:
    data = {
        "organization": org.pk,
        "name": "Shipped",
        "description": "",
        "trigger": "order.shipped",
        "filter": "{}",
        "enabled": "on",
        "steps-TOTAL_FORMS": len(steps),
        "steps-INITIAL_FORMS": 0,
        "steps-MIN_NUM_FORMS": 0,
        "steps-MAX_NUM_FORMS": 1000,
        **workflow,
    }
    for i, step in enumerate(steps):
        base = {
            "position": i + 1,
            "type": "adapter",
            "adapter": "twilio",
            "function": "sendSMS",
            "purpose": "transactional",
        }
        for key, value in {**base, **step}.items():
            data[f"steps-{i}-{key}"] = value
    return data


SMS = {"message": "Hi {{customer.firstName}}", "to": "{{customer.phone}}", "from": "+15005550006"}


def test_the_guides_workflow_saves(client_: Client) -> None:
    org = OrganizationFactory()
    response = client_.post(reverse("admin:workflows_workflow_add"), _post_data(org, [SMS]))
    assert response.status_code == 302, response.content.decode()[:3000]
    step = Step.objects.get()
    assert step.parameters == SMS
    assert step.workflow.trigger == "order.shipped"


@pytest.mark.parametrize(
    ("steps", "workflow", "message"),
    [
        (
            [{**SMS, "message": "Hi {{customer.frstName}}"}],
            {},
            "{{customer.frstName}} is not a variable of order.shipped; did you mean {{customer.firstName}}",
        ),
        ([{**SMS, "to": "{{customer}}"}], {}, "{{customer}} is an object, not text"),
        ([{**SMS, "message": "Hi {{customer.firstName"}], {}, "never closed"),
        ([{**SMS, "from": ""}], {}, "From Phone is required"),
        ([SMS], {"filter": '{"order.totalAmount": {"$gtee": 5}}'}, "$gtee"),
        ([SMS], {"filter": "{not json"}, "Enter a valid JSON"),
        (
            [{"type": "condition", "adapter": "", "function": "", "query": "{oops"}, SMS],
            {},
            "The query is not valid JSON",
        ),
        (
            [{"type": "delay", "adapter": "", "function": "", "kind": "until_time", "time": "9am"}],
            {},
            "time must be HH:MM",
        ),
    ],
)
def test_invalid_definitions_are_refused_and_nothing_is_saved(
    client_: Client, steps: list[dict[str, Any]], workflow: dict[str, Any], message: str
) -> None:
    org = OrganizationFactory()
    response = client_.post(
        reverse("admin:workflows_workflow_add"), _post_data(org, steps, **workflow)
    )
    assert response.status_code == 200
    assert message in response.content.decode().replace("&quot;", '"').replace("&#x27;", "'")
    assert not Workflow.objects.exists()


def test_editing_bumps_the_version(client_: Client) -> None:
    workflow = WorkflowFactory()
    step = SmsStepFactory(workflow=workflow)
    data = _post_data(workflow.organization, [{**SMS, "id": step.pk, "workflow": workflow.pk}])
    data["steps-INITIAL_FORMS"] = 1
    response = client_.post(reverse("admin:workflows_workflow_change", args=[workflow.pk]), data)
    assert response.status_code == 302
    workflow.refresh_from_db()
    assert workflow.version == 2


def test_unchecking_enabled_cancels_waiting_runs_and_says_so(client_: Client) -> None:
    workflow = WorkflowFactory(enabled=True)
    data = _post_data(workflow.organization, [])
    data.pop("enabled")
    response = client_.post(
        reverse("admin:workflows_workflow_change", args=[workflow.pk]), data, follow=True
    )
    assert "is disabled; 0 waiting run(s) were cancelled" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.enabled is False
