"""The API's way into the engine: custom events, workflows, starting one for a patient, and
run status (integrations/api/automation.py) — answers, refusals and idempotent retries."""

from typing import Any

import pytest

from integrations.api.keys import IssuedApiKey, api_key_issue
from integrations.models import ApiKey
from patients.models import Organization
from tests.api.conftest import assert_error, key_client, post
from tests.factories import (
    CustomEventTypeFactory,
    OrganizationFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import EnrollmentSkip, Event, Run, Workflow

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(clinic: Organization) -> Any:
    return PatientFactory(organization=clinic, first_name="Ann")


@pytest.fixture
def lab_type(clinic: Organization) -> Any:
    return CustomEventTypeFactory(organization=clinic)


def _event(api: Any, patient: Any, data: Any, **headers: str) -> Any:
    body = {"type": "custom.lab_results_ready", "patient": str(patient.uuid), "data": data}
    return post(api, "/api/v1/events/", body, **headers)


# --- custom events -----------------------------------------------------------------------------


def test_the_clinics_custom_event_types_are_listed_with_their_schema(
    api: Any, lab_type: Any
) -> None:
    CustomEventTypeFactory(organization=OrganizationFactory(), name="other_clinics")
    body = api.get("/api/v1/event-types/").json()
    assert [item["type"] for item in body["results"]] == ["custom.lab_results_ready"]
    assert body["results"][0]["schema"]["required"] == ["kitId"]


def test_a_custom_event_is_recorded_once_however_often_it_is_retried(
    api: Any, patient: Any, lab_type: Any
) -> None:
    first = _event(api, patient, {"kitId": "KIT-1"}, **{"Idempotency-Key": "lab-1"})
    again = _event(api, patient, {"kitId": "KIT-1"}, **{"Idempotency-Key": "lab-1"})

    assert first.status_code == 202, first.content
    assert first.json()["type"] == "custom.lab_results_ready"
    assert first.json()["patient"] == str(patient.uuid)
    assert first.json()["recorded"] is True
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    (event,) = Event.objects.filter(type="custom.lab_results_ready")
    assert str(event.uuid) == first.json()["id"]
    assert event.payload["data"] == {"kitId": "KIT-1"}
    assert event.payload["customer"]["id"] == str(patient.uuid)


def test_custom_event_data_that_breaks_the_schema_is_refused_saying_where(
    api: Any, patient: Any, lab_type: Any
) -> None:
    error = assert_error(_event(api, patient, {"kitId": 12}), 400, "invalid_request")
    assert any("data.kitId" in text for text in error["fields"]["data"]), error
    error = assert_error(_event(api, patient, {}), 400, "invalid_request")
    assert any("kitId" in text for text in error["fields"]["data"]), error
    assert not Event.objects.filter(type__startswith="custom.").exists()


def test_an_unknown_or_disabled_event_type_is_refused(api: Any, patient: Any) -> None:
    unknown = assert_error(_event(api, patient, {"kitId": "K"}), 400, "invalid_request")
    assert "type" in unknown["fields"]
    CustomEventTypeFactory(organization=patient.organization, enabled=False)
    assert_error(_event(api, patient, {"kitId": "K"}), 409, "event_type_disabled")
    assert not Event.objects.filter(type__startswith="custom.").exists()


def test_a_custom_event_for_another_clinics_patient_is_refused_as_unknown(
    api: Any, lab_type: Any
) -> None:
    stranger = PatientFactory(organization=OrganizationFactory())
    error = assert_error(_event(api, stranger, {"kitId": "K"}), 400, "invalid_request")
    assert "patient" in error["fields"]
    assert not Event.objects.filter(type__startswith="custom.").exists()


def test_unknown_fields_of_an_event_are_refused(api: Any, patient: Any, lab_type: Any) -> None:
    body = {"type": "lab_results_ready", "patient": str(patient.uuid), "data": {}, "when": 1}
    error = assert_error(post(api, "/api/v1/events/", body), 400, "invalid_request")
    assert "when" in error["fields"]


def test_a_read_key_cannot_post_events(
    clinic: Organization, patient: Any, lab_type: Any, read_key: IssuedApiKey
) -> None:
    reader = key_client(read_key.token)
    assert_error(_event(reader, patient, {"kitId": "K"}), 403, "insufficient_scope")


# --- workflows and runs ------------------------------------------------------------------------


def _workflow(clinic: Organization, **fields: Any) -> Workflow:
    workflow = WorkflowFactory(organization=clinic, trigger="order.shipped", **fields)
    SmsStepFactory(workflow=workflow)
    return workflow


def _start(api: Any, workflow: Workflow, patient: Any, **headers: str) -> Any:
    body = {"patient": str(patient.uuid), "data": {"order": {"number": "1001"}}}
    return post(api, f"/api/v1/workflows/{workflow.uuid}/runs/", body, **headers)


def test_the_clinics_workflows_are_listed(api: Any, clinic: Organization) -> None:
    mine = _workflow(clinic, name="Shipped")
    _workflow(OrganizationFactory(), name="Not mine")
    body = api.get("/api/v1/workflows/").json()
    assert [(w["id"], w["name"]) for w in body["results"]] == [(str(mine.uuid), "Shipped")]


def test_starting_a_workflow_starts_it_alone_and_returns_its_status(
    api: Any, clinic: Organization, patient: Any
) -> None:
    workflow = _workflow(clinic)
    bystander = _workflow(clinic)  # the same trigger: an order.shipped event would start it

    response = _start(api, workflow, patient, **{"Idempotency-Key": "start-1"})

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["started"] is True and body["skipped"] is None
    run = Run.objects.get(workflow=workflow)
    assert body["run"]["id"] == str(run.uuid)
    assert body["run"]["workflow"] == {
        "id": str(workflow.uuid),
        "name": workflow.name,
        "version": workflow.version,
    }
    assert [step["action"] for step in body["run"]["steps"]] == ["twilio.sendSMS"]
    assert not Run.objects.filter(workflow=bystander).exists()
    assert run.event.payload["order"] == {"number": "1001"}

    again = _start(api, workflow, patient, **{"Idempotency-Key": "start-1"})
    assert again.status_code == 201 and again["Idempotent-Replayed"] == "true"
    assert Run.objects.filter(workflow=workflow).count() == 1


def test_a_workflows_enrollment_rule_answers_a_start_it_refuses(
    api: Any, clinic: Organization, patient: Any
) -> None:
    workflow = _workflow(clinic, enrollment=Workflow.Enrollment.PATIENT)
    assert _start(api, workflow, patient).status_code == 201

    refused = _start(api, workflow, patient)

    assert refused.status_code == 200, refused.content
    body = refused.json()
    assert body["started"] is False and body["run"] is None
    assert body["skipped"]["reason"] == EnrollmentSkip.Reason.PATIENT.label
    assert Run.objects.filter(workflow=workflow).count() == 1


def test_a_disabled_workflow_is_not_started(api: Any, clinic: Organization, patient: Any) -> None:
    workflow = _workflow(clinic, enabled=False)
    assert_error(_start(api, workflow, patient), 409, "workflow_disabled")
    assert not Run.objects.exists()


def test_start_data_the_trigger_does_not_have_is_refused_saying_which(
    api: Any, clinic: Organization, patient: Any
) -> None:
    workflow = _workflow(clinic)
    body = {"patient": str(patient.uuid), "data": {"order": "1001", "lab": {}}}
    response = post(api, f"/api/v1/workflows/{workflow.uuid}/runs/", body)
    error = assert_error(response, 400, "invalid_request")
    problems = " ".join(error["fields"]["data"])
    assert "order: must be an object" in problems and "lab: not part of order.shipped" in problems
    assert not Event.objects.filter(type="order.shipped").exists()


def test_another_clinics_workflow_and_patient_are_not_found(
    api: Any, clinic: Organization, patient: Any
) -> None:
    other = OrganizationFactory()
    assert_error(_start(api, _workflow(other), patient), 404, "not_found")
    stranger = PatientFactory(organization=other)
    error = assert_error(_start(api, _workflow(clinic), stranger), 400, "invalid_request")
    assert "patient" in error["fields"]
    assert not Run.objects.exists()


def test_a_runs_status_is_read_by_its_id_in_its_clinic_only(
    api: Any, clinic: Organization, patient: Any
) -> None:
    started = _start(api, _workflow(clinic), patient).json()["run"]

    read = api.get(f"/api/v1/runs/{started['id']}/")
    assert read.status_code == 200 and read.json()["id"] == started["id"]
    assert read.json()["status"] == started["status"]
    assert "phone" not in read.content.decode() and "Ann" not in read.content.decode()

    other_key = api_key_issue(organization=OrganizationFactory(), name="B", scope="read")
    assert_error(
        key_client(other_key.token).get(f"/api/v1/runs/{started['id']}/"), 404, "not_found"
    )
    assert_error(api.get("/api/v1/runs/not-a-uuid/"), 404, "not_found")


def test_runs_are_listed_by_workflow_patient_or_event(
    api: Any, clinic: Organization, patient: Any
) -> None:
    workflow = _workflow(clinic)
    started = _start(api, workflow, patient).json()["run"]
    other_patient = PatientFactory(organization=clinic)
    _start(api, workflow, other_patient)
    run = Run.objects.get(uuid=started["id"])

    def ids(query: str) -> list[str]:
        response = api.get(f"/api/v1/runs/?{query}")
        assert response.status_code == 200, response.content
        return [item["id"] for item in response.json()["results"]]

    assert ids(f"patient={patient.uuid}") == [started["id"]]
    assert ids(f"event={run.event.uuid}") == [started["id"]]
    assert len(ids(f"workflow={workflow.uuid}")) == 2
    error = assert_error(api.get("/api/v1/runs/?patient=nope"), 400, "invalid_request")
    assert "patient" in error["fields"]


def test_a_read_key_reads_runs_but_cannot_start_them(
    clinic: Organization, patient: Any, read_key: IssuedApiKey
) -> None:
    reader = key_client(read_key.token)
    workflow = _workflow(clinic)
    assert reader.get("/api/v1/workflows/").status_code == 200
    assert_error(_start(reader, workflow, patient), 403, "insufficient_scope")
    assert ApiKey.objects.get(pk=read_key.api_key.pk).scope == "read"
