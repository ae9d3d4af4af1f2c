"""The Update record step end to end: a booked appointment, the outbox, a real worker process
writing through the models, and the event that write records starting a second workflow."""

import pytest

from patients.models import Appointment, AuditEntry, RecordWrite, Task
from tests.conftest import WorkerProcess, wait_for
from tests.factories import AppointmentFactory, PatientFactory, WorkflowFactory
from workflows.models import Run, Step

pytestmark = pytest.mark.integration


def test_a_workflows_write_fires_the_catalogues_event_for_the_next_workflow(
    worker: WorkerProcess,
) -> None:
    # given: one workflow marks a booked appointment "reschedule requested", another
    # creates a staff task when an appointment is
    asks = WorkflowFactory(trigger="appointment.booked", name="Asks to move")
    Step.objects.create(
        workflow=asks,
        adapter="records",
        function="setAppointmentStatus",
        parameters={"appointment": "{{appointment.id}}", "status": "reschedule_requested"},
    )
    follows_up = WorkflowFactory(
        organization=asks.organization,
        trigger="appointment.reschedule_requested",
        name="Staff follow-up",
    )
    Step.objects.create(
        workflow=follows_up,
        adapter="records",
        function="createTask",
        parameters={"title": "Call {{customer.firstName}} to reschedule", "due_in_hours": "4"},
    )
    patient = PatientFactory(organization=asks.organization, first_name="Ann")
    # when an appointment is booked
    appointment = AppointmentFactory(patient=patient)
    # then the worker writes the status, and the event that records starts the follow-up
    task = wait_for(
        lambda: Task.objects.filter(patient=patient).first(),
        timeout=30,
        what="the follow-up task",
    )
    assert task.title == "Call Ann to reschedule" and task.organization == asks.organization
    appointment.refresh_from_db()
    assert appointment.status == Appointment.Status.RESCHEDULE_REQUESTED
    first = Run.objects.get(workflow=asks)
    second = wait_for(
        lambda: Run.objects.filter(workflow=follows_up, status=Run.Status.SUCCEEDED).first(),
        what="the follow-up run to finish",
    )
    assert first.status == Run.Status.SUCCEEDED
    assert second.event.type == "appointment.reschedule_requested"
    actors = dict(
        AuditEntry.objects.values_list("model", "actor_repr").filter(
            actor_repr__startswith="workflow"
        )
    )
    assert actors == {
        "patients.Appointment": f"workflow “Asks to move” run {first.pk}",
        "patients.Task": f"workflow “Staff follow-up” run {second.pk}",
    }
    assert RecordWrite.objects.count() == 2
