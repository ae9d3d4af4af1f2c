"""A clinic's custom event types (workflows.custom_events): resolved for that clinic only,
recorded with their data checked and deduplicated, and firing its workflows through the
outbox; the model's own rules (schema, name, deletion)."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction

from tests.factories import (
    CustomEventTypeFactory,
    OrganizationFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.custom_events import custom_event_record, event_type, event_types
from workflows.engine import event_dispatch
from workflows.models import CustomEventType, Event, Run
from workflows.outbox import event_record

pytestmark = pytest.mark.django_db

NAME = "custom.lab_results_ready"


def test_a_clinics_types_resolve_for_it_and_never_for_another_clinic() -> None:
    sunrise, harbor = OrganizationFactory(), OrganizationFactory()
    CustomEventTypeFactory(organization=sunrise)
    mine = event_types(organization_id=sunrise.pk)
    theirs = event_types(organization_id=harbor.pk)
    assert NAME in mine and NAME in [e.name for e in mine.listed]
    assert NAME not in theirs and NAME not in [e.name for e in theirs.listed]
    assert NAME not in event_types(organization_id=None)
    assert "order.shipped" in mine and "order.shipped" in theirs
    assert event_type(NAME, sunrise.pk) is not None
    assert event_type(NAME, harbor.pk) is None
    assert event_type(NAME, None) is None


def test_the_type_is_about_the_patient_with_its_data_from_the_schema() -> None:
    record = CustomEventTypeFactory()
    found = event_type(NAME, record.organization_id)
    assert found is not None
    assert (found.category, found.subject) == ("Custom", "customer")
    assert set(found.schema) == {"customer", "data"}
    data = found.schema["data"]
    assert data.fields is not None and data.fields["kitId"].example == "KIT-2291"
    assert found.description == "Lab results ready: The lab posted the patient's results."


def test_disabled_and_archived_types_resolve_but_are_not_offered() -> None:
    org = OrganizationFactory()
    CustomEventTypeFactory(organization=org, enabled=False)
    CustomEventTypeFactory(organization=org, name="kit_lost", archived=True)
    types = event_types(organization_id=org.pk)
    assert {NAME, "custom.kit_lost"} <= set(types)
    assert not {NAME, "custom.kit_lost"} & {e.name for e in types.listed}


# --- recording ------------------------------------------------------------------------------


def test_an_event_is_recorded_with_the_patient_and_its_data_once_per_key() -> None:
    record = CustomEventTypeFactory()
    patient = PatientFactory(organization=record.organization, first_name="Ann")
    event, created = custom_event_record(
        organization=record.organization,
        type_name=NAME,
        patient=patient,
        data={"kitId": "KIT-7"},
        idempotency_key="k-1",
    )
    assert created
    stored = Event.objects.get(pk=event.pk)
    assert stored.type == NAME
    assert stored.payload["data"] == {"kitId": "KIT-7"}
    assert stored.payload["customer"]["id"] == str(patient.uuid)
    assert (stored.subject_type, stored.subject_id) == ("customer", str(patient.pk))
    # the same key again (even with other data, or the bare name): the first event back
    again, created_again = custom_event_record(
        organization=record.organization,
        type_name="lab_results_ready",
        patient=patient,
        data={"kitId": "KIT-8"},
        idempotency_key="k-1",
    )
    assert (again.pk, created_again) == (event.pk, False)
    assert Event.objects.filter(type=NAME).count() == 1


def test_the_same_key_in_another_clinic_is_another_event() -> None:
    first, second = CustomEventTypeFactory(), CustomEventTypeFactory()
    for record in (first, second):
        custom_event_record(
            organization=record.organization,
            type_name=NAME,
            patient=PatientFactory(organization=record.organization),
            data={"kitId": "K"},
            idempotency_key="same",
        )
    assert Event.objects.filter(type=NAME).count() == 2


def _refusal(**overrides: object) -> list[str]:
    record = CustomEventTypeFactory()
    arguments: dict[str, object] = {
        "organization": record.organization,
        "type_name": NAME,
        "patient": PatientFactory(organization=record.organization),
        "data": {"kitId": "KIT-1"},
        "idempotency_key": "k",
    }
    arguments.update(overrides)
    with pytest.raises(ValidationError) as raised:
        custom_event_record(**arguments)  # type: ignore[arg-type]
    assert not Event.objects.filter(type=NAME).exists()
    return raised.value.messages


def test_data_that_breaks_the_schema_is_refused_with_its_place() -> None:
    assert _refusal(data={"kitId": 12}) == ["data.kitId: 12 is not of type 'string'"]
    assert _refusal(data={}) == ["data: 'kitId' is a required property"]
    assert _refusal(data={"kitId": "k", "readyAt": "soon"}) == [
        "data.readyAt: 'soon' is not a valid date-time"
    ]


def test_data_careflow_cannot_store_is_refused() -> None:
    (message,) = _refusal(data={"kitId": "a\x00b"})
    assert message.startswith("data contains an invisible control character")
    assert "kitId" in message


def test_unknown_types_other_clinics_patients_and_missing_keys_are_refused() -> None:
    assert "is not an event type of this clinic" in _refusal(type_name="custom.nope")[0]
    assert "is not an event type of this clinic" in _refusal(type_name="")[0]
    assert _refusal(patient=PatientFactory()) == ["This patient belongs to another clinic."]
    assert _refusal(idempotency_key=" ") == ["An idempotency key is required."]


def test_another_clinics_type_is_unknown_here() -> None:
    theirs = CustomEventTypeFactory()
    mine = OrganizationFactory()
    with pytest.raises(ValidationError, match="not an event type of this clinic"):
        custom_event_record(
            organization=mine,
            type_name=NAME,
            patient=PatientFactory(organization=mine),
            data={"kitId": "K"},
            idempotency_key="k",
        )
    assert theirs.organization_id != mine.pk


@pytest.mark.parametrize(("field", "state"), [("enabled", False), ("archived", True)])
def test_a_disabled_or_archived_type_records_nothing(field: str, state: bool) -> None:
    record = CustomEventTypeFactory(**{field: state})
    with pytest.raises(ValidationError, match=r"is (disabled|archived)"):
        custom_event_record(
            organization=record.organization,
            type_name=NAME,
            patient=PatientFactory(organization=record.organization),
            data={"kitId": "K"},
            idempotency_key="k",
        )
    assert not Event.objects.filter(type=NAME).exists()


def test_the_outbox_refuses_a_custom_type_the_clinic_does_not_have() -> None:
    record = CustomEventTypeFactory()
    other = OrganizationFactory()
    with pytest.raises(ValueError, match="unknown event type"):
        event_record(
            organization_id=other.pk, type=NAME, payload={}, dedupe_key="x", subject_type=""
        )
    assert event_record(
        organization_id=record.organization_id, type=NAME, payload={}, dedupe_key="y"
    )


def test_a_custom_event_starts_the_clinics_workflows_on_it_only() -> None:
    record = CustomEventTypeFactory()
    org = record.organization
    workflow = WorkflowFactory(organization=org, trigger=NAME)
    SmsStepFactory(workflow=workflow, parameters={"message": "Kit {{data.kitId}} is in"})
    WorkflowFactory(organization=org, trigger="customer.signup")
    # another clinic's workflow on a type of the same name never sees this clinic's events
    elsewhere = CustomEventTypeFactory()
    WorkflowFactory(organization=elsewhere.organization, trigger=NAME)
    event, _ = custom_event_record(
        organization=org,
        type_name=NAME,
        patient=PatientFactory(organization=org),
        data={"kitId": "KIT-9"},
        idempotency_key="k",
    )
    run_ids = event_dispatch(event_id=event.pk)
    assert [Run.objects.get(pk=pk).workflow_id for pk in run_ids] == [workflow.pk]
    assert event_dispatch(event_id=event.pk) == []  # exactly once


# --- the model ------------------------------------------------------------------------------


def test_a_schema_problem_is_a_validation_error_on_the_schema() -> None:
    record = CustomEventTypeFactory.build(
        organization=OrganizationFactory(),
        schema={"type": "object", "properties": {"a": {"type": "string", "format": "uuid"}}},
    )
    with pytest.raises(ValidationError) as raised:
        record.full_clean()
    assert list(raised.value.message_dict) == ["schema"]
    assert "properties.a.format" in raised.value.message_dict["schema"][0]


@pytest.mark.parametrize("name", ["Lab", "1lab", "lab-results", "lab.results", "", "x" * 58])
def test_a_name_that_cannot_be_part_of_an_event_type_is_refused(name: str) -> None:
    record = CustomEventTypeFactory.build(organization=OrganizationFactory(), name=name)
    with pytest.raises(ValidationError) as raised:
        record.full_clean()
    assert "name" in raised.value.message_dict


def test_a_name_is_unique_per_clinic() -> None:
    record = CustomEventTypeFactory()
    CustomEventTypeFactory()  # the same name in another clinic
    with pytest.raises(IntegrityError), transaction.atomic():
        CustomEventTypeFactory(organization=record.organization)


def test_an_empty_schema_is_saved_as_free_form_data() -> None:
    record = CustomEventTypeFactory(schema={})
    record.refresh_from_db()
    assert record.schema == {"type": "object", "properties": {}}
    found = event_type(NAME, record.organization_id)
    assert found is not None and found.schema["data"].fields is None


def test_a_type_a_workflow_uses_cannot_be_deleted() -> None:
    record = CustomEventTypeFactory()
    org = record.organization
    for uses in (
        {"trigger": NAME},
        {"trigger": "order.shipped", "goal_event": NAME},
        {"trigger": "order.shipped", "exits": [{"event": NAME, "filter": {}, "scope": "patient"}]},
    ):
        workflow = WorkflowFactory(organization=org, **uses)
        assert record.workflows_using() == [workflow]
        with pytest.raises(models.ProtectedError):
            record.delete()
        workflow.delete()
    record.delete()
    assert not CustomEventType.objects.exists()
