"""The enrollment rule in a real browser: the days box shows only for "per N days", a bad
number is reported live on the enrollment section, a good one is saved with the workflow,
and the dry run says why the test patient would not enroll."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from patients.models import Order
from tests.browser.conftest import builder_open, builder_save
from tests.factories import (
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.engine import event_dispatch
from workflows.models import Enrollment, Event, Workflow

# No worker: the test dispatches its event itself (a worker's relay would dispatch it first).
pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("no_worker")]


@pytest.fixture
def workflow(transactional_db: Any) -> Workflow:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization, enabled=False)
    SmsStepFactory(workflow=workflow)
    return workflow


def test_set_a_period_rule_with_a_live_error_then_save_and_dry_run(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    patient = PatientFactory(organization=workflow.organization, is_test=True, first_name="Tess")
    order = OrderFactory(
        patient=patient, organization=patient.organization, status=Order.Status.AWAITING_SHIPMENT
    )
    order.status = Order.Status.SHIPPED
    order.save()
    page = builder_open(admin_page, workflow)
    rule = page.get_by_label("Start a run")
    days = page.get_by_label("N days")
    expect(rule).to_have_value("every")
    expect(days).to_be_hidden()

    rule.select_option("period")
    expect(days).to_be_visible()
    expect(page.locator("#cf-enrollment-errors")).to_contain_text(
        "say after how many days a patient may enroll again"
    )
    expect(page.locator("#cf-problems")).to_contain_text("1 problem to fix")
    days.fill("5000")
    expect(page.locator("#cf-enrollment-errors")).to_contain_text(
        "the number of days must be between 1 and 3650"
    )
    days.fill("30")
    page.get_by_label("Not while the patient has a run of this workflow in progress").check()
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    builder_save(page)
    workflow.refresh_from_db()
    assert (workflow.enrollment, workflow.enrollment_days, workflow.enrollment_exclusive) == (
        "period",
        30,
        True,
    )
    expect(page.get_by_label("Start a run")).to_have_value("period")
    expect(page.get_by_label("N days")).to_have_value("30")

    # The patient enrolled 2 days ago: the dry run says they would not now.
    workflow.enabled = True
    workflow.save()
    event = Event.objects.get(type="order.shipped")
    (run_id,) = event_dispatch(event_id=event.pk)
    Enrollment.objects.update(enrolled_at=timezone.now() - timedelta(days=2))
    page.get_by_label("Test patient").select_option(str(patient.pk))
    page.locator("#cf-dry-run").click()
    expect(page.locator(".cf-enrollment")).to_contain_text(
        f"Would not enroll: enrolled 2 days ago (run {run_id}); at most once per 30 days"
    )
