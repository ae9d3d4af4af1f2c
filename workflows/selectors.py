"""Reads of the engine's records for the tasks and the admin pages: they query and return,
and change nothing."""

import json
import uuid
from typing import Any

from patients.clinic_view import clinic_datetime
from patients.models import Patient
from workflows.adapters import step_messages
from workflows.diagram import step_detail, step_title
from workflows.engine import ACTIVE_STATUSES
from workflows.models import Run, StepRun, Workflow


def run_waiting_message(*, run: Run) -> int | None:
    """The message a waiting run's current step waits on, if it waits on one."""
    step_run = StepRun.objects.filter(
        run=run, index=run.next_index, status=StepRun.Status.WAITING
    ).first()
    message_id = step_run.result.get("message_id") if step_run else None
    return int(message_id) if message_id else None


def workflow_waiting_runs(*, workflow: Workflow) -> int:
    """How many runs disabling this workflow would cancel."""
    return Run.objects.filter(
        workflow=workflow, status__in=[*ACTIVE_STATUSES, Run.Status.RUNNING]
    ).count()


def run_patient(run: Run) -> Patient | None:
    """The patient of the run, as its event recorded them, if still on record in its clinic."""
    try:
        patient_uuid = uuid.UUID(str((run.event.customer or {}).get("id")))
    except ValueError:
        return None
    return Patient.objects.filter(
        organization_id=run.workflow.organization_id, uuid=patient_uuid
    ).first()


def run_timeline(run: Run) -> list[dict[str, Any]]:
    """The run step by step, as pinned when it started: each step with its step run (if it
    got that far), the messages it produced, and the send decision of each message; times in
    the clinic's zone. Two queries, however long the run."""
    zone = run.workflow.organization.timezone
    step_runs = {step_run.index: step_run for step_run in run.step_runs.all()}
    by_step_run = step_messages(run)
    timeline = []
    for index, step in enumerate(run.definition.get("steps", [])):
        step_run = step_runs.get(index)
        timeline.append(
            {
                "number": index + 1,
                "title": step_title(step),
                "detail": step_detail(step),
                "step_run": step_run,
                "started": clinic_datetime(step_run.started_at, zone) if step_run else "",
                "finished": clinic_datetime(step_run.finished_at, zone) if step_run else "",
                "due": clinic_datetime(step_run.due_at, zone) if step_run else "",
                "inputs": sorted((step_run.inputs or {}).items()) if step_run else [],
                "result": json.dumps(step_run.result, indent=2, ensure_ascii=False)
                if step_run and step_run.result
                else "",
                "messages": by_step_run.get(step_run.pk, []) if step_run else [],
                "current": index == run.next_index and run.status in ("waiting", "running"),
            }
        )
    return timeline
