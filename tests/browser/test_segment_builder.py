"""A segment built by pointing and clicking, in a real browser: the segment fields in the
query builder, the live count following each edit, and the save. The picture in
docs/segment-builder.png is taken here (CAREFLOW_SCREENSHOTS=1)."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import Page, expect

from patients.roles import CLINIC_STAFF
from tests.browser.conftest import clinic_admin, screenshot_path
from tests.factories import OrderFactory, OrganizationFactory, PatientFactory
from workflows.models import Segment

pytestmark = pytest.mark.browser


@pytest.fixture
def clinic(transactional_db: Any) -> Any:
    clinic = OrganizationFactory(name="Sunrise Telehealth")
    for n, province in enumerate(["FL", "FL", "FL", "NY", "GA"]):
        patient = PatientFactory(organization=clinic, province_code=province)
        if n == 0:
            OrderFactory(patient=patient)
    PatientFactory(organization=OrganizationFactory(), province_code="FL")  # another clinic
    return clinic


def test_province_is_fl_built_by_clicking_is_counted_live_and_saved(
    admin_page: Callable[[Any], Page], clinic: Any, tmp_path: Path
) -> None:
    page = admin_page(clinic_admin(clinic))
    page.goto("/admin/workflows/segment/add/")
    count = page.locator("#cf-segment-count")
    # no conditions: every patient of the clinic (not the other clinic's)
    expect(page.locator("#cf-segment-filter")).to_contain_text(
        "No conditions: every patient of the clinic."
    )
    expect(count).to_have_text("5 patients in this segment now.")
    # the raw JSON box of the form is replaced by the builder (its Advanced view)
    expect(page.locator("#id_filter")).to_be_hidden()
    page.get_by_label("Name:").fill("Florida patients")

    page.get_by_role("button", name="Add a condition to the filter").click()
    field = page.get_by_label("Condition 1: field", exact=True)
    expect(field.locator("optgroup[label='orders'] option")).to_contain_text(
        ["orders.count", "orders.daysSinceLast"]
    )
    field.select_option("customer.provinceCode")
    operators = page.get_by_label("Condition 1: operator", exact=True).locator("option")
    # patterns are not offered: a segment's SQL cannot match them as workflows do
    expect(operators).to_have_text(
        ["is", "is not", "is one of", "is none of", "is empty", "is not empty"]
    )
    page.get_by_label("Condition 1: value", exact=True).fill("FL")
    expect(count).to_have_text("3 patients in this segment now.")
    assert json.loads(page.locator("#id_filter").input_value()) == {"customer.provinceCode": "FL"}

    # a second condition narrows it, and the count follows
    page.get_by_role("button", name="Add a condition to the filter").click()
    page.get_by_label("Condition 2: field", exact=True).select_option("orders.count")
    page.get_by_label("Condition 2: operator", exact=True).select_option("gte")
    page.get_by_label("Condition 2: value", exact=True).fill("1")
    expect(count).to_have_text("1 patient in this segment now.")
    page.get_by_role("button", name="Remove condition 2").click()
    expect(count).to_have_text("3 patients in this segment now.")

    # a filter typed in the JSON view that SQL cannot answer: the reason, not a count
    page.locator("summary", has_text="Advanced (JSON)").click()
    box = page.get_by_label("The filter as JSON")
    box.fill('{"customer.city": {"$regex": "^Tam"}}')
    expect(count).to_contain_text('customer.city: "$regex" is not available in segments')
    box.fill('{"customer.provinceCode": "FL"}')
    expect(count).to_have_text("3 patients in this segment now.")
    expect(page.get_by_label("Condition 1: value", exact=True)).to_have_value("FL")

    page.locator("#toggle-nav-sidebar").click()
    page.locator("#cf-segment").screenshot(path=screenshot_path("segment-builder.png", tmp_path))

    page.locator("input[name=_continue]").click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    segment = Segment.objects.get(name="Florida patients")
    assert segment.filter == {"customer.provinceCode": "FL"}
    assert segment.organization == clinic
    # the saved segment's page: the same condition, its count, and some of its patients
    expect(page.get_by_label("Condition 1: value", exact=True)).to_have_value("FL")
    expect(count).to_have_text("3 patients in this segment now.")
    expect(page.locator("#cf-segment-sample li")).to_have_count(3)


def test_clinic_staff_see_a_segment_its_conditions_and_count_but_cannot_save(
    admin_page: Callable[[Any], Page], clinic: Any
) -> None:
    segment = Segment.objects.create(
        organization=clinic, name="Florida", filter={"customer.provinceCode": "FL"}
    )
    user = clinic_admin(clinic)
    user.groups.set([Group.objects.get(name=CLINIC_STAFF)])
    page = admin_page(user)
    page.goto(f"/admin/workflows/segment/{segment.pk}/change/")
    expect(page.get_by_label("Condition 1: field", exact=True)).to_have_value(
        "customer.provinceCode"
    )
    expect(page.get_by_label("Condition 1: value", exact=True)).to_have_value("FL")
    expect(page.locator("#cf-segment-count")).to_have_text("3 patients in this segment now.")
    expect(page.locator("#cf-segment-sample li")).to_have_count(3)
    expect(page.locator("input[name=_save]")).to_have_count(0)
