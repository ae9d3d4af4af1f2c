"""Running workflows: match an event to workflows, then advance each run step by step.

Every transition is committed as it happens, so a run interrupted anywhere (worker killed,
database restarted) resumes at the step it was on, and a step that already succeeded is
never repeated. Runs are claimed with a conditional UPDATE and a lease; a run whose worker
died is taken over once the lease expires.
"""

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from integrations.adapters import Outcome, StepContext, adapter_get
from patients.models import Patient
from workflows.filters import FilterError, filter_matches
from workflows.models import Event, Run, StepRun, Workflow
from workflows.rendering import TemplateError, template_render

logger = logging.getLogger(__name__)

# A step asking to be retried without saying when is looked at again after this long.
DEFAULT_RETRY_AFTER = timedelta(seconds=30)


def workflow_definition(workflow: Workflow) -> dict[str, Any]:
    """The definition a run pins: later edits to the workflow never reach it."""
    return {
        "version": workflow.version,
        "name": workflow.name,
        "steps": [step.definition() for step in workflow.steps.all()],
    }


def event_dispatch(*, event_id: int) -> list[int]:
    """Create one run per matching enabled workflow; return the ids of runs created now.

    Safe to call any number of times for the same event: the event row is locked while
    matching, and the database allows one run per workflow and event.
    """
    created: list[int] = []
    with transaction.atomic():
        event = Event.objects.select_for_update().get(pk=event_id)
        workflows = Workflow.objects.filter(
            organization_id=event.organization_id, trigger=event.type, enabled=True
        ).prefetch_related("steps")
        for workflow in workflows:
            try:
                if not filter_matches(workflow.filter or {}, event.payload):
                    continue
            except (FilterError, TypeError) as exc:
                logger.error("workflow %s has an unusable filter: %s", workflow.pk, exc)
                continue
            run, was_created = Run.objects.get_or_create(
                workflow=workflow,
                event=event,
                defaults={"definition": workflow_definition(workflow)},
            )
            if was_created:
                created.append(run.pk)
        if event.dispatched_at is None:
            event.dispatched_at = timezone.now()
            event.save(update_fields=["dispatched_at"])
    return created


def run_claim(*, run_id: int) -> bool:
    """Take the run for this worker if it is ready to advance; False if it is not ours."""
    now = timezone.now()
    ready = (
        Q(status=Run.Status.PENDING)
        | Q(status=Run.Status.WAITING, due_at__lte=now)
        | Q(status=Run.Status.RUNNING, lease_expires_at__lt=now)
    )
    return (
        Run.objects.filter(ready, pk=run_id).update(
            status=Run.Status.RUNNING,
            lease_expires_at=now + timedelta(seconds=settings.CAREFLOW_RUN_LEASE_SECONDS),
            started_at=Coalesce("started_at", now),
            due_at=None,
            updated_at=now,
        )
        == 1
    )


def _event_patient(event: Event) -> Patient | None:
    customer = event.payload.get("customer")
    customer_id = customer.get("id") if isinstance(customer, dict) else None
    if not customer_id:
        return None
    return Patient.objects.filter(organization_id=event.organization_id, uuid=customer_id).first()


def run_advance(*, run_id: int) -> Run | None:
    """Advance a run as far as it can go now; None if another worker holds it."""
    if not run_claim(run_id=run_id):
        return None
    run = Run.objects.select_related("event", "workflow__organization").get(pk=run_id)
    steps = run.definition.get("steps", [])
    patient = _event_patient(run.event)
    while run.next_index < len(steps):
        step_run, _ = StepRun.objects.get_or_create(run=run, index=run.next_index)
        if step_run.status not in (StepRun.Status.SUCCEEDED, StepRun.Status.SKIPPED):
            outcome = _step_execute(run, steps[run.next_index], step_run, patient)
            if outcome.status == "retry":
                _run_wait(run, step_run, outcome)
                return run
            if outcome.status == "failed":
                _run_fail(run, step_run, outcome)
                return run
            _step_finish(step_run, outcome)
        run.next_index += 1
        run.lease_expires_at = timezone.now() + timedelta(
            seconds=settings.CAREFLOW_RUN_LEASE_SECONDS
        )
        run.save(update_fields=["next_index", "lease_expires_at", "updated_at"])
    # A run whose every step was skipped (e.g. no SMS consent) did nothing: say so.
    executed = run.step_runs.exclude(status=StepRun.Status.SKIPPED).exists() or not steps
    _run_finish(run, Run.Status.SUCCEEDED if executed else Run.Status.SKIPPED)
    return run


def _step_execute(
    run: Run, step: dict[str, Any], step_run: StepRun, patient: Patient | None
) -> Outcome:
    now = timezone.now()
    step_run.status = StepRun.Status.RUNNING
    step_run.attempts += 1
    step_run.started_at = step_run.started_at or now
    step_run.due_at = None
    step_run.save(update_fields=["status", "attempts", "started_at", "due_at", "updated_at"])
    data = run.event.payload
    inputs: dict[str, str] = {}
    for name, template in (step.get("parameters") or {}).items():
        try:
            inputs[name] = template_render(str(template), data)
        except TemplateError as exc:
            return Outcome("failed", reason=f"could not fill in {name}: {exc}")
    step_run.inputs = inputs
    step_run.save(update_fields=["inputs", "updated_at"])
    try:
        adapter = adapter_get(step["adapter"])
    except LookupError as exc:
        return Outcome("failed", reason=str(exc))
    return adapter.execute(
        function=step["function"],
        context=StepContext(
            organization=run.workflow.organization,
            idempotency_key=f"run:{run.pk}:step:{step_run.index}",
            inputs=inputs,
            purpose=step.get("purpose", "transactional"),
            patient=patient,
            step_run_id=step_run.pk,
            is_test=bool(patient and patient.is_test),
        ),
    )


def _step_finish(step_run: StepRun, outcome: Outcome) -> None:
    step_run.status = (
        StepRun.Status.SKIPPED if outcome.status == "skipped" else StepRun.Status.SUCCEEDED
    )
    step_run.result = outcome.result
    step_run.skip_reason = outcome.reason if outcome.status == "skipped" else ""
    step_run.error = ""
    step_run.finished_at = timezone.now()
    step_run.save(
        update_fields=["status", "result", "skip_reason", "error", "finished_at", "updated_at"]
    )


def _run_wait(run: Run, step_run: StepRun, outcome: Outcome) -> None:
    due = outcome.retry_at or timezone.now() + DEFAULT_RETRY_AFTER
    with transaction.atomic():
        step_run.status, step_run.due_at, step_run.result = (
            StepRun.Status.WAITING,
            due,
            outcome.result,
        )
        step_run.error = outcome.reason
        step_run.save(update_fields=["status", "due_at", "result", "error", "updated_at"])
        run.status, run.due_at, run.lease_expires_at = Run.Status.WAITING, due, None
        run.save(update_fields=["status", "due_at", "lease_expires_at", "updated_at"])


def _run_fail(run: Run, step_run: StepRun, outcome: Outcome) -> None:
    with transaction.atomic():
        step_run.status, step_run.error, step_run.result = (
            StepRun.Status.FAILED,
            outcome.reason,
            outcome.result,
        )
        step_run.finished_at = timezone.now()
        step_run.save(update_fields=["status", "error", "result", "finished_at", "updated_at"])
        run.error = f"step {step_run.number}: {outcome.reason}"
        _run_finish(run, Run.Status.FAILED)


def _run_finish(run: Run, status: str) -> None:
    run.status, run.finished_at, run.lease_expires_at, run.due_at = (
        status,
        timezone.now(),
        None,
        None,
    )
    run.save(
        update_fields=["status", "error", "finished_at", "lease_expires_at", "due_at", "updated_at"]
    )


def runs_due(*, limit: int = 500) -> list[int]:
    """Runs a sweeper should push: waiting and due, lease expired, or pending but never
    picked up (the task was lost between commit and broker)."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CAREFLOW_RELAY_AFTER_SECONDS)
    due = (
        Q(status=Run.Status.WAITING, due_at__lte=now)
        | Q(status=Run.Status.RUNNING, lease_expires_at__lt=now)
        | Q(status=Run.Status.PENDING, created_at__lt=stale)
    )
    return list(Run.objects.filter(due).order_by("id").values_list("id", flat=True)[:limit])


def events_undispatched(*, limit: int = 500) -> list[int]:
    """Events recorded a while ago that no dispatch has handled (broker down at commit)."""
    stale = timezone.now() - timedelta(seconds=settings.CAREFLOW_RELAY_AFTER_SECONDS)
    return list(
        Event.objects.filter(dispatched_at__isnull=True, created_at__lt=stale)
        .order_by("id")
        .values_list("id", flat=True)[:limit]
    )
