"""The builder with a second messaging adapter, in a real browser: an email step built by
pointing and clicking, its From picked from the clinic's verified addresses (an SMS step
keeps its numbers), its body in a text box previewed with an email's counts, saved with its
parameters."""

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from integrations.email import adapter as email_module
from integrations.email.account import EmailAccount
from integrations.email.adapter import EmailAdapter
from integrations.models import Integration
from tests.browser.conftest import builder_open, builder_save, clinic_admin
from tests.factories import IntegrationFactory, SmsStepFactory, WorkflowFactory
from workflows.adapters import REGISTRY
from workflows.models import Workflow

pytestmark = pytest.mark.browser

ADDRESSES = ["care@sunrise.example", "news@sunrise.example"]
NUMBERS = ["+15005550006"]


@pytest.fixture
def workflow(transactional_db: Any, monkeypatch: pytest.MonkeyPatch) -> Workflow:
    # The email provider is registered for this test only (the live server runs in this
    # process, so it sees the same registry).
    monkeypatch.setitem(REGISTRY, "email", EmailAdapter())
    # The numbers' column was renamed by the provider-neutral settings (issue 15, section 3).
    numbers = "senders" if hasattr(Integration, "senders") else "sending_numbers"
    sms = IntegrationFactory(**{numbers: NUMBERS})
    email = IntegrationFactory(organization=sms.organization, adapter="email")
    if hasattr(Integration, "senders"):  # the provider-neutral settings (issue 15, section 3)
        email.senders = list(ADDRESSES)  # type: ignore[attr-defined]
        email.save()
    else:  # until they land, the email account reader stands in, as in its own tests
        account = EmailAccount(
            esp="postmark",
            server_token="t",
            webhook_auth="",
            message_stream="outbound",
            senders=tuple(ADDRESSES),
            send_rate=None,
        )
        monkeypatch.setattr(email_module, "email_account", lambda integration: account)
    workflow = WorkflowFactory(organization=sms.organization, enabled=False)
    SmsStepFactory(workflow=workflow)
    return workflow


def test_an_email_step_is_built_previewed_and_saved(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    page = builder_open(admin_page, workflow)
    # the SMS step offers the clinic's numbers, in its own words
    sms_from = page.locator("#cf-steps > li").first.get_by_label("From Phone", exact=True)
    expect(sms_from.locator("option")).to_have_text(
        ["Choose a number…", *NUMBERS, "Use a variable…"]
    )

    page.locator("[data-add=adapter]").click()
    step = page.locator("#cf-steps > li").nth(1)
    step.get_by_label("Adapter").select_option("email")
    expect(step.get_by_label("Function")).to_have_value("sendEmail")  # its only function
    expect(step.locator(".cf-step-title")).to_have_text("Email → Send email")

    # From: the clinic's verified addresses, none chosen for the admin (there are two)
    sender = step.get_by_label("From", exact=True)
    expect(sender.locator("option")).to_have_text(
        ["Choose an address…", *ADDRESSES, "Use a variable…"]
    )
    expect(sender).to_have_value("")

    step.get_by_label("Subject").fill("Order {{order.number}} shipped")
    body = step.get_by_label("Body", exact=True)
    html = step.get_by_label("HTML body")
    # bodies are written over lines
    assert body.evaluate("node => node.tagName") == "TEXTAREA"
    assert html.evaluate("node => node.tagName") == "TEXTAREA"
    body.fill("Hi {{customer.firstName}},\nyour order {{order.number}} has shipped.")
    html.fill("<p>Hi <b>{{customer.firstName}}</b></p>")
    step.get_by_label("To", exact=True).fill("{{customer.email}}")
    sender.select_option(ADDRESSES[1])
    expect(step.get_by_label("Consent needed")).to_be_visible()
    expect(step.locator("[data-param=purpose] .cf-help")).to_have_text(
        "Which email consent the recipient must have given."
    )

    # previewed as an email: characters and lines, no SMS segments
    preview = step.locator(".cf-preview")
    expect(preview.locator(".cf-preview-text")).to_have_text(
        "Hi Ann,\nyour order 100234 has shipped."
    )
    expect(preview.locator(".cf-preview-numbers")).to_have_text("38 characters · 2 lines")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")

    builder_save(page)
    saved = workflow.steps.get(position=2)
    assert (saved.type, saved.adapter, saved.function) == ("adapter", "email", "sendEmail")
    assert saved.parameters == {
        "subject": "Order {{order.number}} shipped",
        "body": "Hi {{customer.firstName}},\nyour order {{order.number}} has shipped.",
        "html": "<p>Hi <b>{{customer.firstName}}</b></p>",
        "to": "{{customer.email}}",
        "from": ADDRESSES[1],
    }


def builder_open_with_problems(admin_page: Callable[[Any], Page], workflow: Workflow) -> Page:
    """The builder, loaded, with the one problem the test set up found."""
    page = admin_page(clinic_admin(workflow.organization))
    page.goto(f"/admin/workflows/workflow/{workflow.pk}/change/")
    expect(page.locator("#cf-problems")).to_contain_text("1 problem")
    return page


def test_an_address_no_longer_verified_is_shown_and_refused(
    admin_page: Callable[[Any], Page], workflow: Workflow
) -> None:
    SmsStepFactory(
        workflow=workflow,
        position=2,
        adapter="email",
        function="sendEmail",
        parameters={
            "subject": "Hi",
            "body": "Hi",
            "to": "{{customer.email}}",
            "from": "old@sunrise.example",
        },
    )
    page = builder_open_with_problems(admin_page, workflow)
    step = page.locator("#cf-steps > li").nth(1)
    sender = step.get_by_label("From", exact=True)
    expect(sender.locator("option:checked")).to_have_text(
        "old@sunrise.example (not a verified sender address)"
    )
    expect(step.locator("[data-errors-for=from]")).to_contain_text(
        "old@sunrise.example is not a verified sender address of"
    )
    sender.select_option(ADDRESSES[0])
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
