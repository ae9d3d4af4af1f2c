"""A clinic admin adds the appointment reminder from "Add a ready-made workflow" in one click
and lands in its builder: the steps and branches are there, checked, and it is disabled."""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import clinic_admin, screenshot_path
from tests.factories import IntegrationFactory
from workflows.models import Workflow

pytestmark = pytest.mark.browser


def test_add_the_appointment_reminder_in_one_click(
    admin_page: Callable[[Any], Page], transactional_db: Any, tmp_path: Path
) -> None:
    clinic = IntegrationFactory(senders=["+15005550006"]).organization
    page = admin_page(clinic_admin(clinic))
    page.goto("/admin/workflows/workflow/")
    page.get_by_role("link", name="Add a ready-made workflow").click()
    recipe = page.locator("#cf-recipe-appointment-reminder")
    expect(recipe).to_contain_text("reply C, X or R")
    page.screenshot(path=str(screenshot_path("recipes.png", tmp_path)), full_page=True)
    recipe.get_by_role("button", name="Add this workflow").click()

    expect(page.locator(".messagelist")).to_contain_text("was added, disabled")
    workflow = Workflow.objects.get()
    expect(page).to_have_url(re.compile(rf"/admin/workflows/workflow/{workflow.pk}/change/$"))
    expect(page.locator("#cf-status")).to_contain_text("Disabled.")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    expect(page.locator("#cf-steps > li")).to_have_count(20)
    expect(page.locator("#id_name")).to_have_value(
        "Appointment reminder: confirm, cancel or reschedule"
    )
    assert (workflow.organization, workflow.enabled) == (clinic, False)
