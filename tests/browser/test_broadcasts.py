"""Broadcasts in a real browser, sent by a real worker to the loopback sandbox: a clinic admin
sends one after the confirmation with its recipient count and watches the live progress reach
"Completed"; then starts another at a slow sender and cancels it mid-way. The picture in
docs/broadcast-progress.png is taken here (CAREFLOW_SCREENSHOTS=1)."""

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from integrations.models import Broadcast, Integration
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord
from tests.browser.conftest import clinic_admin, screenshot_path
from tests.conftest import WorkerProcess, sandbox_account
from tests.factories import SANDBOX_FROM, ConsentFactory, IntegrationFactory, PatientFactory
from workflows.models import Segment

pytestmark = pytest.mark.browser
MARKETING = ConsentRecord.Purpose.MARKETING


def _draft(integration: Integration, name: str, members: int) -> Broadcast:
    clinic = integration.organization
    for n in range(members):
        patient = PatientFactory(organization=clinic, first_name=f"Ana{n}")
        if n % 5:  # one in five has not agreed to marketing texts
            ConsentFactory(patient=patient, purpose=MARKETING)
    return Broadcast.objects.create(
        organization=clinic,
        name=name,
        segment=Segment.objects.get_or_create(organization=clinic, name="Everyone")[0],
        function="twilio.sendSMS",
        integration=integration,
        purpose=MARKETING,
        parameters={
            "message": "Hi {{customer.firstName}}, flu shots are in this week.",
            "from": SANDBOX_FROM,
        },
    )


def _send(page: Page, broadcast: Broadcast, recipients: int) -> None:
    page.goto(f"/admin/integrations/broadcast/{broadcast.pk}/change/")
    expect(page.locator("#broadcast-size")).to_contain_text(f"{recipients} recipients")
    page.locator("#broadcast-send").click()
    expect(page.locator("#broadcast-confirm-count")).to_contain_text(f"{recipients} patients")
    page.locator("#broadcast-confirm").click()
    expect(page.locator(".messagelist")).to_contain_text(f"is sending to {recipients} patients")


def test_send_watch_it_complete_then_cancel_another_mid_way(
    worker: WorkerProcess,
    sandbox: SandboxServer,
    admin_page: Callable[[Any], Page],
    tmp_path: Path,
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory(segments_per_second=5.0))
    page = admin_page(clinic_admin(integration.organization))
    quick = _draft(integration, "Flu shots", 10)

    _send(page, quick, 10)
    counts = page.locator("#broadcast-progress")
    expect(counts.locator("[data-count=statusLabel]")).to_have_text("Completed", timeout=30_000)
    expect(counts.locator("[data-count=sent]")).to_have_text("8")
    expect(counts.locator("[data-count=skipped]")).to_have_text("2")
    # When it ended is in the panel too, filled in as it completes (not a static "-").
    expect(counts.locator("[data-count=endedAt]")).to_have_text(re.compile(r"\b2\d{3}\b"))
    expect(page.locator("#broadcast-skip-reasons")).to_contain_text(": 2")
    expect(page.locator("#broadcast-cancel")).to_have_count(0)  # nothing left to cancel
    page.locator("#content").screenshot(path=screenshot_path("broadcast-progress.png", tmp_path))
    assert len(sandbox.messages()) == 8

    # A second one from a sender allowed 1 text a second: cancelled after the first few.
    Integration.objects.filter(pk=integration.pk).update(
        settings={**integration.settings, "segments_per_second": 1.0}
    )
    slow = _draft(integration, "Storm closure", 15)
    _send(page, slow, 25)  # the segment is every patient of the clinic: 10 + 15
    expect(counts.locator("[data-count=sent]")).not_to_have_text("0", timeout=20_000)
    page.locator("#broadcast-cancel").click()
    expect(page.locator(".messagelist")).to_contain_text("is cancelled")
    expect(counts.locator("[data-count=statusLabel]")).to_have_text("Cancelled")
    expect(page.locator("#broadcast-skip-reasons")).to_contain_text("broadcast cancelled")
    sent = int(counts.locator("[data-count=sent]").inner_text())
    assert 0 < sent < 20
    slow.refresh_from_db()
    assert slow.status == Broadcast.Status.CANCELLED
