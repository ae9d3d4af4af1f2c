"""The README's segment steps on the `make run` stack (SQLite, DEBUG off, static files served
as a user gets them): the printed `clinic` login builds a segment of the demo patients by
pointing and clicking, watches its live count, and saves it."""

import json
import re

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_readme import assert_styled, log_in
from tests.deployments import CareflowUp

pytestmark = [pytest.mark.browser]


def test_a_segment_of_the_demo_patients_on_the_make_run_stack(
    page: Page, stack: CareflowUp
) -> None:
    log_in(page, stack, "clinic")
    page.goto("/admin/")
    page.get_by_role("link", name="Segments").first.click()
    page.get_by_role("link", name="Add segment").click()
    expect(page).to_have_url(re.compile(r"/admin/workflows/segment/add/$"))
    expect(page.locator("#header")).to_be_visible()
    assert_styled(page)
    count = page.locator("#cf-segment-count")
    expect(count).to_have_text("4 patients in this segment now.")  # the demo's four
    page.get_by_label("Name:").fill("Central time")
    page.get_by_role("button", name="Add a condition to the filter").click()
    page.get_by_label("Condition 1: field", exact=True).select_option("customer.timezone")
    page.get_by_label("Condition 1: value", exact=True).fill("America/Chicago")
    expect(count).to_have_text("2 patients in this segment now.")  # Maria and Test
    page.get_by_role("button", name="Add a condition to the filter").click()
    page.get_by_label("Condition 2: field", exact=True).select_option("orders.count")
    page.get_by_label("Condition 2: operator", exact=True).select_option("gte")
    page.get_by_label("Condition 2: value", exact=True).fill("1")
    expect(count).to_have_text("2 patients in this segment now.")
    expected = {"customer.timezone": "America/Chicago", "orders.count": {"$gte": 1}}
    assert json.loads(page.locator("#id_filter").input_value()) == expected
    page.get_by_role("button", name="Save and continue editing").click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    expect(page.locator("#cf-segment-sample li")).to_have_text(["Maria Garcia", "Test Patient"])
    expect(count).to_have_text("2 patients in this segment now.")
