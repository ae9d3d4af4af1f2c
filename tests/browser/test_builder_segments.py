"""The builder's SMS preview counts segments as Twilio does (the server counts them; the page
shows the count): a part never ends inside an escape pair, a surrogate pair or a grapheme.
(A bare ESC, UCS-2 at Twilio, cannot reach the preview: the builder refuses control
characters in a step.)"""

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import builder_open
from tests.factories import IntegrationFactory, SmsStepFactory, WorkflowFactory
from tests.integrations.segment_cases import FAMILY
from workflows.models import Workflow

pytestmark = pytest.mark.browser


@pytest.fixture
def workflow(transactional_db: Any) -> Workflow:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization, enabled=False)
    SmsStepFactory(
        workflow=workflow,
        parameters={"message": "Hello", "to": "{{customer.phone}}", "from": "+15005550006"},
    )
    return workflow


@pytest.mark.parametrize(
    ("body", "numbers"),
    [
        ("a" * 152 + "€" + "a" * 152, "305 characters · 3 segments · GSM-7"),
        ("a" * 153 + "€" + "a" * 151, "305 characters · 2 segments · GSM-7"),
        ("😀" * 67, "67 characters · 3 segments · UCS-2"),
        ("’" * 62 + FAMILY + "’" * 61, "130 characters · 3 segments · UCS-2"),
    ],
    ids=["euro at the boundary", "euro inside a part", "67 emoji", "ZWJ family at the boundary"],
)
def test_the_preview_counts_segments_as_twilio(
    admin_page: Callable[[Any], Page], workflow: Workflow, body: str, numbers: str
) -> None:
    page = builder_open(admin_page, workflow)
    step = page.locator("#cf-steps > li").first
    step.get_by_label("Message").fill(body)
    expect(step.locator(".cf-preview .cf-preview-numbers")).to_have_text(numbers)
