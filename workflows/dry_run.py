"""Test mode: try a workflow on a test patient before enabling it.

A dry run walks the steps with the same pieces the engine uses (filter matching, condition
evaluation, delay arithmetic, template rendering, the send-time policy, the branch a reply
takes and the steps that branch runs) and reports what would happen, with no side effects:
no event, no run, no message, nothing sent. A wait for a reply is answered with the reply
the admin gives (or times out, with none). A live test
really runs the workflow, but only ever texts test patients, and marks its messages as test.
"""

import uuid
import zoneinfo
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from patients.languages import language_name
from patients.models import Patient
from patients.payloads import payload_for_patient, subject_for_patient
from patients.zones import patient_zone
from workflows.adapters import REGISTRY, step_asks
from workflows.catalogue import schema_example
from workflows.custom_events import event_type
from workflows.diagram import branch_name
from workflows.engine import workflow_definition
from workflows.enrollment import enrollment_check, patient_key_of, workflow_has_rule
from workflows.filters import FilterError, filter_matches
from workflows.models import Event, Run, Workflow
from workflows.replies import (
    OTHERWISE,
    REPLY,
    SPLIT,
    BranchTree,
    ReplyConfigError,
    branch_choose,
    branch_segments,
    goto_index,
    reask_text,
)
from workflows.splits import split_choose, split_seed
from workflows.steps import (
    StepConfigError,
    adapter_inputs_render,
    condition_evaluate,
    delay_until,
)
from workflows.tasks import run_advance
from workflows.variants import step_language, step_variants


@dataclass
class DryRunStep:
    number: int
    type: str
    title: str
    # "continue" | "end" | "jump" | "wait" | "branch" | "send" | "skip" | "defer" | "error"
    outcome: str
    detail: str
    inputs: dict[str, str] = field(default_factory=dict)
    message: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    # The decision's checks in policy order, those never reached marked "not checked".
    checks: list[dict[str, Any]] = field(default_factory=list)
    # A wait for a reply: the reply given (None: none), the branch it takes, the clarifying
    # text it would be re-asked with first, and the steps of that branch.
    branch: dict[str, Any] | None = None


@dataclass
class DryRunReport:
    trigger: str
    payload: dict[str, Any]
    payload_source: str
    filter_matches: bool
    filter_detail: str
    steps: list[DryRunStep] = field(default_factory=list)
    # Whether the workflow's enrollment rule lets this patient in now, and why (not).
    enrolls: bool = True
    enrollment_detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dry_run_payload(*, trigger: str, patient: Patient) -> tuple[dict[str, Any], str]:
    """The payload the trigger would carry for this patient, and where it came from: their
    most recent record of the trigger's kind, else the data reference's examples around
    their own customer data."""
    event = event_type(trigger, patient.organization_id)
    if event is None:
        raise ValidationError(f"{trigger!r} is not a trigger of this clinic.")
    example = schema_example(event)
    record = payload_for_patient(event.subject, patient)
    if record is not None:
        return {**example, **record}, f"{patient}'s latest {event.subject} record"
    own = payload_for_patient("customer", patient) or {}
    return (
        {**example, **own},
        f"{patient} has no {event.subject} record: example {event.subject} data is used",
    )


def _patient_zone(patient: Patient, workflow: Workflow) -> zoneinfo.ZoneInfo:
    # The engine's rule (patient → address state → clinic), so the dry run shows what it does.
    return patient_zone(patient, workflow.organization)


def workflow_dry_run(
    *,
    workflow: Workflow,
    patient: Patient,
    definition: dict[str, Any] | None = None,
    now: datetime | None = None,
    reply: str | None = None,
) -> DryRunReport:
    """What running `definition` (default: the workflow as saved) for `patient` would do,
    the patient answering every question with `reply` (None: never answering)."""
    definition = definition or {
        "trigger": workflow.trigger,
        "filter": workflow.filter,
        **workflow_definition(workflow),
    }
    trigger = definition.get("trigger") or workflow.trigger
    payload, source = dry_run_payload(trigger=trigger, patient=patient)
    try:
        matches = filter_matches(definition.get("filter") or {}, payload)
        filter_detail = (
            "no filter"
            if not definition.get("filter")
            else "the filter matches"
            if matches
            else "the filter does not match"
        )
    except FilterError as exc:
        matches, filter_detail = False, f"the filter is invalid: {exc}"
    report = DryRunReport(trigger, payload, source, matches, filter_detail)
    report.enrolls, report.enrollment_detail = _enrollment_dry_run(
        workflow, patient, trigger=trigger, payload=payload, now=now or timezone.now()
    )
    clock = now or timezone.now()
    data: dict[str, Any] = {**payload, "trigger": payload, "history": {}}
    steps = definition.get("steps", [])
    try:
        tree: BranchTree | None = branch_segments(steps)
    except ReplyConfigError:
        tree = None  # validation reports it; the steps run in order
    index = 0
    while index < len(steps):
        step = steps[index]
        number, kind = index + 1, step.get("type", "")
        params = step.get("parameters") or {}
        next_index: int | None = index + 1
        try:
            if kind == "condition":
                result = condition_evaluate(params, data)
                next_index = index + 1 if result.matched else result.goto_index
                outcome = (
                    "continue" if result.matched else ("end" if next_index is None else "jump")
                )
                detail = (
                    "the condition is true: continue"
                    if result.matched
                    else "the condition is false: the run ends"
                    if next_index is None
                    else f"the condition is false: go to step {next_index + 1}"
                )
                entry = DryRunStep(number, kind, "Condition", outcome, detail)
                data["history"][str(number)] = {
                    "status": "succeeded",
                    "result": {"matched": result.matched},
                }
            elif kind == "delay":
                until = delay_until(
                    params, data=data, started_at=clock, tz=_patient_zone(patient, workflow)
                )
                clock = max(clock, until)
                entry = DryRunStep(
                    number, kind, "Delay", "wait", f"waits until {until.isoformat()}"
                )
                data["history"][str(number)] = {
                    "status": "succeeded",
                    "result": {"until": until.isoformat()},
                }
            elif kind == REPLY:
                entry, next_index, clock = _reply_dry_run(
                    params,
                    steps=steps,
                    index=index,
                    reply=reply,
                    report=report,
                    data=data,
                    clock=clock,
                    tz=_patient_zone(patient, workflow),
                    tree=tree,
                )
            elif kind == SPLIT:
                entry, next_index = _split_dry_run(
                    params, workflow=workflow, patient=patient, index=index, data=data, tree=tree
                )
            else:
                entry = _adapter_dry_run(workflow, patient, step, number, data, clock)
        except StepConfigError as exc:
            entry = DryRunStep(number, kind, kind.title(), "error", str(exc))
            next_index = None
        report.steps.append(entry)
        # Past the end of its branch, the run ends, as the engine ends it.
        if next_index is None or (tree is not None and next_index >= tree.ends[index]):
            break
        index = next_index
    return report


def _enrollment_dry_run(
    workflow: Workflow, patient: Patient, *, trigger: str, payload: dict[str, Any], now: datetime
) -> tuple[bool, str]:
    """Whether an event like this one would enroll the patient, by the engine's own check
    of the workflow's rule against its enrollments so far (read only)."""
    rule = Workflow.Enrollment(workflow.enrollment).label
    if workflow.enrollment_exclusive:
        rule += ", not while a run is in progress"
    if not workflow_has_rule(workflow):
        return True, f"would enroll: {rule.lower()}"
    event = event_type(trigger, workflow.organization_id)
    subject = event.subject if event is not None else ""
    refusal = enrollment_check(
        workflow=workflow,
        patient_key=patient_key_of(payload),
        subject_type=subject,
        subject_id=subject_for_patient(subject, patient) if subject else "",
        now=now,
    )
    if refusal is not None:
        return False, f"would not enroll: {refusal.detail} ({rule.lower()})"
    return True, f"would enroll ({rule.lower()})"


def _branch_steps(next_index: int | None, tree: BranchTree | None) -> list[int]:
    """The 1-based numbers of the steps a branch going to `next_index` runs before the run
    ends (the engine's rule: to the end of that branch)."""
    if next_index is None:
        return []
    end = tree.ends[next_index] if tree is not None else next_index + 1
    return list(range(next_index + 1, end + 1))


def _branch_then(runs: list[int]) -> str:
    if not runs:
        return "the run ends"
    if len(runs) == 1:
        return f"step {runs[0]}, then the run ends"
    return f"steps {runs[0]} to {runs[-1]}, then the run ends"


def _split_dry_run(
    params: dict[str, Any],
    *,
    workflow: Workflow,
    patient: Patient,
    index: int,
    data: dict[str, Any],
    tree: BranchTree | None,
) -> tuple[DryRunStep, int | None]:
    """An A/B split for this patient: the branch the engine would choose (the same hash of
    the same seed and patient key), why, and the steps it runs."""
    number = index + 1
    key = patient_key_of(data) or str(patient.uuid)
    try:
        choice = split_choose(params, seed=split_seed(params, default=str(workflow.uuid)), key=key)
    except (ReplyConfigError, TypeError, ValueError) as exc:
        raise StepConfigError(f"this split's branches: {exc}") from exc
    next_index = goto_index(choice.goto, wait_index=index)
    runs = _branch_steps(next_index, tree)
    detail = f"{choice.explanation()}: {_branch_then(runs)}"
    data["history"][str(number)] = {
        "status": "succeeded",
        "result": {"branch": choice.label, "bucket": choice.bucket},
    }
    entry = DryRunStep(
        number,
        SPLIT,
        "A/B split",
        "branch",
        detail,
        branch={"label": choice.label, "bucket": choice.bucket, "steps": runs},
    )
    return entry, next_index


def _reply_dry_run(
    params: dict[str, Any],
    *,
    steps: list[dict[str, Any]],
    index: int,
    reply: str | None,
    report: DryRunReport,
    data: dict[str, Any],
    clock: datetime,
    tz: zoneinfo.ZoneInfo,
    tree: BranchTree | None,
) -> tuple[DryRunStep, int | None, datetime]:
    """A wait for a reply, answered with `reply` (None: the time runs out): the branch it
    takes, the index of the next step (None: the run ends) and the clock after it."""
    number = index + 1
    # The question, as the engine finds it: the latest text on this path the patient can
    # answer that is sent (now or after quiet hours); none, and there is nothing to wait for.
    asked = next(
        (
            s.number
            for s in reversed(report.steps)
            if s.outcome in ("send", "defer") and step_asks(steps[s.number - 1])
        ),
        None,
    )
    if asked is None:
        detail = "would not wait: no text was sent for this wait to take a reply to"
        return DryRunStep(number, REPLY, "Wait for reply", "skip", detail), None, clock
    question = f"step {asked}'s message"
    deadline = delay_until(params, data=data, started_at=clock, tz=tz)
    # In the patient's time, to the minute: what the admin compares with quiet hours.
    until = deadline.astimezone(tz).isoformat(timespec="minutes")
    choice = branch_choose(params, reply)
    reask = reask_text(params) if reply is not None and choice.label == OTHERWISE else ""
    next_index = goto_index(choice.goto, wait_index=index)
    runs = _branch_steps(next_index, tree)
    name = branch_name(choice.label)
    said = f"the reply “{reply}”" if reply is not None else "no reply by then"
    then = _branch_then(runs)
    detail = (
        f"waits for a reply to {question} until {until}; {said} takes the “{name}” branch: {then}"
    )
    if reask:
        detail += (
            f" (after re-asking once with “{reask}”, if the next reply matches no branch either)"
        )
    data["history"][str(number)] = {
        "status": "succeeded",
        "result": {
            "reply": reply or "",
            "branch": choice.label,
            "inbound": "",
            "reasked": bool(reask),
        },
    }
    entry = DryRunStep(
        number,
        REPLY,
        "Wait for reply",
        "branch",
        detail,
        branch={"label": name, "reply": reply, "reask": reask, "steps": runs},
    )
    return entry, next_index, clock if reply is not None else max(clock, deadline)


def _adapter_dry_run(
    workflow: Workflow,
    patient: Patient,
    step: dict[str, Any],
    number: int,
    data: dict[str, Any],
    clock: datetime,
) -> DryRunStep:
    adapter = REGISTRY.get(step.get("adapter", ""))
    function = adapter.functions.get(step.get("function", "")) if adapter else None
    title = f"{adapter.label} → {function.label}" if adapter and function else "Adapter"
    inputs: dict[str, str] = {}
    parameters = step.get("parameters") or {}
    language = step_language(parameters, patient=patient, organization=workflow.organization)
    try:
        adapter_inputs_render(
            step, data, into=inputs, tz=_patient_zone(patient, workflow), language=language
        )
    except StepConfigError as exc:
        return DryRunStep(number, "adapter", title, "error", str(exc), inputs)
    if adapter is None or function is None:
        return DryRunStep(number, "adapter", title, "send", "would call the adapter", inputs)
    result = adapter.dry_run(
        function.name,
        organization=workflow.organization,
        patient=patient,
        inputs=inputs,
        purpose=step.get("purpose", "transactional"),
        urgent=bool(step.get("urgent")),
        clock=clock,
    )
    # What a later condition reads of this step: the send-time decision's outcome (or a
    # skip before it); an adapter that decides nothing (a webhook) leaves no history.
    if result.outcome == "skip" or result.decision is not None:
        sent = result.outcome == "send"
        data["history"][str(number)] = {
            "status": "succeeded" if sent else "skipped",
            "result": {"status": "sent" if sent else "skipped"},
        }
    detail = result.detail
    if step_variants(parameters):
        detail += f" (in {language_name(language)})"
    return DryRunStep(
        number,
        "adapter",
        title,
        result.outcome,
        detail,
        inputs,
        result.preview,
        result.decision,
        list(result.checks),
    )


def workflow_live_test(*, workflow: Workflow, patient: Patient) -> Run:
    """Run the saved workflow for a test patient now, for real, whether or not it is enabled.

    The run is marked as a test: its messages are test messages, and the send-time policy
    refuses any of them to a patient who is not a test patient. No other workflow sees the
    event.
    """
    if not patient.is_test:
        raise ValidationError("Live tests only run for test patients (tick “test patient”).")
    if patient.organization_id != workflow.organization_id:
        raise ValidationError("This patient belongs to another clinic.")
    payload, _ = dry_run_payload(trigger=workflow.trigger, patient=patient)
    now = timezone.now()
    with transaction.atomic():
        event = Event.objects.create(
            organization=workflow.organization,
            type=workflow.trigger,
            payload=payload,
            dedupe_key=f"test:{uuid.uuid4()}",
            subject_type=getattr(
                event_type(workflow.trigger, workflow.organization_id), "subject", ""
            ),
            subject_id="",
            dispatched_at=now,  # never dispatched to other workflows
        )
        run = Run.objects.create(
            workflow=workflow,
            event=event,
            is_test=True,
            definition=workflow_definition(workflow),
            patient_key=str(patient.uuid),
        )
    transaction.on_commit(lambda: run_advance.delay(run.pk))
    return run
