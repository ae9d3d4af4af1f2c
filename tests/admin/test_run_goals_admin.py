"""Runs a goal or an exit ended, in the admin: the run list and the run's page say "Ended
early" and why, the page says whether it converted, the timeline shows the step not sent;
only the clinic's own staff see them. The builder's diagram and dry run name the goal."""

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.factories import (
    IntegrationFactory,
    OrganizationFactory,
    PatientFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows.models import Event, Run, StepRun, Workflow

pytestmark = pytest.mark.django_db
RUN_PERMISSIONS = ["view_run", "view_workflow"]
SMS = {
    "type": "adapter",
    "adapter": "twilio",
    "function": "sendSMS",
    "parameters": {"message": "Hi", "to": "{{customer.phone}}", "from": "+15005550006"},
}


@pytest.fixture
def ended() -> Run:
    """A run whose SMS was not sent: the goal was recorded first."""
    workflow = WorkflowFactory(
        organization=IntegrationFactory().organization,
        trigger="appointment.booked",
        goal_event="appointment.confirmed",
    )
    org = workflow.organization
    trigger = Event.objects.create(organization=org, type="appointment.booked", dedupe_key="b")
    goal = Event.objects.create(organization=org, type="appointment.confirmed", dedupe_key="c")
    run = Run.objects.create(
        workflow=workflow,
        event=trigger,
        status=Run.Status.EXITED,
        definition={"version": 1, "steps": [SMS, SMS]},
        exit_reason="goal reached: appointment.confirmed",
        goal_reached_at=timezone.now(),
        goal_event=goal,
        finished_at=timezone.now(),
    )
    StepRun.objects.create(
        run=run,
        index=0,
        status=StepRun.Status.SKIPPED,
        skip_reason="not sent: goal reached: appointment.confirmed before this step",
    )
    return run


def test_the_run_list_says_ended_early_and_why(ended: Run) -> None:
    staff = clinic_client(ended.workflow.organization, *RUN_PERMISSIONS)
    response = staff.get(reverse("admin:workflows_run_changelist"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Ended early" in page and "goal reached: appointment.confirmed" in page


def test_the_run_page_says_ended_early_converted_and_the_step_not_sent(ended: Run) -> None:
    staff = clinic_client(ended.workflow.organization, *RUN_PERMISSIONS)
    response = staff.get(reverse("admin:workflows_run_change", args=[ended.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Ended early: goal reached: appointment.confirmed (a conversion)" in page
    assert "not sent: goal reached: appointment.confirmed before this step" in page
    assert "a conversion" in page and "Reached " in page
    assert "not reached" in page  # the second SMS


def test_another_clinics_staff_see_no_such_run(ended: Run) -> None:
    other = clinic_client(OrganizationFactory(), *RUN_PERMISSIONS)
    assert other.get(reverse("admin:workflows_run_change", args=[ended.pk])).status_code in (
        302,
        404,
    )
    page = other.get(reverse("admin:workflows_run_changelist")).content.decode()
    assert "goal reached" not in page


def test_a_run_without_goal_says_so(ended: Run) -> None:
    Workflow.objects.filter(pk=ended.workflow_id).update(goal_event="")
    Run.objects.filter(pk=ended.pk).update(
        status=Run.Status.SUCCEEDED, exit_reason="", goal_reached_at=None, goal_event=None
    )
    staff = clinic_client(ended.workflow.organization, *RUN_PERMISSIONS)
    page = staff.get(reverse("admin:workflows_run_change", args=[ended.pk])).content.decode()
    assert "Ended early" not in page and "no goal" in page


def _post(client: Client, url: str, body: dict[str, Any]) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json")


def test_the_diagram_and_the_dry_run_name_the_goal_and_exits() -> None:
    workflow = WorkflowFactory(
        organization=IntegrationFactory(senders=["+15005550006"]).organization
    )
    staff = clinic_client(workflow.organization, "view_workflow", "change_workflow")
    definition = {
        "trigger": "appointment.booked",
        "steps": [SMS],
        "goal": {"event": "appointment.confirmed"},
        "exits": [{"event": "appointment.cancelled"}],
    }
    svg = _post(
        staff,
        reverse("admin:workflows_workflow_builder_diagram", args=[workflow.pk]),
        {"definition": definition},
    ).content.decode()
    expected = "Ends early when appointment.confirmed (the goal) or appointment.cancelled (exit)"
    assert expected in svg
    patient = PatientFactory(organization=workflow.organization, is_test=True)
    page = _post(
        staff,
        reverse("admin:workflows_workflow_builder_dry_run", args=[workflow.pk]),
        {"definition": definition, "patient": patient.pk},
    ).content.decode()
    assert expected in page
