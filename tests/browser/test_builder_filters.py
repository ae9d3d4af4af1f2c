"""The builder without JSON or seconds, in a real browser: filters and conditions built by
pointing and clicking (and their JSON, which round-trips), delays in days, the From number
picked from the clinic's approved ones, and enabling only through the banner."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.browser.conftest import builder_open, builder_save, clinic_admin
from tests.factories import IntegrationFactory, SmsStepFactory, WorkflowFactory
from workflows.models import Step, Workflow

pytestmark = pytest.mark.browser

NUMBERS = ["+15005550006", "+14155550100"]


@pytest.fixture
def workflow(transactional_db: Any) -> Workflow:
    integration = IntegrationFactory(senders=NUMBERS)
    workflow = WorkflowFactory(organization=integration.organization, enabled=False)
    SmsStepFactory(workflow=workflow)
    return workflow


def _condition(scope: Page | Locator, number: str, field: str, op: str, value: str = "") -> None:
    """Fill condition `number` ("1", "2.1") by choosing its field, operator and value."""
    scope.get_by_label(f"Condition {number}: field", exact=True).select_option(field)
    scope.get_by_label(f"Condition {number}: operator", exact=True).select_option(op)
    if value:
        scope.get_by_label(f"Condition {number}: value", exact=True).fill(value)


def _filter_json(page: Page) -> Any:
    text = page.locator("#cf-filter").input_value()
    return json.loads(text) if text else {}


def test_a_filter_built_by_clicking_with_an_or_group_is_saved_as_its_query(
    admin_page: Callable[[Any], Page], workflow: Workflow, tmp_path: Path
) -> None:
    page = builder_open(admin_page, workflow)
    section = page.locator("#cf-filter-builder")
    expect(section).to_contain_text("No conditions: every event passes.")

    # keyboard: the button adds a condition and puts the focus on its field
    page.get_by_role("button", name="Add a condition to the filter").focus()
    page.keyboard.press("Enter")
    field = page.get_by_label("Condition 1: field", exact=True)
    expect(field).to_be_focused()
    # the field list is the trigger's data reference, grouped, with types deciding operators
    expect(field.locator("optgroup[label='order.lineItems'] option")).to_contain_text(
        ["order.lineItems.name", "order.lineItems.productId", "order.lineItems.price"]
    )
    _condition(page, "1", "order.totalAmount", "gte", "50")
    operators = page.get_by_label("Condition 1: operator", exact=True).locator("option")
    expect(operators).to_have_text(
        [
            "= equals",
            "≠ does not equal",
            "< less than",
            "≤ at most",
            "> more than",
            "≥ at least",
            "is one of",
            "is none of",
            "is empty",
            "is not empty",
        ]
    )
    assert _filter_json(page) == {"order.totalAmount": {"$gte": 50}}

    page.get_by_role("button", name="Add a group to the filter").click()
    group = page.locator("fieldset", has_text="Group 2")
    expect(group.get_by_label("Group 2: match")).to_have_value("any")
    _condition(group, "2.1", "customer.acceptMarketing", "true")
    expect(group.get_by_label("Condition 2.1: value", exact=True)).to_have_count(0)
    group.get_by_role("button", name="Add a condition to group 2").click()
    _condition(group, "2.2", "order.coupon", "startsWith", "vip")
    expect(page.get_by_label("Match", exact=True)).to_have_value("all")
    expected = {
        "order.totalAmount": {"$gte": 50},
        "$or": [
            {"customer.acceptMarketing": True},
            {"order.coupon": {"$regex": "^vip", "$options": "i"}},
        ],
    }
    assert _filter_json(page) == expected
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    expect(page.locator("#cf-diagram svg")).to_contain_text("only if order.totalAmount ≥ 50")
    page.locator("#toggle-nav-sidebar").click()
    page.locator("section[aria-labelledby=cf-filter-heading]").screenshot(
        path=tmp_path / "filter-builder.png"
    )

    builder_save(page)
    workflow.refresh_from_db()
    assert workflow.filter == expected
    # read back from the saved JSON, the same conditions
    expect(page.get_by_label("Condition 1: field", exact=True)).to_have_value("order.totalAmount")
    expect(page.get_by_label("Condition 2.2: value", exact=True)).to_have_value("vip")
    expect(page.locator("#cf-filter-builder .cf-query-note")).to_be_hidden()


def test_the_json_view_and_the_conditions_update_each_other(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    Workflow.objects.filter(pk=workflow.pk).update(filter={"order.status": "shipped"})
    page = builder_open(admin_page, workflow)
    expect(page.get_by_label("Condition 1: field", exact=True)).to_have_value("order.status")
    expect(page.get_by_label("Condition 1: value", exact=True)).to_have_value("shipped")

    page.locator("#cf-filter-builder summary").click()
    page.locator("#cf-filter").fill(
        '{"order.totalAmount": {"$lt": 20}, "order.coupon": {"$in": ["A", "B"]}}'
    )
    expect(page.get_by_label("Condition 1: field", exact=True)).to_have_value("order.totalAmount")
    expect(page.get_by_label("Condition 1: operator", exact=True)).to_have_value("lt")
    expect(page.get_by_label("Condition 1: value", exact=True)).to_have_value("20")
    expect(page.get_by_label("Condition 2: operator", exact=True)).to_have_value("in")
    expect(page.get_by_label("Condition 2: value", exact=True)).to_have_value("A, B")

    page.get_by_label("Condition 1: value", exact=True).fill("25")
    page.get_by_role("button", name="Remove condition 2").click()
    assert _filter_json(page) == {"order.totalAmount": {"$lt": 25}}
    builder_save(page)
    workflow.refresh_from_db()
    assert workflow.filter == {"order.totalAmount": {"$lt": 25}}


def test_a_query_the_builder_cannot_show_stays_json_untouched(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    stored = {"order.lineItems": {"$size": 2}, "order.status": "shipped"}
    Workflow.objects.filter(pk=workflow.pk).update(filter=stored)
    page = builder_open(admin_page, workflow)
    note = page.locator("#cf-filter-builder .cf-query-note")
    expect(note).to_contain_text("cannot show, so it stays as JSON below, exactly as written")
    expect(page.locator("#cf-filter")).to_be_visible()
    expect(page.locator("#cf-filter-builder .cf-query-visual")).to_be_hidden()
    assert _filter_json(page) == stored

    # saving something else keeps it as it was
    page.locator("#id_name").fill("Renamed")
    builder_save(page)
    workflow.refresh_from_db()
    assert (workflow.name, workflow.filter) == ("Renamed", stored)
    expect(note).to_be_visible()

    # JSON that does not parse yet says so; an emptied box starts again with conditions
    page.locator("#cf-filter").fill('{"order.status": ')
    expect(note).to_contain_text("The JSON below is not valid yet")
    expect(page.locator("#cf-filter-errors")).to_contain_text("the filter is not valid JSON")
    page.locator("#cf-filter").fill("")
    expect(note).to_be_hidden()
    expect(page.locator("#cf-filter-builder")).to_contain_text("No conditions: every event passes.")


def test_a_condition_step_built_by_clicking(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)
    page.locator("[data-add=condition]").click()
    step = page.locator("#cf-steps > li").nth(1)
    expect(step.get_by_label("Test", exact=True)).to_have_value("")
    step.get_by_role("button", name="Add a condition to the condition").click()
    # earlier steps' outcomes can be tested too
    field = step.get_by_label("Condition 1: field", exact=True)
    expect(field.locator("optgroup[label='Earlier steps'] option")).to_have_text(
        ["history.1.status"]
    )
    _condition(step, "1", "order.lineItems.price", "gt", "100")
    expect(step.locator("textarea[data-param=query]")).to_have_value(
        '{"order.lineItems.price":{"$gt":100}}'
    )
    expect(page.locator("#cf-diagram svg")).to_contain_text("If order.lineItems.price > 100")
    builder_save(page)
    condition = workflow.steps.get(position=2)
    assert condition.parameters == {"query": {"order.lineItems.price": {"$gt": 100}}}


def test_a_condition_not_complete_yet_is_not_saved_unseen(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)
    page.get_by_role("button", name="Add a condition to the filter").click()
    _condition(page, "1", "order.totalAmount", "gt")
    problem = page.locator("#cf-filter-builder .cf-cond-problem")
    expect(problem).to_have_text("Not part of the filter yet: enter a value.")
    page.get_by_label("Condition 1: value", exact=True).fill("lots")
    expect(problem).to_have_text("Not part of the filter yet: “lots” is not a number.")

    page.locator("input[name=_continue]").click()
    expect(page.locator("#cf-problems")).to_contain_text(
        "Not saved: finish or remove the condition not complete yet (Filter, Condition 1: "
        "“lots” is not a number)"
    )
    expect(page.get_by_label("Condition 1: field", exact=True)).to_be_focused()
    workflow.refresh_from_db()
    assert workflow.version == 1
    page.get_by_label("Condition 1: value", exact=True).fill("10.5")
    expect(problem).to_be_hidden()
    builder_save(page)
    workflow.refresh_from_db()
    assert workflow.filter == {"order.totalAmount": {"$gt": 10.5}}


def test_a_delay_of_three_days_is_stored_in_seconds(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)
    page.locator("[data-add=delay]").click()
    step = page.locator("#cf-steps > li").nth(1)
    step.get_by_label("Duration", exact=True).fill("3")
    step.get_by_label("Duration: unit").select_option("days")
    expect(page.locator("#cf-diagram svg")).to_contain_text("Wait 3 days")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    # a second delay, until a date in the event's data, one day before it
    page.locator("[data-add=delay]").click()
    until = page.locator("#cf-steps > li").nth(2)
    until.get_by_label("Wait", exact=True).select_option("until_field")
    until.get_by_label("Date field", exact=True).select_option("order.updatedAt")
    until.get_by_label("Offset", exact=True).fill("1")
    until.get_by_label("Offset: unit").select_option("days")
    expect(until.get_by_label("Offset: before or after")).to_have_value("-1")
    expect(page.locator("#cf-diagram svg")).to_contain_text("Wait until order.updatedAt − 1 day")
    builder_save(page)
    saved = list(workflow.steps.order_by("position"))
    assert saved[1].parameters == {"kind": "duration", "seconds": "259200"}
    assert saved[2].parameters == {
        "kind": "until_field",
        "path": "order.updatedAt",
        "offset_seconds": "-86400",
    }
    # read back in the largest unit that divides the seconds
    step = page.locator("#cf-steps > li").nth(1)
    expect(step.get_by_label("Duration", exact=True)).to_have_value("3")
    expect(step.get_by_label("Duration: unit")).to_have_value("86400")


def test_a_stored_duration_in_odd_seconds_is_shown_as_is(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    Step.objects.create(
        workflow=workflow,
        position=2,
        type="delay",
        parameters={"kind": "duration", "seconds": "90"},
    )
    page = builder_open(admin_page, workflow)
    step = page.locator("#cf-steps > li").nth(1)
    expect(step.get_by_label("Duration", exact=True)).to_have_value("90")
    expect(step.get_by_label("Duration: unit")).to_have_value("1")  # "seconds", kept
    step.get_by_label("Duration: unit").select_option("minutes")
    builder_save(page)
    assert workflow.steps.get(position=2).parameters["seconds"] == "5400"


def test_from_phone_is_picked_from_the_clinics_approved_numbers(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)
    page.locator("[data-add=adapter]").click()
    step = page.locator("#cf-steps > li").nth(1)
    step.get_by_label("Adapter").select_option("twilio")
    # one function: chosen with the adapter
    expect(step.get_by_label("Function")).to_have_value("sendSMS")
    sender = step.get_by_label("From Phone", exact=True)
    expect(sender.locator("option")).to_have_text(["Choose a number…", *NUMBERS, "Use a variable…"])
    expect(sender).to_have_value("")  # two numbers: the admin chooses
    sender.select_option("+14155550100")
    step.get_by_label("Message").fill("Hi")
    step.get_by_label("To Phone").fill("{{customer.phone}}")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")

    # a variable is typed in a box of its own
    sender.select_option("Use a variable…")
    variable = step.get_by_label("From Phone from a variable")
    expect(variable).to_be_focused()
    variable.fill("{{order.number}}")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    sender.select_option("+14155550100")
    builder_save(page)
    assert workflow.steps.get(position=2).parameters["from"] == "+14155550100"


def test_a_number_no_longer_approved_is_shown_and_refused(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    workflow.organization.integrations.update(senders=["+14155550100"])
    page = admin_page(clinic_admin(workflow.organization))
    page.goto(f"/admin/workflows/workflow/{workflow.pk}/change/")
    sender = page.locator("#cf-steps > li").first.get_by_label("From Phone", exact=True)
    expect(sender.locator("option:checked")).to_have_text("+15005550006 (not an approved number)")
    page.locator("input[name=_continue]").click()
    expect(page.locator(".errornote")).to_be_visible()
    errors = page.locator("#cf-steps > li").first.locator("[data-errors-for=from]")
    expect(errors).to_contain_text("+15005550006 is not an approved sending number")
    page.locator("#cf-steps > li").first.get_by_label("From Phone", exact=True).select_option(
        "+14155550100"
    )
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")


def test_a_clinics_only_number_is_preselected(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    workflow.organization.integrations.update(senders=["+15005550006"])
    page = builder_open(admin_page, workflow)
    page.locator("[data-add=adapter]").click()
    step = page.locator("#cf-steps > li").nth(1)
    step.get_by_label("Adapter").select_option("twilio")
    expect(step.get_by_label("From Phone", exact=True)).to_have_value("+15005550006")


def test_a_workflow_is_enabled_only_through_the_banner(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = admin_page(clinic_admin(workflow.organization))
    page.goto("/admin/workflows/workflow/add/")
    expect(page.locator("#cf-status")).to_contain_text("A new workflow starts disabled")
    expect(page.locator("input[name=enabled]")).to_have_count(0)
    page.goto(f"/admin/workflows/workflow/{workflow.pk}/change/")
    expect(page.locator("input[name=enabled]")).to_have_count(0)
    page.locator("#cf-enable").click()
    page.get_by_role("button", name="Yes, enable it").click()
    expect(page.locator("#cf-status")).to_contain_text("Enabled.")
    workflow.refresh_from_db()
    assert workflow.enabled is True


def test_a_field_is_found_by_typing_and_an_unlisted_path_is_typed(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)
    page.get_by_role("button", name="Add a condition to the filter").click()
    page.get_by_label("Condition 1: field", exact=True).select_option("Search or type a path…")
    search = page.get_by_label("Condition 1: path", exact=True)
    expect(search).to_be_focused()
    expect(page.locator("#cf-filter-builder-paths option[value='order.coupon']")).to_have_count(1)
    search.fill("order.coupon")
    search.press("Tab")
    # a listed path becomes that field, with its type's operators
    expect(page.get_by_label("Condition 1: field", exact=True)).to_have_value("order.coupon")
    expect(page.get_by_label("Condition 1: operator", exact=True)).to_be_focused()
    page.get_by_label("Condition 1: value", exact=True).fill("VIP")

    page.get_by_role("button", name="Add a condition to the filter").click()
    page.get_by_label("Condition 2: field", exact=True).select_option("Search or type a path…")
    page.get_by_label("Condition 2: path", exact=True).fill("order.partnerCode")
    page.get_by_label("Condition 2: path", exact=True).press("Tab")
    expect(page.get_by_label("Condition 2: field", exact=True)).to_have_value("__custom__")
    page.get_by_label("Condition 2: value", exact=True).fill("12")
    expect(page.locator("#cf-filter-builder")).to_contain_text(
        "A path the data reference does not list"
    )
    assert _filter_json(page) == {"order.coupon": "VIP", "order.partnerCode": 12}


def test_whoever_sees_every_clinic_gets_the_numbers_of_the_clinic_chosen(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    from tests.factories import UserFactory

    other = IntegrationFactory(senders=["+14155550177"]).organization
    page = admin_page(UserFactory(is_superuser=True, is_staff=True))
    page.goto("/admin/workflows/workflow/add/")
    page.locator("#id_organization").select_option(str(workflow.organization_id))
    page.locator("[data-add=adapter]").click()
    step = page.locator("#cf-steps > li").first
    step.get_by_label("Adapter").select_option("twilio")
    sender = step.get_by_label("From Phone", exact=True)
    expect(sender.locator("option")).to_have_text(["Choose a number…", *NUMBERS, "Use a variable…"])
    page.locator("#id_organization").select_option(str(other.pk))
    expect(sender.locator("option")).to_have_text(
        ["Choose a number…", "+14155550177", "Use a variable…"]
    )
