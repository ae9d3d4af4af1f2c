"""The workflows_export and workflows_import management commands."""

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from patients.models import Organization
from tests.factories import IntegrationFactory, OrganizationFactory, SmsStepFactory
from workflows.models import Workflow
from workflows.transfer import MAX_DOCUMENT_BYTES
from workflows.versions import workflow_document

pytestmark = pytest.mark.django_db

A_NUMBER, B_NUMBER = "+15005550006", "+15005550011"


@pytest.fixture
def clinics() -> tuple[Organization, Organization]:
    return (
        IntegrationFactory(organization__name="Clinic A", senders=[A_NUMBER]).organization,
        IntegrationFactory(organization__name="Clinic B", senders=[B_NUMBER]).organization,
    )


@pytest.fixture
def shipped(clinics: Any) -> Workflow:
    step = SmsStepFactory(workflow__organization=clinics[0], workflow__name="Shipped")
    workflow: Workflow = step.workflow
    return workflow


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def export_file(tmp_path: Path, *args: str) -> Path:
    path = tmp_path / "export.json"
    run("workflows_export", "--clinic", "Clinic A", "--output", str(path), *args)
    return path


def test_export_then_import_into_another_clinic(
    clinics: Any, shipped: Workflow, tmp_path: Path
) -> None:
    _, b = clinics
    path = export_file(tmp_path)
    assert json.loads(path.read_text())["workflows"][0]["name"] == "Shipped"

    out = run(
        "workflows_import",
        str(path),
        "--clinic",
        str(b.uuid),
        "--map-sender",
        f"{A_NUMBER}={B_NUMBER}",
    )

    imported = Workflow.objects.get(organization=b)
    assert imported.name == "Shipped" and imported.enabled is False
    assert f"Twilio sender {A_NUMBER}: mapped to {B_NUMBER}" in out
    assert f"Imported “Shipped” (disabled), uuid {imported.uuid}." in out
    expected = workflow_document(shipped)
    expected["definition"]["steps"][0]["parameters"]["from"] = B_NUMBER
    assert workflow_document(imported) == expected


def test_export_to_stdout_of_chosen_workflows(clinics: Any, shipped: Workflow) -> None:
    a, b = clinics
    SmsStepFactory(workflow__organization=a, workflow__name="Other")
    document = json.loads(
        run("workflows_export", "--clinic", "Clinic A", "--workflow", str(shipped.uuid))
    )
    assert [w["name"] for w in document["workflows"]] == ["Shipped"]
    theirs = SmsStepFactory(workflow__organization=b).workflow
    with pytest.raises(CommandError, match=f"Clinic A has no workflow {theirs.uuid}"):
        run("workflows_export", "--clinic", "Clinic A", "--workflow", str(theirs.uuid))
    with pytest.raises(CommandError, match="give each workflow's uuid"):
        run("workflows_export", "--clinic", "Clinic A", "--workflow", "7")
    with pytest.raises(CommandError, match="Clinic C has no workflows"):
        OrganizationFactory(name="Clinic C")
        run("workflows_export", "--clinic", "Clinic C")


def test_dry_run_prints_the_report_and_imports_nothing(
    clinics: Any, shipped: Workflow, tmp_path: Path
) -> None:
    path = export_file(tmp_path)
    out = run(
        "workflows_import",
        str(path),
        "--clinic",
        "Clinic B",
        "--map-sender",
        f"{A_NUMBER}={B_NUMBER}",
        "--dry-run",
    )
    assert "- “Shipped”: ready" in out and "Dry run: nothing was imported." in out
    assert not Workflow.objects.filter(organization=clinics[1]).exists()


def test_an_unmapped_sender_fails_and_imports_nothing(
    clinics: Any, shipped: Workflow, tmp_path: Path
) -> None:
    path = export_file(tmp_path)
    out = StringIO()
    with pytest.raises(CommandError, match=r"Nothing was imported.*--map-sender OLD=NEW"):
        call_command("workflows_import", str(path), "--clinic", "Clinic B", stdout=out)
    assert f"map it to one of {B_NUMBER}" in out.getvalue()
    out = StringIO()
    with pytest.raises(CommandError, match="Nothing was imported"):
        call_command(
            "workflows_import",
            str(path),
            "--clinic",
            "Clinic B",
            "--map-sender",
            f"{A_NUMBER}=+15005550099",
            stdout=out,
        )
    assert "+15005550099 is not an approved sending number of this clinic" in out.getvalue()
    assert not Workflow.objects.filter(organization=clinics[1]).exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{nope", "is not valid JSON"),
        (json.dumps({"format": "careflow.workflows", "schemaVersion": 9}), "schemaVersion is 9"),
        (b"\xff\xfe", "is not valid JSON"),
    ],
)
def test_a_file_that_is_not_an_export_fails_clearly(
    clinics: Any, tmp_path: Path, content: Any, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(CommandError, match=message):
        run("workflows_import", str(path), "--clinic", "Clinic B")
    assert not Workflow.objects.exists()


def test_missing_huge_or_unnamed_inputs_fail_clearly(
    clinics: Any, shipped: Workflow, tmp_path: Path
) -> None:
    with pytest.raises(CommandError, match="Cannot read"):
        run("workflows_import", str(tmp_path / "none.json"), "--clinic", "Clinic B")
    huge = tmp_path / "huge.json"
    huge.write_bytes(b" " * (MAX_DOCUMENT_BYTES + 1))
    with pytest.raises(CommandError, match="larger than an export may be"):
        run("workflows_import", str(huge), "--clinic", "Clinic B")
    with pytest.raises(
        CommandError, match="--clinic: no clinic has the uuid or the exact name 'Nowhere'"
    ):
        run("workflows_import", str(export_file(tmp_path)), "--clinic", "Nowhere")
    with pytest.raises(CommandError, match="write it as OLD=NEW"):
        run(
            "workflows_import",
            str(export_file(tmp_path)),
            "--clinic",
            "Clinic B",
            "--map-sender",
            "x",
        )
