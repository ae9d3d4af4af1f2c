"""The sandbox speaks both ways on the stack `make run` starts (`careflow_up`): a text goes
out, the person trying careflow opens the sandbox's page in Chromium, types the patient's
answer and clicks "Reply as patient"; careflow receives it through its signed inbound webhook
and the patient's page shows the conversation."""

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import sandbox_received, screenshot_path
from tests.browser.test_readme import log_in
from tests.deployments import CareflowUp

pytestmark = [pytest.mark.browser]

SHIP = """
from patients.models import Order
order = Order.objects.get(patient__first_name="James")
order.status = Order.Status.SHIPPED
order.tracking_number = "1ZREPLYASPATIENT"
order.save()
"""


def test_reply_as_patient_on_the_sandbox_page_reaches_the_patients_conversation(
    page: Page, stack: CareflowUp, tmp_path: Path
) -> None:
    shipped = stack.manage("shell", "-c", SHIP)
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr
    sandbox_received(stack, "1ZREPLYASPATIENT")

    page.goto(f"{stack.sandbox_url}/")
    question = page.locator("tr.outbound", has_text="1ZREPLYASPATIENT")
    expect(question).to_contain_text("+14155550102")
    question.get_by_role("textbox").fill("Got it, thanks! 📦")
    question.get_by_role("button", name="Reply as patient").click()

    answer = page.locator("tr.inbound", has_text="Got it, thanks!")
    expect(answer).to_contain_text("+14155550102")
    expect(answer).to_contain_text("webhook answered 200")
    expect(page.locator("tbody tr").first).to_have_class("inbound")  # newest first
    page.locator("table").screenshot(path=screenshot_path("sandbox-reply.png", tmp_path))

    log_in(page, stack, "clinic")
    page.goto("/admin/patients/patient/")
    page.locator("#result_list tbody tr", has_text="Wilson").locator("th a").click()
    chat = page.locator("#cf-conversation .cf-chat > li")
    expect(chat.first).to_contain_text("1ZREPLYASPATIENT")
    expect(chat.last).to_contain_text("Got it, thanks! 📦")
    expect(chat.last).to_have_attribute("data-direction", "received")
