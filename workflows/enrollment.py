"""Enrollment rules: whether a trigger that fired for a patient starts a run of a workflow.

A workflow enrolls every time its trigger fires (the default), once per record (per order,
say), once per patient ever, or at most once per patient per N days; and, on top of any of
these, "not while active": not while the patient has a run of it in progress.

The rule is enforced by claims, one row of `Enrollment` per workflow and key, taken in the
transaction that dispatches the events: a new key is inserted; a taken key is taken over
only where the rule allows enrolling again, by the same statement (`INSERT … ON CONFLICT
… DO UPDATE … WHERE <may enroll again> RETURNING`). Two workers claiming the same key at the
same instant meet on the unique index: the second waits for the first to commit, then
judges the first's claim. Where no workflow of a batch has a rule, none of this runs: the
default costs no statement.

What "may enroll again" means is written once, as SQL (`_reenroll_sql`), for the claim and
for the dry run's read-only check; why not is worded once (`_refusal`), for the skips the
engine records and for the dry run's sentence.

Limits, by design:
- An event with no customer (no patient key) cannot be limited per patient: it enrolls.
  Under "once per record", an event with no subject record enrolls likewise.
- Runs made before the rule was set count only through `workflow_enrollments_backfill`,
  which the admin runs when a workflow's rule changes; a rule set another way (the shell,
  a data migration) counts enrollments from then on unless it is run too.
- "Not while active" reads the claimed run: a run deleted by hand would leave its patient
  counted as in progress (careflow never deletes runs).
- A live test from the builder (`is_test`) neither claims nor is refused: it does not go
  through dispatch.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import OuterRef, Q, Subquery
from django.utils.timesince import timesince

from workflows.models import Enrollment, EnrollmentSkip, Event, Run, Workflow

Rule = Workflow.Enrollment
Reason = EnrollmentSkip.Reason

# A run in one of these is "in progress": the patient is still in the workflow.
IN_PROGRESS = (Run.Status.PENDING, Run.Status.RUNNING, Run.Status.WAITING)

DAYS_MIN, DAYS_MAX = 1, 3650


def workflow_has_rule(workflow: Workflow) -> bool:
    """Whether enrolling in this workflow is limited at all (the default is not)."""
    return workflow.enrollment != Rule.EVERY or workflow.enrollment_exclusive


def enrollment_problems(*, rule: str, days: Any, exclusive: bool) -> list[str]:
    """What is wrong with these settings, in words for the builder and the form."""
    if rule not in Rule.values:
        return [f"unknown enrollment rule {rule!r}: choose one of the list"]
    if rule == Rule.PERIOD:
        if days in (None, ""):
            return ["say after how many days a patient may enroll again"]
        if isinstance(days, bool) or not isinstance(days, int):
            return ["the number of days must be a whole number"]
        if not DAYS_MIN <= days <= DAYS_MAX:
            return [f"the number of days must be between {DAYS_MIN} and {DAYS_MAX}"]
    elif days not in (None, ""):
        return ["a number of days only goes with “at most once per patient per N days”"]
    return []


@dataclass(frozen=True, slots=True)
class Keys:
    """The claims one enrollment takes: its record's (rule "record") and its patient's
    (rules "patient" and "period", and "not while active"); None where there is none."""

    record: str | None
    patient: str | None


def enrollment_keys(
    workflow: Workflow, *, patient_key: str, subject_type: str, subject_id: str
) -> Keys:
    record = (
        f"record:{subject_type}:{subject_id}"[:200]
        if workflow.enrollment == Rule.RECORD and subject_id
        else None
    )
    per_patient = workflow.enrollment in (Rule.PATIENT, Rule.PERIOD)
    patient = (
        f"patient:{patient_key}"
        if patient_key and (per_patient or workflow.enrollment_exclusive)
        else None
    )
    return Keys(record, patient)


def _table(model: Any) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _reenroll_sql(workflow: Workflow, now: datetime) -> tuple[str, list[Any]]:
    """SQL true where the claim row (columns of the enrollment table, by its name) of this
    workflow's patient key may be taken over by a new enrollment now.

    "Not while active" is written as "the claimed run is finished", not "is not in
    progress": a run committed by another worker after this statement's snapshot began is
    invisible to the subquery, and must count as in progress (it has just started)."""
    table, run = _table(Enrollment), _table(Run)
    finished = (
        f"EXISTS (SELECT 1 FROM {run} r WHERE r.workflow_id = {table}.workflow_id"  # noqa: S608 — names from the models
        f" AND r.event_id = {table}.event_id"
        f" AND r.status NOT IN ({', '.join(['%s'] * len(IN_PROGRESS))}))"
    )
    conditions: list[str] = []
    params: list[Any] = []
    if workflow.enrollment == Rule.PERIOD:
        cutoff = now - timedelta(days=workflow.enrollment_days or DAYS_MAX)
        conditions.append(f"{table}.enrolled_at <= %s")
        params.append(connection.ops.adapt_datetimefield_value(cutoff))
    elif workflow.enrollment != Rule.EVERY and workflow.enrollment != Rule.RECORD:
        return "1 = 0", []  # once per patient: never again
    if workflow.enrollment_exclusive:
        conditions.append(finished)
        params += [str(status) for status in IN_PROGRESS]
    return " AND ".join(conditions) or "1 = 1", params


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claim row as the admin is told about it: when and by which run."""

    enrolled_at: datetime
    run_id: int | None
    run_status: str


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    detail: str


def _ago(then: datetime, now: datetime) -> str:
    if now - then < timedelta(minutes=1):
        return "moments ago"
    # timesince joins with a no-break space, for HTML; the detail is plain text.
    return f"{timesince(then, now, depth=1).replace(chr(0xA0), ' ')} ago"


def _refusal(
    workflow: Workflow, *, record: bool, claimed: Claimed | None, now: datetime
) -> Refusal:
    """Why this claim (its record's, or else its patient's) refuses a new enrollment, in
    words without patient data: "enrolled 2 days ago (run 123)"."""
    run = f" (run {claimed.run_id})" if claimed and claimed.run_id else ""
    ago = _ago(claimed.enrolled_at, now) if claimed else "moments ago"
    if record:
        return Refusal(Reason.RECORD, f"this record was enrolled {ago}{run}")
    if workflow.enrollment == Rule.PATIENT:
        return Refusal(Reason.PATIENT, f"enrolled {ago}{run}; enrolls once per patient")
    days = workflow.enrollment_days or DAYS_MAX
    if workflow.enrollment == Rule.PERIOD and (
        claimed is None or claimed.enrolled_at > now - timedelta(days=days)
    ):
        return Refusal(
            Reason.PERIOD, f"enrolled {ago}{run}; at most once per {days} day{'s' * (days != 1)}"
        )
    state = claimed.run_status if claimed and claimed.run_status else "starting"
    return Refusal(Reason.ACTIVE, f"a run of this workflow is still {state}{run}")


def _claims_read(pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Claimed]:
    """The claim rows of these (workflow id, key) pairs, with their runs, in one query."""
    pairs = set(pairs)
    if not pairs:
        return {}
    runs = Run.objects.filter(workflow_id=OuterRef("workflow_id"), event_id=OuterRef("event_id"))
    rows = (
        Enrollment.objects.filter(Q(*[Q(workflow_id=w, key=k) for w, k in pairs], _connector=Q.OR))
        .annotate(
            run_id=Subquery(runs.values("pk")[:1]),
            run_status=Subquery(runs.values("status")[:1]),
        )
        .order_by()
        .values_list("workflow_id", "key", "enrolled_at", "run_id", "run_status")
    )
    return {
        (workflow_id, key): Claimed(enrolled_at, run_id, run_status or "")
        for workflow_id, key, enrolled_at, run_id, run_status in rows
    }


def _claim(
    rows: Sequence[tuple[Workflow, str, Event]], *, now: datetime, takeover: bool
) -> set[tuple[int, str]]:
    """Insert these claims (workflow, key, event), each key once, in one statement; where a
    key is taken, take it over only if `takeover` and the workflow's rule allows it. Return
    the (workflow id, key) pairs claimed."""
    if not rows:
        return set()
    table = _table(Enrollment)
    conflict, params = "DO NOTHING", []
    if takeover:
        clauses = []
        for workflow in {row[0].pk: row[0] for row in rows}.values():
            condition, condition_params = _reenroll_sql(workflow, now)
            clauses.append(f"({table}.workflow_id = %s AND {condition})")
            params += [workflow.pk, *condition_params]
        conflict = f"{TAKE_OVER} WHERE {' OR '.join(clauses)}"
    return _claims_upsert(
        [(workflow.pk, key, event.pk, now) for workflow, key, event in rows], conflict, params
    )


TAKE_OVER = "DO UPDATE SET event_id = excluded.event_id, enrolled_at = excluded.enrolled_at"


def _claims_upsert(
    rows: Sequence[tuple[int, str, int, datetime]], conflict: str, params: list[Any]
) -> set[tuple[int, str]]:
    """`INSERT` these claim rows (workflow id, key, event id, enrolled at) `ON CONFLICT …
    <conflict>` in one statement, `RETURNING` the (workflow id, key) pairs written. Rows go
    in key order, so two workers claiming overlapping keys lock them in the same order (no
    deadlock)."""
    rows = sorted(rows, key=lambda row: (row[0], row[1]))
    values = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    values_params: list[Any] = []
    for workflow_id, key, event_id, enrolled_at in rows:
        stamp = connection.ops.adapt_datetimefield_value(enrolled_at)
        values_params += [workflow_id, key, event_id, stamp]
    sql = (
        f"INSERT INTO {_table(Enrollment)} (workflow_id, key, event_id, enrolled_at)"  # noqa: S608 — names from the models
        f" VALUES {values} ON CONFLICT (workflow_id, key) {conflict}"
        " RETURNING workflow_id, key"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values_params, *params])
        return {(workflow_id, key) for workflow_id, key in cursor.fetchall()}


BACKFILL_CHUNK = 1000


def workflow_enrollments_backfill(*, workflow: Workflow) -> int:
    """Claim, for the workflow's rule as now set, what its runs so far enrolled (the latest
    run of each patient, every record of a run), so a rule chosen after runs were made under
    "every time" counts them: a patient texted last week is not texted again because the
    rule was set today. A claim newer than a run's is kept (a dispatch may claim meanwhile).
    Reads every run of the workflow once: run it when the rule changes, not per event.
    Return how many claims were written."""
    if not workflow_has_rule(workflow) or workflow.pk is None:
        return 0
    table = _table(Enrollment)
    conflict = f"{TAKE_OVER} WHERE {table}.enrolled_at < excluded.enrolled_at"
    runs = (
        Run.objects.filter(workflow=workflow, is_test=False)
        .order_by("-created_at", "-id")
        .values_list(
            "patient_key", "event_id", "created_at", "event__subject_type", "event__subject_id"
        )
    )
    seen: set[str] = set()
    batch: list[tuple[int, str, int, datetime]] = []
    written = 0
    for patient_key, event_id, created_at, subject_type, subject_id in runs.iterator(
        chunk_size=BACKFILL_CHUNK
    ):
        keys = enrollment_keys(
            workflow, patient_key=patient_key, subject_type=subject_type, subject_id=subject_id
        )
        for key in (keys.record, keys.patient):
            if key is not None and key not in seen:  # newest first: the first is the latest
                seen.add(key)
                batch.append((workflow.pk, key, event_id, created_at))
        if len(batch) >= BACKFILL_CHUNK:
            written += len(_claims_upsert(batch, conflict, []))
            batch = []
    if batch:
        written += len(_claims_upsert(batch, conflict, []))
    return written


@dataclass
class Skipped:
    """A (workflow, event) that does not enroll, and the claim that refused it: a row
    found in the database, or (`winner`) an earlier event of the same batch."""

    workflow: Workflow
    event: Event
    record: bool
    pair: tuple[int, str]
    winner: int | None = None


def enrollments_claim(
    *, matches: Sequence[tuple[Workflow, Event]], now: datetime
) -> tuple[list[tuple[Workflow, Event]], list[Skipped]]:
    """Apply each workflow's enrollment rule to these matches (oldest event first, inside
    the dispatching transaction): those that enroll, in order, and those that do not.

    Record claims go first; an enrollment refused its patient claim ("not while active")
    then gives its record claim back, so the record may enroll once the patient is free.
    Of several events in the batch with the same key, only the first claims it."""
    enrolled: list[tuple[Workflow, Event]] = []
    skipped: list[Skipped] = []
    pending: list[tuple[Workflow, Event, Keys]] = []
    for workflow, event in matches:
        if not workflow_has_rule(workflow):
            enrolled.append((workflow, event))
            continue
        keys = enrollment_keys(
            workflow,
            patient_key=patient_key_of(event.payload),
            subject_type=event.subject_type,
            subject_id=event.subject_id,
        )
        if keys.record is None and keys.patient is None:
            enrolled.append((workflow, event))  # no customer, no record: nothing to limit
            continue
        pending.append((workflow, event, keys))
    if not pending:
        return enrolled, skipped

    def first_of_batch(kind: str) -> list[tuple[Workflow, str, Event]]:
        seen: dict[tuple[int, str], int] = {}
        rows = []
        for workflow, event, keys in pending:
            key = getattr(keys, kind)
            if key is None or (workflow, event) in refused:
                continue
            pair = (workflow.pk, key)
            if pair in seen:
                skipped.append(Skipped(workflow, event, kind == "record", pair, seen[pair]))
                refused.add((workflow, event))
                continue
            seen[pair] = event.pk
            rows.append((workflow, key, event))
        return rows

    refused: set[tuple[Workflow, Event]] = set()
    records = first_of_batch("record")
    record_claimed = _claim(records, now=now, takeover=False)
    # The matches that took their record's claim (not a later event of the same record).
    record_owners: set[tuple[int, int]] = set()
    for workflow, key, event in records:
        if (workflow.pk, key) in record_claimed:
            record_owners.add((workflow.pk, event.pk))
        else:
            skipped.append(Skipped(workflow, event, True, (workflow.pk, key)))
            refused.add((workflow, event))
    patients = first_of_batch("patient")
    patient_claimed = _claim(patients, now=now, takeover=True)
    give_back = []
    for workflow, key, event in patients:
        if (workflow.pk, key) not in patient_claimed:
            skipped.append(Skipped(workflow, event, False, (workflow.pk, key)))
            refused.add((workflow, event))
    for workflow, event, keys in pending:
        if (workflow, event) not in refused:
            enrolled.append((workflow, event))
        elif (workflow.pk, event.pk) in record_owners:
            give_back.append(Q(workflow_id=workflow.pk, key=keys.record))
    if give_back:
        Enrollment.objects.filter(Q(*give_back, _connector=Q.OR)).delete()
    # The batch's order, as the runs are made.
    position = {(w.pk, e.pk): i for i, (w, e) in enumerate(matches)}
    enrolled.sort(key=lambda match: position[(match[0].pk, match[1].pk)])
    return enrolled, skipped


def enrollment_skips_record(
    *, skipped: Sequence[Skipped], runs: Sequence[Run], now: datetime
) -> None:
    """Write a skip, with its reason and detail, for each refused enrollment; `runs` are
    the batch's new runs, which an earlier event of the batch may have started."""
    if not skipped:
        return
    batch_runs: dict[tuple[int, int | None], Run] = {
        (run.workflow_id, run.event_id): run for run in runs
    }
    # A skip refused by an earlier event of the batch names that event's new run; one
    # whose claim was refused itself (or another's) names the claim found in the database.
    claims = _claims_read(s.pair for s in skipped if (s.workflow.pk, s.winner) not in batch_runs)
    rows = []
    for skip in skipped:
        won = batch_runs.get((skip.workflow.pk, skip.winner))
        claimed = Claimed(now, won.pk, won.status) if won is not None else claims.get(skip.pair)
        refusal = _refusal(skip.workflow, record=skip.record, claimed=claimed, now=now)
        rows.append(
            EnrollmentSkip(
                workflow=skip.workflow,
                event=skip.event,
                reason=refusal.reason,
                detail=refusal.detail[:200],
                created_at=now,
            )
        )
    EnrollmentSkip.objects.bulk_create(rows, ignore_conflicts=True)


def patient_key_of(payload: dict[str, Any]) -> str:
    """The patient an event's payload is about (its customer id), as runs record it; ""
    when it has none."""
    customer = payload.get("customer") if isinstance(payload, dict) else None
    customer_id = customer.get("id") if isinstance(customer, dict) else None
    return "" if customer_id is None else str(customer_id)[:64]


def enrollment_check(
    *, workflow: Workflow, patient_key: str, subject_type: str, subject_id: str, now: datetime
) -> Refusal | None:
    """Whether an event for this patient (and record) would enroll in `workflow` now, read
    only: None if it would, else why not. The dry run's sentence, from the claim's rule."""
    if not workflow_has_rule(workflow) or workflow.pk is None:
        return None
    keys = enrollment_keys(
        workflow, patient_key=patient_key, subject_type=subject_type, subject_id=subject_id
    )
    table = _table(Enrollment)
    for key, record in ((keys.record, True), (keys.patient, False)):
        if key is None:
            continue
        condition, params = _reenroll_sql(workflow, now) if not record else ("1 = 0", [])
        sql = (
            f"SELECT {table}.key, ({condition}) FROM {table}"  # noqa: S608 — names from the models
            f" WHERE {table}.workflow_id = %s AND {table}.key = %s"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, workflow.pk, key])
            row = cursor.fetchone()
        if row is not None and not row[1]:
            claimed = _claims_read([(workflow.pk, key)]).get((workflow.pk, key))
            return _refusal(workflow, record=record, claimed=claimed, now=now)
    return None
