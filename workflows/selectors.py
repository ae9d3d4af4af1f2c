"""Reads of the engine's records for the tasks and the admin pages: they query and return,
and change nothing."""

import json
import uuid
from datetime import datetime
from typing import Any

from django.db.models import Count

from patients.clinic_view import clinic_datetime
from patients.models import Patient
from workflows.adapters import step_messages
from workflows.diagram import step_detail, step_title
from workflows.engine import ACTIVE_STATUSES
from workflows.models import EnrollmentSkip, ReplyWait, Run, StepRun, Workflow, WorkflowVersion
from workflows.replies import SPLIT, ReplyConfigError, branch_display, branch_segments


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


def workflow_skip_counts(*, workflow: Workflow) -> list[tuple[str, str, int]]:
    """The workflow's skipped enrollments by reason, in one query: (reason, its label,
    how many), most first."""
    labels = dict(EnrollmentSkip.Reason.choices)
    rows = (
        EnrollmentSkip.objects.filter(workflow=workflow)
        .order_by()
        .values_list("reason")
        .annotate(count=Count("id"))
        .order_by("-count", "reason")
    )
    return [(reason, labels.get(reason, reason), count) for reason, count in rows]


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
    got that far), the messages it produced, and the send decision of each message, and a
    wait's question, deadline and reply; times in the clinic's zone. Three queries, however
    long the run."""
    zone = run.workflow.organization.timezone
    step_runs = {step_run.index: step_run for step_run in run.step_runs.all()}
    by_step_run = step_messages(run)
    waits = {
        wait.index: wait
        # The latest generation of each step's wait last (a retried run waits afresh).
        for wait in ReplyWait.objects.filter(run=run).order_by("index", "generation")
    }
    steps = run.definition.get("steps", [])
    not_taken = _branches_not_taken(steps, step_runs)
    timeline = []
    for index, step in enumerate(steps):
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
                "wait": _wait_facts(waits[index], zone) if index in waits else None,
                "split": _split_facts(step, step_run),
                "current": index == run.next_index and run.status in ("waiting", "running"),
                "not_taken": index in not_taken
                and (step_run is None or step_run.status == StepRun.Status.SKIPPED),
            }
        )
    return timeline


def _branches_not_taken(steps: list[dict[str, Any]], step_runs: dict[int, StepRun]) -> set[int]:
    """The 0-based indexes of the steps in the branches a wait did not take (the engine
    records them skipped, "not reached"), to show them as not taken rather than skipped."""
    try:
        tree = branch_segments(steps)
    except ReplyConfigError:  # a definition pinned before validation knew of it
        return set()
    not_taken: set[int] = set()
    for index, wait in tree.waits.items():
        step_run = step_runs.get(index)
        if step_run is None or step_run.status != StepRun.Status.SUCCEEDED:
            continue
        taken = (step_run.result or {}).get("branch")
        for segment in wait.segments:
            if taken not in segment.labels:
                not_taken.update(range(segment.start, segment.end))
    return not_taken


def _split_facts(step: dict[str, Any], step_run: StepRun | None) -> dict[str, str] | None:
    """An A/B split's branch and why ("bucket 37 of 100 → B (50–99)"), once it has chosen."""
    if step.get("type") != SPLIT or step_run is None or step_run.status != StepRun.Status.SUCCEEDED:
        return None
    result = step_run.result or {}
    return {"branch": str(result.get("branch", "")), "why": str(result.get("why", ""))}


def _wait_facts(wait: ReplyWait, zone: str) -> dict[str, Any]:
    """A Wait-for-reply step's wait as the run page shows it."""
    return {
        "state": wait.get_state_display(),
        "asked": clinic_datetime(wait.asked_at, zone),
        "deadline": clinic_datetime(wait.deadline, zone),
        "resolved": clinic_datetime(wait.resolved_at, zone) if wait.resolved_at else "",
        "answer": wait.answer,
        "branch": branch_display(wait.branch),
        "reask_reply": wait.reask_reply if wait.reasked else "",
        "reason": wait.reason,
    }


def workflow_versions(*, workflow: Workflow) -> list[WorkflowVersion]:
    """The workflow's versions, newest first, without their documents (a page lists them)."""
    return list(workflow.versions.defer("document").order_by("-number"))


def workflow_version(*, workflow: Workflow, number: int | None) -> WorkflowVersion | None:
    """Version `number` of the workflow; None when it has no such version."""
    return workflow.versions.filter(number=number).first() if number is not None else None


def workflow_version_numbers(*, workflow: Workflow) -> list[int]:
    """The numbers of the workflow's versions, newest first."""
    return list(workflow.versions.order_by("-number").values_list("number", flat=True))


def workflow_version_documents(*, workflow: Workflow, numbers: list[int]) -> dict[int, Any]:
    """The documents of these versions of the workflow, by number (one query)."""
    found = workflow.versions.filter(number__in=numbers).values_list("number", "document")
    return dict(found)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def run_status(*, run: Run) -> dict[str, Any]:
    """Where a run is, ready for JSON: its workflow (uuid, name, the version it runs),
    status, times, the next step, each step's status (with a skip's reason), and how it
    ended (an exit's reason, a goal reached). No patient data: no names, contacts, message
    texts or provider errors (they can quote a phone number)."""
    steps = run.definition.get("steps") or []
    step_runs = {sr.index: sr for sr in StepRun.objects.filter(run=run).order_by("index")}
    in_progress = run.status in (Run.Status.PENDING, Run.Status.RUNNING, Run.Status.WAITING)
    next_step = run.next_index + 1 if in_progress and run.next_index < len(steps) else None
    workflow = run.workflow
    return {
        "id": str(run.uuid),
        "workflow": {
            "id": str(workflow.uuid),
            "name": workflow.name,
            "version": run.definition.get("version", workflow.version),
        },
        "status": run.status,
        "test": run.is_test,
        "createdAt": _iso(run.created_at),
        "startedAt": _iso(run.started_at),
        "finishedAt": _iso(run.finished_at),
        "dueAt": _iso(run.due_at) if in_progress else None,
        "nextStep": next_step,
        "steps": [
            {
                "number": index + 1,
                "type": step.get("type", ""),
                **(
                    {"action": f"{step.get('adapter')}.{step.get('function')}"}
                    if step.get("type") == "adapter"
                    else {}
                ),
                "status": step_runs[index].status if index in step_runs else "not_started",
                "skipReason": step_runs[index].skip_reason if index in step_runs else "",
                "startedAt": _iso(step_runs[index].started_at) if index in step_runs else None,
                "finishedAt": _iso(step_runs[index].finished_at) if index in step_runs else None,
            }
            for index, step in enumerate(steps)
        ],
        "exitReason": run.exit_reason,
        "goalReached": run.goal_reached_at is not None,
        "goalReachedAt": _iso(run.goal_reached_at),
    }
