"""The A/B split in the builder: its schema and widget, a round trip of a saved split, its
problems reported on its fields, its place in the branch tree, the diagram, and the dry
run saying which branch the test patient falls into and why."""

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows import builder
from workflows.diagram import workflow_diagram
from workflows.models import Workflow
from workflows.splits import split_choose, split_seed

pytestmark = pytest.mark.django_db

SPLIT_PARAMETERS: dict[str, Any] = {
    "branches": [
        {"label": "A", "percent": 50, "goto": "next"},
        {"label": "B", "percent": 50, "goto": 3},
    ],
    "seed": "spring",
}


def _sms(message: str) -> dict[str, Any]:
    return {
        "type": "adapter",
        "adapter": "twilio",
        "function": "sendSMS",
        "parameters": {"message": message, "to": "{{customer.phone}}", "from": "+15005550006"},
    }


def _split(**parameters: Any) -> dict[str, Any]:
    return {"type": "split", "parameters": {**SPLIT_PARAMETERS, **parameters}}


def _definition(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"trigger": "order.shipped", "filter": "", "steps": list(steps)}


def _post(client: Client, name: str, workflow: Workflow, body: dict[str, Any]) -> Any:
    url = reverse(f"admin:workflows_workflow_{name}", args=[workflow.pk])
    return client.post(url, json.dumps(body), content_type="application/json")


@pytest.fixture
def workflow() -> Workflow:
    integration = IntegrationFactory()
    return WorkflowFactory(organization=integration.organization, enabled=False)


@pytest.fixture
def staff(workflow: Workflow) -> Client:
    return clinic_client(workflow.organization, "view_workflow", "add_workflow", "change_workflow")


def test_the_schema_offers_the_split_with_its_branches_widget() -> None:
    schema = builder.builder_schema()
    (split,) = [t for t in schema["stepTypes"] if t["name"] == "split"]
    assert split["label"] == "A/B split"
    by_name = {p["name"]: p for p in split["parameters"]}
    assert by_name["branches"]["widget"] == "split-branches"
    assert by_name["seed"]["required"] is False


def test_a_saved_split_round_trips_through_the_builder(workflow: Workflow) -> None:
    SmsStepFactory(
        workflow=workflow,
        position=1,
        type="split",
        adapter="",
        function="",
        parameters=SPLIT_PARAMETERS,
    )
    SmsStepFactory(workflow=workflow, position=2)
    SmsStepFactory(workflow=workflow, position=3)
    initial = builder.definition_initial(workflow)
    assert json.loads(initial["steps"][0]["parameters"]["branches"]) == SPLIT_PARAMETERS["branches"]
    parsed = builder.definition_parse(json.dumps(initial))
    assert parsed.problems.ok and parsed.steps[0]["parameters"] == SPLIT_PARAMETERS
    builder.workflow_steps_save(workflow=workflow, steps=parsed.steps)
    assert workflow.steps.get(position=1).parameters == SPLIT_PARAMETERS


def test_branches_that_are_not_json_are_a_problem_on_their_field() -> None:
    parsed = builder.definition_parse(_definition(_split(branches="[{"), _sms("a"), _sms("b")))
    assert list(parsed.problems.steps[0]) == ["branches"]


@pytest.mark.parametrize(
    ("branches", "message"),
    [
        (
            [
                {"label": "A", "percent": 60, "goto": "next"},
                {"label": "B", "percent": 50, "goto": 3},
            ],
            "the percents add up to 110: they must add up to 100",
        ),
        (
            [{"label": "A", "percent": 100, "goto": "next"}],
            "a split needs at least 2 branches, e.g. A and B",
        ),
        (
            [
                {"label": "A", "percent": 50, "goto": "next"},
                {"label": "A", "percent": 50, "goto": 3},
            ],
            "two branches are called “A”: labels must differ",
        ),
    ],
)
def test_validate_reports_a_bad_split_on_its_branches(
    staff: Client, workflow: Workflow, branches: list[dict[str, Any]], message: str
) -> None:
    definition = _definition(_split(branches=branches), _sms("a"), _sms("b"))
    response = _post(staff, "builder_validate", workflow, {"definition": definition})
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is False
    assert report["steps"]["0"]["branches"] == [message]


def test_validate_gives_the_split_branches_their_place_in_the_tree(
    staff: Client, workflow: Workflow
) -> None:
    definition = _definition(_split(), _sms("a"), _sms("b"))
    report = _post(staff, "builder_validate", workflow, {"definition": definition}).json()
    assert report["ok"] is True, report
    assert report["tree"] == [
        {"depth": 0, "wait": None, "branches": [], "ends": False},
        {"depth": 1, "wait": 1, "branches": ["A"], "ends": True},
        {"depth": 1, "wait": 1, "branches": ["B"], "ends": True},
    ]


def test_the_diagram_draws_each_branch_with_its_label_and_share() -> None:
    svg = workflow_diagram(
        trigger="order.shipped", filter={}, steps=[_split(), _sms("a"), _sms("b")]
    )
    assert "A/B split" in svg and "Split: A 50%, B 50%" in svg
    assert "1. A/B split (A → step 2; B → step 3)" in svg


def test_the_dry_run_says_which_branch_the_test_patient_falls_into_and_why(
    staff: Client, workflow: Workflow
) -> None:
    patient = PatientFactory(
        organization=workflow.organization, first_name="Tess", phone="+14155550199", is_test=True
    )
    ConsentFactory(patient=patient)
    OrderFactory(patient=patient, number="7007")
    choice = split_choose(SPLIT_PARAMETERS, seed="spring", key=str(patient.uuid))
    definition = _definition(_split(), _sms("text A"), _sms("text B"))
    body = {"definition": definition, "patient": patient.pk}
    page = _post(staff, "builder_dry_run", workflow, body).content.decode()
    assert f"Bucket {choice.bucket} of 100 → branch <strong>{choice.label}</strong>" in page
    low, high = (0, 49) if choice.label == "A" else (50, 99)
    step = 2 if choice.label == "A" else 3
    assert (
        f"bucket {choice.bucket} of 100 → {choice.label} ({low}–{high}): step {step}, then the run ends"
        in page
    )
    assert f"Step {step} · Twilio → Send SMS" in page
    assert f"Step {5 - step} · Twilio → Send SMS" not in page


def test_without_a_seed_the_dry_run_uses_the_workflows_id_as_the_engine_does(
    workflow: Workflow,
) -> None:
    from workflows.dry_run import workflow_dry_run

    patient = PatientFactory(organization=workflow.organization, is_test=True)
    params = {"branches": SPLIT_PARAMETERS["branches"]}
    expected = split_choose(
        params, seed=split_seed(params, default=str(workflow.uuid)), key=str(patient.uuid)
    )
    definition = {**_definition({"type": "split", "parameters": params}, _sms("a"), _sms("b"))}
    report = workflow_dry_run(workflow=workflow, patient=patient, definition=definition)
    assert report.steps[0].branch == {
        "label": expected.label,
        "bucket": expected.bucket,
        "steps": [2] if expected.label == "A" else [3],
    }
