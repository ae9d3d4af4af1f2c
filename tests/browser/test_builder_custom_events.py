"""A clinic's custom event type in the builder, in a real browser: offered as a trigger, its
data's variables listed (from the clinic's data reference) and accepted in a message; another
clinic's builder offers neither."""

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import builder_open, clinic_admin
from tests.factories import (
    CustomEventTypeFactory,
    IntegrationFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import Workflow

pytestmark = pytest.mark.browser

CUSTOM = "custom.lab_results_ready"


@pytest.fixture
def workflow(transactional_db: Any) -> Workflow:
    integration = IntegrationFactory()
    CustomEventTypeFactory(organization=integration.organization)
    workflow = WorkflowFactory(organization=integration.organization, trigger=CUSTOM, enabled=False)
    SmsStepFactory(
        workflow=workflow,
        parameters={
            "message": "Kit {{data.kitId}} is in",
            "to": "{{customer.phone}}",
            "from": "+15005550006",
        },
    )
    return workflow


def test_a_custom_types_variables_are_offered_in_its_clinics_builder(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)  # no problem with {{data.kitId}}
    expect(page.locator(f'#cf-trigger option[value="{CUSTOM}"]')).to_have_count(1)
    expect(page.locator('#cf-variables .cf-var[data-path="data.kitId"]')).to_have_count(1)
    expect(page.locator('#cf-variables .cf-var[data-path="customer.firstName"]')).to_have_count(1)
    message = page.locator("#cf-steps > li").first.get_by_label("Message")
    message.fill("Kit {{data.kitid}} is in")
    expect(
        page.locator("#cf-steps > li").first.locator("[data-errors-for=message]")
    ).to_contain_text("did you mean {{data.kitId}}")


def test_another_clinics_builder_does_not_offer_it(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    other = WorkflowFactory(enabled=False)
    page = admin_page(clinic_admin(other.organization))
    page.goto(f"/admin/workflows/workflow/{other.pk}/change/")
    expect(page.locator("#cf-trigger option[value='order.shipped']")).to_have_count(1)
    expect(page.locator(f'#cf-trigger option[value="{CUSTOM}"]')).to_have_count(0)
