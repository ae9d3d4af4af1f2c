"""A workflow's analytics in a real browser: a clinic admin opens them from the workflow's
page, sees the month's figures and charts, picks another period, and follows a figure to the
runs it counts. The picture in docs/analytics.png is taken here (CAREFLOW_SCREENSHOTS=1)."""

from collections.abc import Callable
from datetime import timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from integrations.models import InboundMessage, OutboundMessage
from tests.browser.conftest import clinic_admin, screenshot_path
from tests.factories import IntegrationFactory, OrganizationFactory, SmsStepFactory, WorkflowFactory
from workflows.models import EnrollmentSkip, Event, Run, StepRun, Workflow

pytestmark = pytest.mark.browser
ZONE = "America/Chicago"
_keys = count()


def _history() -> tuple[Workflow, dict[str, int]]:
    """Thirty days of a cart-recovery workflow split A/B: a few dozen carts a day, B
    converting better; messages of both steps, some failed; skips; two opt-outs."""
    clinic = OrganizationFactory(name="Sunrise Telehealth", timezone=ZONE)
    integration = IntegrationFactory(organization=clinic)
    workflow = WorkflowFactory(organization=clinic, name="Abandoned cart recovery")
    SmsStepFactory(workflow=workflow, position=1)
    SmsStepFactory(workflow=workflow, position=2)
    now = timezone.now()
    events, runs = [], []
    for day in range(30):
        for n in range(20 + (day * 7) % 17):
            at = now - timedelta(days=day, minutes=7 * n + 3)
            variant = "AB"[n % 2]
            # One in six of A's carts recovered, one in three of B's.
            converted = (n // 2) % (3 if variant == "B" else 6) == 0
            event = Event(
                organization=clinic, type="cart.abandoned", dedupe_key=f"ba:{next(_keys)}"
            )
            events.append(event)
            runs.append(
                Run(
                    workflow=workflow,
                    event=event,
                    variant=variant,
                    created_at=at,
                    status="exited" if converted else "succeeded",
                    goal_reached_at=at + timedelta(hours=1 + n % 9) if converted else None,
                )
            )
    Event.objects.bulk_create(events)
    for run in runs:
        run.event_id = run.event.pk
    Run.objects.bulk_create(runs)
    steps, messages = [], []
    for i, run in enumerate(runs):
        second = run.goal_reached_at is None
        steps.append(StepRun(run=run, index=0, status="succeeded"))
        steps.append(StepRun(run=run, index=1, status="succeeded" if second else "skipped"))
        for index in (0, 1) if second else (0,):
            status, code = ("delivered", "")
            if i % 23 == 0:
                status, code = ("undelivered", "30003")
            elif i % 41 == 0:
                status, code = ("failed", "21211")
            messages.append(
                OutboundMessage(
                    organization=clinic,
                    integration=integration,
                    workflow=workflow,
                    step_index=index,
                    idempotency_key=f"ba:{next(_keys)}",
                    purpose="marketing",
                    to=f"+1415555{i % 10000:04d}",
                    body="Your cart is waiting",
                    status=status,
                    error_code=code,
                    created_at=run.created_at + timedelta(minutes=index * 60),
                )
            )
    StepRun.objects.bulk_create(steps)
    OutboundMessage.objects.bulk_create(messages)
    for i in range(2):
        InboundMessage.objects.create(
            organization=clinic,
            integration=integration,
            provider_sid=f"SM{next(_keys):032x}",
            from_number=f"+1415555{i:04d}",
            to="+15005550006",
            body="STOP",
            action="opt_out",
        )
    for reason in ("active", "active", "period"):
        EnrollmentSkip.objects.create(
            workflow=workflow,
            reason=reason,
            event=Event.objects.create(
                organization=clinic, type="cart.abandoned", dedupe_key=f"ba:{next(_keys)}"
            ),
        )
    week = [r for r in runs if r.created_at >= now - timedelta(days=7)]
    return workflow, {
        "enrolled": len([r for r in runs if r.created_at >= now - timedelta(days=30)]),
        "week": len(week),
        "week_converted": len([r for r in week if r.goal_reached_at is not None]),
    }


def test_a_clinic_admin_reads_a_workflows_analytics(
    admin_page: Callable[[Any], Page], tmp_path: Path
) -> None:
    workflow, expected = _history()
    page = admin_page(clinic_admin(workflow.organization))
    page.goto(f"/admin/workflows/workflow/{workflow.pk}/change/")
    page.locator(".object-tools a", has_text="Analytics").click()
    expect(page.locator("h1")).to_contain_text("Analytics: Abandoned cart recovery")

    figure = page.locator("[data-figure='enrolled']")
    expect(figure).to_have_text(str(expected["enrolled"]))
    expect(page.locator("[data-figure='skipped']")).to_have_text("3")
    expect(page.locator("[data-figure='opt-outs-caused']")).to_have_text("2")
    expect(page.locator("svg.cf-chart")).to_have_count(3)  # days, funnel, variants
    expect(page.locator("#cf-variants")).to_contain_text("significant at 95 %")
    expect(page.locator("#cf-errors")).to_contain_text("30003")
    # The charts are styled by the page's own stylesheet (served, not just linked).
    bar = page.locator("svg.cf-chart rect.cf-bar-part").first
    assert bar.evaluate("e => getComputedStyle(e).fill") == "rgb(32, 91, 142)"
    page.locator("#content-main").screenshot(path=screenshot_path("analytics.png", tmp_path))

    # Another period, from the picker.
    page.select_option("#id_period", "7d")
    page.locator("input[type=submit][value=Show]").click()
    expect(page.locator("[data-figure='enrolled']")).to_have_text(str(expected["week"]))
    expect(page.locator("[data-figure='goals-reached']")).to_have_text(
        str(expected["week_converted"])
    )

    # A figure opens the runs it counts.
    page.locator("[data-figure='goals-reached'] a").click()
    expect(page.locator("#result_list tbody tr")).to_have_count(expected["week_converted"])

    # A bad custom period is refused with a clear message, not an error page.
    page.goto(
        f"/admin/workflows/workflow/{workflow.pk}/analytics/"
        "?period=custom&start=2026-03-10&end=2026-03-01"
    )
    expect(page.locator(".errornote")).to_contain_text("“From” must be on or before “To”.")
