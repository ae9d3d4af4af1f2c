"""Issue 16's "Done means", as a clinic admin does it on the stack `make run` starts
(`careflow_up`): build the appointment confirmation in the builder (text "Reply C to confirm"
→ wait for the reply → C: set the appointment confirmed), live-test it on the demo's test
patient, answer "C" from the sandbox page's "Reply as patient", and see the appointment
confirmed, the run's timeline with the branch taken, the patient's conversation with the
question, the reply, the branch and the write, and the audit trail's entry.

Its screenshot of the conversation is the README's docs/conversation.png
(CAREFLOW_SCREENSHOTS=1)."""

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import sandbox_received, screenshot_path
from tests.browser.test_readme import log_in
from tests.deployments import CareflowUp

pytestmark = [pytest.mark.browser]

QUESTION = "Hi {{customer.firstName}}, reply C to confirm your appointment."
SENT = "Hi Test, reply C to confirm your appointment."
TEST_PHONE = "+14155550199"
# Three days ahead: outside the reminder scan's lead, so only the live test asks.
BOOK = """
from datetime import timedelta
from django.utils import timezone
from patients.models import Appointment, Patient
patient = Patient.objects.get(first_name="Test", last_name="Patient")
Appointment.objects.create(
    organization=patient.organization, patient=patient,
    starts_at=timezone.now() + timedelta(days=3), provider_name="Dr. Rivera",
)
"""


def _reload_until(page: Page, selector: str, text: str, *, stack: CareflowUp) -> None:
    """Reload the page until `selector` contains `text` (the worker is asynchronous)."""
    deadline = time.monotonic() + 60
    while True:
        assert stack.process.poll() is None, f"careflow_up exited:\n{stack.tail()}"
        found = page.locator(selector)
        if found.count() and text in found.first.inner_text():
            return
        assert time.monotonic() < deadline, (
            f"{selector} never said {text!r}:\n{page.locator('#content-main').inner_text()}"
        )
        time.sleep(1)
        page.reload()


def test_the_appointment_confirmation_built_live_tested_and_answered_c(
    page: Page, stack: CareflowUp, tmp_path: Path
) -> None:
    booked = stack.manage("shell", "-c", BOOK)
    assert booked.returncode == 0, booked.stdout + booked.stderr
    log_in(page, stack, "clinic")

    # --- build it: the question, the wait, and what C does ------------------------------
    page.goto("/admin/workflows/workflow/add/")
    page.locator("#id_name").fill("Appointment confirmation")
    page.locator("#cf-trigger").select_option("appointment.reminder")
    page.get_by_role("button", name="Adapter action").click()
    question = page.locator("#cf-steps > li").nth(0)
    question.get_by_label("Adapter").select_option("twilio")
    question.get_by_label("Message").fill(QUESTION)
    question.get_by_label("To Phone").fill("{{customer.phone}}")
    page.get_by_role("button", name="Wait for reply").click()
    wait = page.locator("#cf-steps > li").nth(1)
    wait.get_by_label("Duration", exact=True).fill("1")
    wait.get_by_label("Duration: unit").select_option("days")
    branch = wait.locator("fieldset.cf-reply-branch").first
    branch.get_by_label("Label").fill("Confirm")
    branch.get_by_label("Keywords").fill("c, confirm, yes")
    page.get_by_role("button", name="Adapter action").click()
    write = page.locator("#cf-steps > li").nth(2)
    write.get_by_label("Adapter").select_option("records")
    write.get_by_label("Function").select_option("setAppointmentStatus")
    write.get_by_label("Status").select_option("confirmed")
    branch.get_by_label("Then").select_option("next")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    page.locator("input[name=_continue]").click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")

    # --- live test on the demo's test patient ---------------------------------------------
    expect(page.locator("#cf-patient")).to_contain_text("Test Patient")
    page.get_by_role("button", name="Live test…").click()
    page.get_by_role("button", name="Yes, run it").click()
    result = page.locator("#cf-test-result")
    expect(result).to_contain_text("Live test started for Test Patient")
    run_url = result.get_by_role("link", name="Open the run's timeline").get_attribute("href")
    assert run_url and re.fullmatch(r"/admin/workflows/run/\d+/change/", run_url), run_url

    sandbox_received(stack, SENT)

    # --- the patient answers "C" from the sandbox page ------------------------------------
    page.goto(f"{stack.sandbox_url}/")
    asked = page.locator("tr.outbound", has_text=SENT)
    expect(asked).to_contain_text(TEST_PHONE)
    asked.get_by_role("textbox").fill("C")
    asked.get_by_role("button", name="Reply as patient").click()
    expect(page.locator("tr.inbound").first).to_contain_text("webhook answered 200")

    # --- the run: succeeded, the wait's reply and branch, the write done ------------------
    page.goto(run_url)
    _reload_until(page, ".cf-timeline > li:nth-child(3) .cf-badge", "Succeeded", stack=stack)
    expect(page.locator(".field-status_badge")).to_contain_text("Succeeded")
    steps = page.locator(".cf-timeline > li")
    expect(steps).to_have_count(3)
    wait_facts = steps.nth(1).locator(".cf-reply-wait")
    expect(wait_facts).to_contain_text("Answered")
    expect(wait_facts).to_contain_text("“C”")
    expect(wait_facts).to_contain_text("Confirm")
    expect(steps.nth(2).locator(".cf-badge")).to_have_text("Succeeded")
    expect(steps.nth(2)).to_contain_text("confirmed")

    # --- the appointment is confirmed ----------------------------------------------------
    page.goto("/admin/patients/appointment/")
    expect(page.locator("#result_list tbody tr", has_text="Test Patient")).to_contain_text(
        "Confirmed"
    )

    # --- the patient's conversation: question, reply, branch, write -----------------------
    page.goto("/admin/patients/patient/")
    page.locator("#result_list tbody tr", has_text="Test Patient").locator("th a").click()
    conversation = page.locator("#cf-conversation")
    sent = conversation.locator(".cf-chat > li[data-direction=sent]", has_text=SENT)
    asked_facts = sent.locator(".cf-chat-question")
    expect(asked_facts).to_have_attribute("data-wait-state", "answered")
    expect(asked_facts.locator(".cf-chat-reply")).to_have_text("C")
    expect(asked_facts.locator(".cf-chat-branch")).to_have_text("Confirm")
    expect(asked_facts.locator(".cf-chat-writes")).to_contain_text(
        re.compile(r"Set the appointment of .+ to confirmed", re.IGNORECASE)
    )
    expect(sent.get_by_role("link", name="Appointment confirmation, step 1")).to_have_attribute(
        "href", run_url
    )
    reply = conversation.locator(".cf-chat > li[data-direction=received]").last
    expect(reply).to_contain_text("C")
    expect(reply.locator(".cf-chat-answer")).to_contain_text(
        "Answer to Appointment confirmation, step 2: branch “Confirm”"
    )
    conversation.screenshot(path=screenshot_path("conversation.png", tmp_path))

    # --- the audit trail names the run as who confirmed it --------------------------------
    page.goto("/admin/patients/auditentry/")
    entry = page.locator("#result_list tbody tr", has_text="Appointment confirmation").first
    expect(entry).to_contain_text(re.compile(r"workflow “Appointment confirmation” run \d+"))
    expect(entry).to_contain_text("appointment", ignore_case=True)
    expect(entry).to_contain_text("status")
