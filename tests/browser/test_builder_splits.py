"""An A/B split built in a real browser: the split starts as an even A/B test, branch B is
sent to its own text, a share that does not add up is refused on the split, the branches show
as a tree in the editor and the diagram, the split is saved as JSON, and the dry run says
which branch the test patient falls into and why, with nothing sent."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from integrations.models import OutboundMessage
from tests.browser.conftest import clinic_admin, screenshot_path
from tests.factories import ConsentFactory, IntegrationFactory, OrderFactory, PatientFactory
from workflows.models import Step, Workflow
from workflows.splits import split_choose, split_seed

pytestmark = pytest.mark.browser


def _sms_step(page: Page, message: str) -> None:
    page.get_by_role("button", name="Adapter action").click()
    step = page.locator("#cf-steps > li").last
    step.get_by_label("Adapter").select_option("twilio")
    step.get_by_label("Message").fill(message)
    step.get_by_label("To Phone").fill("{{customer.phone}}")


def test_build_an_ab_split_and_dry_run_it(
    admin_page: Callable[[Any], Page], transactional_db: Any, tmp_path: Path
) -> None:
    integration = IntegrationFactory()
    clinic = integration.organization
    tester = PatientFactory(
        organization=clinic, first_name="Test", last_name="Patient", is_test=True
    )
    ConsentFactory(patient=tester)
    OrderFactory(patient=tester, number="T-1")

    page = admin_page(clinic_admin(clinic))
    page.goto("/admin/workflows/workflow/add/")
    page.locator("#id_name").fill("Shipping copy test")
    page.locator("#cf-trigger").select_option("order.shipped")

    page.get_by_role("button", name="A/B split").click()
    _sms_step(page, "Order {{order.number}} shipped.")
    _sms_step(page, "Good news: order {{order.number}} is on its way!")
    split = page.locator("#cf-steps > li").nth(0)
    expect(split.locator(".cf-step-title")).to_have_text("A/B split")
    branches = split.locator("fieldset.cf-split-branch")
    expect(branches).to_have_count(2)
    expect(branches.nth(0).get_by_label("Label")).to_have_value("A")
    expect(branches.nth(1).get_by_label("Percent of patients")).to_have_value("50")
    branches.nth(1).get_by_label("Label").fill("Friendly")
    branches.nth(1).get_by_label("Then").select_option("3")

    # --- shares that do not add up to 100 are refused on the split --------------------------
    branches.nth(0).get_by_label("Percent of patients").fill("60")
    expect(split.locator(".cf-split-total")).to_have_text("Together: 110% (must be 100%)")
    errors = split.locator("[data-errors-for=branches]")
    expect(errors).to_contain_text("the percents add up to 110: they must add up to 100")
    expect(page.locator("#cf-problems")).to_contain_text("1 problem to fix")
    branches.nth(0).get_by_label("Percent of patients").fill("50")
    expect(errors).to_be_empty()
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")

    # --- the tree: each branch's step under the split, in the editor and the diagram -------
    captions = page.locator("#cf-steps > li .cf-branch-caption")
    expect(captions.nth(1)).to_have_text("If the A/B split at step 1 chose: A")
    expect(captions.nth(2)).to_have_text("If the A/B split at step 1 chose: Friendly")
    diagram = page.locator("#cf-diagram svg")
    expect(diagram.locator("title")).to_contain_text("1. A/B split (A → step 2; Friendly → step 3)")
    page.locator("#content-main").screenshot(path=screenshot_path("builder-split.png", tmp_path))

    page.locator("input[name=_continue]").click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    workflow = Workflow.objects.get(name="Shipping copy test")
    saved = Step.objects.get(workflow=workflow, position=1)
    assert saved.type == "split"
    assert saved.parameters == {
        "branches": [
            {"label": "A", "percent": 50, "goto": "next"},
            {"label": "Friendly", "percent": 50, "goto": 3},
        ]
    }

    # --- dry run: the test patient's bucket, branch, and the one step it runs ---------------
    choice = split_choose(
        saved.parameters,
        seed=split_seed(saved.parameters, default=str(workflow.uuid)),
        key=str(tester.uuid),
    )
    page.locator("#cf-dry-run").click()
    result = page.locator("#cf-test-result")
    expect(result).to_contain_text("Dry run for Test Patient")
    first = result.locator(".cf-path-step").nth(0)
    expect(first.locator(".cf-branch-taken")).to_have_text(
        f"Bucket {choice.bucket} of 100 → branch {choice.label}", use_inner_text=True
    )
    expect(result.locator(".cf-path-step")).to_have_count(2)
    expect(result.locator(".cf-path-step").nth(1)).to_contain_text(
        "Step 2" if choice.label == "A" else "Step 3"
    )
    assert not OutboundMessage.objects.exists()  # a dry run sends nothing
