"""The builder in a real browser: reordering steps by dragging and by keyboard, a live
validation error shown on the step it belongs to, kept through a refused save, and a webhook
step with a multi-line JSON body."""

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import builder_open, builder_save
from tests.factories import IntegrationFactory, SmsStepFactory, WorkflowFactory
from workflows.models import Step, Workflow

pytestmark = pytest.mark.browser


def _sms(workflow: Workflow, position: int, message: str) -> Step:
    return SmsStepFactory(
        workflow=workflow,
        position=position,
        parameters={"message": message, "to": "{{customer.phone}}", "from": "+15005550006"},
    )


@pytest.fixture
def workflow(transactional_db: Any) -> Workflow:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization, enabled=False)
    _sms(workflow, 1, "First {{customer.firstName}}")
    Step.objects.create(
        workflow=workflow,
        position=2,
        type="delay",
        adapter="",
        function="",
        parameters={"kind": "duration", "seconds": "3600"},
    )
    _sms(workflow, 3, "Third {{order.number}}")
    return workflow


def _order(page: Page) -> list[str]:
    """Each step as "<number> <title> <first words of its message or wait>"."""
    result = []
    for item in page.locator("#cf-steps > li").all():
        number = item.locator(".cf-step-number").inner_text()
        title = item.locator(".cf-step-title").inner_text()
        message = item.locator("textarea[data-param=message]")
        if message.count():
            value = message.input_value().split(" ")[0]
        else:  # a delay: its number and unit
            unit = item.get_by_label("Duration: unit").locator("option:checked").inner_text()
            value = f"{item.get_by_label('Duration', exact=True).input_value()} {unit}"
        result.append(f"{number} {title} {value}")
    return result


def test_reorder_by_dragging_and_by_keyboard_then_save(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)
    assert _order(page) == [
        "1 Twilio → Send SMS First",
        "2 Delay 1 hours",
        "3 Twilio → Send SMS Third",
    ]

    # drag step 3 by its handle above step 1, with the mouse (both in view: a tall window)
    # Measure once the previews and the diagram have loaded (they change the steps' heights),
    # in a window tall enough for the whole page: a step a new parameter pushed below the
    # fold cannot be dragged with the mouse.
    page.wait_for_load_state("networkidle")
    height = page.evaluate("document.documentElement.scrollHeight")
    page.set_viewport_size({"width": 1280, "height": max(2200, height + 200)})
    page.evaluate("window.scrollTo(0, 0)")
    handle = page.locator("#cf-steps > li").nth(2).locator(".cf-handle").bounding_box()
    target = page.locator("#cf-steps > li").nth(0).locator(".cf-step-head").bounding_box()
    assert handle and target
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(target["x"] + 40, target["y"] + 4, steps=25)
    page.mouse.up()
    expect(page.locator("#cf-steps > li").first.locator(".cf-step-number")).to_have_text("1")
    assert _order(page) == [
        "1 Twilio → Send SMS Third",
        "2 Twilio → Send SMS First",
        "3 Delay 1 hours",
    ]
    expect(page.locator("#cf-diagram")).to_contain_text("3Delay")

    # keyboard: the up/down buttons, focus follows the step that moved
    page.get_by_role("button", name="Move step 1 down").focus()
    page.keyboard.press("Enter")
    assert _order(page) == [
        "1 Twilio → Send SMS First",
        "2 Twilio → Send SMS Third",
        "3 Delay 1 hours",
    ]
    focused = page.evaluate("document.activeElement.getAttribute('aria-label')")
    assert focused == "Move step 2 down"
    page.keyboard.press("Space")
    assert _order(page) == [
        "1 Twilio → Send SMS First",
        "2 Delay 1 hours",
        "3 Twilio → Send SMS Third",
    ]
    # at the bottom "down" is disabled, so focus moves to "up" on the same step
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "Move step 3 up"
    expect(page.locator("#cf-announce")).to_have_text("Twilio → Send SMS moved to position 3 of 3.")
    page.keyboard.press("Enter")
    assert _order(page) == [
        "1 Twilio → Send SMS First",
        "2 Twilio → Send SMS Third",
        "3 Delay 1 hours",
    ]

    builder_save(page)
    saved = list(workflow.steps.order_by("position"))
    assert [(s.type, s.parameters.get("message", "")[:5]) for s in saved] == [
        ("adapter", "First"),
        ("adapter", "Third"),
        ("delay", ""),
    ]
    assert _order(page) == [
        "1 Twilio → Send SMS First",
        "2 Twilio → Send SMS Third",
        "3 Delay 1 hours",
    ]


def test_an_unknown_variable_is_shown_on_its_step_live_and_after_saving(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)
    third = page.locator("#cf-steps > li").nth(2)
    message = third.get_by_label("Message")
    message.fill("Hello {{customer.frstName}}, order {{order.number}}")

    errors = third.locator("[data-errors-for=message]")
    expect(errors).to_contain_text(
        "{{customer.frstName}} is not a variable of order.shipped; did you mean {{customer.firstName}}"
    )
    expect(third).to_have_class("cf-step cf-step-problem")
    expect(page.locator("#cf-problems")).to_have_text(
        "1 problem to fix before saving (marked below)."
    )
    for other in (0, 1):
        expect(page.locator("#cf-steps > li").nth(other).locator(".errorlist li")).to_have_count(0)
    expect(page.locator("#cf-diagram svg")).to_contain_text("⚠ Twilio → Send SMS")
    # the preview says why it cannot be rendered
    expect(third.locator(".cf-preview")).to_contain_text("customer.frstName is not in this event")

    page.locator("input[name=_continue]").click()
    expect(page.locator(".errornote")).to_be_visible()
    third = page.locator("#cf-steps > li").nth(2)
    expect(third.get_by_label("Message")).to_have_value(
        "Hello {{customer.frstName}}, order {{order.number}}"
    )
    expect(third.locator("[data-errors-for=message]")).to_contain_text("did you mean")
    workflow.refresh_from_db()
    assert workflow.version == 1  # nothing was saved


def test_preview_counts_characters_and_warns(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)
    first = page.locator("#cf-steps > li").first
    first.get_by_label("Message").fill("Your order’s on its way " + "x" * 150)
    preview = first.locator(".cf-preview")
    expect(preview.locator(".cf-preview-numbers")).to_have_text(
        "174 characters · 3 segments · UCS-2"
    )
    expect(preview).to_contain_text("Contains “’”, which plain SMS cannot carry")
    expect(preview).to_contain_text("Longer than 160 characters: sent as 3 segments")


def test_a_viewer_sees_the_builder_read_only(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    from django.contrib.auth.models import Permission

    from tests.factories import StaffMembershipFactory

    viewer = StaffMembershipFactory(organization=workflow.organization).user
    viewer.user_permissions.set(Permission.objects.filter(codename="view_workflow"))
    page = admin_page(viewer)
    page.goto(f"/admin/workflows/workflow/{workflow.pk}/change/")
    expect(page.locator("#cf-steps > li")).to_have_count(3)
    expect(page.locator("#cf-steps > li").first.get_by_label("Message")).to_be_disabled()
    expect(page.get_by_role("button", name="Move step 1 down")).to_be_disabled()
    expect(page.locator(".cf-add")).to_be_hidden()
    expect(page.locator("#cf-diagram svg")).to_contain_text("Twilio → Send SMS")
    expect(page.locator("#cf-dry-run")).to_be_enabled()


def test_a_webhook_step_with_a_multi_line_json_body(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)
    page.locator("[data-add=adapter]").click()
    step = page.locator("#cf-steps > li").nth(3)
    step.get_by_label("Adapter").select_option("webhook")
    step.get_by_label("Function").select_option("postJSON")
    expect(step.locator(".cf-step-title")).to_have_text("Outbound webhook → Post JSON")
    # SMS consent and quiet hours mean nothing for a webhook: not offered
    expect(step.locator("[data-param=urgent]")).to_have_count(0)
    expect(step.locator("[data-param=purpose]")).to_have_count(0)

    step.locator("input[data-param=url]").fill("https://93.184.216.34/careflow")
    body = step.locator("textarea[data-param=body]")
    expect(body).to_have_attribute("rows", "8")
    expect(body).to_have_class("cf-code")
    body.fill('{\n  "order": "{{order.number}}",\n}')
    expect(step.locator("[data-errors-for=body]")).to_contain_text(
        "not valid JSON: Expecting property name enclosed in double quotes (line 3, column 1)"
    )

    # typed as an admin would: Enter starts a new line in the box, it does not submit
    body.fill('{\n  "order": "{{order.number}}",')
    body.press("End")
    body.press("Enter")
    body.press_sequentially('  "who": "{{customer.frstName}}"\n}')
    expect(step.locator("[data-errors-for=body]")).to_contain_text(
        "{{customer.frstName}} is not a variable of order.shipped; did you mean "
        "{{customer.firstName}}"
    )
    body.fill('{\n  "order": "{{order.number}}",\n  "who": "{{customer.firstName}}"\n}')
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")

    builder_save(page)
    saved = workflow.steps.get(position=4)
    assert (saved.adapter, saved.function) == ("webhook", "postJSON")
    assert saved.parameters == {
        "url": "https://93.184.216.34/careflow",
        "body": '{\n  "order": "{{order.number}}",\n  "who": "{{customer.firstName}}"\n}',
    }
    expect(
        page.locator("#cf-steps > li").nth(3).locator("textarea[data-param=body]")
    ).to_have_value('{\n  "order": "{{order.number}}",\n  "who": "{{customer.firstName}}"\n}')
