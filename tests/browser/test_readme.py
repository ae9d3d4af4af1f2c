"""The README's front door, as a new user meets it: the real `careflow_up` stack (what
`make run` starts: SQLite, the filesystem broker, a Celery worker and beat, the Twilio
sandbox, the web server with DEBUG off) in processes of its own, then the README's
walk-through in Chromium with the printed `clinic` login.

The test live server serves static files by itself; this stack does not, so only this test
sees what a user sees: an admin without its CSS, or a builder that never loads.
"""

import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from integrations.management.commands.careflow_demo import DEMO_ACCOUNT_SID, DEMO_FROM
from tests.browser.conftest import screenshot_path
from tests.deployments import CareflowUp

pytestmark = [pytest.mark.browser]


def log_in(page: Page, stack: CareflowUp, user: str) -> None:
    assert user in stack.logins, f"careflow_up printed no {user!r} login:\n{stack.tail()}"
    page.goto("/admin/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(stack.logins[user])
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#user-tools")).to_contain_text(user.upper(), ignore_case=True)


def assert_styled(page: Page) -> None:
    """The admin's own stylesheet is applied: its variables are defined and the header
    takes its colour from them (unstyled, both are empty/transparent)."""
    primary = page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--primary').trim()"
    )
    header = page.evaluate("getComputedStyle(document.querySelector('#header')).backgroundColor")
    assert primary == "#79aec8", f"the admin's CSS is not applied (--primary = {primary!r})"
    assert header not in ("", "rgba(0, 0, 0, 0)", "transparent"), header


def open_order(page: Page, patient: str) -> None:
    page.goto("/admin/patients/order/")
    page.locator("#result_list tbody tr", has_text=patient).locator("th a").click()


def ship(page: Page, tracking: str) -> None:
    page.get_by_label("Status").select_option(label="Shipped")
    page.get_by_label("Tracking number").fill(tracking)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")


def message_row_with(
    page: Page, stack: CareflowUp, phone: str, text: str, *, timeout: float = 90
) -> str:
    """Reload the message log until the row for phone contains text, as a user would."""
    deadline = time.monotonic() + timeout
    row = ""
    while time.monotonic() < deadline:
        assert stack.process.poll() is None, f"careflow_up exited:\n{stack.tail()}"
        page.goto("/admin/integrations/outboundmessage/")
        rows = page.locator("#result_list tbody tr", has_text=phone)
        row = rows.first.inner_text() if rows.count() else ""
        if text in row:
            return row
        time.sleep(1)
    raise AssertionError(f"no message row for {phone} says {text!r} (last: {row!r})")


def patient_replies(page: Page, stack: CareflowUp, *, phone: str, body: str) -> None:
    """The patient texts the clinic's number: the sandbox posts a signed inbound webhook to
    the URL the integration page tells clinics to give Twilio."""
    page.goto("/admin/integrations/integration/")
    page.locator("#result_list tbody tr", has_text="Twilio").locator("th a").first.click()
    webhook = page.locator(".field-inbound_webhook_url .readonly").inner_text().strip()
    assert re.fullmatch(
        rf"{re.escape(stack.url)}/webhooks/twilio/[0-9a-f-]{{36}}/inbound/", webhook
    )
    request = urllib.request.Request(  # noqa: S310 — the stack's own loopback sandbox
        f"{stack.sandbox_url}/_sandbox/inbound",
        data=json.dumps(
            {
                "account_sid": DEMO_ACCOUNT_SID,
                "from": phone,
                "to": DEMO_FROM,
                "body": body,
                "url": webhook,
            }
        ).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
        assert response.status == 200


def test_the_readme_walk_through_on_the_make_run_stack(
    page: Page, stack: CareflowUp, tmp_path: Path
) -> None:
    # 1. Open the admin and log in as `clinic`: the login page is already styled.
    page.goto("/admin/")
    assert_styled(page)
    log_in(page, stack, "clinic")
    assert_styled(page)

    # 2. Workflows › Workflows › Order shipped SMS opens in the visual builder, not the
    #    JSON fallback.
    page.locator("#content-main tr.model-workflow th a").click()
    page.locator("#result_list").get_by_role("link", name="Order shipped SMS").click()
    builder = page.locator("#careflow-builder")
    expect(builder).to_be_visible()
    expect(page.locator("#cf-trigger")).to_have_value("order.shipped")
    step = page.locator("#cf-steps > li").first
    expect(step.get_by_label("Message")).to_have_value(
        re.compile(r"your order \{\{order.number\}\}")
    )
    expect(step.get_by_label("To Phone")).to_have_value("{{customer.phone}}")
    expect(page.locator("#cf-diagram svg")).to_contain_text("Twilio → Send SMS")
    page.locator("#toggle-nav-sidebar").click()
    page.locator("#content-main").screenshot(path=screenshot_path("builder.png", tmp_path))
    page.locator("#cf-dry-run").click()
    expect(page.locator("#cf-test-result")).to_contain_text("Dry run for Test Patient")
    page.locator("#cf-test-section").screenshot(path=screenshot_path("dry-run.png", tmp_path))
    page.locator("#toggle-nav-sidebar").click()

    # 3–4. Maria's order ships; her SMS goes out and the sandbox reports it delivered.
    open_order(page, "Maria Garcia")
    ship(page, "1Z999AA10123456784")
    row = message_row_with(page, stack, "+14155550101", "Delivered")
    assert "Hi Maria, your order SR-" in row and "has shipped! Tracking: 1Z999" in row

    # 5. Noah never consented: nothing is sent, and the log says why.
    open_order(page, "Noah Kim")
    ship(page, "1Z999AA10123456785")
    row = message_row_with(page, stack, "+14155550103", "Skipped")
    assert "no SMS consent" in row
    page.goto("/admin/workflows/run/")
    runs = page.locator("#result_list tbody tr")
    expect(runs).to_have_count(2)
    expect(runs.filter(has_text="Maria Garcia")).to_contain_text("order.shipped")

    # Maria answers; her page shows her consent and the conversation, both ways.
    patient_replies(page, stack, phone="+14155550101", body="Thank you! Can't wait.")
    page.goto("/admin/patients/patient/")
    page.locator("#result_list tbody tr", has_text="Garcia").locator("th a").click()
    consent = page.locator("#cf-consent")
    expect(consent.locator("[data-purpose=transactional]")).to_contain_text("Opted in")
    expect(consent.locator("[data-purpose=marketing]")).to_contain_text("Never asked")
    chat = page.locator("#cf-conversation .cf-chat > li")
    expect(chat).to_have_count(2)
    expect(chat.first).to_contain_text("has shipped!")
    expect(chat.first).to_contain_text("Delivered")
    expect(chat.last).to_contain_text("Thank you! Can't wait.")
    page.locator(".cf-patient-panels").screenshot(path=screenshot_path("patient.png", tmp_path))

    # The clinic home counts the day, each number linking to its rows.
    page.goto("/admin/")
    for tile, count in {"sent": "1", "delivered": "1", "failed": "0", "skipped": "1"}.items():
        expect(page.locator(f".cf-home-tile[data-tile='{tile}'] .cf-home-count")).to_have_text(
            count
        )
    page.screenshot(path=screenshot_path("clinic-home.png", tmp_path), full_page=True)

    # A filter built by clicking, on the demo workflow (looked at, not saved).
    page.goto("/admin/workflows/workflow/")
    page.locator("#result_list").get_by_role("link", name="Order shipped SMS").click()
    page.get_by_role("button", name="Add a condition to the filter").click()
    page.get_by_label("Condition 1: field", exact=True).select_option("order.totalAmount")
    page.get_by_label("Condition 1: operator", exact=True).select_option("gte")
    page.get_by_label("Condition 1: value", exact=True).fill("50")
    page.get_by_role("button", name="Add a group to the filter").click()
    page.get_by_label("Condition 2.1: field", exact=True).select_option("order.coupon")
    page.get_by_label("Condition 2.1: operator", exact=True).select_option("in")
    page.get_by_label("Condition 2.1: value", exact=True).fill("WELCOME5, VIP10")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    expect(page.locator("#cf-diagram svg")).to_contain_text("only if order.totalAmount ≥ 50")
    page.locator("#toggle-nav-sidebar").click()
    page.locator("section[aria-labelledby=cf-filter-heading]").screenshot(
        path=screenshot_path("filter-builder.png", tmp_path)
    )
