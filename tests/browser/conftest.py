"""Browser tests: Playwright's Python package driving Debian's Chromium (/usr/bin/chromium,
installed by .ci/run; Playwright's own browser download is not used) against pytest-django's
live server.

Playwright's sync API keeps an asyncio loop running in this thread while it is started, and
Django refuses ORM calls from a thread with a running loop. So Playwright lives for one module
at a time, and for that time only DJANGO_ALLOW_ASYNC_UNSAFE is set: the ORM calls are still
synchronous, in this thread, while no coroutine runs.
"""

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.test import Client
from playwright.sync_api import Browser, Page, Response, expect, sync_playwright

from patients.roles import CLINIC_ADMIN
from tests.deployments import CareflowUp, careflow_up
from tests.factories import StaffMembershipFactory

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (see .ci/run)")
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


def clinic_admin(organization: Any) -> Any:
    """A staff user of this clinic in the clinic admin role (the group every deployment has)."""
    user = StaffMembershipFactory(organization=organization).user
    user.groups.add(Group.objects.get(name=CLINIC_ADMIN))
    return user


@pytest.fixture
def admin_page(browser: Browser, live_server: Any) -> Iterator[Callable[[Any], Page]]:
    """Open a logged-in admin tab for a user: the session cookie of `Client.force_login`."""
    contexts = []

    def open_page(user: Any) -> Page:
        client = Client()
        client.force_login(user)
        context = browser.new_context(
            base_url=live_server.url, viewport={"width": 1280, "height": 900}
        )
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": client.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": live_server.url,
                }
            ]
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())
        page.js_errors = errors  # type: ignore[attr-defined]
        return page

    yield open_page
    for context in contexts:
        pages = context.pages
        for page in pages:
            assert page.js_errors == [], page.js_errors  # type: ignore[attr-defined]
        context.close()


def builder_open(admin_page: Callable[[Any], Page], workflow: Any) -> Page:
    """The workflow's builder as its clinic's admin sees it, loaded and with no problems."""
    page = admin_page(clinic_admin(workflow.organization))
    page.goto(f"/admin/workflows/workflow/{workflow.pk}/change/")
    expect(page.locator("#cf-problems")).to_have_text("✓ No problems found.")
    return page


def builder_save(page: Page) -> None:
    """Save and continue editing; the save succeeds."""
    page.locator("input[name=_continue]").click()
    expect(page.locator(".messagelist")).to_contain_text("was changed successfully")


def sandbox_received(stack: CareflowUp, text: str, *, timeout: float = 90) -> None:
    """Wait until a text containing `text` has reached the stack's Twilio sandbox."""
    deadline = time.monotonic() + timeout
    while not any(text in m["body"] for m in stack.sandbox_messages()):
        assert stack.process.poll() is None, f"careflow_up exited:\n{stack.tail()}"
        assert time.monotonic() < deadline, f"the SMS never reached the sandbox\n{stack.tail()}"
        time.sleep(0.5)


def screenshot_path(name: str, tmp_path: Path) -> Path:
    """docs/<name> when CAREFLOW_SCREENSHOTS=1 (to refresh the README's pictures), else a
    temporary file: the test still takes it, so a broken page still fails loudly."""
    if os.environ.get("CAREFLOW_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        return DOCS / name
    return tmp_path / name


# The stack `make run` starts (`careflow_up`), one per test module that asks for it, and a tab
# on it that fails the test on JavaScript errors and on any request answered 4xx/5xx.
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CareflowUp]:
    with careflow_up(tmp_path_factory.mktemp("make-run")) as stack:
        yield stack


@pytest.fixture
def page(browser: Browser, stack: CareflowUp) -> Iterator[Page]:
    context = browser.new_context(base_url=stack.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    failed: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def _record(response: Response) -> None:
        if response.status >= 400:
            failed.append(f"{response.status} {response.url}")

    page.on("response", _record)
    page.on("dialog", lambda dialog: dialog.accept())
    yield page
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"
    assert failed == [], f"requests that failed: {failed}\n{stack.tail()}"
