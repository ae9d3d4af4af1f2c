"""The workflow changelist's "Export selected as JSON" action and the "Import workflows" page:
by role, within the user's clinic, and with everything that is not an export refused."""

import html
import json
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from patients.models import Organization
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.factories import (
    IntegrationFactory,
    SmsStepFactory,
    StaffMembershipFactory,
    UserFactory,
)
from workflows.models import Workflow, WorkflowVersion
from workflows.transfer import MAX_DOCUMENT_BYTES, export_json, workflows_export

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/workflows/workflow/"
IMPORT = "/admin/workflows/workflow/import/"
A_NUMBER, B_NUMBER = "+15005550006", "+15005550011"


def role_client(organization: Organization | None, role: str) -> Client:
    user = (
        StaffMembershipFactory(organization=organization).user
        if organization is not None
        else UserFactory()
    )
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def superuser_client() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


@pytest.fixture
def clinics() -> tuple[Organization, Organization]:
    return (
        IntegrationFactory(organization__name="Clinic A", senders=[A_NUMBER]).organization,
        IntegrationFactory(organization__name="Clinic B", senders=[B_NUMBER]).organization,
    )


def workflow_of(organization: Organization, name: str) -> Workflow:
    workflow: Workflow = SmsStepFactory(
        workflow__organization=organization,
        workflow__name=name,
        parameters={
            "message": "Hi {{customer.firstName}}, order {{order.number}} has shipped!",
            "to": "{{customer.phone}}",
            "from": A_NUMBER if organization.name == "Clinic A" else B_NUMBER,
        },
    ).workflow
    return workflow


def export_action(client: Client, *workflows: Workflow | int) -> Any:
    ids = [w if isinstance(w, int) else w.pk for w in workflows]
    return client.post(
        CHANGELIST, {"action": "export_workflows", "_selected_action": [str(i) for i in ids]}
    )


def export_text(organization: Organization, *workflows: Workflow) -> str:
    return export_json(workflows_export(organization=organization, workflows=workflows))


# --- export ---------------------------------------------------------------------------------


def test_a_clinic_admin_downloads_their_workflows(clinics: Any) -> None:
    a, _ = clinics
    first, second = workflow_of(a, "First"), workflow_of(a, "Second")

    response = export_action(role_client(a, CLINIC_ADMIN), first, second)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"].startswith(
        f'attachment; filename="careflow-workflows-{a.slug}-'
    )
    document = json.loads(response.content)
    assert [w["name"] for w in document["workflows"]] == ["First", "Second"]
    assert document["source"] == {"clinic": "Clinic A"}


def test_another_clinics_ids_posted_to_the_action_are_not_exported(clinics: Any) -> None:
    a, b = clinics
    mine, theirs = workflow_of(a, "Mine"), workflow_of(b, "Theirs")
    client = role_client(a, CLINIC_ADMIN)

    response = export_action(client, mine, theirs)
    assert [w["name"] for w in json.loads(response.content)["workflows"]] == ["Mine"]
    assert b"Theirs" not in response.content and b"Clinic B" not in response.content

    only_theirs = export_action(client, theirs)
    assert only_theirs.status_code == 302
    page = client.get(only_theirs["Location"]).content.decode()
    assert "None of the selected workflows can be exported" in page
    assert "Theirs" not in page


def test_clinic_staff_and_support_staff_may_export_what_they_see(clinics: Any) -> None:
    a, b = clinics
    mine, theirs = workflow_of(a, "Mine"), workflow_of(b, "Theirs")
    assert export_action(role_client(a, CLINIC_STAFF), mine).status_code == 200
    support = role_client(None, SUPPORT_STAFF)
    assert json.loads(export_action(support, theirs).content)["source"]["clinic"] == "Clinic B"
    mixed = export_action(support, mine, theirs)
    assert mixed.status_code == 302
    assert "Select workflows of one clinic" in support.get(mixed["Location"]).content.decode()


# --- import ---------------------------------------------------------------------------------


def test_the_changelist_links_the_import_page_for_who_may_add(clinics: Any) -> None:
    a, _ = clinics
    assert reverse("admin:workflows_workflow_import") == IMPORT
    page = role_client(a, CLINIC_ADMIN).get(CHANGELIST).content.decode()
    assert 'id="cf-import-link"' in page and IMPORT in page
    staff_page = role_client(a, CLINIC_STAFF).get(CHANGELIST).content.decode()
    assert 'id="cf-import-link"' not in staff_page


def test_a_clinic_admin_imports_into_their_own_clinic_in_two_steps(clinics: Any) -> None:
    a, b = clinics
    text = export_text(b, workflow_of(b, "Shipped"))
    Workflow.objects.filter(organization=b).update(enabled=True)
    client = role_client(a, CLINIC_ADMIN)
    assert client.get(IMPORT).status_code == 200

    upload = SimpleUploadedFile("export.json", text.encode(), content_type="application/json")
    step1 = client.post(IMPORT, {"step": "plan", "file": upload})

    assert step1.status_code == 200
    page = step1.content.decode()
    assert "Importing into Clinic A from Clinic B" in page
    assert f"Twilio sender {B_NUMBER}:" in page and 'name="sender-0"' in page
    assert f'<option value="{A_NUMBER}">' in page
    assert not Workflow.objects.filter(organization=a).exists(), "step 1 writes nothing"

    step2 = client.post(
        IMPORT,
        {"step": "import", "document": text, "organization": str(b.pk), "sender-0": A_NUMBER},
    )

    assert step2.status_code == 302 and step2["Location"] == CHANGELIST
    imported = Workflow.objects.get(organization=a)
    assert (imported.name, imported.enabled) == ("Shipped", False)
    assert imported.steps.get().parameters["from"] == A_NUMBER
    assert WorkflowVersion.objects.get(workflow=imported).comment.startswith(
        "Imported from Clinic B export of "
    )
    assert Workflow.objects.filter(organization=b).count() == 1, "never into the other clinic"
    assert (
        "Imported 1 workflow(s) into Clinic A, all disabled"
        in client.get(CHANGELIST).content.decode()
    )


def test_an_unchosen_or_foreign_sender_imports_nothing(clinics: Any) -> None:
    a, b = clinics
    text = export_text(b, workflow_of(b, "Shipped"))
    client = role_client(a, CLINIC_ADMIN)
    for chosen in ("", B_NUMBER, "+15005550099"):
        response = client.post(IMPORT, {"step": "import", "document": text, "sender-0": chosen})
        assert response.status_code == 400
        assert "Nothing was imported" in response.content.decode()
    assert not Workflow.objects.filter(organization=a).exists()


def test_support_staff_and_clinic_staff_cannot_import(clinics: Any) -> None:
    a, b = clinics
    text = export_text(b, workflow_of(b, "Shipped"))
    for client in (role_client(a, CLINIC_STAFF), role_client(None, SUPPORT_STAFF)):
        assert client.get(IMPORT).status_code == 403
        response = client.post(IMPORT, {"step": "import", "document": text, "sender-0": A_NUMBER})
        assert response.status_code == 403
    assert Workflow.objects.count() == 1


def test_whoever_sees_every_clinic_chooses_the_clinic(clinics: Any) -> None:
    a, b = clinics
    text = export_text(a, workflow_of(a, "Shipped"))
    client = superuser_client()
    page = client.get(IMPORT).content.decode()
    assert 'name="organization"' in page and "Clinic B" in page

    unchosen = client.post(IMPORT, {"step": "plan", "document": text})
    assert unchosen.status_code == 400
    assert "Choose the clinic to import the workflows into." in unchosen.content.decode()

    response = client.post(
        IMPORT,
        {"step": "import", "document": text, "organization": str(b.pk), "sender-0": B_NUMBER},
    )
    assert response.status_code == 302
    assert Workflow.objects.get(organization=b).name == "Shipped"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"document": ""}, "Choose the export's file, or paste its text."),
        ({"document": "{nope"}, "The file is not valid JSON"),
        (
            {"document": '{"format": "careflow.workflows", "schemaVersion": 2}'},
            "schemaVersion is 2",
        ),
        ({"document": '{"a": "\\u0000"}'}, "control character (U+0000)"),
        ({"file": b"\xff\xfe{}"}, "The file is not text (UTF-8 JSON)"),
        ({"file": b" " * (MAX_DOCUMENT_BYTES + 1)}, "an export is at most 2,000,000 bytes"),
    ],
)
def test_what_is_not_an_export_gets_a_clear_error_and_nothing_is_imported(
    clinics: Any, data: dict[str, Any], message: str
) -> None:
    a, _ = clinics
    for step in ("plan", "import"):
        posted = dict(data)
        if "file" in posted:
            posted["file"] = SimpleUploadedFile("export.json", data["file"])
        response = role_client(a, CLINIC_ADMIN).post(IMPORT, {"step": step, **posted})
        assert response.status_code == 400
        assert message in html.unescape(response.content.decode())
    assert not Workflow.objects.exists()


def test_a_workflow_that_would_not_save_blocks_the_import(clinics: Any) -> None:
    a, b = clinics
    document = json.loads(export_text(b, workflow_of(b, "Shipped")))
    document["workflows"][0]["definition"]["steps"][0]["type"] = "teleport"
    client = role_client(a, CLINIC_ADMIN)

    response = client.post(IMPORT, {"step": "plan", "document": json.dumps(document)})

    page = response.content.decode()
    assert 'id="cf-import-blocked"' in page and "teleport" in page
    assert 'id="cf-import-confirm"' not in page
    assert not Workflow.objects.filter(organization=a).exists()


def test_a_paste_larger_than_a_request_may_be_is_a_clear_400(clinics: Any) -> None:
    a, _ = clinics
    response = role_client(a, CLINIC_ADMIN).post(
        IMPORT, {"step": "plan", "document": "x" * 3_000_000}
    )
    assert response.status_code == 400
    assert "The export is too large" in response.content.decode()
    assert not Workflow.objects.exists()
