"""The builder's SMS preview in a real browser with the clinic's short links on: the link is
shown and counted as short as it will be sent, and the preview says so.
docs/builder-short-links.png is taken here (CAREFLOW_SCREENSHOTS=1)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from integrations.models import MessagingPolicy
from tests.browser.conftest import builder_open, screenshot_path
from tests.factories import IntegrationFactory, SmsStepFactory, WorkflowFactory
from workflows.models import Workflow

pytestmark = pytest.mark.browser
LONG = "https://carrier.example/track/{{order.number}}?utm_source=sms&utm_medium=careflow"
SHORT = "https://go.sunrise.example/l/xxxxxxxxxx"


@pytest.fixture
def workflow(transactional_db: Any) -> Workflow:
    integration = IntegrationFactory()
    MessagingPolicy.objects.update_or_create(
        organization=integration.organization,
        defaults={"short_links_enabled": True, "short_link_domain": "https://go.sunrise.example"},
    )
    workflow = WorkflowFactory(organization=integration.organization, enabled=False)
    SmsStepFactory(
        workflow=workflow,
        parameters={
            "message": f"Track it: {LONG}",
            "to": "{{customer.phone}}",
            "from": "+15005550006",
        },
    )
    return workflow


def test_the_preview_counts_links_as_short_as_they_are_sent(
    admin_page: Callable[[Any], Page], workflow: Workflow, tmp_path: Path
) -> None:
    page = builder_open(admin_page, workflow)
    preview = page.locator("#cf-steps > li").first.locator(".cf-preview")
    expect(preview.locator(".cf-preview-text")).to_have_text(f"Track it: {SHORT}")
    characters = len(f"Track it: {SHORT}")
    expect(preview.locator(".cf-preview-numbers")).to_have_text(
        f"{characters} characters · 1 segment · GSM-7"
    )
    expect(preview.locator(".cf-preview-short-links")).to_have_text(
        f"Links are shortened when sent: 1 link, it is ~{len(SHORT)} characters "
        "(https://go.sunrise.example/l/…), counted as such."
    )
    preview.screenshot(path=str(screenshot_path("builder-short-links.png", tmp_path)))
