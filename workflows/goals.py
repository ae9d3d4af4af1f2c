"""Goals and exit conditions: events that end a patient's runs of a workflow early.

A workflow's *goal* is an event (optionally filtered) meaning the workflow did its job: it
ends the patient's runs still in progress ("exited", "goal reached: <event>") and converts
every run of theirs whose goal it is within the workflow's window (`Run.goal_reached_at`,
also on runs already finished). An *exit condition* is an event that ends the runs without
converting them ("exit: <event>").

Evaluated twice, because the outbox relay is asynchronous:
- when the goal or exit event is dispatched (`endings_apply`, inside the dispatch
  transaction, after that batch's runs are created), and
- at send time (`run_ending_recorded`): before an adapter step, a run of a workflow with a
  goal or exits looks for such an event *recorded* since its trigger, dispatched or not, so
  a reminder never goes out in the gap between the goal's recording and its dispatch.

Which runs an event concerns (`scope`):
- "patient": the runs of the same patient (the events' `customer.id`, the run's
  `patient_key`);
- "record": the runs whose trigger was about the same record. An event is about its subject
  (its `subject_type`, and the record's `id` in the payload under that name, e.g.
  `appointment.id`); a goal about another kind of record matches when its payload names the
  run's record under that record's name (an event whose payload carries `order.id` concerns
  that order's runs). Records are compared within the same patient.

The goal event must be recorded after the run's trigger event; it converts a run when it is
recorded at most `goal_window_hours` after the run was created. Every write is a conditional
UPDATE: a run converts once (`goal_reached_at IS NULL`), and ends once (it must still be in
progress), however many times or in whatever order the events are dispatched.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KT
from django.utils import timezone

from workflows.enrollment import patient_key_of
from workflows.filters import FilterError, filter_matches
from workflows.models import Event, ReplyWait, Run, StepRun, Workflow

GOAL = "goal"
EXIT = "exit"
# Run.exit_reason starts with one of these: analytics and the admin tell them apart.
GOAL_REASON = "goal reached: "
EXIT_REASON = "exit: "
IN_PROGRESS = (Run.Status.PENDING, Run.Status.RUNNING, Run.Status.WAITING)
_REASON_LENGTH = Run._meta.get_field("exit_reason").max_length or 200


@dataclass(frozen=True, slots=True)
class Ending:
    """A workflow's goal or one of its exit conditions."""

    kind: str  # GOAL or EXIT
    event: str
    filter: Mapping[str, Any]
    scope: str

    @property
    def reason(self) -> str:
        return f"{GOAL_REASON if self.kind == GOAL else EXIT_REASON}{self.event}"


# What else ends with a run (registered by apps above the engine, which it cannot import): the
# messaging app skips the messages still waiting to be sent (deferred by quiet hours, say).
RunsEnded = Callable[[set[int], str], object]
_on_runs_ended: list[RunsEnded] = []


def runs_ended_register(receiver: RunsEnded) -> None:
    """Call `receiver(run_ids, reason)` in the transaction that ends runs early."""
    if receiver not in _on_runs_ended:
        _on_runs_ended.append(receiver)


def workflow_endings(workflow: Workflow) -> list[Ending]:
    """The workflow's goal (first) and exit conditions; an exit saved malformed is left out
    (the builder refuses them; the engine must not fail on an old row)."""
    endings = []
    if workflow.goal_event:
        endings.append(
            Ending(GOAL, workflow.goal_event, workflow.goal_filter or {}, workflow.goal_scope)
        )
    for item in workflow.exits if isinstance(workflow.exits, list) else []:
        if isinstance(item, Mapping) and isinstance(item.get("event"), str) and item["event"]:
            query = item.get("filter") or {}
            scope = item.get("scope") or Workflow.Scope.PATIENT
            endings.append(
                Ending(EXIT, item["event"], query if isinstance(query, Mapping) else {}, str(scope))
            )
    return endings


def workflow_has_endings(workflow: Workflow) -> bool:
    return bool(workflow.goal_event or workflow.exits)


def endings_q(pairs: Iterable[tuple[int, str]]) -> Q:
    """The workflows (enabled or not) that one of these (clinic, event type) pairs may end
    runs of: their goal, or one of their exits, is that event. Meant to be OR-ed into the
    dispatch's one read of workflows, so a clinic without goals costs no extra statement."""
    # SQLite (`make run`'s database) has no JSON containment: there, every workflow of the
    # clinic with exits comes, and `endings_apply` picks the exits by event type.
    contains = connection.features.supports_json_field_contains
    found = Q(pk__in=[])
    for organization_id, event_type in pairs:
        found |= Q(organization_id=organization_id, goal_event=event_type)
        exits = Q(exits__contains=[{"event": event_type}]) if contains else ~Q(exits=[])
        found |= Q(exits, organization_id=organization_id)
    return found


def _record_of(event: Event) -> tuple[str, str] | None:
    """The record a run's trigger event is about: its subject's name and payload id."""
    if not event.subject_type:
        return None
    entity = event.payload.get(event.subject_type) if isinstance(event.payload, Mapping) else None
    if isinstance(entity, Mapping) and entity.get("id") is not None:
        return event.subject_type, str(entity["id"])
    return event.subject_type, f"pk:{event.subject_id}"


def _records_named(event: Event) -> set[tuple[str, str]]:
    """Every record an ending event concerns: its own subject, and each record its payload
    names by id (`order.id`, `appointment.id`, `customer.id`)."""
    records = set()
    own = _record_of(event)
    if own is not None:
        records.add(own)
        records.add((event.subject_type, f"pk:{event.subject_id}"))
    if isinstance(event.payload, Mapping):
        for name, value in event.payload.items():
            if isinstance(value, Mapping) and value.get("id") is not None:
                records.add((str(name), str(value["id"])))
    return records


def _concerns(ending: Ending, event: Event, run: Run) -> bool:
    """Whether `event` (an occurrence of `ending`) concerns `run` (scope, and order)."""
    trigger = run.event
    if (trigger.created_at, trigger.pk) >= (event.created_at, event.pk):
        return False  # an ending recorded before the run's trigger is not about this run
    if ending.scope == Workflow.Scope.RECORD:
        record = _record_of(trigger)
        return record is not None and record in _records_named(event)
    return bool(run.patient_key) and run.patient_key == patient_key_of(event.payload)


def _filter_holds(ending: Ending, event: Event) -> bool:
    try:
        return filter_matches(ending.filter, event.payload)
    except (FilterError, TypeError):
        return False  # saved before validation refused it: an ending that never matches


def _window(workflow: Workflow) -> timedelta:
    return timedelta(hours=workflow.goal_window_hours)


def endings_apply(
    *, events: Sequence[Event], workflows: Sequence[Workflow], now: datetime
) -> set[int]:
    """Apply the goals and exits these events (being dispatched) reach, for these workflows
    (those `endings_q` found); return the ids of the runs ended now. Call inside the
    dispatch's transaction, after its runs are created, so an event and the goal that
    follows it in the same batch meet."""
    todo: list[tuple[Event, Workflow, Ending]] = []
    for event in events:
        for workflow in workflows:
            if workflow.organization_id != event.organization_id:
                continue
            for ending in workflow_endings(workflow):
                if ending.event == event.type and _filter_holds(ending, event):
                    todo.append((event, workflow, ending))
    if not todo:
        return set()
    # One read of the runs they may concern: the patient's runs of each workflow still in
    # progress, or (for a goal) created within its window and not converted yet.
    wanted = Q(pk__in=[])
    for event, workflow, ending in todo:
        key = patient_key_of(event.payload)
        if not key:
            continue  # an event about nobody concerns no patient's runs (and no record's)
        which = Q(status__in=IN_PROGRESS)
        if ending.kind == GOAL:
            which |= Q(
                goal_reached_at__isnull=True, created_at__gte=event.created_at - _window(workflow)
            )
        wanted |= Q(which, workflow_id=workflow.pk, patient_key=key)
    candidates = list(Run.objects.filter(wanted).select_related("event").order_by("id"))
    ended: set[int] = set()
    for event, workflow, ending in todo:
        runs = [
            run
            for run in candidates
            if run.workflow_id == workflow.pk and _concerns(ending, event, run)
        ]
        if not runs:
            continue
        if ending.kind == GOAL:
            runs_convert(runs=runs, event=event, window=_window(workflow))
        ended |= runs_end(
            run_ids=[run.pk for run in runs if run.pk not in ended],
            reason=ending.reason,
            now=now,
        )
    return ended


def runs_convert(*, runs: Sequence[Run], event: Event, window: timedelta) -> int:
    """Record `event` as the goal reached by those of these runs it reached within the
    window after they were created, and that no exit ended; return how many converted now.
    Conditional: a run converts once, to the first goal event that reaches it."""
    eligible = [
        run.pk
        for run in runs
        if event.created_at <= run.created_at + window
        and not (run.status == Run.Status.EXITED and run.exit_reason.startswith(EXIT_REASON))
    ]
    if not eligible:
        return 0
    converted = (
        Run.objects.filter(pk__in=eligible, goal_reached_at__isnull=True)
        .exclude(status=Run.Status.EXITED, exit_reason__startswith=EXIT_REASON)
        .update(goal_reached_at=event.created_at, goal_event=event, updated_at=timezone.now())
    )
    for run in runs:
        if run.pk in eligible and run.goal_reached_at is None:
            run.goal_reached_at, run.goal_event_id = event.created_at, event.pk
    return converted


def runs_end(*, run_ids: Sequence[int], reason: str, now: datetime) -> set[int]:
    """End these runs if still in progress ("exited", with `reason`); return those ended now.

    One `UPDATE … RETURNING`: a run ends once, whichever goal, exit, cancellation or worker
    gets there first. A run a worker holds right now finishes the step it is on and then
    stops: its next write requires it still "running" (engine `_run_progress`), and its next
    send checks again (`run_ending_recorded`). The steps it was waiting on are cancelled with
    the reason, and so are its open waits for a reply (none of them will be answered now),
    and the receivers registered with `runs_ended_register` are told."""
    if not run_ids:
        return set()
    quote = connection.ops.quote_name
    meta = Run._meta
    column = {f.name: quote(f.column) for f in meta.concrete_fields}
    in_progress = ", ".join(["%s"] * len(IN_PROGRESS))
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {column['status']} = %s,"  # noqa: S608 — model names
        f" {column['exit_reason']} = %s, {column['finished_at']} = %s, {column['due_at']} = NULL,"
        f" {column['lease_expires_at']} = NULL, {column['updated_at']} = %s"
        f" WHERE {column['id']} IN ({', '.join(['%s'] * len(run_ids))})"
        f" AND {column['status']} IN ({in_progress}) RETURNING {column['id']}"
    )
    at = connection.ops.adapt_datetimefield_value(now)
    params = [Run.Status.EXITED, reason[:_REASON_LENGTH], at, at, *run_ids, *IN_PROGRESS]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        ended = {row[0] for row in cursor.fetchall()}
    if ended:
        StepRun.objects.filter(
            run_id__in=ended, status__in=[StepRun.Status.PENDING, StepRun.Status.WAITING]
        ).update(
            status=StepRun.Status.CANCELLED,
            skip_reason=f"run ended early: {reason}"[:200],
            finished_at=now,
            updated_at=now,
        )
        ReplyWait.objects.filter(run_id__in=ended, state=ReplyWait.State.WAITING).update(
            state=ReplyWait.State.CANCELLED,
            reason=f"run ended early: {reason}"[:200],
            resolved_at=now,
            updated_at=now,
        )
        for receiver in _on_runs_ended:
            receiver(ended, reason)
    return ended


def run_ending_recorded(*, run: Run) -> tuple[Ending, Event] | None:
    """The goal or exit event recorded for this run since its trigger (dispatched or not),
    if any: the first one, in recording order, that passes its filter and scope. One query,
    on the index of events by patient, type and time; none for a workflow without goal or
    exits, or for a run about nobody."""
    workflow = run.workflow
    endings = workflow_endings(workflow)
    if not endings or not run.patient_key:
        return None
    trigger = run.event
    events: QuerySet[Event]
    if connection.vendor == "postgresql":
        # The key as text, as the index `event_patient_type` holds it.
        events = Event.objects.alias(patient=KT("payload__customer__id")).filter(
            patient=run.patient_key
        )
    else:
        # SQLite compares KT() with the value read as JSON ("malformed JSON" for a plain id).
        events = Event.objects.filter(payload__customer__id=run.patient_key)
    events = (
        events.filter(
            type__in=sorted({ending.event for ending in endings}),
            created_at__gte=trigger.created_at,
            organization_id=trigger.organization_id,
        )
        .exclude(pk=trigger.pk)
        .order_by("created_at", "id")[:50]
    )
    for event in events:
        for ending in endings:
            if (
                ending.event == event.type
                and _filter_holds(ending, event)
                and _concerns(ending, event, run)
            ):
                return ending, event
    return None
