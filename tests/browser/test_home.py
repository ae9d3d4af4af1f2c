"""The clinic home in a real browser: a clinic admin opens the admin and sees today's
messages, the replies waiting for review and the failed runs, each a link to exactly those
rows; the picture in docs/ is taken here."""

from collections.abc import Callable
from datetime import timedelta
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from integrations.models import InboundMessage, OutboundMessage
from patients.clinic_view import clinic_days
from tests.browser.conftest import clinic_admin
from tests.factories import (
    IntegrationFactory,
    OrganizationFactory,
    PatientFactory,
    WorkflowFactory,
)
from workflows.models import Event, Run

pytestmark = pytest.mark.browser
ZONE = "America/Chicago"
_keys = count()

# (patient, status, body): the clinic's morning.
MESSAGES = [
    ("Maria Garcia", "delivered", "Hi Maria, your order 5001 has shipped!"),
    ("Noah Kim", "skipped", "Hi Noah, your order 5002 has shipped!"),
    ("Ava Patel", "delivered", "Reminder: your video visit is tomorrow at 10:00 AM."),
    ("Liam Chen", "sent", "Hi Liam, your prescription is ready for pickup."),
    ("Emma Rossi", "undelivered", "Hi Emma, your order 5003 has shipped!"),
    ("Lucas Silva", "delivered", "Hi Lucas, welcome to Sunrise Telehealth!"),
    ("Mia Novak", "failed", "Hi Mia, your subscription renews in 7 days."),
]


def _clinic() -> Any:
    clinic = OrganizationFactory(name="Sunrise Telehealth", timezone=ZONE)
    integration = IntegrationFactory(organization=clinic)
    start, _ = clinic_days(zone=ZONE, days=1)
    patients = {}
    for minute, (name, status, body) in enumerate(MESSAGES):
        first, last = name.split()
        patient = patients[name] = PatientFactory(
            organization=clinic, first_name=first, last_name=last
        )
        message = OutboundMessage.objects.create(
            organization=clinic,
            integration=integration,
            patient=patient,
            idempotency_key=f"browser-home:{next(_keys)}",
            purpose="transactional",
            to=patient.phone,
            from_number="+15005550006",
            body=body,
            status=status,
            skip_reason="no SMS consent" if status == "skipped" else "",
        )
        OutboundMessage.objects.filter(pk=message.pk).update(
            created_at=start + timedelta(minutes=minute + 1)
        )
    InboundMessage.objects.create(
        organization=clinic,
        integration=integration,
        provider_sid=f"SM{next(_keys):032x}",
        from_number=patients["Noah Kim"].phone,
        to="+15005550006",
        body="please don't text me anymore",
        patient=patients["Noah Kim"],
        needs_review=True,
    )
    workflow = WorkflowFactory(organization=clinic, name="Order shipped SMS")
    for name in ("Emma Rossi", "Mia Novak"):
        event = Event.objects.create(
            organization=clinic,
            type="order.shipped",
            dedupe_key=f"browser-home:{next(_keys)}",
            payload={"customer": {"firstName": name.split()[0], "lastName": name.split()[1]}},
        )
        Run.objects.create(
            workflow=workflow,
            event=event,
            status="failed",
            finished_at=start + timedelta(minutes=30),
            error="step 1: Twilio error 30003",
        )
    return clinic


def _tile(page: Page, key: str) -> Any:
    return page.locator(f".cf-home-tile[data-tile='{key}']")


def test_the_clinic_home_shows_the_day_and_links_to_its_rows(
    admin_page: Callable[[Any], Page], tmp_path: Path
) -> None:
    clinic = _clinic()
    page = admin_page(clinic_admin(clinic))
    page.goto("/admin/")
    expect(page.locator("#cf-home-heading")).to_contain_text(f"({ZONE})")
    expected = {"sent": 5, "delivered": 3, "failed": 2, "skipped": 1}
    expected |= {"review": 1, "failed_runs": 2}
    for key, number in expected.items():
        expect(_tile(page, key).locator(".cf-home-count")).to_have_text(str(number))
    # Styled by its own stylesheet (served, not just linked): tiles side by side, and a
    # count someone should act on in the admin's error colour.
    tiles = page.locator(".cf-home-tiles").first
    assert tiles.evaluate("e => getComputedStyle(e).display") == "flex"
    failed = _tile(page, "failed").locator(".cf-home-count")
    error_colour = page.evaluate(
        "getComputedStyle(document.documentElement).getPropertyValue('--error-fg').trim()"
    )
    assert error_colour and failed.evaluate("e => getComputedStyle(e).color") != (
        _tile(page, "delivered")
        .locator(".cf-home-count")
        .evaluate("e => getComputedStyle(e).color")
    )
    expect(page.locator("#content-main a", has_text="Data reference")).to_be_visible()
    expect(page.locator(".app-patients")).to_be_visible()  # the apps stay below
    page.screenshot(path=str(tmp_path / "clinic-home.png"), full_page=True)

    for key, names in (
        ("failed", ["Emma Rossi", "Mia Novak"]),
        ("failed_runs", ["Emma Rossi", "Mia Novak"]),
        ("review", ["Noah Kim"]),
    ):
        page.goto("/admin/")
        _tile(page, key).locator("a").click()
        rows = page.locator("#result_list tbody tr")
        expect(rows).to_have_count(len(names))
        for name in names:
            expect(rows.filter(has_text=name)).to_have_count(1)
