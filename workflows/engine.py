"""Running workflows: match an event to workflows, then advance each run step by step.

Every transition is committed as it happens, so a run interrupted anywhere (worker killed,
database restarted) resumes at the step it was on, and a step that already succeeded is
never repeated. Runs are claimed with a conditional UPDATE and a lease; a run whose worker
died is taken over once the lease expires.
"""

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DataError, connection, transaction
from django.db.models import Prefetch, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from common.db import insert_or_get, lazy_commits, rows_update
from patients.consent import consent_history_prefetch
from patients.models import Patient
from patients.payloads import payload_for_subject
from patients.phones import phone_or_raw
from patients.zones import patient_zone
from workflows import goals
from workflows.adapters import Conversation, Outcome, StepContext, adapter_get, step_asks
from workflows.enrollment import (
    Skipped,
    enrollment_skips_record,
    enrollments_claim,
    patient_key_of,
    workflow_has_rule,
)
from workflows.filters import FilterError, filter_matches
from workflows.models import Event, ReplyWait, Run, Step, StepRun, Workflow
from workflows.replies import (
    BRANCHING,
    REPLY,
    SPLIT,
    BranchTree,
    ReplyConfigError,
    branch_by_label,
    branch_choose,
    branch_segments,
    goto_index,
    question_steps,
    reask_text,
)
from workflows.splits import split_choose, split_seed
from workflows.steps import (
    StepConfigError,
    adapter_inputs_render,
    condition_evaluate,
    delay_until,
)
from workflows.variants import step_language

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
    matching, its runs are created in the same transaction that marks it dispatched, so a
    dispatched event is done (and the database allows one run per workflow and event).
    """
    _, runs = events_dispatch(event_ids=[event_id], claim_per_event=0)
    return [run.pk for run in runs]


def events_dispatch(*, event_ids: Sequence[int], claim_per_event: int) -> tuple[int, list[Run]]:
    """event_dispatch for several events at once (those of them not dispatched yet). Return
    how many events were claimed and their runs, of which the first `claim_per_event` of
    each event are created already claimed by this worker (running, with a lease) for
    `runs_continue`: the common event that starts one run then costs no separate claim and
    reload. Should the worker die before continuing them, their lease expires and the
    sweeper hands them on. One claim, one read of the workflows with their steps and one
    INSERT of runs serve the whole batch.

    Committed without waiting for the disk (lazy_commits): lost in a crash of the
    database server, the events are undispatched again with no runs, which the relay
    dispatches anew; and a run's first send commits its message's claim durably, which makes
    this transaction durable before anything goes out."""
    with lazy_commits(atomic=True):
        now = timezone.now()
        events = _events_claim(event_ids=event_ids, now=now)
        if not events:  # dispatched already (or no such event)
            return 0, []
        pairs = {(e.organization_id, e.type) for e in events}
        triggers = Q()
        for organization_id, trigger in pairs:
            triggers |= Q(organization_id=organization_id, trigger=trigger)
        matching: dict[tuple[int, str], list[Workflow]] = {}
        ending: list[Workflow] = []
        for workflow in (
            # Workflows whose goal or an exit is one of these events come in the same read:
            # a clinic without goals pays no statement for them.
            Workflow.objects.filter(Q(triggers, enabled=True) | goals.endings_q(pairs))
            .select_related("organization")
            # Only the order the definition needs: Step's default ordering starts with its
            # workflow's name, which costs a JOIN and its compilation on every event.
            .prefetch_related(Prefetch("steps", queryset=Step.objects.order_by("position", "id")))
            .order_by("id")
        ):
            if goals.workflow_has_endings(workflow):
                ending.append(workflow)
            if workflow.enabled and (workflow.organization_id, workflow.trigger) in pairs:
                matching.setdefault((workflow.organization_id, workflow.trigger), []).append(
                    workflow
                )
        matches: list[tuple[Workflow, Event]] = []
        for event in events:
            for workflow in matching.get((event.organization_id, event.type), []):
                try:
                    if not filter_matches(workflow.filter or {}, event.payload):
                        continue
                except (FilterError, TypeError) as exc:
                    logger.error("workflow %s has an unusable filter: %s", workflow.pk, exc)
                    continue
                matches.append((workflow, event))
        created = _runs_start(
            matches=matches,
            events=events,
            ending=ending,
            now=now,
            claim_per_event=claim_per_event,
        )
    return len(events), created


def _runs_start(
    *,
    matches: list[tuple[Workflow, Event]],
    events: Sequence[Event],
    ending: Sequence[Workflow],
    now: datetime,
    claim_per_event: int,
) -> list[Run]:
    """The runs of these (workflow, event) matches that their workflows' enrollment rules
    let in (the skips recorded), then the goals and exits `events` reach for the `ending`
    workflows applied. Inside the transaction that claimed the events."""
    lease = now + timedelta(seconds=settings.CAREFLOW_RUN_LEASE_SECONDS)
    skipped: list[Skipped] = []
    # Only a batch with a limited workflow claims anything: the default costs nothing.
    if any(workflow_has_rule(workflow) for workflow, _ in matches):
        matches, skipped = enrollments_claim(matches=matches, now=now)
    runs: list[Run] = []
    started: dict[int, int] = {}
    for workflow, event in matches:
        run = Run(
            workflow=workflow,
            event=event,
            definition=workflow_definition(workflow),
            patient_key=patient_key_of(event.payload),
        )
        if started.get(event.pk, 0) < claim_per_event:
            run.status, run.lease_expires_at, run.started_at = (Run.Status.RUNNING, lease, now)
            started[event.pk] = started.get(event.pk, 0) + 1
        runs.append(run)
    created = Run.objects.bulk_create(runs)
    enrollment_skips_record(skipped=skipped, runs=created, now=now)
    if ending:
        ended = goals.endings_apply(events=events, workflows=ending, now=now)
        for run in created:
            if run.pk in ended:  # not to be continued by this worker
                run.status, run.lease_expires_at = Run.Status.EXITED, None
    return created


def workflow_event_start(*, workflow: Workflow, event_id: int) -> Run | None:
    """Start `workflow` alone for an event recorded for it (workflows.starts): the event is
    claimed as dispatched here, so no other workflow with the same trigger ever matches it.
    The workflow's enrollment rule applies as in dispatch (a refusal is recorded as a
    skip), and the goals and exits the event reaches end runs as any event's do; the
    workflow's filter does not apply (the caller chose the workflow). Returns the pending
    run, or None when the rule refused it. Call in the transaction that recorded the event:
    a dispatch of it waits for that transaction, then finds it dispatched."""
    with transaction.atomic():
        now = timezone.now()
        events = _events_claim(event_ids=[event_id], now=now)
        if not events:
            raise ValueError(f"event {event_id} was dispatched already")
        pairs = {(events[0].organization_id, events[0].type)}
        ending = [
            w
            for w in Workflow.objects.filter(goals.endings_q(pairs)).order_by("id")
            if goals.workflow_has_endings(w)
        ]
        target = (
            Workflow.objects.select_related("organization")
            .prefetch_related(Prefetch("steps", queryset=Step.objects.order_by("position", "id")))
            .get(pk=workflow.pk)
        )
        created = _runs_start(
            matches=[(target, events[0])], events=events, ending=ending, now=now, claim_per_event=0
        )
    return created[0] if created else None


def _events_claim(*, event_ids: Sequence[int], now: datetime) -> list[Event]:
    """Mark the events dispatched and return them, oldest first, in one statement; those
    already dispatched are left out. The rows stay locked until the caller's transaction
    ends, so a concurrent dispatch of the same event waits, then finds it dispatched."""
    if not event_ids:
        return []
    quote = connection.ops.quote_name
    meta = Event._meta
    dispatched = quote(meta.get_field("dispatched_at").column)
    columns = ", ".join(quote(field.column) for field in meta.concrete_fields)
    sql = (
        f"UPDATE {quote(meta.db_table)} SET {dispatched} = %s"  # noqa: S608 — names from the model
        f" WHERE {quote(meta.pk.column)} IN ({', '.join(['%s'] * len(event_ids))})"
        f" AND {dispatched} IS NULL RETURNING {columns}"
    )
    params = [connection.ops.adapt_datetimefield_value(now), *event_ids]
    return sorted(Event.objects.raw(sql, params), key=lambda e: (e.created_at, e.pk))


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


def _customer_id(payload: dict[str, Any]) -> Any:
    customer = payload.get("customer")
    return customer.get("id") if isinstance(customer, dict) else None


class RunBatch:
    """Runs one worker advances together. What they share is read once for all of them: the
    customers of their events (with their SMS consent histories, for the send-time checks)
    and, in `memo`, what adapters read (the clinic's integration). The writes that finish a
    run are made together at the end (`finish`): until then a run whose last step is done is
    still "running" in the database, so a worker that dies first leaves it to its lease, and
    whoever takes it over finds the step's work done (its message sent) and repeats nothing.
    The lease of every run still held is renewed as the batch goes on."""

    def __init__(self, runs: list[Run]) -> None:
        self.runs = runs
        self.memo: dict[Any, Any] = {}
        self.at_end: list[Callable[[], None]] = []
        self._patients: dict[tuple[int, str], Patient | None] | None = None
        self._finished_steps: list[StepRun] = []
        self._finished_runs: list[tuple[Run, str]] = []
        self._renewed = time.monotonic()

    def patient(self, organization_id: int, payload: dict[str, Any]) -> Patient | None:
        """The event's customer, if a patient of this clinic (the first call reads those of
        every run in the batch)."""
        customer_id = _customer_id(payload)
        if not customer_id:
            return None
        if self._patients is None:
            self._patients = self._patients_read()
        key = (organization_id, str(customer_id))
        if key not in self._patients:  # a payload re-read after a delay names someone else
            found = Patient.objects.filter(organization_id=organization_id, uuid=customer_id)
            self._patients[key] = next(iter(found.order_by()[:1]), None)
        return self._patients[key]

    def _patients_read(self) -> dict[tuple[int, str], Patient | None]:
        patients: dict[tuple[int, str], Patient | None] = {}
        wanted: dict[int, set[str]] = {}
        for run in self.runs:
            customer_id = _customer_id(run.event.payload)
            if customer_id:
                wanted.setdefault(run.event.organization_id, set()).add(str(customer_id))
                patients[(run.event.organization_id, str(customer_id))] = None
        if not wanted:
            return patients
        who = Q()
        for organization_id, uuids in wanted.items():
            who |= Q(organization_id=organization_id, uuid__in=uuids)
        # No ORDER BY: Patient's default sorts by name.
        for patient in (
            Patient.objects.filter(who).order_by().prefetch_related(consent_history_prefetch())
        ):
            patients[(patient.organization_id, str(patient.uuid))] = patient
        return patients

    def hold(self) -> None:
        """Renew the lease of the runs still held, once a third of it has passed."""
        lease = settings.CAREFLOW_RUN_LEASE_SECONDS
        if time.monotonic() - self._renewed < lease / 3:
            return
        self._renewed = time.monotonic()
        held = [run.pk for run in self.runs if run.status == Run.Status.RUNNING]
        Run.objects.filter(pk__in=held, status=Run.Status.RUNNING).update(
            lease_expires_at=timezone.now() + timedelta(seconds=lease)
        )

    def step_finished(self, step_run: StepRun) -> None:
        if step_run.pk is None:  # never written: its INSERT says it all
            _step_save(step_run, STEP_FINISH_FIELDS)
        else:
            self._finished_steps.append(step_run)

    def run_finished(self, run: Run, status: str) -> None:
        self._finished_runs.append((run, status))

    def finish(self) -> None:
        """Make the writes adapters left to the end (StepContext.at_batch_end), then write
        the finished step runs, then the finished runs: a run cancelled meanwhile stays
        cancelled (and is reloaded as it is).

        One transaction, committed without waiting for the disk (lazy_commits): lost
        in a crash of the database server, these writes are as if the worker had died
        before them, which the class allows for (runs to their leases, messages still
        "sending" to reconciliation at the provider, never resent)."""
        if not (self.at_end or self._finished_steps or self._finished_runs):
            return
        with lazy_commits(atomic=True):
            for write in self.at_end:
                write()
            rows_update(StepRun, self._finished_steps, STEP_FINISH_FIELDS)
            now = timezone.now()
            groups: dict[tuple[str, int], list[Run]] = {}
            for run, status in self._finished_runs:
                groups.setdefault((status, run.next_index), []).append(run)
            for (status, next_index), runs in groups.items():
                _runs_transition(runs, status, finished_at=now, error="", next_index=next_index)
        self._finished_steps, self._finished_runs = [], []


class RunData:
    """What a run's steps see: the event data, `trigger.` (the snapshot taken when the event
    happened) and `history.<n>` (earlier steps' status and result). Once the run has waited
    in a delay (or for a reply), the event data is re-read from the record, so "wait 3 days,
    then text only if the subscription is still active" tests the subscription as it is now."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.snapshot: dict[str, Any] = run.event.payload
        self.history: dict[str, dict[str, Any]] = {}
        self._current: dict[str, Any] | None = None

    def remember(self, step_run: StepRun) -> None:
        self.history[str(step_run.number)] = {"status": step_run.status, "result": step_run.result}

    def for_step(self, index: int) -> dict[str, Any]:
        steps = self.run.definition.get("steps", [])
        base = self.snapshot
        if any(step.get("type") in ("delay", REPLY) for step in steps[:index]):
            # The record's current state over the snapshot: event-only data (an inbound
            # message's body, a webhook's data, changed fields) stays as it was.
            base = {**self.snapshot, **self._current_payload()}
        return {**base, "trigger": self.snapshot, "history": self.history}

    def _current_payload(self) -> dict[str, Any]:
        if self._current is None:
            event = self.run.event
            current = payload_for_subject(event.subject_type, event.subject_id)
            # A record deleted meanwhile leaves only what was known when the event happened.
            self._current = current if current is not None else self.snapshot
        return self._current


def _step_run_get(run: Run, index: int, known: dict[int, StepRun]) -> StepRun:
    """The step run at `index`; a new one is not written until it has something to say
    (see _step_save)."""
    if index not in known:
        known[index] = StepRun(run=run, index=index)
    return known[index]


def _step_save(step_run: StepRun, fields: list[str], *, lazy: bool = False) -> None:
    """Write these fields of the step run. A new step run's first write is its INSERT, with
    them: one statement where inserting it empty and then updating it took two. `lazy`: the
    write commits without waiting for the disk (common.db.lazy_commits)."""
    if step_run.pk is None:
        values = {name: getattr(step_run, name) for name in [*fields, "created_at"]}
        unique = {"run": step_run.run, "index": step_run.index}
        row = insert_or_get(StepRun, unique, values, lazy=lazy)
        step_run.pk, step_run._state.adding = row.pk, False
        if row.created_at == step_run.created_at:
            return  # our INSERT wrote every field
        # Another holder of the run created it meanwhile (a lease taken over): update it.
    with lazy_commits() if lazy else nullcontext():
        step_run.save(update_fields=fields)


def run_advance(*, run_id: int) -> Run | None:
    """Advance a run as far as it can go now; None if another worker holds it.

    Between steps the run's progress is written with a conditional UPDATE that also tells
    whether it is still ours: a run cancelled meanwhile (workflow disabled) stops there.
    """
    if not run_claim(run_id=run_id):
        return None
    run = Run.objects.select_related("event", "workflow__organization").get(pk=run_id)
    known = {step_run.index: step_run for step_run in run.step_runs.all()}
    batch = RunBatch([run])
    _run_continue(run, known, batch)
    batch.finish()
    return run


def runs_continue(*, runs: list[Run]) -> list[Run]:
    """Advance runs this worker created claimed (events_dispatch), together: they
    have no step runs yet, and their events and workflows are in hand."""
    batch = RunBatch(runs)
    for run in runs:
        batch.hold()
        _run_continue(run, {}, batch)
    batch.finish()
    return runs


def _run_continue(run: Run, known: dict[int, StepRun], batch: RunBatch) -> None:
    steps = run.definition.get("steps", [])
    data = RunData(run)
    for index in sorted(i for i in known if i < run.next_index):
        data.remember(known[index])
    executed = not steps or any(
        sr.status != StepRun.Status.SKIPPED for i, sr in known.items() if i < run.next_index
    )
    tree: BranchTree | None = None
    if any(step.get("type") in BRANCHING for step in steps):
        try:
            tree = branch_segments(steps)
        except ReplyConfigError as exc:  # saved before validation knew of it: say so, stop
            step_run = _step_run_get(run, run.next_index, known)
            _run_fail(run, step_run, Outcome("failed", reason=f"this workflow's branches: {exc}"))
            return
    # Whether a goal or exit recorded since the trigger must still be looked for before a
    # send (once per advance: the first send of it; only workflows with goals or exits).
    ending_unchecked = goals.workflow_has_endings(run.workflow)
    while run.next_index < len(steps):
        step_run = _step_run_get(run, run.next_index, known)
        next_index: int | None = run.next_index + 1
        finished: StepRun | None = None
        not_reached = f"not reached: the condition at step {step_run.number} was false"
        if step_run.status not in (StepRun.Status.SUCCEEDED, StepRun.Status.SKIPPED):
            # Before the step's first attempt only: once it has made its message, that
            # message's own state decides (a goal ending the run skips it if still pending).
            first_attempt = step_run.attempts == 0
            if (
                ending_unchecked
                and first_attempt
                and steps[run.next_index].get("type") == "adapter"
            ):
                ending_unchecked = False
                if _run_end_before_send(run, step_run):
                    return
            outcome, next_index, park = _step_execute(
                run, steps[run.next_index], step_run, data, batch, tree
            )
            if outcome.status == "retry":
                _run_wait(run, step_run, outcome, park)
                return
            if outcome.status == "failed":
                _run_fail(run, step_run, outcome)
                return
            _step_finish(step_run, outcome)
            finished = step_run
        if steps[run.next_index].get("type") == REPLY:
            not_reached = f"not reached: the reply at step {step_run.number} took another branch"
        elif steps[run.next_index].get("type") == SPLIT:
            not_reached = (
                f"not reached: the A/B split at step {step_run.number} chose another branch"
            )
        executed = executed or step_run.status != StepRun.Status.SKIPPED
        data.remember(step_run)
        target = len(steps) if next_index is None else next_index
        if tree is not None and target < len(steps):
            # A branch runs to the end of its segment, and there the run ends.
            segment = tree.segments[run.next_index]
            if segment is not None and target >= segment.end:
                if target == run.next_index + 1:
                    not_reached = f"not reached: in another branch of step {segment.wait + 1}"
                target = len(steps)
        if target > run.next_index + 1:
            _steps_not_reached(run, range(run.next_index + 1, target), not_reached)
        run.next_index = target
        if finished is not None and target >= len(steps):
            batch.step_finished(finished)  # written with the run's end (RunBatch.finish)
        elif finished is not None:
            _step_save(finished, STEP_FINISH_FIELDS)
        if target < len(steps) and not _run_progress(run):
            return  # cancelled while we held it
    # A run whose every step was skipped (e.g. no SMS consent) did nothing: say so.
    batch.run_finished(run, Run.Status.SUCCEEDED if executed else Run.Status.SKIPPED)


def _run_end_before_send(run: Run, step_run: StepRun) -> bool:
    """End the run before this step sends anything if its workflow's goal or an exit
    condition was recorded since its trigger (the event may not be dispatched yet: the
    outbox relay is asynchronous). The step is recorded not sent, with the reason; a goal
    converts the run as at dispatch. True if the run must stop here."""
    found = goals.run_ending_recorded(run=run)
    if found is None:
        return False
    ending, event = found
    now = timezone.now()
    with transaction.atomic():
        if ending.kind == goals.GOAL:
            window = timedelta(hours=run.workflow.goal_window_hours)
            goals.runs_convert(runs=[run], event=event, window=window)
        step_run.status = StepRun.Status.SKIPPED
        step_run.skip_reason = f"not sent: {ending.reason} before this step"[:SKIP_REASON_LENGTH]
        step_run.finished_at = step_run.updated_at = now
        _step_save(step_run, ["status", "skip_reason", "finished_at", "updated_at"])
        goals.runs_end(run_ids=[run.pk], reason=ending.reason, now=now)
    run.refresh_from_db()
    return True


def _run_progress(run: Run) -> bool:
    """Record the next step and renew the lease; False if the run is no longer ours."""
    now = timezone.now()
    run.lease_expires_at = now + timedelta(seconds=settings.CAREFLOW_RUN_LEASE_SECONDS)
    return bool(
        Run.objects.filter(pk=run.pk, status=Run.Status.RUNNING).update(
            next_index=run.next_index, lease_expires_at=run.lease_expires_at, updated_at=now
        )
    )


def _steps_not_reached(run: Run, indexes: range, reason: str) -> None:
    now = timezone.now()
    for index in indexes:
        StepRun.objects.update_or_create(
            run=run,
            index=index,
            defaults={"status": StepRun.Status.SKIPPED, "skip_reason": reason, "finished_at": now},
        )


# What a step does in the transaction that parks its run (a wait's ReplyWait row): it may
# return an earlier due time than the outcome's (what it waits for has happened meanwhile).
Park = Callable[[], datetime | None] | None


def _step_execute(
    run: Run,
    step: dict[str, Any],
    step_run: StepRun,
    data: RunData,
    batch: RunBatch,
    tree: BranchTree | None = None,
) -> tuple[Outcome, int | None, Park]:
    """Run one step; return its outcome, the index of the step to run next (None: end), and
    what to write with the run if it waits."""
    step_run.status = StepRun.Status.RUNNING
    step_run.attempts += 1
    step_run.started_at = step_run.started_at or timezone.now()
    step_run.due_at = None
    values = data.for_step(step_run.index)
    following = step_run.index + 1
    try:
        if step.get("type") == "condition":
            _step_started(step_run)
            result = condition_evaluate(step.get("parameters") or {}, values)
            next_index = following if result.matched else result.goto_index
            then = (
                "continue"
                if result.matched
                else ("end" if next_index is None else f"go to step {next_index + 1}")
            )
            return (
                Outcome("succeeded", result={"matched": result.matched, "then": then}),
                next_index,
                None,
            )
        if step.get("type") == "delay":
            _step_started(step_run)
            return _delay_execute(run, step, step_run, values, batch), following, None
        if step.get("type") == REPLY and tree is not None:
            return _reply_execute(run, step, step_run, values, batch, tree)
        if step.get("type") == SPLIT:
            _step_started(step_run)
            outcome = _split_execute(run, step)
            target = goto_index(outcome.result["goto"], wait_index=step_run.index)
            return outcome, target, None
    except (StepConfigError, ReplyConfigError) as exc:
        return Outcome("failed", reason=str(exc)), None, None
    return _adapter_execute(run, step, step_run, values, batch), following, None


def _step_started(step_run: StepRun, *extra: str, lazy: bool = False) -> None:
    fields = ["status", "attempts", "started_at", "due_at", *extra, "updated_at"]
    _step_save(step_run, fields, lazy=lazy)


def _delay_execute(
    run: Run, step: dict[str, Any], step_run: StepRun, values: dict[str, Any], batch: RunBatch
) -> Outcome:
    until_text = step_run.result.get("until")
    if until_text:
        until = datetime.fromisoformat(until_text)
    else:
        patient = batch.patient(run.event.organization_id, values)
        tz = patient_zone(patient, run.workflow.organization)
        started = step_run.started_at or timezone.now()
        until = delay_until(step.get("parameters") or {}, data=values, started_at=started, tz=tz)
    result = {"until": until.isoformat()}
    if until > timezone.now():
        step_run.result = result
        return Outcome("retry", result=result, retry_at=until)
    return Outcome("succeeded", result=result)


def _split_execute(run: Run, step: dict[str, Any]) -> Outcome:
    """An A/B split: the branch is a pure function of the seed and the patient (the run's
    uuid for a run without one), so a retried or redelivered step takes the same branch.
    The run's variant is the branch of its FIRST split: the conditional UPDATE leaves a
    variant already set alone, so a later split in a branch does not relabel the run."""
    params = step.get("parameters") or {}
    seed = split_seed(params, default=str(run.workflow.uuid))
    key = run.patient_key or str(run.uuid)
    try:
        choice = split_choose(params, seed=seed, key=key)
    except (ReplyConfigError, TypeError, ValueError) as exc:
        raise StepConfigError(f"this split's branches: {exc}") from exc
    if not run.variant:
        Run.objects.filter(pk=run.pk, variant="").update(variant=choice.label)
        run.variant = choice.label
    return Outcome(
        "succeeded",
        result={
            "branch": choice.label,
            "goto": choice.goto,
            "bucket": choice.bucket,
            "why": choice.explanation(),
            "seed": "custom" if params.get("seed") else "workflow",
        },
    )


def _adapter_execute(
    run: Run, step: dict[str, Any], step_run: StepRun, values: dict[str, Any], batch: RunBatch
) -> Outcome:
    inputs: dict[str, str] = {}
    patient = batch.patient(run.event.organization_id, values)
    organization = run.workflow.organization
    language = step_language(
        step.get("parameters") or {}, patient=patient, organization=organization
    )
    try:
        adapter_inputs_render(
            step,
            values,
            into=inputs,
            tz=patient_zone(patient, organization),
            language=language,
        )
    except StepConfigError as exc:
        return Outcome("failed", reason=str(exc))
    step_run.inputs = inputs
    # Lost in a crash of the database server, this write is as if the worker had died before
    # the step; the message's claim, committed durably before any send, makes it durable.
    _step_started(step_run, "inputs", lazy=True)
    key = f"run:{run.pk}:step:{step_run.index}"
    return _adapter_call(
        run, step, step_run, batch, patient=patient, inputs=inputs, key=key, language=language
    )


def _adapter_call(
    run: Run,
    step: dict[str, Any],
    step_run: StepRun,
    batch: RunBatch,
    *,
    patient: Patient | None,
    inputs: dict[str, str],
    key: str,
    language: str = "",
) -> Outcome:
    """Call `step`'s adapter function with these rendered inputs (in `language`) for
    `step_run`, under the idempotency key `key` (made new by each retry generation of the
    step)."""
    try:
        adapter = adapter_get(step.get("adapter", ""))
    except LookupError as exc:
        return Outcome("failed", reason=str(exc))
    if step_run.generation:
        key += f":retry:{step_run.generation}"
    context = StepContext(
        organization=run.workflow.organization,
        idempotency_key=key,
        inputs=inputs,
        purpose=step.get("purpose", "transactional"),
        patient=patient,
        step_run_id=step_run.pk,
        workflow_id=run.workflow_id,
        step_index=step_run.index,
        is_test=run.is_test or bool(patient and patient.is_test),
        urgent=bool(step.get("urgent")),
        language=language,
        attempt=step_run.attempts,
        memo=batch.memo,
        at_batch_end=batch.at_end,
    )
    try:
        return adapter.execute(function=step.get("function", ""), context=context)
    except (DataError, ValueError) as exc:
        # Data the database will not hold (a value longer than its column, a NUL): raised,
        # it left the run *running*, and every retry would fail the same way. The message
        # names no value: it may be patient data, and so may the exception's text.
        logger.warning(
            "run %s step %s: data refused (%s)", run.pk, step_run.number, type(exc).__name__
        )
        return Outcome(
            "failed",
            reason=f"this step's data could not be stored ({type(exc).__name__}); "
            "check its parameters",
        )


def _reply_execute(
    run: Run,
    step: dict[str, Any],
    step_run: StepRun,
    values: dict[str, Any],
    batch: RunBatch,
    tree: BranchTree,
) -> tuple[Outcome, int | None, Park]:
    """A Wait-for-reply step. The first time: park the run until the timeout, with a
    ReplyWait for the reply to be routed to (written with the parking, so a reply finds
    the run waiting). Woken (a reply, a re-ask, the timeout): resolve the wait if the time is
    up, send the clarifying text once if a first reply matched nothing, and branch on how the
    wait was resolved."""
    params = step.get("parameters") or {}
    steps = run.definition.get("steps", [])
    wait = ReplyWait.objects.filter(
        run=run, index=step_run.index, generation=step_run.generation
    ).first()
    _step_started(step_run)
    if wait is None:
        question = _question(run, steps, step_run.index, tree)
        if question is None:
            return (
                Outcome("skipped", reason="no text was sent for this wait to take a reply to"),
                None,
                None,
            )
        question_index, conversation = question
        patient = batch.patient(run.event.organization_id, values)
        asked_at = step_run.started_at or timezone.now()
        deadline = delay_until(
            params,
            data=values,
            started_at=asked_at,
            tz=patient_zone(patient, run.workflow.organization),
        )
        wait = ReplyWait(
            run=run,
            index=step_run.index,
            generation=step_run.generation,
            organization_id=run.workflow.organization_id,
            phone=phone_or_raw(conversation.patient),
            sender=phone_or_raw(conversation.sender),
            question=conversation.question,
            asked_at=asked_at,
            deadline=deadline,
        )
        step_run.result = {
            "question_step": question_index + 1,
            "asked_at": asked_at.isoformat(),
            "deadline": deadline.isoformat(),
        }
        if deadline > timezone.now():
            write = _reply_wait_writer(wait)
            return Outcome("retry", result=step_run.result, retry_at=deadline), None, write
        # The time was up before the wait began (a date in the data already past).
        wait.state, wait.resolved_at = ReplyWait.State.TIMED_OUT, timezone.now()
        _reply_wait_writer(wait)()
    if wait.state == ReplyWait.State.WAITING and wait.reasked and "reask" not in step_run.result:
        reask = _reask_send(run, steps, step_run, batch, text=reask_text(params))
        if reask.status == "retry":
            retry_at = min(reask.retry_at or wait.deadline, wait.deadline)
            hold = _reply_wait_hold(wait.pk)
            return Outcome("retry", result=step_run.result, retry_at=retry_at), None, hold
        step_run.result = {
            **step_run.result,
            "reask": {"status": reask.status, "reason": reask.reason, **reask.result},
        }
    if wait.state == ReplyWait.State.WAITING:
        if timezone.now() < wait.deadline:
            hold = _reply_wait_hold(wait.pk)
            return Outcome("retry", result=step_run.result, retry_at=wait.deadline), None, hold
        if not reply_wait_resolve(wait_id=wait.pk, state=ReplyWait.State.TIMED_OUT):
            wait.refresh_from_db()  # answered or cancelled in the same instant: that stands
        else:
            wait.state = ReplyWait.State.TIMED_OUT
    if wait.state == ReplyWait.State.CANCELLED:
        return Outcome("skipped", result=step_run.result, reason=wait.reason[:200]), None, None
    answered = wait.state == ReplyWait.State.ANSWERED
    choice = (
        branch_by_label(params, wait.branch)
        if answered and wait.branch
        else branch_choose(params, wait.answer if answered else None)
    )
    result = {
        **step_run.result,
        "reply": wait.answer if answered else "",
        "branch": choice.label,
        "inbound": wait.inbound or "",
        "reasked": wait.reasked,
    }
    return (
        Outcome("succeeded", result=result),
        goto_index(choice.goto, wait_index=step_run.index),
        None,
    )


def _question(
    run: Run, steps: list[dict[str, Any]], index: int, tree: BranchTree
) -> tuple[int, Conversation] | None:
    """The text the wait at `index` takes a reply to: the most recent earlier step on its
    path that texted the patient (its 0-based index), with who it went to and from."""
    candidates = question_steps(steps, tree, index, asks=step_asks)
    if not candidates:
        return None
    for sent in StepRun.objects.filter(
        run=run, index__in=candidates, status=StepRun.Status.SUCCEEDED
    ).order_by("-index"):
        step = steps[sent.index]
        conversation = adapter_get(step.get("adapter", "")).conversation(
            step.get("function", ""), inputs=sent.inputs, result=sent.result
        )
        if conversation is not None and conversation.patient and conversation.sender:
            return sent.index, conversation
    return None


def _reply_wait_hold(wait_id: int) -> Callable[[], datetime | None]:
    """Park the run only while its wait is still open. The wait's row stays locked until the
    run is parked: a reply resolving it meanwhile waits for that commit and then finds the run
    waiting, to wake it; a reply that came first (while this worker held the run, which a
    wake cannot touch) is seen here, and the run is made due at once."""

    def hold() -> datetime | None:
        open_ = (
            ReplyWait.objects.select_for_update()
            .filter(pk=wait_id, state=ReplyWait.State.WAITING)
            .exists()
        )
        return None if open_ else timezone.now()

    return hold


def _reply_wait_writer(wait: ReplyWait) -> Callable[[], None]:
    def write() -> None:
        # A worker that took over the run's lease may have written it already.
        insert_or_get(
            ReplyWait,
            {"run": wait.run, "index": wait.index, "generation": wait.generation},
            {
                field.name: getattr(wait, field.name)
                for field in ReplyWait._meta.concrete_fields
                if field.name not in ("id", "run", "index", "generation")
            },
        )

    return write


def _reask_send(
    run: Run, steps: list[dict[str, Any]], step_run: StepRun, batch: RunBatch, *, text: str
) -> Outcome:
    """Send the wait's clarifying text as its question was sent (same adapter, sender,
    recipient, consent purpose; the send-time checks apply), once: its idempotency key is
    the wait's."""
    question_index = int(step_run.result.get("question_step") or 0) - 1
    question = StepRun.objects.filter(run=run, index=question_index).first()
    if question is None or not text:
        return Outcome("skipped", reason="no clarifying text to send")
    step = steps[question_index]
    adapter = adapter_get(step.get("adapter", ""))
    function = adapter.functions.get(step.get("function", ""))
    if function is None or not function.preview_parameter:
        return Outcome("skipped", reason="the question's step has no text to replace")
    inputs = {**question.inputs, function.preview_parameter: text}
    patient = batch.patient(run.event.organization_id, run.event.payload)
    key = f"run:{run.pk}:step:{step_run.index}:reask"
    return _adapter_call(run, step, step_run, batch, patient=patient, inputs=inputs, key=key)


# What finishing a step writes (RunBatch.finish writes a run's last step with the run's end).
STEP_FINISH_FIELDS = ["status", "result", "skip_reason", "error", "finished_at", "updated_at"]
SKIP_REASON_LENGTH = StepRun._meta.get_field("skip_reason").max_length


def _step_finish(step_run: StepRun, outcome: Outcome) -> None:
    """Record the step's outcome on the step run, to be written (STEP_FINISH_FIELDS)."""
    step_run.status = (
        StepRun.Status.SKIPPED if outcome.status == "skipped" else StepRun.Status.SUCCEEDED
    )
    step_run.result = outcome.result
    # Cut to the column: a longer reason would fail the write and leave the run running.
    reason = outcome.reason[:SKIP_REASON_LENGTH]
    step_run.skip_reason = reason if outcome.status == "skipped" else ""
    step_run.error = ""
    step_run.finished_at = step_run.updated_at = timezone.now()


def _run_wait(run: Run, step_run: StepRun, outcome: Outcome, park: Park = None) -> None:
    due = outcome.retry_at or timezone.now() + DEFAULT_RETRY_AFTER
    with transaction.atomic():
        if park is not None:
            due = park() or due
        step_run.status, step_run.due_at = StepRun.Status.WAITING, due
        step_run.result, step_run.error = outcome.result, outcome.reason
        _step_save(step_run, ["status", "due_at", "result", "error", "updated_at"])
        _runs_transition([run], Run.Status.WAITING, due_at=due)


def _run_fail(run: Run, step_run: StepRun, outcome: Outcome) -> None:
    with transaction.atomic():
        step_run.status, step_run.error, step_run.result = (
            StepRun.Status.FAILED,
            outcome.reason,
            outcome.result,
        )
        step_run.finished_at = timezone.now()
        _step_save(
            step_run,
            [
                "status",
                "error",
                "result",
                "finished_at",
                "attempts",
                "started_at",
                "inputs",
                "updated_at",
            ],
        )
        _run_finish(run, Run.Status.FAILED, error=f"step {step_run.number}: {outcome.reason}")


def _run_finish(run: Run, status: str, *, error: str = "") -> None:
    _runs_transition(
        [run], status, finished_at=timezone.now(), error=error, next_index=run.next_index
    )


def _runs_transition(runs: list[Run], status: str, **fields: Any) -> None:
    """Move runs this worker holds to `status`, in one UPDATE; a run cancelled meanwhile
    stays cancelled (and is reloaded as it is)."""
    fields = {"lease_expires_at": None, "due_at": None, **fields}
    changed = Run.objects.filter(pk__in=[run.pk for run in runs], status=Run.Status.RUNNING).update(
        status=status, updated_at=timezone.now(), **fields
    )
    for run in runs:
        if changed == len(runs):
            run.status = status
            for name, value in fields.items():
                setattr(run, name, value)
        else:
            run.refresh_from_db()


ACTIVE_STATUSES = (Run.Status.PENDING, Run.Status.WAITING)


def reply_wait_resolve(*, wait_id: int, state: str, **fields: Any) -> bool:
    """Move a wait out of "waiting" to `state` (answered, timed out, cancelled), with
    `fields`; False if it was no longer waiting. One conditional UPDATE: a reply and the
    timeout arriving together resolve it once, whichever commits first."""
    now = timezone.now()
    return bool(
        ReplyWait.objects.filter(pk=wait_id, state=ReplyWait.State.WAITING).update(
            state=state, resolved_at=now, updated_at=now, **fields
        )
    )


def run_wake(*, run_id: int) -> None:
    """Make a waiting run due now (what it waited for has happened). The caller hands it to
    a worker at once, so it counts as pushed: the sweeper pushes it again only when it still
    waits CAREFLOW_RELAY_AFTER_SECONDS later (that hand-over was lost), as for a pending run,
    and not while it waits its turn in a busy queue (a second task for it would only take a
    worker's time to find the run taken, behind other replies)."""
    now = timezone.now()
    relay_after = timedelta(seconds=settings.CAREFLOW_RELAY_AFTER_SECONDS)
    Run.objects.filter(pk=run_id, status=Run.Status.WAITING).update(
        due_at=now, pushed_at=now - REQUEUE_AFTER + relay_after, updated_at=now
    )


def workflow_disable(*, workflow: Workflow) -> int:
    """Disable a workflow and cancel its runs that have not finished; return how many.

    A run that a worker holds right now finishes the step it is on (an SMS mid-flight is
    not torn) and then stops, since its status is no longer "running" (see run_advance).
    """
    with transaction.atomic():
        workflow.enabled = False
        workflow.save(update_fields=["enabled", "updated_at"])  # a save, so it is audited
        runs = Run.objects.filter(
            workflow=workflow, status__in=[*ACTIVE_STATUSES, Run.Status.RUNNING]
        )
        return runs_cancel(
            run_ids=list(runs.values_list("id", flat=True)), reason="the workflow was disabled"
        )


def runs_cancel(*, run_ids: list[int], reason: str) -> int:
    """Cancel these runs that have not finished, with `reason` on them and on their pending
    and waiting steps; return how many. A run a worker holds right now finishes the step it
    is on and then stops (its status is no longer "running")."""
    now = timezone.now()
    StepRun.objects.filter(
        run_id__in=run_ids, status__in=[StepRun.Status.PENDING, StepRun.Status.WAITING]
    ).update(
        status=StepRun.Status.CANCELLED,
        finished_at=now,
        updated_at=now,
        skip_reason=reason[:SKIP_REASON_LENGTH],
    )
    return Run.objects.filter(
        pk__in=run_ids, status__in=[*ACTIVE_STATUSES, Run.Status.RUNNING]
    ).update(
        status=Run.Status.CANCELLED,
        finished_at=now,
        due_at=None,
        lease_expires_at=None,
        updated_at=now,
        error=f"cancelled: {reason}",
    )


def run_retry(*, run: Run) -> bool:
    """Retry a failed run from its failed step; steps that succeeded are not repeated.

    The failed step gets a new generation, hence a new idempotency key and its own count of
    attempts: its failed message stays as the record of what happened, and the retry is a
    new message.
    """
    with transaction.atomic():
        failed = (
            StepRun.objects.select_for_update()
            .filter(run=run, status=StepRun.Status.FAILED)
            .first()
        )
        if failed is None or run.status != Run.Status.FAILED:
            return False
        StepRun.objects.filter(pk=failed.pk).update(
            status=StepRun.Status.PENDING,
            generation=failed.generation + 1,
            attempts=0,  # a new generation gets its own attempts (an adapter's retry cap)
            error="",
            finished_at=None,
            updated_at=timezone.now(),
        )
        changed = Run.objects.filter(pk=run.pk, status=Run.Status.FAILED).update(
            status=Run.Status.PENDING,
            next_index=failed.index,
            error="",
            finished_at=None,
            updated_at=timezone.now(),
        )
    return bool(changed)


# A run or event the sweeper/relay queued is queued again only after this long (its task
# may have been lost); until then, a backlog in the broker is not multiplied.
REQUEUE_AFTER = timedelta(seconds=60)


def runs_due(
    *, lookahead: timedelta = timedelta(0), limit: int = 2000
) -> list[tuple[int, datetime | None]]:
    """Claim the runs a sweeper should push, with the time to push them at: waiting runs due
    before the next sweep (so each is released on time, not at sweep granularity), runs whose
    lease expired (their worker died), and pending runs never picked up (the task was lost
    between commit and broker). Safe with several sweepers: rows are claimed with
    SKIP LOCKED and stamped, so each is pushed by one of them."""
    now = timezone.now()
    stale = now - timedelta(seconds=settings.CAREFLOW_RELAY_AFTER_SECONDS)
    due = (
        Q(status=Run.Status.WAITING, due_at__lte=now + lookahead)
        | Q(status=Run.Status.RUNNING, lease_expires_at__lt=now)
        | Q(status=Run.Status.PENDING, created_at__lt=stale)
    )
    not_recently_pushed = Q(pushed_at__isnull=True) | Q(pushed_at__lt=now - REQUEUE_AFTER)
    with transaction.atomic():
        rows = list(
            Run.objects.filter(due, not_recently_pushed)
            .select_for_update(skip_locked=True)
            .order_by("due_at", "id")
            .values_list("id", "status", "due_at")[:limit]
        )
        Run.objects.filter(pk__in=[row[0] for row in rows]).update(pushed_at=now)
    return [
        (run_id, due_at if status == Run.Status.WAITING else None)
        for run_id, status, due_at in rows
    ]


def _dispatch_frontier() -> datetime | None:
    """When the newest event a worker has dispatched was recorded (None before any)."""
    return (
        Event.objects.filter(dispatched_at__isnull=False)
        .order_by("-id")
        .values_list("created_at", flat=True)
        .first()
    )


def events_undispatched(*, limit: int = 500, queued: int = 0) -> list[int]:
    """Claim events recorded a while ago that no dispatch has handled (the broker was down
    at commit, or the task was lost); each is relayed once per REQUEUE_AFTER at most, by one
    relay even when several run.

    `queued` is how many tasks the broker's events queue still holds. In a burst the workers
    are behind, and events wait in the queue longer than the relay's delay: those are not
    lost, and relaying them would only queue a second task for each. An event is taken as
    lost when either
    - the queue cannot account for it: there are more candidates than queued tasks, so at
      least the surplus (taken oldest first) are not in it; or
    - it has been overtaken: the queue is first in, first out, so once an event published
      after this one's task (plus the relay delay, for prefetch and commit order) has been
      dispatched, this one's task is gone. This keeps a lost event from waiting behind steady
      traffic, when the queue (beat's tasks and fresh events included) is never empty.
    """
    now = timezone.now()
    after = timedelta(seconds=settings.CAREFLOW_RELAY_AFTER_SECONDS)
    candidates = Event.objects.filter(
        dispatched_at__isnull=True, created_at__lt=now - after
    ).filter(Q(relayed_at__isnull=True) | Q(relayed_at__lt=now - REQUEUE_AFTER))
    surplus = limit
    overtaken = Q(pk__in=[])
    if queued:
        surplus = max(0, candidates.count() - queued)
        frontier = _dispatch_frontier()
        if frontier is not None:
            # A relayed event's task was published again at relayed_at.
            overtaken = Q(relayed_at__isnull=True, created_at__lt=frontier - after) | Q(
                relayed_at__lt=frontier - after
            )
    with transaction.atomic():
        oldest = candidates.order_by("id").values_list("id", flat=True)[:surplus]
        ids = list(
            candidates.filter(Q(pk__in=list(oldest)) | overtaken)
            .select_for_update(skip_locked=True)
            .order_by("id")
            .values_list("id", flat=True)[:limit]
        )
        Event.objects.filter(pk__in=ids).update(relayed_at=now)
    return ids
