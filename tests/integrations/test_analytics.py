"""Per-workflow analytics: a seeded history gives exactly the expected figures, on the selector
and on the admin page; period boundaries; the significance test against known values; an
empty workflow; escaping; who may open the page; a constant query count; and the figures of
a message sent for real by a worker."""

import importlib
import math
import re
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from itertools import count
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import OperationalError, connection, transaction
from django.db.models import Count
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from integrations.analytics import (
    Period,
    VariantFigures,
    median_by_order,
    message_counts_roll_up,
    normal_sf_two_sided,
    proportions_compare,
    variants_compare,
    workflow_analytics,
)
from integrations.models import InboundMessage, Integration, MessageHourCount, OutboundMessage
from patients.models import Organization
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    OrganizationFactory,
    PatientFactory,
    SmsStepFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
)
from tests.patients import conftest as migration_helpers
from tests.patients.conftest import latest_migrations, migrate
from workflows.models import EnrollmentSkip, Event, ReplyWait, Run, StepRun, Workflow

# The test database, migrated back to the latest state after the migration test.
migrated_back = migration_helpers.migrated_back
Status = Run.Status
MStatus = OutboundMessage.Status
UTC = ZoneInfo("UTC")
# The seeded window: ten days, well in the past so "now" never cuts it.
T0 = datetime(2026, 3, 1, tzinfo=UTC)
T1 = T0 + timedelta(days=10)
PERIOD = Period(T0, T1, UTC)
_serial = count(1)


# --- seeding ------------------------------------------------------------------------------


def _event(org: Organization, at: datetime) -> Event:
    n = next(_serial)
    return Event.objects.create(
        organization=org, type="order.shipped", dedupe_key=f"analytics:{n}", occurred_at=at
    )


def _run(
    workflow: Workflow,
    at: datetime,
    *,
    status: str = Status.SUCCEEDED,
    variant: str = "",
    goal_after: timedelta | None = None,
    is_test: bool = False,
    steps: tuple[str, ...] = (),
) -> Run:
    run = Run.objects.create(
        workflow=workflow,
        event=_event(workflow.organization, at),
        status=status,
        variant=variant,
        created_at=at,
        goal_reached_at=at + goal_after if goal_after is not None else None,
        is_test=is_test,
    )
    for index, step_status in enumerate(steps):
        StepRun.objects.create(run=run, index=index, status=step_status)
    return run


def _message(
    integration: Integration,
    workflow: Workflow | None,
    at: datetime,
    *,
    status: str = MStatus.DELIVERED,
    code: str = "",
    step_index: int | None = 0,
    to: str = "+14155550000",
    is_test: bool = False,
) -> OutboundMessage:
    return OutboundMessage.objects.create(
        organization=integration.organization,
        integration=integration,
        idempotency_key=f"analytics:{next(_serial)}",
        workflow=workflow,
        step_index=step_index if workflow is not None else None,
        purpose="transactional",
        to=to,
        body="Hi",
        status=status,
        error_code=code,
        is_test=is_test,
        created_at=at,
    )


def _stop(integration: Integration, phone: str, at: datetime) -> InboundMessage:
    return InboundMessage.objects.create(
        organization=integration.organization,
        integration=integration,
        provider_sid=f"SM{next(_serial):032d}",
        from_number=phone,
        to="+15005550006",
        body="STOP",
        action=InboundMessage.Action.OPT_OUT,
        created_at=at,
    )


def _wait(run: Run, state: str) -> ReplyWait:
    return ReplyWait.objects.create(
        run=run,
        index=1,
        organization=run.workflow.organization,
        phone="+14155550000",
        sender="+15005550006",
        asked_at=run.created_at,
        deadline=run.created_at + timedelta(days=1),
        state=state,
    )


def seed_history(workflow: Workflow, integration: Integration) -> None:
    """The history the expected figures below are written from (see each comment)."""
    other = WorkflowFactory(organization=workflow.organization)
    hour = timedelta(hours=1)
    day = timedelta(days=1)
    ok, skip, fail = Status.SUCCEEDED, Status.SKIPPED, Status.FAILED
    runs: list[Run] = []
    # Variant A: 10 runs on day 0; 3 converted after 1 h, 2 h, 3 h (ended early), 5 went
    # through both steps, 2 failed at the second step.
    for i in range(3):
        runs.append(
            _run(
                workflow,
                T0,
                status=Status.EXITED,
                variant="A",
                goal_after=(i + 1) * hour,
                steps=(ok, skip),
            )
        )
    runs += [_run(workflow, T0 + hour, variant="A", steps=(ok, ok)) for _ in range(5)]
    runs += [
        _run(workflow, T0 + hour, status=fail, variant="A", steps=(ok, fail)) for _ in range(2)
    ]
    # Variant B: 10 runs on day 2; 6 converted after 4..9 h, 4 went through both steps.
    for i in range(6):
        runs.append(
            _run(
                workflow,
                T0 + 2 * day,
                status=Status.EXITED,
                variant="B",
                goal_after=(i + 4) * hour,
                steps=(ok, skip),
            )
        )
    runs += [_run(workflow, T0 + 2 * day, variant="B", steps=(ok, ok)) for _ in range(4)]
    # No split: one waiting at its first step, one cancelled there (day 9).
    _run(workflow, T0 + 9 * day, status=Status.WAITING, steps=(Status.WAITING,))
    _run(workflow, T0 + 9 * day, status=Status.CANCELLED, steps=(Status.CANCELLED,))
    # Not counted: a converted run before the window, one at its end (exclusive), a test run.
    _run(workflow, T0 - timedelta(seconds=1), variant="A", goal_after=hour, steps=(ok,))
    _run(workflow, T1, variant="A", goal_after=hour, steps=(ok,))
    _run(workflow, T0 + day, variant="B", goal_after=hour, is_test=True, steps=(ok,))
    # Another workflow's run in the window.
    _run(other, T0 + day, goal_after=hour, steps=(ok,))

    # Messages of the first step of the 20 A/B runs: 14 delivered, 3 sent, 2 undelivered
    # (30003, 30005), 1 failed (21211); one skipped at the second step.
    statuses = [(MStatus.DELIVERED, "")] * 14 + [(MStatus.SENT, "")] * 3
    statuses += [(MStatus.UNDELIVERED, "30003"), (MStatus.UNDELIVERED, "30005")]
    statuses += [(MStatus.FAILED, "21211")]
    for run, (status, code) in zip(runs, statuses, strict=True):
        _message(integration, workflow, run.created_at, status=status, code=code)
    _message(integration, workflow, T0 + 3 * day, status=MStatus.SKIPPED, step_index=1)
    # Not counted: a test message, one before the window, another workflow's.
    _message(integration, workflow, T0 + day, is_test=True)
    _message(integration, workflow, T0 - day)
    _message(integration, other, T0 + day)

    # Replies: two answered and one timed out on the cohort; one answered on the test run.
    _wait(runs[0], ReplyWait.State.ANSWERED)
    _wait(runs[10], ReplyWait.State.ANSWERED)
    _wait(runs[11], ReplyWait.State.TIMED_OUT)
    _wait(Run.objects.get(is_test=True), ReplyWait.State.ANSWERED)

    # Skips: two "record" and one "active" in the window, one "patient" before it.
    for reason, at in [("record", T0 + day), ("record", T0 + day), ("active", T0 + 2 * day)]:
        EnrollmentSkip.objects.create(
            workflow=workflow,
            event=_event(workflow.organization, at),
            reason=reason,
            created_at=at,
        )
    EnrollmentSkip.objects.create(
        workflow=workflow,
        event=_event(workflow.organization, T0 - day),
        reason="patient",
        created_at=T0 - day,
    )

    # Opt-outs. Counted: +1…01's last message before its STOP was this workflow's.
    _message(integration, workflow, T0 + 4 * day, to="+14150000001")
    _stop(integration, "+14150000001", T0 + 5 * day)
    # Not counted: +1…02 last heard from the other workflow; +1…03 stopped before the window;
    # +1…04 got this workflow's message only after its STOP.
    _message(integration, workflow, T0 + 4 * day, to="+14150000002")
    _message(integration, other, T0 + 4 * day + hour, to="+14150000002")
    _stop(integration, "+14150000002", T0 + 5 * day)
    _message(integration, workflow, T0 - 2 * day, to="+14150000003")
    _stop(integration, "+14150000003", T0 - day)
    _stop(integration, "+14150000004", T0 + 5 * day)
    _message(integration, workflow, T0 + 6 * day, to="+14150000004")


@pytest.fixture
def seeded() -> tuple[Workflow, Integration]:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization, name="Shipped SMS")
    SmsStepFactory(workflow=workflow, position=1)
    SmsStepFactory(workflow=workflow, position=2)
    seed_history(workflow, integration)
    return workflow, integration


# --- the selector -------------------------------------------------------------------------


def _roll_up_all() -> int:
    total = 0
    while done := message_counts_roll_up(batch=7):
        total += done
    return total


@pytest.mark.django_db
@pytest.mark.parametrize("rolled_up", [False, True], ids=["live", "rolled-up"])
def test_the_seeded_history_gives_exactly_the_expected_figures(
    seeded: tuple[Workflow, Integration], rolled_up: bool
) -> None:
    workflow, _ = seeded
    if rolled_up:
        # Every non-test message of a workflow is counted once, in small batches.
        assert (
            _roll_up_all()
            == OutboundMessage.objects.filter(workflow__isnull=False, is_test=False).count()
        )
        assert message_counts_roll_up() == 0
    figures = workflow_analytics(workflow=workflow, period=PERIOD)

    assert figures.enrolled == 22
    assert figures.runs_by_status == {
        "exited": 9,
        "succeeded": 9,
        "failed": 2,
        "waiting": 1,
        "cancelled": 1,
    }
    assert figures.skipped_by_reason == {"record": 2, "active": 1}
    assert figures.skipped == 3
    # 14 delivered at the first step, and the messages to +1…01, +1…02 and +1…04 in the window
    assert figures.messages_by_status == {
        "delivered": 14 + 3,
        "sent": 3,
        "undelivered": 2,
        "failed": 1,
        "skipped": 1,
    }
    assert figures.messages_sent == 17 + 3 + 2
    assert [(e.status, e.code, e.count) for e in figures.errors] == [
        ("failed", "21211", 1),
        ("undelivered", "30003", 1),
        ("undelivered", "30005", 1),
    ]
    assert figures.opt_outs == 1
    assert figures.replies == 2
    assert figures.conversions == 9
    assert figures.conversion_rate == pytest.approx(9 / 22)
    # 1 h … 9 h: the median is 5 h.
    assert figures.median_time_to_goal == timedelta(hours=5)

    step1, step2 = figures.steps
    assert (step1.number, step1.reached, step1.succeeded, step1.skipped, step1.failed) == (
        1,
        22,
        20,
        0,
        0,
    )
    assert step1.other == 2
    assert (step1.sent, step1.delivered) == (17 + 3 + 2, 17)
    # every A/B run reached the second step; the nine converted ones skipped it
    assert (step2.reached, step2.succeeded, step2.skipped, step2.failed) == (20, 9, 9, 2)
    assert step2.messages == {"skipped": 1}
    assert step1.label == "twilio → sendSMS"

    by_label = {v.label: v for v in figures.variants}
    assert [(v.label, v.enrolled, v.conversions) for v in figures.variants] == [
        ("", 2, 0),
        ("A", 10, 3),
        ("B", 10, 6),
    ]
    assert by_label["A"].comparison is None  # the reference
    assert by_label[""].comparison is None  # no branch taken: not compared
    comparison = by_label["B"].comparison
    assert comparison is not None and comparison.against == "A"
    assert comparison.verdict == "too_small"  # 10 runs each: the approximation does not hold
    assert comparison.verdict_label == "not yet (n too small)"

    days = {d.day.isoformat(): (d.enrolled, d.conversions) for d in figures.days}
    assert len(days) == 10
    assert days["2026-03-01"] == (10, 3)
    assert days["2026-03-03"] == (10, 6)
    assert days["2026-03-10"] == (2, 0)
    assert days["2026-03-02"] == (0, 0)


@pytest.mark.django_db
def test_period_boundaries_include_the_start_and_exclude_the_end() -> None:
    workflow = WorkflowFactory()
    _run(workflow, T0)
    _run(workflow, T1)
    _run(workflow, T1 - timedelta(microseconds=1))
    assert workflow_analytics(workflow=workflow, period=PERIOD).enrolled == 2
    later = Period(T1, T1 + timedelta(days=1), UTC)
    assert workflow_analytics(workflow=workflow, period=later).enrolled == 1


@pytest.mark.django_db
def test_days_are_the_clinics_days() -> None:
    # 02:00 UTC on March 2 is still March 1 in New York.
    zone = ZoneInfo("America/New_York")
    workflow = WorkflowFactory()
    _run(workflow, datetime(2026, 3, 2, 2, 0, tzinfo=UTC))
    start = datetime(2026, 3, 1, tzinfo=zone)
    figures = workflow_analytics(
        workflow=workflow, period=Period(start, start + timedelta(days=2), zone)
    )
    assert [(d.day.isoformat(), d.enrolled) for d in figures.days] == [
        ("2026-03-01", 1),
        ("2026-03-02", 0),
    ]


@pytest.mark.django_db
def test_an_empty_workflow_has_zeros_and_no_rates() -> None:
    figures = workflow_analytics(workflow=WorkflowFactory(), period=PERIOD)
    assert figures.enrolled == figures.conversions == figures.messages == figures.opt_outs == 0
    assert figures.conversion_rate is None
    assert figures.median_time_to_goal is None
    assert figures.steps == [] and figures.variants == []
    assert [d.enrolled for d in figures.days] == [0] * 10


@pytest.mark.django_db
def test_the_portable_median_matches_percentile_cont(
    seeded: tuple[Workflow, Integration],
) -> None:
    """The SQLite path (middle rows by order) against PostgreSQL's percentile_cont, on an odd
    and on an even number of conversions."""
    workflow, _ = seeded
    converted = Run.objects.filter(
        workflow=workflow, created_at__gte=T0, created_at__lt=T1, is_test=False
    ).filter(goal_reached_at__isnull=False)
    assert median_by_order(converted, 9) == timedelta(hours=5)
    _run(workflow, T0, variant="A", goal_after=timedelta(hours=10))
    assert median_by_order(converted, 10) == timedelta(hours=5, minutes=30)
    assert workflow_analytics(workflow=workflow, period=PERIOD).median_time_to_goal == timedelta(
        hours=5, minutes=30
    )
    assert median_by_order(converted.none(), 0) is None


# --- the hourly message counts -----------------------------------------------------------


def _counts(workflow: Workflow, start: datetime, end: datetime) -> dict[str, int]:
    figures = workflow_analytics(workflow=workflow, period=Period(start, end, UTC))
    return figures.messages_by_status


@pytest.mark.django_db
def test_counts_stay_exact_when_statuses_change_after_the_roll_up() -> None:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization)
    sent = [
        _message(integration, workflow, T0 + timedelta(minutes=m), status=MStatus.SENT)
        for m in range(5)
    ]
    assert _roll_up_all() == 5
    assert list(MessageHourCount.objects.values_list("hour", "step_index", "status", "count")) == [
        (T0, 0, "sent", 5)
    ]
    # Two delivery reports and a failure arrive after the roll-up: exact before it catches up…
    OutboundMessage.objects.filter(pk__in=[sent[0].pk, sent[1].pk]).update(status=MStatus.DELIVERED)
    OutboundMessage.objects.filter(pk=sent[2].pk).update(
        status=MStatus.UNDELIVERED, error_code="30003"
    )
    expected = {"sent": 2, "delivered": 2, "undelivered": 1}
    assert _counts(workflow, T0, T1) == expected
    errors = workflow_analytics(workflow=workflow, period=PERIOD).errors
    assert [(e.status, e.code, e.count) for e in errors] == [("undelivered", "30003", 1)]
    # …and after: the counts moved, nothing counted twice.
    assert _roll_up_all() == 3
    assert _counts(workflow, T0, T1) == expected
    rows = dict(MessageHourCount.objects.filter(count__gt=0).values_list("status", "count"))
    assert rows == expected
    assert MessageHourCount.objects.filter(status="sent").get().count == 2


@pytest.mark.django_db
def test_partial_hours_at_the_period_edges_are_counted_from_the_messages() -> None:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization)
    for minute in (20, 50, 70, 100, 125):  # 00:20, 00:50, 01:10, 01:40, 02:05
        _message(integration, workflow, T0 + timedelta(minutes=minute))
    _roll_up_all()
    # 00:30 – 01:45: the partial first hour, a whole hour from the counts, a partial last.
    start, end = T0 + timedelta(minutes=30), T0 + timedelta(minutes=105)
    assert _counts(workflow, start, end) == {"delivered": 3}
    # Inside one hour: no whole hour at all.
    assert _counts(workflow, T0 + timedelta(minutes=10), T0 + timedelta(minutes=30)) == {
        "delivered": 1
    }
    # A clinic whose hours start at :30 UTC (India) reads the same UTC-hour counts.
    india = ZoneInfo("Asia/Kolkata")
    figures = workflow_analytics(
        workflow=workflow, period=Period(start.astimezone(india), end.astimezone(india), india)
    )
    assert figures.messages_by_status == {"delivered": 3}


@pytest.mark.django_db
def test_test_messages_are_never_counted() -> None:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization)
    _message(integration, workflow, T0, is_test=True)
    _message(integration, None, T0)
    assert message_counts_roll_up() == 0
    assert not MessageHourCount.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_worker")  # the session worker's beat would be a third roll-up
def test_concurrent_roll_ups_and_status_reports_count_every_message_once() -> None:
    """Two roll-ups in parallel threads (their own PostgreSQL sessions) while status reports
    keep changing messages: the figures equal a plain GROUP BY of the messages while the
    roll-up is still behind, and its counts equal it once it has caught up."""
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization)
    OutboundMessage.objects.bulk_create(
        [
            OutboundMessage(
                organization=integration.organization,
                integration=integration,
                idempotency_key=f"race:{i}",
                workflow=workflow,
                step_index=i % 3,
                purpose="transactional",
                to="+14155550000",
                body="Hi",
                status=MStatus.SENT,
                created_at=T0 + timedelta(minutes=i % 600),
            )
            for i in range(3000)
        ]
    )
    ids = list(OutboundMessage.objects.values_list("pk", flat=True))
    stop = threading.Event()
    errors: list[BaseException] = []
    gave_way: list[int] = []

    def roll_up() -> None:
        try:
            while not stop.is_set():
                try:
                    message_counts_roll_up(batch=97)
                except OperationalError:
                    gave_way.append(1)  # behind the other's counts: the next run goes on
        except BaseException as exc:  # noqa: BLE001 — reported by the test below
            errors.append(exc)
        finally:
            connection.close()

    def reports() -> None:
        try:
            for n, pk in enumerate(ids[::3]):
                status = [MStatus.DELIVERED, MStatus.UNDELIVERED][n % 2]
                OutboundMessage.objects.filter(pk=pk).update(
                    status=status, error_code="30003" if status == MStatus.UNDELIVERED else ""
                )
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    # Two: with the reporter and this thread, the test process's pool of 4 sessions.
    threads = [threading.Thread(target=roll_up) for _ in range(2)]
    reporter = threading.Thread(target=reports)
    for thread in [*threads, reporter]:
        thread.start()
    reporter.join()
    stop.set()
    for thread in threads:
        thread.join()
    assert not errors
    truth = Counter(
        {
            (status, code): n
            for status, code, n in OutboundMessage.objects.values_list("status", "error_code")
            .annotate(n=Count("id"))
            .order_by()
        }
    )
    assert _counts(workflow, T0, T1) == {
        s: sum(n for (st, _), n in truth.items() if st == s) for s, _ in truth
    }
    _roll_up_all()
    rolled: Counter[tuple[str, str]] = Counter()
    for status, code, n in MessageHourCount.objects.values_list("status", "error_code", "count"):
        rolled[(status, code)] += n
    assert +rolled == truth
    assert _counts(workflow, T0, T1) == {"sent": 2000, "delivered": 500, "undelivered": 500}


# --- significance -------------------------------------------------------------------------


def test_two_proportion_z_test_against_known_values() -> None:
    # 200/1000 vs 250/1000: pooled 0.225, se 0.018675, z = 2.677, p = 0.00743.
    z, p, holds = proportions_compare(
        conversions=250, enrolled=1000, reference_conversions=200, reference_enrolled=1000
    )
    assert z == pytest.approx(2.6774, abs=1e-3)
    assert p == pytest.approx(0.00742, abs=1e-4)
    assert holds
    z, p, _ = proportions_compare(
        conversions=200, enrolled=1000, reference_conversions=250, reference_enrolled=1000
    )
    assert z == pytest.approx(-2.6774, abs=1e-3) and p == pytest.approx(0.00742, abs=1e-4)


def test_the_normal_tail() -> None:
    assert normal_sf_two_sided(1.959964) == pytest.approx(0.05, abs=1e-6)
    assert normal_sf_two_sided(0) == 1.0
    assert normal_sf_two_sided(-3) == pytest.approx(0.0026998, abs=1e-6)


def test_degenerate_proportions_compare_nothing() -> None:
    assert proportions_compare(
        conversions=0, enrolled=0, reference_conversions=5, reference_enrolled=10
    ) == (0.0, 1.0, False)
    # Nobody converted anywhere: no variance, nothing to test.
    assert proportions_compare(
        conversions=0, enrolled=500, reference_conversions=0, reference_enrolled=500
    ) == (0.0, 1.0, False)


def test_verdicts() -> None:
    compared = variants_compare(
        [
            VariantFigures("A", 1000, 200),
            VariantFigures("B", 1000, 250),
            VariantFigures("C", 1000, 210),
            VariantFigures("D", 12, 6),
        ]
    )
    verdicts = {v.label: v.comparison.verdict if v.comparison else None for v in compared}
    assert verdicts == {
        "A": None,
        "B": "significant",
        "C": "not_significant",
        "D": "too_small",
    }
    c = next(v for v in compared if v.label == "C").comparison
    assert c is not None and c.p_value > 0.05 and not math.isnan(c.z)
    b = next(v for v in compared if v.label == "B").comparison
    assert b is not None and b.p_label == "0.0074" and b.verdict_label == "significant at 95 %"
    tiny = variants_compare([VariantFigures("A", 1000, 100), VariantFigures("B", 1000, 300)])
    assert tiny[1].comparison is not None and tiny[1].comparison.p_label == "< 0.0001"
    # One variant only: nothing to compare against.
    assert variants_compare([VariantFigures("A", 10, 1)])[0].comparison is None


# --- the page -----------------------------------------------------------------------------


def _url(workflow: Workflow) -> str:
    return reverse("admin:workflows_workflow_analytics", args=[workflow.pk])


def _figure(page: str, name: str) -> str:
    match = re.search(rf'data-figure="{name}">(?:<a href="[^"]*">)?([^<]*)<', page)
    assert match, f"no figure {name} on the page"
    return match.group(1)


SEEDED_DATES = {"period": "custom", "start": "2026-03-01", "end": "2026-03-10"}


@pytest.mark.django_db
def test_the_page_shows_the_seeded_figures(seeded: tuple[Workflow, Integration]) -> None:
    workflow, _ = seeded
    workflow.organization.timezone = "UTC"
    workflow.organization.save()
    client = clinic_client(workflow.organization, "view_workflow")
    response = client.get(_url(workflow), SEEDED_DATES)
    assert response.status_code == 200
    page = response.content.decode()
    assert _figure(page, "enrolled") == "22"
    assert _figure(page, "skipped") == "3"
    assert _figure(page, "messages-sent") == "22"
    assert _figure(page, "delivered") == "17"
    assert _figure(page, "opt-outs-caused") == "1"
    assert _figure(page, "replies") == "2"
    assert _figure(page, "goals-reached") == "9"
    assert _figure(page, "conversion-rate") == "40.9 %"
    assert _figure(page, "median-time-to-goal") == "5 h 0 min"
    assert "<svg" in page and "not yet (n too small)" in page
    # Figures link to the lists they count, filtered to this workflow and period.
    runs = reverse("admin:workflows_run_changelist")
    assert f'href="{runs}?workflow={workflow.pk}&amp;created_at__gte=2026-03-01T00' in page
    assert "error_code=30003" in page


@pytest.mark.django_db
def test_the_links_open_lists_that_agree_with_the_figures(
    seeded: tuple[Workflow, Integration], admin_client: Client
) -> None:
    workflow, _ = seeded
    workflow.organization.timezone = "UTC"
    workflow.organization.save()
    page = admin_client.get(_url(workflow), SEEDED_DATES).content.decode()
    link = re.search(r'data-figure="goals-reached"><a href="([^"]+)"', page)
    assert link
    listed = admin_client.get(link.group(1).replace("&amp;", "&"))
    assert listed.status_code == 200
    assert listed.context["cl"].queryset.count() == 9
    failed = re.search(r'href="([^"]+error_code=21211[^"]*)"', page)
    assert failed
    messages = admin_client.get(failed.group(1).replace("&amp;", "&"))
    assert messages.status_code == 200
    assert messages.context["cl"].queryset.count() == 1


@pytest.mark.django_db
def test_an_empty_workflow_page_renders_without_figures_failing() -> None:
    workflow = WorkflowFactory()
    client = clinic_client(workflow.organization, "view_workflow")
    page = client.get(_url(workflow)).content.decode()
    assert _figure(page, "enrolled") == "0"
    assert _figure(page, "conversion-rate") == "—"
    assert _figure(page, "median-time-to-goal") == "—"
    assert "No runs in this period." in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "error"),
    [
        ({"period": "custom", "start": "2026-03-01"}, "Custom dates need both"),
        ({"period": "custom", "start": "2026-03-10", "end": "2026-03-01"}, "must be on or before"),
        ({"period": "custom", "start": "2020-01-01", "end": "2026-03-01"}, "at most 366 days"),
        ({"period": "custom", "start": "not-a-date", "end": "2026-03-01"}, "Enter a valid date"),
        ({"period": "custom", "start": "2999-01-01", "end": "2999-01-02"}, "in the future"),
        ({"period": "forever"}, "Select a valid choice"),
    ],
)
def test_bad_periods_get_a_clear_error_and_no_figures(query: dict[str, str], error: str) -> None:
    workflow = WorkflowFactory()
    client = clinic_client(workflow.organization, "view_workflow")
    response = client.get(_url(workflow), query)
    assert response.status_code == 200
    page = response.content.decode()
    assert error in page
    assert "data-figure" not in page


@pytest.mark.django_db
def test_labels_are_escaped_in_the_page_and_its_charts() -> None:
    workflow = WorkflowFactory(name="<script>alert('wf')</script>")
    _run(workflow, timezone.now() - timedelta(hours=1), variant="<script>alert('b')</script>")
    _run(workflow, timezone.now() - timedelta(hours=1), variant="B")
    client = clinic_client(workflow.organization, "view_workflow")
    page = client.get(_url(workflow)).content.decode()
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;b&#x27;)&lt;/script&gt;" in page
    svg = page[page.index("<svg", page.index("A/B variants")) :]
    assert "&lt;script&gt;alert(&#x27;b&#x27;)" in svg[: svg.index("</svg>")]


@pytest.mark.django_db
def test_who_may_open_the_page() -> None:
    workflow = WorkflowFactory()
    theirs = WorkflowFactory(organization=OrganizationFactory())
    url = _url(workflow)
    assert clinic_client(workflow.organization, "view_workflow").get(url).status_code == 200
    assert clinic_client(workflow.organization, "change_workflow").get(url).status_code == 200
    assert clinic_client(workflow.organization, "view_run").get(url).status_code == 403
    # Another clinic's workflow does not exist for this user.
    mine = clinic_client(workflow.organization, "view_workflow")
    assert mine.get(_url(theirs)).status_code == 404
    anonymous = Client().get(url)
    assert anonymous.status_code == 302 and "/login/" in anonymous["Location"]
    superuser = UserFactory(is_superuser=True)
    client = Client()
    client.force_login(superuser)
    assert client.get(_url(theirs)).status_code == 200


@pytest.mark.django_db
def test_the_workflow_page_and_list_link_to_analytics(admin_client: Client) -> None:
    workflow = WorkflowFactory()
    change = admin_client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
    assert _url(workflow) in change.content.decode()
    listing = admin_client.get(reverse("admin:workflows_workflow_changelist"))
    assert _url(workflow) in listing.content.decode()


def _grow(workflow: Workflow, integration: Integration, runs: int) -> None:
    at = timezone.now() - timedelta(days=2)
    for i in range(runs):
        run = _run(
            workflow,
            at,
            variant="AB"[i % 2],
            status=Status.EXITED if i % 3 == 0 else Status.SUCCEEDED,
            goal_after=timedelta(hours=i % 5) if i % 3 == 0 else None,
            steps=(Status.SUCCEEDED,),
        )
        _message(
            integration,
            workflow,
            at,
            status=[MStatus.DELIVERED, MStatus.FAILED][i % 2],
            code=str(30000 + i % 7),
        )
        if i % 4 == 0:
            _wait(run, ReplyWait.State.ANSWERED)
            _stop(integration, "+14155550000", at + timedelta(minutes=1))


@pytest.mark.django_db
def test_the_page_query_count_does_not_grow_with_the_history() -> None:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization)
    SmsStepFactory(workflow=workflow)
    client = clinic_client(workflow.organization, "view_workflow")

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(_url(workflow)).status_code == 200
        return len(ctx.captured_queries)

    _grow(workflow, integration, 10)
    small = queries()
    _grow(workflow, integration, 90)
    assert queries() == small
    assert (
        workflow_analytics(
            workflow=workflow,
            period=Period(timezone.now() - timedelta(days=30), timezone.now(), UTC),
        ).enrolled
        == 100
    )


# --- a message sent for real --------------------------------------------------------------


@pytest.mark.integration
def test_a_message_sent_by_the_worker_is_counted_for_its_workflow_and_step(
    worker: Any, sandbox: Any
) -> None:
    from tests.conftest import sandbox_account, wait_for

    integration = sandbox_account(sandbox, IntegrationFactory())
    org = integration.organization
    workflow = WorkflowFactory(organization=org, trigger="order.shipped")
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=org, phone="+14155550123")
    ConsentFactory(patient=patient)
    order = OrderFactory(patient=patient, status="awaiting_shipment")
    order.status = "shipped"
    order.save()
    message = wait_for(
        lambda: OutboundMessage.objects.filter(status=MStatus.DELIVERED).first(),
        what="a delivered message",
    )
    assert (message.workflow_id, message.step_index) == (workflow.pk, 0)
    now = timezone.now()
    figures = workflow_analytics(
        workflow=workflow, period=Period(now - timedelta(hours=1), now, UTC)
    )
    assert figures.enrolled == 1
    assert figures.messages_by_status == {"delivered": 1}
    assert figures.steps[0].delivered == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("no_worker")  # or the session worker's beat may count them first
def test_the_beat_task_rolls_up_and_gives_way_to_a_lock() -> None:
    from integrations.tasks import message_counts_roll_up as roll_up_task

    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization)
    for minute in range(3):
        _message(integration, workflow, T0 + timedelta(minutes=minute))
    locked, release = threading.Event(), threading.Event()

    def hold_the_counts() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    f"LOCK TABLE {MessageHourCount._meta.db_table} IN ACCESS EXCLUSIVE MODE"
                )
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_the_counts)
    holder.start()
    assert locked.wait(10)
    started = time.monotonic()
    try:
        assert roll_up_task() == 0  # gave way within its lock timeout, nothing half-done
    finally:
        release.set()
        holder.join()
    assert time.monotonic() - started < 5
    assert OutboundMessage.objects.filter(counted_status="").count() == 3
    assert roll_up_task() == 3
    assert _counts(workflow, T0, T1) == {"delivered": 3}
    assert MessageHourCount.objects.get().count == 3


# --- the migration ------------------------------------------------------------------------


def test_the_migration_gives_existing_messages_their_workflow_and_step(
    migrated_back: None,
) -> None:
    """Messages made before 0011 get the workflow and step index of their step run (and
    none without one); the roll-up then counts them as it counts new ones."""
    analytics = importlib.import_module("integrations.migrations.0011_analytics")
    before = [dep for dep in analytics.Migration.dependencies if dep[0] == "integrations"]
    # Made at the latest state (a clinic's messaging policy has columns of later migrations);
    # the engine's tables stay there: only the messages' are migrated back.
    integration = IntegrationFactory()
    org_id = integration.organization_id
    workflow = WorkflowFactory(organization=integration.organization)
    run = _run(workflow, T0)
    step_run = StepRun.objects.create(run=run, index=2)
    apps = migrate(before)
    Message = apps.get_model("integrations", "OutboundMessage")
    common = {
        "organization_id": org_id,
        "integration_id": integration.pk,
        "purpose": "transactional",
        "to": "+14155550000",
        "body": "Hi",
        "status": "delivered",
        "created_at": T0,
    }
    Message.objects.create(idempotency_key="m:a", step_run_id=step_run.pk, **common)
    Message.objects.create(idempotency_key="m:b", **common)

    migrate(latest_migrations())
    rows = dict(OutboundMessage.objects.values_list("idempotency_key", "workflow_id"))
    assert rows == {"m:a": workflow.pk, "m:b": None}
    assert OutboundMessage.objects.get(idempotency_key="m:a").step_index == 2
    assert message_counts_roll_up() == 1
    assert _counts(workflow, T0, T1) == {"delivered": 1}
