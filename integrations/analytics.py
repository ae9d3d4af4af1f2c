"""A workflow's figures for a period: enrolment, skips, messages, opt-outs, replies, goals,
a per-step funnel and per-variant conversion with a significance test.

It lives on the messaging side because it counts messages (this app) as well as runs (the
engine, which must not import this app).

What is counted where, for a period [start, end):
- Runs enrolled in the period (a cohort, test runs excluded): enrolled, statuses, the funnel,
  replies, conversions, the median time to goal and the variants. A conversion is a run whose
  workflow goal was reached within its window (`Run.goal_reached_at`), whenever that was.
- What happened in the period: enrolment skips, messages made (by status and error code;
  test messages excluded) and opt-outs received.
- Link clicks (integrations.short_links) made in the period on the short links of this
  workflow's non-test messages, whenever those were sent: clicks, and unique clickers
  (patients), per step and for the workflow. Two aggregate queries over the clicks' time index.
- An opt-out is a STOP keyword (an inbound opt-out message) received in the period; it is
  "caused" by this workflow when the latest non-test message the clinic sent that number
  before it came from this workflow. One index probe per opt-out, and opt-outs are rare.

Every figure is one aggregate query over an index (run_workflow_time, skip_workflow_time,
message_phone_time); messages, the bulk, are read from hourly counts (MessageHourCount) kept
exact by the roll-up below. Ten queries, whatever the number of rows.
"""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
)
from django.db.models.functions import TruncDate

from integrations.home import MESSAGE_OUTCOMES
from integrations.models import (
    UNCOUNTED,
    InboundMessage,
    LinkClick,
    MessageHourCount,
    OutboundMessage,
)
from workflows.models import EnrollmentSkip, ReplyWait, Run, Step, StepRun, Workflow

MessageStatus = OutboundMessage.Status
UTC_ZONE = ZoneInfo("UTC")
# Below this expected count in any cell the normal approximation of the z-test is not to be
# trusted (the usual n·p ≥ 5 and n·(1 − p) ≥ 5 rule): the page says "not yet".
MIN_EXPECTED = 5
ALPHA = 0.05


@dataclass(frozen=True, slots=True)
class Period:
    """[start, end), aware datetimes; days are counted in `zone` (the clinic's)."""

    start: datetime
    end: datetime
    zone: ZoneInfo

    def days(self) -> list[date]:
        first = self.start.astimezone(self.zone).date()
        last = (self.end - timedelta(microseconds=1)).astimezone(self.zone).date()
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True, slots=True)
class Comparison:
    """A two-proportion z-test of a variant's conversion rate against the reference's."""

    against: str
    z: float
    p_value: float
    # "significant", "not_significant" or "too_small" (the approximation does not hold yet)
    verdict: str

    @property
    def p_label(self) -> str:
        return "< 0.0001" if self.p_value < 0.0001 else f"{self.p_value:.4f}"

    @property
    def verdict_label(self) -> str:
        return {
            "significant": "significant at 95 %",
            "not_significant": "not significant at 95 %",
            "too_small": "not yet (n too small)",
        }[self.verdict]


@dataclass(frozen=True, slots=True)
class VariantFigures:
    label: str  # "" for runs that took no A/B branch
    enrolled: int
    conversions: int
    comparison: Comparison | None = None

    @property
    def rate(self) -> float | None:
        return self.conversions / self.enrolled if self.enrolled else None


@dataclass(slots=True)
class StepFigures:
    index: int  # 0-based
    label: str
    reached: int = 0
    succeeded: int = 0
    skipped: int = 0
    failed: int = 0
    messages: Counter[str] = field(default_factory=Counter)  # by message status
    clicks: int = 0  # link clicks in the period on this step's messages
    clickers: int = 0  # patients who clicked them

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def other(self) -> int:
        """Still in progress, cancelled or ended early at this step."""
        return self.reached - self.succeeded - self.skipped - self.failed

    @property
    def sent(self) -> int:
        return _outcome(self.messages, "sent")

    @property
    def delivered(self) -> int:
        return _outcome(self.messages, "delivered")


@dataclass(frozen=True, slots=True)
class DayFigures:
    day: date
    enrolled: int
    conversions: int


@dataclass(frozen=True, slots=True)
class ErrorFigures:
    status: str  # failed or undelivered
    code: str  # "" when the provider gave none
    count: int


@dataclass(frozen=True, slots=True)
class WorkflowAnalytics:
    workflow_id: int
    period: Period
    enrolled: int
    runs_by_status: dict[str, int]
    skipped_by_reason: dict[str, int]
    messages_by_status: dict[str, int]
    errors: list[ErrorFigures]
    opt_outs: int
    replies: int
    link_clicks: int
    link_clickers: int
    conversions: int
    median_time_to_goal: timedelta | None
    steps: list[StepFigures]
    variants: list[VariantFigures]
    days: list[DayFigures]

    @property
    def skipped(self) -> int:
        return sum(self.skipped_by_reason.values())

    @property
    def messages(self) -> int:
        return sum(self.messages_by_status.values())

    @property
    def messages_sent(self) -> int:
        return _outcome(self.messages_by_status, "sent")

    @property
    def conversion_rate(self) -> float | None:
        return self.conversions / self.enrolled if self.enrolled else None


def _outcome(by_status: dict[str, int], outcome: str) -> int:
    """A count in the clinic home's words (MESSAGE_OUTCOMES: "sent" = handed to the provider,
    delivered or not), so this page and the home page agree."""
    return sum(by_status.get(status, 0) for status in MESSAGE_OUTCOMES[outcome][1])


# --- significance -------------------------------------------------------------------------


def normal_sf_two_sided(z: float) -> float:
    """P(|Z| ≥ |z|) for a standard normal Z: erfc(|z| / √2)."""
    return math.erfc(abs(z) / math.sqrt(2))


def proportions_compare(
    *, conversions: int, enrolled: int, reference_conversions: int, reference_enrolled: int
) -> tuple[float, float, bool]:
    """Two-proportion z-test (pooled standard error) of conversions/enrolled against the
    reference's; two-sided. Returns (z, p-value, whether the normal approximation holds:
    every expected count at least MIN_EXPECTED). Without data (no runs, or a pooled rate of
    0 or 1) z is 0 and p is 1."""
    n1, n2 = reference_enrolled, enrolled
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0, False
    pooled = (reference_conversions + conversions) / (n1 + n2)
    expected = min(n1 * pooled, n1 * (1 - pooled), n2 * pooled, n2 * (1 - pooled))
    if pooled in (0.0, 1.0):
        return 0.0, 1.0, False
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    z = (conversions / n2 - reference_conversions / n1) / se
    return z, normal_sf_two_sided(z), expected >= MIN_EXPECTED


def variants_compare(variants: list[VariantFigures]) -> list[VariantFigures]:
    """Each A/B variant against the first (by label); runs that took no branch ("") are
    listed but not compared. With fewer than two variants nothing is compared."""
    labelled = [v for v in variants if v.label]
    if len(labelled) < 2:
        return variants
    reference = labelled[0]
    compared = []
    for variant in variants:
        if not variant.label or variant is reference:
            compared.append(variant)
            continue
        z, p, holds = proportions_compare(
            conversions=variant.conversions,
            enrolled=variant.enrolled,
            reference_conversions=reference.conversions,
            reference_enrolled=reference.enrolled,
        )
        verdict = "too_small" if not holds else "significant" if p < ALPHA else "not_significant"
        compared.append(
            VariantFigures(
                variant.label,
                variant.enrolled,
                variant.conversions,
                Comparison(reference.label, z, p, verdict),
            )
        )
    return compared


# --- the median ---------------------------------------------------------------------------


class _Median(Aggregate):
    """PostgreSQL's percentile_cont(0.5), which takes an interval and interpolates."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = DurationField()


def _time_to_goal() -> ExpressionWrapper:
    return ExpressionWrapper(F("goal_reached_at") - F("created_at"), output_field=DurationField())


def median_by_order(converted: QuerySet[Run], count: int) -> timedelta | None:
    """The median time to goal of `count` converted runs with any database: the middle one
    or two rows in order of time to goal (one sorted query, one or two rows fetched), as
    percentile_cont interpolates them. The dev server's SQLite has no percentile function."""
    if count <= 0:
        return None
    middle = list(
        converted.annotate(to_goal=_time_to_goal())
        .order_by("to_goal")
        .values_list("to_goal", flat=True)[(count - 1) // 2 : count // 2 + 1]
    )
    if not middle:
        return None
    return sum(middle, timedelta()) / len(middle)


def _median(converted: QuerySet[Run], count: int) -> timedelta | None:
    if count <= 0:
        return None
    if connection.vendor == "postgresql":
        median: timedelta | None = converted.aggregate(m=_Median(_time_to_goal()))["m"]
        return median
    return median_by_order(converted, count)


# --- the figures --------------------------------------------------------------------------


def _step_labels(workflow: Workflow) -> dict[int, str]:
    """What each step does, by 0-based index (the page numbers them)."""
    return {
        index: f"{step.adapter} → {step.function}"
        if step.type == Step.Type.ADAPTER
        else step.get_type_display()
        for index, step in enumerate(Step.objects.filter(workflow=workflow).order_by("position"))
    }


def workflow_analytics(*, workflow: Workflow, period: Period) -> WorkflowAnalytics:
    """Every figure of `workflow` for `period`, test runs and test messages excluded.
    A constant number of queries (eight), each an aggregate over an index range."""
    start, end = period.start, period.end
    cohort = Run.objects.filter(
        workflow=workflow, created_at__gte=start, created_at__lt=end, is_test=False
    )

    # Runs: by day of enrolment (the clinic's), variant and status; conversions alongside.
    by_status: Counter[str] = Counter()
    by_variant: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_day: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    rows = (
        cohort.annotate(day=TruncDate("created_at", tzinfo=period.zone))
        .values_list("day", "variant", "status")
        .annotate(n=Count("id"), converted=Count("id", filter=Q(goal_reached_at__isnull=False)))
        .order_by()
    )
    for day, variant, status, n, converted in rows:
        by_status[status] += n
        by_variant[variant][0] += n
        by_variant[variant][1] += converted
        by_day[day][0] += n
        by_day[day][1] += converted
    enrolled = sum(by_status.values())
    conversions = sum(c for _, c in by_variant.values())

    median = _median(cohort.filter(goal_reached_at__isnull=False), conversions)

    # The funnel: step runs of the cohort by step and status.
    labels = _step_labels(workflow)
    steps: dict[int, StepFigures] = {}

    def step(index: int) -> StepFigures:
        if index not in steps:
            steps[index] = StepFigures(index, labels.get(index, f"Step {index + 1}"))
        return steps[index]

    step_rows = (
        StepRun.objects.filter(
            run__workflow=workflow,
            run__created_at__gte=start,
            run__created_at__lt=end,
            run__is_test=False,
        )
        .values_list("index", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for index, status, n in step_rows:
        figures = step(index)
        figures.reached += n
        if status == StepRun.Status.SUCCEEDED:
            figures.succeeded += n
        elif status == StepRun.Status.SKIPPED:
            figures.skipped += n
        elif status == StepRun.Status.FAILED:
            figures.failed += n

    # Messages made in the period, by step, status and error code.
    messages_by_status: Counter[str] = Counter()
    errors: Counter[tuple[str, str]] = Counter()
    for (index, status, code), n in workflow_message_counts(
        workflow_id=workflow.pk, start=start, end=end
    ).items():
        if not n:
            continue
        messages_by_status[status] += n
        if index is not None:
            step(index).messages[status] += n
        if status in (MessageStatus.FAILED, MessageStatus.UNDELIVERED):
            errors[(status, code)] += n

    clicks = LinkClick.objects.filter(
        link__message__workflow_id=workflow.pk,
        link__message__is_test=False,
        clicked_at__gte=start,
        clicked_at__lt=end,
    )
    for index, n, clickers in (
        clicks.values_list("link__message__step_index")
        .annotate(n=Count("id"), clickers=Count("link__message__patient_id", distinct=True))
        .values_list("link__message__step_index", "n", "clickers")
        .order_by()
    ):
        if index is not None:
            step(index).clicks, step(index).clickers = n, clickers
    totals = clicks.aggregate(
        n=Count("id"), clickers=Count("link__message__patient_id", distinct=True)
    )

    replies = ReplyWait.objects.filter(
        run__in=cohort.values("pk"), state=ReplyWait.State.ANSWERED
    ).count()

    skipped = dict(
        EnrollmentSkip.objects.filter(workflow=workflow, created_at__gte=start, created_at__lt=end)
        .values_list("reason")
        .annotate(n=Count("id"))
        .order_by()
    )

    return WorkflowAnalytics(
        workflow_id=workflow.pk,
        period=period,
        enrolled=enrolled,
        runs_by_status=dict(by_status),
        skipped_by_reason=skipped,
        messages_by_status=dict(messages_by_status),
        errors=[
            ErrorFigures(status, code, n)
            for (status, code), n in sorted(errors.items(), key=lambda item: (-item[1], item[0]))
        ],
        opt_outs=workflow_opt_outs(workflow=workflow, period=period),
        replies=replies,
        link_clicks=totals["n"],
        link_clickers=totals["clickers"],
        conversions=conversions,
        median_time_to_goal=median,
        steps=[steps[index] for index in sorted(steps)],
        variants=variants_compare(
            [VariantFigures(label, n, c) for label, (n, c) in sorted(by_variant.items())]
        ),
        days=[DayFigures(day, *by_day.get(day, (0, 0))) for day in period.days()],
    )


def workflow_opt_outs(*, workflow: Workflow, period: Period) -> int:
    """Opt-outs (STOP keywords) received in `period` whose latest preceding non-test message
    to that number from the clinic came from `workflow`."""
    latest: Any = Subquery(
        OutboundMessage.objects.filter(
            organization_id=OuterRef("organization_id"),
            to=OuterRef("from_number"),
            created_at__lt=OuterRef("created_at"),
            is_test=False,
        )
        .order_by("-created_at", "-id")
        .values("workflow_id")[:1]
    )
    return (
        InboundMessage.objects.filter(
            organization_id=workflow.organization_id,
            action=InboundMessage.Action.OPT_OUT,
            created_at__gte=period.start,
            created_at__lt=period.end,
        )
        .annotate(latest_workflow=latest)
        .filter(latest_workflow=workflow.pk)
        .count()
    )


# --- message counts -----------------------------------------------------------------------

MessageKey = tuple[int | None, str, str]  # (step index, status, error code)
HOUR = timedelta(hours=1)


def _hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _hour_ceil(moment: datetime) -> datetime:
    floor = _hour_floor(moment)
    return floor if floor == moment else floor + HOUR


def workflow_message_counts(
    *, workflow_id: int, start: datetime, end: datetime
) -> Counter[MessageKey]:
    """The workflow's non-test messages made in [start, end), by (step index, status, error
    code), exactly as they are now, in three queries whatever their number:

    - the whole hours inside the period from MessageHourCount;
    - corrected by the messages of those hours the roll-up has not caught up with (index
      message_uncounted): each counts under its status now, not under the one it was
      counted under;
    - plus the messages of the period's partial first and last hours, counted directly."""
    counts: Counter[MessageKey] = Counter()
    # The counts' hours are UTC hours (a clinic's local hour may start at :30).
    start, end = start.astimezone(UTC_ZONE), end.astimezone(UTC_ZONE)
    first, last = _hour_ceil(start), _hour_floor(end)
    if first >= last:  # no whole hour: everything directly
        first = last = end
    messages = OutboundMessage.objects.filter(workflow_id=workflow_id, is_test=False)
    if first < last:
        rolled = (
            MessageHourCount.objects.filter(workflow_id=workflow_id, hour__gte=first, hour__lt=last)
            .values_list("step_index", "status", "error_code")
            .annotate(n=Sum("count"))
            .order_by()
        )
        for index, status, code, n in rolled:
            counts[(None if index < 0 else index, status, code)] += n
        behind = (
            messages.filter(UNCOUNTED, created_at__gte=first, created_at__lt=last)
            .values_list(
                "step_index", "status", "error_code", "counted_status", "counted_error_code"
            )
            .annotate(n=Count("id"))
            .order_by()
        )
        for index, status, code, counted_status, counted_code, n in behind:
            counts[(index, status, code)] += n
            if counted_status:
                counts[(index, counted_status, counted_code)] -= n
    edges = (
        messages.filter(
            Q(created_at__gte=start, created_at__lt=first)
            | Q(created_at__gte=last, created_at__lt=end)
        )
        .values_list("step_index", "status", "error_code")
        .annotate(n=Count("id"))
        .order_by()
    )
    for index, status, code, n in edges:
        counts[(index, status, code)] += n
    return counts


ROLL_UP_BATCH = 5_000
_UPSERT = (
    "INSERT INTO {table} (workflow_id, hour, step_index, status, error_code, count) "
    "VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (workflow_id, hour, step_index, status, error_code) "
    "DO UPDATE SET count = {table}.count + excluded.count"
)


def message_counts_roll_up(*, batch: int = ROLL_UP_BATCH) -> int:
    """Bring MessageHourCount up to date with up to `batch` messages whose status or error
    code changed since they were counted (new ones included); returns how many.

    The messages are locked (FOR UPDATE SKIP LOCKED) for this short transaction, so two
    roll-ups never count one message twice, and a status report waits for it rather than
    changing a message between its count and its mark. Each message moves from the count it
    was under to the one it is under now; the counts' rows are written in key order so two
    roll-ups cannot deadlock on them. Raises OperationalError when it gave way to a lock."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # The roll-up gives way: behind a lock (another roll-up's counts, a TRUNCATE, a
            # migration) it fails fast and the next run catches up, rather than waiting or
            # becoming one side of a deadlock.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '500ms'")
        rows = list(
            OutboundMessage.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(UNCOUNTED)
            .order_by()
            .values_list(
                "pk",
                "workflow_id",
                "created_at",
                "step_index",
                "status",
                "error_code",
                "counted_status",
                "counted_error_code",
            )[:batch]
        )
        if not rows:
            return 0
        deltas: Counter[tuple[int, datetime, int, str, str]] = Counter()
        for _, workflow_id, created_at, index, status, code, counted, counted_code in rows:
            hour = _hour_floor(created_at.astimezone(UTC_ZONE))
            step_index = -1 if index is None else index
            deltas[(workflow_id, hour, step_index, status, code)] += 1
            if counted:
                deltas[(workflow_id, hour, step_index, counted, counted_code)] -= 1
        sql = _UPSERT.format(table=connection.ops.quote_name(MessageHourCount._meta.db_table))
        with connection.cursor() as cursor:
            cursor.executemany(
                sql, [(*key, delta) for key, delta in sorted(deltas.items()) if delta]
            )
        OutboundMessage.objects.filter(pk__in=[row[0] for row in rows]).update(
            counted_status=F("status"), counted_error_code=F("error_code")
        )
    return len(rows)
