"""Versions in a real browser: two edits in the builder with change notes, the versions page,
the diff showing the changed message side by side, and restoring the first version (a new
version "Restored version 1", the builder showing the old text again)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import builder_open, builder_save, screenshot_path
from tests.factories import IntegrationFactory, sms_step_definition
from workflows.models import Workflow
from workflows.versions import workflow_document_save

pytestmark = pytest.mark.browser


@pytest.fixture
def workflow(transactional_db: Any) -> Workflow:
    integration = IntegrationFactory()
    workflow = Workflow(organization=integration.organization, enabled=False)
    step = sms_step_definition("Original text")
    document = {
        "name": "Shipped",
        "description": "",
        "definition": {"trigger": "order.shipped", "filter": "", "steps": [step]},
    }
    workflow_document_save(workflow=workflow, document=document, comment="Created")
    return workflow


def _edit(page: Page, message: str, note: str) -> None:
    page.locator("#cf-steps > li textarea[data-param=message]").fill(message)
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    page.get_by_label("Change note").fill(note)
    builder_save(page)


def test_edit_twice_compare_and_restore_the_first_version(
    admin_page: Callable[[Any], Page], workflow: Workflow, tmp_path: Path
) -> None:
    page = builder_open(admin_page, workflow)
    _edit(page, "Second text", "Friendlier wording")
    _edit(page, "Third text", "Shorter")
    expect(page.get_by_label("Change note")).to_have_value("")  # a note is for one save

    # From the workflow's page to its versions: newest first, with the notes.
    page.locator("#cf-versions-link").click()
    rows = page.locator("#cf-versions tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Shorter")
    expect(rows.nth(1)).to_contain_text("Friendlier wording")
    expect(rows.nth(2)).to_contain_text("Created")

    # Compare version 1 with version 3: the message side by side.
    page.get_by_label("Compare version").select_option("1")
    page.get_by_label("with version").select_option("3")
    page.get_by_role("button", name="Compare").click()
    changed = page.locator("#cf-diff-steps li[data-kind=changed]")
    expect(changed).to_have_count(1)
    row = changed.locator("tr", has=page.locator("th", has_text="Message"))
    expect(row.locator("td.cf-before")).to_have_text("Original text")
    expect(row.locator("td.cf-after")).to_have_text("Third text")
    expect(page.locator("#cf-diff-summary")).to_contain_text("1 changed")
    page.screenshot(path=screenshot_path("versions-diff.png", tmp_path), full_page=True)

    # Restore version 1: the confirmation shows what changes, then a new version.
    page.get_by_role("link", name="Restore version 1…").click()
    expect(page.locator("#cf-diff-steps")).to_contain_text("Original text")
    page.screenshot(path=screenshot_path("versions-restore.png", tmp_path), full_page=True)
    page.get_by_role("button", name="Yes, restore version 1").click()
    expect(page.locator(".messagelist")).to_contain_text("Version 1 was restored as version 4.")
    newest = page.locator("#cf-versions tbody tr").first
    expect(newest).to_contain_text("Restored version 1")
    expect(newest).to_contain_text("restored from version 1")
    page.screenshot(path=screenshot_path("versions.png", tmp_path), full_page=True)

    # The builder shows the old text again.
    page.get_by_role("link", name="Shipped").first.click()
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    expect(page.locator("#cf-steps > li textarea[data-param=message]")).to_have_value(
        "Original text"
    )
    workflow.refresh_from_db()
    assert workflow.version == 4 and not workflow.enabled
