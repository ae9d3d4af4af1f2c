"""The builder's goal and exit conditions in a real browser: choose the goal's event, see a
window outside 1 hour–365 days refused on its field as you type, add an exit condition, and
save; the workflow has them, and the diagram says when runs end early."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import builder_open, builder_save, screenshot_path
from tests.factories import IntegrationFactory, SmsStepFactory, WorkflowFactory
from workflows.models import Workflow

pytestmark = pytest.mark.browser


@pytest.fixture
def workflow(transactional_db: Any) -> Workflow:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(
        organization=integration.organization, trigger="appointment.booked", enabled=False
    )
    SmsStepFactory(
        workflow=workflow,
        parameters={"message": "See you soon", "to": "{{customer.phone}}", "from": "+15005550006"},
    )
    return workflow


def test_set_a_goal_and_an_exit_condition_then_save(
    admin_page: Callable[[Any], Page], workflow: Workflow, tmp_path: Path
) -> None:
    page = builder_open(admin_page, workflow)
    goal = page.locator("#cf-goal")
    expect(goal.locator("#cf-goal-window")).to_have_count(0)  # no goal: nothing else to set

    page.locator("#cf-goal-event").select_option("appointment.confirmed")
    window = page.locator("#cf-goal-window")
    expect(window).to_have_value("168")
    window.fill("0")
    expect(page.locator("#cf-goal-window-errors")).to_contain_text(
        "the window must be from 1 hour to 365 days"
    )
    expect(page.locator("#cf-problems")).to_contain_text("1 problem")
    window.fill("72")
    page.locator("#cf-goal-filter").fill('{"appointment.providerName": "Dr. Maria Gomez"}')
    page.locator("#cf-goal-scope").select_option("record")

    page.get_by_role("button", name="Add an exit condition").click()
    expect(page.locator("#cf-exit-0-event")).to_be_focused()
    page.locator("#cf-exit-0-event").select_option("appointment.cancelled")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    expect(page.locator("#cf-diagram")).to_contain_text(
        "Ends early when appointment.confirmed (the goal) or appointment.cancelled (exit)"
    )
    page.locator("#cf-goal-heading").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshot_path("builder-goal.png", tmp_path)), full_page=False)
    builder_save(page)

    workflow.refresh_from_db()
    assert workflow.goal_event == "appointment.confirmed"
    assert workflow.goal_filter == {"appointment.providerName": "Dr. Maria Gomez"}
    assert (workflow.goal_scope, workflow.goal_window_hours) == ("record", 72)
    assert workflow.exits == [{"event": "appointment.cancelled", "filter": {}, "scope": "patient"}]
    # Shown again as saved.
    expect(page.locator("#cf-goal-window")).to_have_value("72")
    expect(page.locator("#cf-exit-0-event")).to_have_value("appointment.cancelled")
