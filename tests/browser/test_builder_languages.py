"""The builder's language tabs in a real browser: add a Spanish variant to a text, see its own
preview and segment count (UCS-2 when it needs it), get a variable mistake reported on the
variant, save, reload and find it there; remove it."""

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
    organization = integration.organization
    organization.languages = ["es"]
    organization.save()
    workflow = WorkflowFactory(organization=organization, enabled=False)
    SmsStepFactory(
        workflow=workflow,
        parameters={
            "message": "Order {{order.number}} shipped.",
            "to": "{{customer.phone}}",
            "from": "+15005550006",
        },
    )
    return workflow


def test_a_spanish_tab_with_its_own_preview_is_saved_with_the_step(
    admin_page: Callable[[Any], Page], workflow: Workflow, tmp_path: Path
) -> None:
    page = builder_open(admin_page, workflow)
    step = page.locator("#cf-steps > li").first
    step.get_by_label("Add a language").select_option("es")
    expect(step.get_by_role("tab", name="Spanish")).to_have_attribute("aria-selected", "true")

    spanish = step.get_by_label("Message (Spanish)")
    spanish.fill("Su pedido {{order.numbr}} salió.")
    expect(page.locator("#cf-problems")).to_contain_text("1 problem")
    expect(step.locator('[data-errors-for="variants"]')).to_contain_text(
        "Spanish message: {{order.numbr}} is not a variable"
    )

    spanish.fill("Su pedido {{order.number}} salió: ¿lo recibió?")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    preview = step.locator('[data-preview-for$=":es"]')
    expect(preview.locator(".cf-preview-text")).to_have_text("Su pedido 100234 salió: ¿lo recibió?")
    expect(preview.locator(".cf-preview-numbers")).to_contain_text("UCS-2")
    expect(preview.locator(".cf-warning").first).to_contain_text("“ó”")
    step.screenshot(path=str(screenshot_path("builder-languages.png", tmp_path)))

    builder_save(page)
    saved = workflow.steps.get()
    assert saved.parameters["variants"] == {
        "es": {"message": "Su pedido {{order.number}} salió: ¿lo recibió?"}
    }
    assert saved.parameters["message"] == "Order {{order.number}} shipped."

    # After a reload the tab is there, with its text; removing it saves the step without it.
    page.reload()
    step = page.locator("#cf-steps > li").first
    expect(step.get_by_label("Message (Spanish)")).to_have_value(
        "Su pedido {{order.number}} salió: ¿lo recibió?"
    )
    step.get_by_role("button", name="Remove Spanish").click()
    expect(step.get_by_role("tab", name="Spanish")).to_have_count(0)
    builder_save(page)
    assert "variants" not in workflow.steps.get().parameters
