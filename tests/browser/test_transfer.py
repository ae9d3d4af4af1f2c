"""A workflow travels in the browser: clinic A's admin downloads it with "Export selected as
JSON", clinic B's admin uploads that file on "Import workflows", chooses B's number for A's,
and finds it in B's list, disabled."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import clinic_admin, screenshot_path
from tests.factories import IntegrationFactory, SmsStepFactory
from workflows.models import Workflow

pytestmark = pytest.mark.browser
A_NUMBER, B_NUMBER = "+15005550006", "+15005550011"


def test_export_from_one_clinic_and_import_into_another(
    admin_page: Callable[[Any], Page], transactional_db: Any, tmp_path: Path
) -> None:
    a = IntegrationFactory(organization__name="Clinic A", senders=[A_NUMBER]).organization
    b = IntegrationFactory(organization__name="Clinic B", senders=[B_NUMBER]).organization
    original = SmsStepFactory(workflow__organization=a, workflow__name="Shipped").workflow

    exporter = admin_page(clinic_admin(a))
    exporter.goto("/admin/workflows/workflow/")
    exporter.locator(f'input[name="_selected_action"][value="{original.pk}"]').check()
    exporter.locator('select[name="action"]').select_option("export_workflows")
    with exporter.expect_download() as download:
        exporter.get_by_role("button", name="Go").click()
    exported = tmp_path / download.value.suggested_filename
    download.value.save_as(exported)
    assert exported.name.startswith(f"careflow-workflows-{a.slug}-")

    importer = admin_page(clinic_admin(b))
    importer.goto("/admin/workflows/workflow/")
    importer.get_by_role("link", name="Import workflows").click()
    importer.locator("#cf-import-file").set_input_files(str(exported))
    importer.get_by_role("button", name="Check the export").click()

    report = importer.locator("#cf-import-report")
    expect(report).to_contain_text("Importing into Clinic B from Clinic A")
    expect(report).to_contain_text(f"Twilio sender {A_NUMBER}: not an approved sending number here")
    importer.locator("#cf-sender-0").select_option(B_NUMBER)
    importer.screenshot(path=str(screenshot_path("import.png", tmp_path)), full_page=True)
    importer.get_by_role("button", name="Import 1 workflow, disabled").click()

    expect(importer.locator(".messagelist")).to_contain_text(
        "Imported 1 workflow(s) into Clinic B, all disabled"
    )
    imported = Workflow.objects.get(organization=b)
    assert (imported.name, imported.enabled) == ("Shipped", False)
    assert imported.steps.get().parameters["from"] == B_NUMBER
