"""The engine's reads: the message a waiting run waits on, the runs disabling a workflow would
cancel, and a run's patient as its event recorded them."""

import pytest

from tests.factories import OrganizationFactory, PatientFactory, WorkflowFactory
from workflows.models import Event, Run, StepRun, Workflow
from workflows.selectors import run_patient, run_waiting_message, workflow_waiting_runs

pytestmark = pytest.mark.django_db


def _run(workflow: Workflow, *, customer: dict[str, str] | None = None, **fields: object) -> Run:
    event = Event.objects.create(
        organization=workflow.organization,
        type="order.shipped",
        payload={} if customer is None else {"customer": customer},
        dedupe_key=f"e{Event.objects.count()}",
    )
    return Run.objects.create(workflow=workflow, event=event, **fields)


def test_a_waiting_run_waits_on_the_message_its_current_step_recorded() -> None:
    run = _run(WorkflowFactory(), status=Run.Status.WAITING, next_index=1)
    StepRun.objects.create(run=run, index=0, result={"message_id": 5})  # an earlier step
    StepRun.objects.create(
        run=run, index=1, status=StepRun.Status.WAITING, result={"message_id": 42}
    )
    assert run_waiting_message(run=run) == 42


def test_a_run_waiting_on_a_delay_or_with_no_step_run_waits_on_no_message() -> None:
    run = _run(WorkflowFactory(), status=Run.Status.WAITING)
    assert run_waiting_message(run=run) is None
    StepRun.objects.create(run=run, index=0, status=StepRun.Status.WAITING, result={})
    assert run_waiting_message(run=run) is None


def test_disabling_would_cancel_the_unfinished_runs_only() -> None:
    workflow = WorkflowFactory()
    for status in Run.Status:
        _run(workflow, status=status)
    _run(WorkflowFactory(organization=workflow.organization), status=Run.Status.PENDING)
    assert workflow_waiting_runs(workflow=workflow) == 3  # pending, waiting, running


def test_a_runs_patient_is_found_in_its_own_clinic_only() -> None:
    workflow = WorkflowFactory()
    patient = PatientFactory(organization=workflow.organization)
    elsewhere = PatientFactory(organization=OrganizationFactory())
    assert run_patient(_run(workflow, customer={"id": str(patient.uuid)})) == patient
    assert run_patient(_run(workflow, customer={"id": str(elsewhere.uuid)})) is None


@pytest.mark.parametrize("customer", [None, {}, {"id": "not-a-uuid"}, {"id": ""}])
def test_a_run_without_a_readable_patient_id_has_no_patient(
    customer: dict[str, str] | None,
) -> None:
    assert run_patient(_run(WorkflowFactory(), customer=customer)) is None
