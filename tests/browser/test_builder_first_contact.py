"""The builder's SMS preview in a real browser: the clinic's first-contact wording shown and
counted, a Media URL previewed as a link (never loaded), a bad one refused at save with its
reason, and a good one saved with the step. docs/builder-first-contact.png is taken here
(CAREFLOW_SCREENSHOTS=1)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from integrations.models import MessagingPolicy
from tests.browser.conftest import builder_open, builder_save, screenshot_path
from tests.factories import IntegrationFactory, SmsStepFactory, WorkflowFactory
from workflows.models import Workflow

pytestmark = pytest.mark.browser


@pytest.fixture
def workflow(transactional_db: Any) -> Workflow:
    integration = IntegrationFactory()
    MessagingPolicy.objects.update_or_create(
        organization=integration.organization,
        defaults={
            "first_contact_enabled": True,
            "brand_name": "Sunrise Telehealth",
            "first_contact_every_days": 30,
        },
    )
    workflow = WorkflowFactory(organization=integration.organization, enabled=False)
    SmsStepFactory(
        workflow=workflow,
        parameters={
            "message": "Order {{order.number}} shipped.",
            "to": "{{customer.phone}}",
            "from": "+15005550006",
        },
    )
    return workflow


def test_the_preview_counts_the_wording_and_shows_media_as_a_link(
    admin_page: Callable[[Any], Page], workflow: Workflow, tmp_path: Path
) -> None:
    page = builder_open(admin_page, workflow)
    step = page.locator("#cf-steps > li").first
    preview = step.locator(".cf-preview")
    expect(preview.locator(".cf-preview-text")).to_have_text(
        "Sunrise Telehealth: Order 100234 shipped. Reply STOP to opt out."
    )
    expect(preview.locator(".cf-preview-numbers")).to_have_text("64 characters · 1 segment · GSM-7")
    expect(preview.locator(".cf-preview-first-contact")).to_contain_text(
        "again every 30 days. Without them: 21 characters, 1 segment."
    )

    media = step.get_by_label("Media URL")
    media.fill("http://cdn.example.com/{{order.number}}.pdf")
    expect(preview.locator(".cf-warning").last).to_contain_text(
        "Media URL: the media URL must start with https://"
    )
    media.fill("http://cdn.example.com/instructions.pdf")
    expect(page.locator("#cf-problems")).to_contain_text("1 problem")
    expect(step.locator("#cf-s1-media-errors")).to_contain_text("must start with https://")

    media.fill("https://cdn.example.com/{{order.number}}.pdf")
    expect(preview.locator(".cf-preview-numbers")).to_have_text("64 characters · 1 MMS · GSM-7")
    link = preview.locator(".cf-preview-media a")
    expect(link).to_have_attribute("href", "https://cdn.example.com/100234.pdf")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    assert preview.locator("img").count() == 0  # the admin never loads the media itself
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    step.screenshot(path=str(screenshot_path("builder-first-contact.png", tmp_path)))

    builder_save(page)
    saved = workflow.steps.get()
    assert saved.parameters["media"] == "https://cdn.example.com/{{order.number}}.pdf"
