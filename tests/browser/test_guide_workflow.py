"""The integration guide's example, entirely through the admin in a real browser, as a clinic
admin would do it: build it, dry-run it, live-test it, enable it, then an order ships and the
SMS is delivered, through Redis, a real Celery worker and the Twilio sandbox."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from integrations.models import OutboundMessage
from integrations.policy import SEND_CHECKS
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order
from tests.browser.conftest import clinic_admin
from tests.conftest import sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    OrganizationFactory,
    PatientFactory,
)
from workflows.models import Run, Workflow

pytestmark = [pytest.mark.browser, pytest.mark.integration]
Status = OutboundMessage.Status
MESSAGE = "Hi {{customer.firstName}}, your order {{order.number}} has shipped!"


def _pick_variable(page: Page, search: str, path: str) -> None:
    page.locator("#cf-var-search").fill(search)
    page.locator(f"button.cf-var[data-path='{path}']").click()


def test_build_test_enable_and_fire_the_guides_workflow(
    admin_page: Callable[[Any], Page], worker: Any, sandbox: SandboxServer, tmp_path: Path
) -> None:
    integration = sandbox_account(
        sandbox, IntegrationFactory(organization=OrganizationFactory(name="Sunrise Telehealth"))
    )
    clinic = integration.organization
    tester = PatientFactory(
        organization=clinic,
        first_name="Test",
        last_name="Patient",
        phone="+14155550199",
        is_test=True,
    )
    ConsentFactory(patient=tester)
    OrderFactory(patient=tester, number="9001", status=Order.Status.AWAITING_SHIPMENT)
    maria = PatientFactory(
        organization=clinic, first_name="Maria", last_name="Garcia", phone="+14155550101"
    )
    ConsentFactory(patient=maria)
    order = OrderFactory(patient=maria, number="5001", status=Order.Status.AWAITING_SHIPMENT)

    page = admin_page(clinic_admin(clinic))
    page.goto("/admin/workflows/workflow/add/")

    # --- build: name, trigger, Adapter → Twilio → sendSMS, parameters ---------------------
    page.locator("#id_name").fill("Order shipped SMS")
    page.locator("#cf-trigger").select_option("order.shipped")
    expect(page.locator("#cf-trigger-description")).to_contain_text("handed to the carrier")
    page.get_by_role("button", name="Adapter action").click()
    step = page.locator("#cf-steps > li").first
    step.get_by_label("Adapter").select_option("twilio")
    expect(step.get_by_label("Function")).to_have_value("sendSMS")  # its only function

    message = step.get_by_label("Message")
    message.click()
    message.press_sequentially("Hi ")
    _pick_variable(page, "firstName", "customer.firstName")
    message.press_sequentially(", your order ")
    _pick_variable(page, "order.number", "order.number")
    message.press_sequentially(" has shipped!")
    expect(message).to_have_value(MESSAGE)

    step.get_by_label("To Phone").click()
    _pick_variable(page, "phone", "customer.phone")
    expect(step.get_by_label("To Phone")).to_have_value("{{customer.phone}}")
    # the clinic's one approved number, chosen already
    expect(step.get_by_label("From Phone", exact=True)).to_have_value("+15005550006")

    preview = step.locator(".cf-preview")
    expect(preview).to_contain_text("Hi Test, your order 9001 has shipped!")
    expect(preview.locator(".cf-preview-numbers")).to_have_text("37 characters · 1 segment · GSM-7")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    expect(page.locator("#cf-diagram svg")).to_contain_text("Twilio → Send SMS")
    page.locator("#toggle-nav-sidebar").click()  # more room, as many admins keep it
    page.locator("#content-main").screenshot(path=tmp_path / "builder.png")

    page.locator("input[name=_continue]").click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    workflow = Workflow.objects.get()
    assert (workflow.trigger, workflow.enabled, workflow.organization) == (
        "order.shipped",
        False,
        clinic,
    )
    assert [(s.adapter, s.function, s.parameters) for s in workflow.steps.all()] == [
        (
            "twilio",
            "sendSMS",
            {"message": MESSAGE, "to": "{{customer.phone}}", "from": "+15005550006"},
        )
    ]

    # --- dry run on the test patient: the decision and every check -----------------------
    page.locator("#cf-dry-run").click()
    result = page.locator("#cf-test-result")
    expect(result).to_contain_text("Dry run for Test Patient")
    expect(result).to_contain_text("would send now")
    # Every send-time check passes, one row each (integrations.policy.SEND_CHECKS).
    expect(result.locator(".cf-check-passed")).to_have_count(len(SEND_CHECKS))
    expect(result).to_contain_text("transactional opt-in")
    page.locator("#cf-test-section").screenshot(path=tmp_path / "dry-run.png")
    assert not OutboundMessage.objects.exists()

    # --- live test: really texts the test patient, marked as a test -----------------------
    page.locator("#cf-live-test").click()
    expect(page.locator("#cf-live-who")).to_contain_text("Test Patient")
    page.locator("#cf-live-go").click()
    expect(result).to_contain_text("Live test started for Test Patient")
    test_message = wait_for(
        lambda: OutboundMessage.objects.filter(is_test=True, status=Status.DELIVERED).first(),
        what="the live test SMS to be delivered",
    )
    assert (test_message.to, test_message.body) == (
        "+14155550199",
        "Hi Test, your order 9001 has shipped!",
    )
    with page.expect_navigation():
        result.get_by_role("link", name="Open the run's timeline").click()
    expect(page.locator(".cf-timeline")).to_contain_text("Hi Test, your order 9001 has shipped!")
    expect(page.locator(".cf-timeline .cf-badge").first).to_have_text("Succeeded")

    # --- enable, with its confirmation ---------------------------------------------------
    page.goto(f"/admin/workflows/workflow/{workflow.pk}/change/")
    page.locator("#cf-enable").click()
    expect(page.locator("#content-main")).to_contain_text("every order.shipped event")
    page.get_by_role("button", name="Yes, enable it").click()
    expect(page.locator(".messagelist")).to_contain_text("is enabled")
    expect(page.locator("#cf-status")).to_contain_text("Enabled.")

    # --- an order ships; the SMS is delivered and shows in the message log ----------------
    order.status = Order.Status.SHIPPED
    order.save()
    delivered = wait_for(
        lambda: OutboundMessage.objects.filter(to="+14155550101", status=Status.DELIVERED).first(),
        what="Maria's SMS to be delivered",
    )
    assert delivered.body == "Hi Maria, your order 5001 has shipped!"
    assert delivered.is_test is False
    page.goto("/admin/integrations/outboundmessage/")
    row = page.locator("#result_list tbody tr", has_text="+14155550101")
    expect(row).to_contain_text("Delivered")
    expect(row).to_contain_text("Hi Maria, your order 5001 has shipped!")
    assert Run.objects.filter(workflow=workflow, is_test=False, status="succeeded").count() == 1
