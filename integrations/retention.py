"""Retention: delete each clinic's events, runs, step runs and messages older than its policy.

What is deleted, per clinic, older than its cutoff (now − MessagingPolicy.retention_days, or
CAREFLOW_RETENTION_DAYS; never less than RETENTION_FLOOR_DAYS, 6 years):
- messages whose outcome is settled (delivered, undelivered, failed, skipped, or "sent" and
  looked up as often as reconciliation asks), that the hourly roll-up has counted (the
  analytics' counts keep them) and whose run is not in progress, with their short links
  and clicks;
- runs that ended (succeeded, failed, skipped, cancelled, ended early) none of whose
  messages is kept, with their step runs and reply waits;
- enrollment skips;
- dispatched events no kept run, skip or enrollment claim refers to (an enrollment claim
  enforces "once per patient, ever": it stays, and so does its event).
Never: pending events, runs in progress (pending, running, waiting), messages in flight
(pending, sending, unknown, "sent" still being reconciled), consent records, opt-outs and
inbound messages (consent evidence), the audit trail, analytics' hourly counts.

Deleting rather than archiving: the rows hold patient data (bodies, phone numbers, payloads),
and an archive would be a second copy of it to secure and to purge in turn. What was deleted
is recorded: one audit entry per clinic and run, with the counts and the cutoff.

Each batch is one short transaction: the next `batch` rows (oldest first, from an index on
the clinic and the age) are locked with SKIP LOCKED (a row a worker holds is left for the
next run), their dependents deleted, then they. Nothing holds a lock on a table or on rows
outside the batch, so sends, callbacks and new events go on while it runs.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, models, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from integrations.models import (
    RETENTION_FLOOR_DAYS,
    LinkClick,
    MessagingPolicy,
    OutboundMessage,
    ShortLink,
)
from patients.models import AuditEntry, Organization
from workflows.models import Enrollment, EnrollmentSkip, Event, ReplyWait, Run, StepRun, Workflow

Status = OutboundMessage.Status
SETTLED_MESSAGES = [Status.DELIVERED, Status.UNDELIVERED, Status.FAILED, Status.SKIPPED]
ENDED_RUNS = [
    Run.Status.SUCCEEDED,
    Run.Status.FAILED,
    Run.Status.SKIPPED,
    Run.Status.CANCELLED,
    Run.Status.EXITED,
]
ACTIVE_RUNS = [Run.Status.PENDING, Run.Status.RUNNING, Run.Status.WAITING]
# The kinds, in the order they are deleted (dependents first).
KINDS = ("messages", "runs", "step runs", "enrollment skips", "events")
AUDIT_MODEL = "retention"


@dataclass
class ClinicRetention:
    """One clinic's pass: rows deleted (or, in a dry run, past their age) by kind."""

    organization_id: int
    days: int
    cutoff: datetime
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    batches: int = 0
    # The longest single transaction (seconds): how long any row was held locked.
    longest_batch_s: float = 0.0


def retention_days(policy_days: int | None) -> int:
    """A clinic's retention: its own, else the installation's; refuses less than the floor."""
    days = policy_days if policy_days is not None else settings.CAREFLOW_RETENTION_DAYS
    if days < RETENTION_FLOOR_DAYS:
        raise ImproperlyConfigured(
            f"Retention of {days} days is shorter than the {RETENTION_FLOOR_DAYS} days (6 years) "
            "the audit records must be kept (CAREFLOW_RETENTION_DAYS, MessagingPolicy)."
        )
    return days


def _messages_expired_q(cutoff: datetime) -> Q:
    settled = Q(status__in=SETTLED_MESSAGES) | Q(
        status=Status.SENT, status_checks__gte=settings.CAREFLOW_STATUS_RECONCILE_MAX_CHECKS
    )
    return settled & Q(created_at__lt=cutoff, uncounted=False)


def _messages_expired(organization_id: int, cutoff: datetime) -> "models.QuerySet[OutboundMessage]":
    # A run still in progress may read its messages again (a reply wait, a retry).
    return OutboundMessage.objects.filter(
        _messages_expired_q(cutoff), organization_id=organization_id
    ).exclude(step_run__run__status__in=ACTIVE_RUNS)


def _kept_messages(cutoff: datetime, *, dry_run: bool) -> "models.QuerySet[OutboundMessage]":
    """The messages of the run (OuterRef) that hold it: any left (in a dry run, where none
    has been deleted yet, those that are not expired)."""
    messages = OutboundMessage.objects.filter(step_run__run=OuterRef("pk"))
    return messages.exclude(_messages_expired_q(cutoff)) if dry_run else messages


def _runs_expired(workflow_id: int, cutoff: datetime, *, dry_run: bool) -> "models.QuerySet[Run]":
    """Ended runs past the age none of whose messages is kept."""
    return Run.objects.filter(
        workflow_id=workflow_id, created_at__lt=cutoff, status__in=ENDED_RUNS
    ).exclude(Exists(_kept_messages(cutoff, dry_run=dry_run)))


def _events_expired(
    organization_id: int, cutoff: datetime, *, dry_run: bool
) -> "models.QuerySet[Event]":
    """Dispatched events past the age nothing kept refers to (in a dry run, taking the
    expired runs and skips as deleted already, as a real pass will have by then)."""
    event = OuterRef("pk")
    runs = Run.objects.filter(event=event)
    goals = Run.objects.filter(goal_event=event)
    skips = EnrollmentSkip.objects.filter(event=event)
    if dry_run:
        expired = Q(created_at__lt=cutoff, status__in=ENDED_RUNS) & ~Exists(
            _kept_messages(cutoff, dry_run=True)
        )
        runs, goals = runs.exclude(expired), goals.exclude(expired)
        skips = skips.exclude(created_at__lt=cutoff)
    return (
        Event.objects.filter(
            organization_id=organization_id, created_at__lt=cutoff, dispatched_at__isnull=False
        )
        .exclude(Exists(runs))
        .exclude(Exists(goals))
        .exclude(Exists(skips))
        .exclude(Exists(Enrollment.objects.filter(event=event)))
    )


def _delete_where(model: type[models.Model], column: str, ids: list[int]) -> int:
    """DELETE the model's rows whose `column` is one of `ids` (dependents the ORM would
    cascade to one by one)."""
    table = connection.ops.quote_name(model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE {connection.ops.quote_name(column)} = ANY(%s)",  # noqa: S608 — names from the model
            [ids],
        )
        return int(cursor.rowcount)


def _delete_messages(ids: list[int]) -> dict[str, int]:
    links = list(ShortLink.objects.filter(message_id__in=ids).values_list("pk", flat=True))
    if links:
        _delete_where(LinkClick, "link_id", links)
        _delete_where(ShortLink, "id", links)
    return {"messages": _delete_where(OutboundMessage, "id", ids)}


def _delete_runs(ids: list[int]) -> dict[str, int]:
    _delete_where(ReplyWait, "run_id", ids)
    steps = _delete_where(StepRun, "run_id", ids)
    return {"step runs": steps, "runs": _delete_where(Run, "id", ids)}


def _delete_skips(ids: list[int]) -> dict[str, int]:
    return {"enrollment skips": _delete_where(EnrollmentSkip, "id", ids)}


def _delete_events(ids: list[int]) -> dict[str, int]:
    return {"events": _delete_where(Event, "id", ids)}


def _batches(
    queryset: "models.QuerySet[Any]",
    delete: Callable[[list[int]], dict[str, int]],
    *,
    batch: int,
    result: ClinicRetention,
    progress: Callable[[str], None],
) -> None:
    """Delete the queryset's rows `batch` at a time, oldest first, one transaction each."""
    while True:
        started = time.perf_counter()
        with transaction.atomic():
            ids = list(
                queryset.select_for_update(skip_locked=True, of=("self",))
                .order_by("created_at")
                .values_list("pk", flat=True)[:batch]
            )
            deleted = delete(ids) if ids else {}
        elapsed = time.perf_counter() - started
        if not ids:
            return
        result.batches += 1
        result.longest_batch_s = max(result.longest_batch_s, elapsed)
        for kind, count in deleted.items():
            result.counts[kind] += count
        progress(
            f"clinic {result.organization_id}: batch {result.batches}: "
            + ", ".join(f"{count} {kind}" for kind, count in deleted.items())
            + f" ({elapsed * 1000:.0f} ms)"
        )
        if len(ids) < batch:
            return


def retention_apply(
    *,
    organization_id: int | None = None,
    batch: int | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> list[ClinicRetention]:
    """Delete what each clinic (or the one given) keeps no longer, in batches; with
    `dry_run`, count it instead. Progress lines name clinics by id and give counts only."""
    now = now or timezone.now()
    batch = batch or settings.CAREFLOW_RETENTION_BATCH
    policies = dict(MessagingPolicy.objects.values_list("organization_id", "retention_days"))
    clinics = Organization.objects.order_by("pk").values_list("pk", flat=True)
    if organization_id is not None:
        clinics = clinics.filter(pk=organization_id)
    results = []
    for clinic in clinics:
        days = retention_days(policies.get(clinic))
        result = ClinicRetention(clinic, days, now - timedelta(days=days))
        workflows = list(
            Workflow.objects.filter(organization_id=clinic)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        cutoff = result.cutoff
        steps: list[
            tuple[str, list[models.QuerySet[Any]], Callable[[list[int]], dict[str, int]]]
        ] = [
            ("messages", [_messages_expired(clinic, cutoff)], _delete_messages),
            # Per workflow: each is one range of the (workflow, created_at) indexes.
            ("runs", [_runs_expired(w, cutoff, dry_run=dry_run) for w in workflows], _delete_runs),
            (
                "enrollment skips",
                [
                    EnrollmentSkip.objects.filter(workflow_id=w, created_at__lt=cutoff)
                    for w in workflows
                ],
                _delete_skips,
            ),
            ("events", [_events_expired(clinic, cutoff, dry_run=dry_run)], _delete_events),
        ]
        for kind, querysets, delete in steps:
            for queryset in querysets:
                if dry_run:
                    result.counts[kind] += queryset.count()
                    if kind == "runs":
                        result.counts["step runs"] += StepRun.objects.filter(
                            run__in=queryset
                        ).count()
                else:
                    _batches(queryset, delete, batch=batch, result=result, progress=progress)
        progress(
            f"clinic {clinic}: {'would delete' if dry_run else 'deleted'} "
            + ", ".join(f"{result.counts[kind]} {kind}" for kind in KINDS)
            + f" older than {days} days"
        )
        if not dry_run and any(result.counts.values()):
            _audit(result)
        results.append(result)
    return results


def _audit(result: ClinicRetention) -> None:
    """The audit trail's record of a pass: what was deleted, of which clinic, up to when."""
    AuditEntry.objects.create(
        actor_repr="system: careflow_retention",
        organization_id=result.organization_id,
        action=AuditEntry.Action.DELETED,
        model=AUDIT_MODEL,
        object_id=str(result.organization_id),
        object_repr=f"Records older than {result.days} days",
        changes={
            "cutoff": result.cutoff.isoformat(),
            "days": result.days,
            **{kind: [count, 0] for kind, count in result.counts.items()},
        },
    )
