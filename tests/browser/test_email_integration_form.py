"""The email integration's admin form in a real browser: picking the ESP shows only that
ESP's fields (the form's script), and a Mailgun integration is saved from them."""

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from integrations.models import Integration
from tests.factories import OrganizationFactory, UserFactory

pytestmark = pytest.mark.browser
KEY = "0123456789abcdef0123456789abcdef-0a1b2c3d-4e5f6a7b"
SIGNING_KEY = "mailgun-signing-key-0123"
POSTMARK_FIELDS = ("server_token", "webhook_secret", "message_stream")
MAILGUN_FIELDS = (
    "mailgun_api_key",
    "mailgun_domain",
    "mailgun_region",
    "mailgun_webhook_signing_key",
)


def _row(page: Page, name: str) -> Any:
    return page.locator(f".form-row.field-{name}")


def test_only_the_chosen_esps_fields_show_and_a_mailgun_integration_saves(
    admin_page: Callable[[Any], Page],
) -> None:
    organization = OrganizationFactory(name="Sunrise Telehealth")
    page = admin_page(UserFactory(is_superuser=True))
    page.goto("/admin/integrations/integration/add/?adapter=email")
    for name in POSTMARK_FIELDS:
        expect(_row(page, name)).to_be_visible()
    for name in MAILGUN_FIELDS:
        expect(_row(page, name)).to_be_hidden()
    page.select_option("select[name=esp]", "mailgun")
    for name in POSTMARK_FIELDS:
        expect(_row(page, name)).to_be_hidden()
    for name in MAILGUN_FIELDS:
        expect(_row(page, name)).to_be_visible()
    page.select_option("select[name=organization]", str(organization.pk))
    page.fill("input[name=name]", "Clinic email")
    page.fill("input[name=mailgun_api_key]", KEY)
    page.fill("input[name=mailgun_domain]", "not a domain")
    page.fill("input[name=mailgun_webhook_signing_key]", SIGNING_KEY)
    page.fill("textarea[name=sender_addresses]", "care@mg.sunrise.example")
    page.locator("input[name=_save]").click()
    # refused with its reason, the choice kept, and only Mailgun's fields still shown
    expect(_row(page, "mailgun_domain")).to_contain_text("Enter a domain name such as")
    expect(_row(page, "server_token")).to_be_hidden()
    assert not Integration.objects.exists()
    page.fill("input[name=mailgun_domain]", "mg.sunrise.example")
    page.fill("input[name=mailgun_api_key]", KEY)  # secrets are never rendered back
    page.fill("input[name=mailgun_webhook_signing_key]", SIGNING_KEY)
    page.locator("input[name=_save]").click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    integration = Integration.objects.get()
    assert integration.settings["esp"] == "mailgun"
    assert integration.secrets["mailgun_api_key"] == KEY
