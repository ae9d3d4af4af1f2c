"""A "Wait for reply" built in a real browser, as a clinic admin builds the appointment
confirmation: send SMS → wait for reply (C confirm / X cancel / R reschedule, no reply → a
second reminder), its branches shown as a tree in the editor and the diagram, a bad pattern
refused on its wait, saved, and dry-run with the reply "c." (the Confirm branch) and with none
(the second reminder), with nothing sent."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from integrations.models import OutboundMessage
from tests.browser.conftest import builder_open, clinic_admin, screenshot_path
from tests.factories import (
    AppointmentFactory,
    ConsentFactory,
    IntegrationFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import Step, Workflow

pytestmark = pytest.mark.browser

QUESTION = "Reply C to confirm, X to cancel, R to reschedule"
# Steps 3 to 6: what each branch does.
AFTER = [
    "Thanks, see you then",
    "Cancelled",
    "We will call you to reschedule",
    "Reminder: " + QUESTION,
]


def _sms_step(page: Page, message: str) -> None:
    page.get_by_role("button", name="Adapter action").click()
    step = page.locator("#cf-steps > li").last
    step.get_by_label("Adapter").select_option("twilio")
    step.get_by_label("Message").fill(message)
    step.get_by_label("To Phone").fill("{{customer.phone}}")


def _branch(wait: Locator, position: int) -> Locator:
    return wait.locator("fieldset.cf-reply-branch").nth(position)


def _keywords_branch(wait: Locator, position: int, label: str, words: str, then: str) -> None:
    branch = _branch(wait, position)
    branch.get_by_label("Label").fill(label)
    branch.get_by_label("Keywords").fill(words)
    branch.get_by_label("Then").select_option(then)


def test_build_the_appointment_confirmation_and_dry_run_its_branches(
    admin_page: Callable[[Any], Page], transactional_db: Any, tmp_path: Path
) -> None:
    integration = IntegrationFactory()
    clinic = integration.organization
    tester = PatientFactory(
        organization=clinic, first_name="Test", last_name="Patient", is_test=True
    )
    ConsentFactory(patient=tester)
    AppointmentFactory(patient=tester)

    page = admin_page(clinic_admin(clinic))
    page.goto("/admin/workflows/workflow/add/")
    page.locator("#id_name").fill("Appointment confirmation")
    page.locator("#cf-trigger").select_option("appointment.reminder")

    # --- the question, the wait, and what each answer leads to -----------------------------
    _sms_step(page, QUESTION)
    expect(page.locator("#cf-reply-test")).to_be_hidden()  # no wait: nothing to simulate
    page.get_by_role("button", name="Wait for reply").click()
    expect(page.locator("#cf-reply-test")).to_be_visible()
    for message in AFTER:
        _sms_step(page, message)
    wait = page.locator("#cf-steps > li").nth(1)
    expect(wait.locator(".cf-step-title")).to_have_text("Wait for reply")
    expect(wait.get_by_label("Wait up to")).to_have_value("duration")
    wait.get_by_label("Duration", exact=True).fill("1")
    wait.get_by_label("Duration: unit").select_option("days")

    # the first branch is there to fill in; two more are added from the keyboard
    _keywords_branch(wait, 0, "Confirm", "c, confirm, yes", "next")
    add = wait.get_by_role("button", name="Add a branch")
    add.focus()
    page.keyboard.press("Enter")
    expect(_branch(wait, 1).get_by_label("Label")).to_be_focused()
    _keywords_branch(wait, 1, "Cancel", "x, cancel", "4")
    # CANCEL is an opt-out word: it unsubscribes, so it can never be an answer
    errors = wait.locator("[data-errors-for=branches]")
    expect(errors).to_contain_text("branch “Cancel”: “cancel” is an opt-out keyword")
    _branch(wait, 1).get_by_label("Keywords").fill("x, n")
    expect(errors).to_be_empty()
    add.click()
    _keywords_branch(wait, 2, "Reschedule", "r, reschedule", "5")
    otherwise = wait.locator("fieldset.cf-otherwise")
    otherwise.get_by_label("Then").select_option("6")
    otherwise.get_by_label("Re-ask once with (optional)").fill("Sorry, please reply C, X or R.")
    wait.locator("fieldset.cf-no-reply").get_by_label("Then").select_option("6")

    # --- a bad pattern is refused on its wait, with what is wrong ------------------------
    add.click()
    bad = _branch(wait, 3)
    bad.get_by_label("Label").fill("Code")
    bad.get_by_label("The reply is").select_option("pattern")
    _branch(wait, 3).get_by_label("Pattern").fill("([0-9")
    expect(errors).to_contain_text("branch “Code”: the pattern is not valid")
    expect(page.locator("#cf-problems")).to_contain_text("1 problem to fix")
    expect(wait).to_have_class("cf-step cf-step-problem")
    page.locator("input[name=_continue]").click()
    expect(page.locator(".errornote")).to_be_visible()
    assert not Workflow.objects.exists()  # nothing saved
    # the refused save kept everything typed; the bad branch goes, by keyboard
    wait = page.locator("#cf-steps > li").nth(1)
    remove = _branch(wait, 3).get_by_role("button", name="Remove branch 4")
    remove.focus()
    page.keyboard.press("Enter")
    expect(wait.locator("fieldset.cf-reply-branch")).to_have_count(3)
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")

    # --- the tree: each branch's steps under it, in the editor and the diagram ------------
    captions = page.locator("#cf-steps > li .cf-branch-caption")
    expect(captions.nth(2)).to_have_text("If the reply to step 2 is: Confirm")
    expect(captions.nth(3)).to_have_text("If the reply to step 2 is: Cancel")
    expect(captions.nth(4)).to_have_text("If the reply to step 2 is: Reschedule")
    expect(captions.nth(5)).to_have_text("If the reply to step 2 is: anything else · no reply")
    expect(captions.nth(0)).to_be_hidden()
    expect(page.locator("#cf-steps > li").nth(3)).to_have_attribute(
        "aria-label", "Step 4 (in a branch of step 2): Twilio → Send SMS"
    )
    expect(page.locator("#cf-steps > li").nth(3)).to_have_class("cf-step cf-in-branch")
    diagram = page.locator("#cf-diagram svg")
    expect(diagram.locator("title")).to_contain_text(
        "2. Wait for reply (Confirm → step 3; Cancel → step 4; Reschedule → step 5; "
        "anything else, no reply → step 6)"
    )
    expect(diagram).to_contain_text("anything else, no reply")
    expect(diagram).to_contain_text("Wait up to 1 day for a reply")
    page.locator("#toggle-nav-sidebar").click()  # more room, as many admins keep it
    page.locator("#content-main").screenshot(path=screenshot_path("builder-reply.png", tmp_path))

    page.locator("input[name=_continue]").click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    saved = Step.objects.get(workflow__name="Appointment confirmation", position=2)
    assert saved.type == "reply"
    assert saved.parameters == {
        "kind": "duration",
        "seconds": "86400",
        "branches": [
            {
                "label": "Confirm",
                "match": "keywords",
                "keywords": ["c", "confirm", "yes"],
                "goto": "next",
            },
            {"label": "Cancel", "match": "keywords", "keywords": ["x", "n"], "goto": 4},
            {
                "label": "Reschedule",
                "match": "keywords",
                "keywords": ["r", "reschedule"],
                "goto": 5,
            },
        ],
        "otherwise": {"goto": 6, "reask": "Sorry, please reply C, X or R."},
        "no_reply": {"goto": 6},
    }
    # reloaded, the builder shows the tree again
    expect(page.locator("#cf-steps > li .cf-branch-caption").nth(2)).to_have_text(
        "If the reply to step 2 is: Confirm"
    )

    # --- dry run: "c." takes Confirm, which runs step 3 and ends --------------------------
    page.get_by_label("What the patient replies").fill("c.")
    page.locator("#cf-dry-run").click()
    result = page.locator("#cf-test-result")
    expect(result).to_contain_text("Dry run for Test Patient")
    reply_step = result.locator(".cf-path-step").nth(1)
    expect(reply_step).to_contain_text("Step 2 · Wait for reply")
    expect(reply_step.locator(".cf-branch-taken")).to_have_text(
        "Reply: “c.” → branch Confirm", use_inner_text=True
    )
    expect(reply_step).to_contain_text("takes the “Confirm” branch: step 3, then the run ends")
    expect(result.locator(".cf-path-step")).to_have_count(3)
    expect(result.locator(".cf-path-step").nth(2)).to_contain_text(AFTER[0])
    page.locator("#cf-test-section").screenshot(path=screenshot_path("dry-run-reply.png", tmp_path))

    # --- and with no reply: the second reminder ------------------------------------------
    page.get_by_label("No reply (the wait times out)").check()
    expect(page.get_by_label("What the patient replies")).to_be_disabled()
    page.locator("#cf-dry-run").click()
    expect(reply_step.locator(".cf-branch-taken")).to_contain_text("Reply: none → branch no reply")
    expect(result.locator(".cf-path-step")).to_have_count(3)
    expect(result.locator(".cf-path-step").nth(2)).to_contain_text("Step 6")
    assert not OutboundMessage.objects.exists()  # a dry run sends nothing


def test_branches_follow_their_steps_when_steps_are_removed_or_moved(
    admin_page: Callable[[Any], Page], transactional_db: Any
) -> None:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(
        organization=integration.organization, trigger="appointment.reminder", enabled=False
    )
    sms = {"message": "Hi", "to": "{{customer.phone}}", "from": "+15005550006"}
    SmsStepFactory(workflow=workflow, position=1, parameters=sms)
    SmsStepFactory(
        workflow=workflow,
        position=2,
        type="reply",
        adapter="",
        function="",
        parameters={
            "kind": "duration",
            "seconds": "3600",
            "branches": [
                {"label": "Confirm", "match": "keywords", "keywords": ["c"], "goto": "next"},
                {"label": "Cancel", "match": "keywords", "keywords": ["x"], "goto": 4},
            ],
            "otherwise": {"goto": "end"},
            "no_reply": {"goto": 5},
        },
    )
    for position in (3, 4, 5):
        SmsStepFactory(workflow=workflow, position=position, parameters=sms)
    page = builder_open(admin_page, workflow)
    steps = page.locator("#cf-steps > li")
    wait = steps.nth(1)
    expect(wait.locator("fieldset.cf-otherwise").get_by_label("Then")).to_have_value("end")

    # step 4 goes: "Cancel" went there, so it ends the run; "no reply" follows step 5 to 4
    page.get_by_role("button", name="Remove step 4").click()
    expect(_branch(wait, 1).get_by_label("Then")).to_have_value("end")
    expect(wait.locator("fieldset.cf-no-reply").get_by_label("Then")).to_have_value("4")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    expect(steps.nth(3).locator(".cf-branch-caption")).to_have_text(
        "If the reply to step 2 is: no reply"
    )

    # the branch order is the matching order: Cancel first now, moved by keyboard
    up = _branch(wait, 1).get_by_role("button", name="Move branch 2 up")
    up.focus()
    page.keyboard.press("Enter")
    expect(_branch(wait, 0).get_by_label("Label")).to_have_value("Cancel")
    expect(_branch(wait, 0).get_by_role("button", name="Move branch 1 down")).to_be_focused()
    # a step moved from before the wait to after it: the wait's question is gone
    page.get_by_role("button", name="Move step 1 down").click()
    expect(page.locator("#cf-problems")).to_contain_text("problem")
    expect(steps.nth(0)).to_contain_text("needs an earlier step on its path that texts the patient")
    page.locator("input[name=_continue]").click()
    expect(page.locator(".errornote")).to_be_visible()
    saved = workflow.steps.get(position=2)
    assert saved.parameters["branches"][1]["goto"] == 4  # the refused edit changed nothing
