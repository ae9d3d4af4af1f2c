"""The README's API section on the stack `make run` starts, as a clinic admin meets it: create
an API key in the admin (shown once), call the API as the README's curl examples do (sign up
a patient with consent, create an order, ship it) and see the one SMS in the message log;
the Swagger UI renders from our own static files; a workflow's versions page is styled.

The test live server serves static files by itself; only this stack shows whether Swagger
UI's files (drf-spectacular-sidecar) and the versions page's stylesheet reach a user."""

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_readme import log_in, message_row_with
from tests.deployments import CareflowUp

pytestmark = [pytest.mark.browser]


def call(stack: CareflowUp, key: str, method: str, path: str, body: Any, idem: str) -> Any:
    """What the README's curl examples send."""
    request = urllib.request.Request(  # noqa: S310 — the stack's own loopback URL
        f"{stack.url}/api/v1/{path}",
        data=json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            "Idempotency-Key": idem,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_an_api_key_from_the_admin_signs_up_a_patient_and_ships_an_order(
    page: Page, stack: CareflowUp
) -> None:
    log_in(page, stack, "clinic")

    # An API key, created by the clinic admin and shown once.
    page.goto("/admin/integrations/apikey/add/")
    page.get_by_label("Name").fill("Patient portal")
    page.get_by_label("Scope").select_option("write")
    page.get_by_role("button", name="Save", exact=True).click()
    key = page.locator("#api-key").inner_text().strip()
    assert key.startswith("cfk_")
    page.goto("/admin/integrations/apikey/")
    expect(page.locator("#result_list")).to_contain_text("Patient portal")
    assert key not in page.content()

    # The README's calls: a patient with SMS consent, an order, the order shipped (retried).
    status, patient = call(
        stack,
        key,
        "POST",
        "patients/",
        {
            "first_name": "Ana",
            "last_name": "Silva",
            "phone": "(415) 555-0188",
            "consents": [
                {
                    "channel": "sms",
                    "purpose": "transactional",
                    "action": "opt_in",
                    "source": "signup_form",
                    "consent_text": "I agree to receive texts about my orders.",
                    "ip": "203.0.113.7",
                    "user_agent": "Mozilla/5.0",
                }
            ],
        },
        "signup-ana",
    )
    assert status == 201, patient
    status, order = call(
        stack,
        key,
        "POST",
        "orders/",
        {"patient": patient["uuid"], "number": "W-1001", "status": "awaiting_shipment"},
        "order-w-1001",
    )
    assert status == 201, order
    for _ in range(2):  # the portal's retry after a timeout
        status, shipped = call(
            stack,
            key,
            "PATCH",
            f"orders/{order['uuid']}/",
            {"status": "shipped", "tracking_number": "1Z999AA10123456799"},
            "ship-w-1001",
        )
        assert status == 200, shipped
    status, error = call(stack, key, "POST", "patients/", {"phone": "12"}, "bad-phone")
    assert status == 400 and set(error) == {"error"}, error
    assert {"first_name", "phone"} <= set(error["error"]["fields"])

    row = message_row_with(page, stack, "+14155550188", "Delivered")
    assert "Hi Ana, your order W-1001 has shipped! Tracking: 1Z999" in row
    page.goto("/admin/integrations/outboundmessage/?q=%2B14155550188")
    expect(page.locator("#result_list tbody tr")).to_have_count(1)

    # The documentation renders: Swagger UI's files come from our own static files.
    page.goto("/api/v1/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("careflow API")
    expect(
        page.locator(".opblock-summary-path", has_text="/api/v1/patients/").first
    ).to_be_visible()

    # The workflow's versions page, with its stylesheet.
    page.goto("/admin/workflows/workflow/")
    page.locator("#result_list").get_by_role("link", name="Order shipped SMS").click()
    page.get_by_role("link", name="Versions").first.click()
    expect(page.locator("#content tbody tr").first).to_contain_text("1 (current)")
    expect(page.locator("#content tbody tr").first).to_contain_text("Demo data")
    # The link is served (by WhiteNoise, from collectstatic's copy) and the page applies it; the
    # click returns before the page has loaded, so wait for the sheet rather than look once.
    link = page.locator('link[rel="stylesheet"][href*="versions"]')
    expect(link).to_have_count(1)
    response = page.request.get(str(link.get_attribute("href")))
    assert response.ok, f"the versions stylesheet answered {response.status}"
    assert response.headers["content-type"].startswith("text/css")
    page.wait_for_function(
        "[...document.styleSheets].some(s => (s.href || '').includes('versions')"
        " && s.cssRules.length > 0)"
    )
