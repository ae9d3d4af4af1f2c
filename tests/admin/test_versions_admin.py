"""A workflow's versions in the admin: the list (clinic time, who, note, restored from), the
diff between any two, and restore (a confirmation page, then a POST): for every role, scoped
to the user's clinic (another clinic's workflow is a 404 on every URL)."""

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.models import Integration
from patients.audit import audit_actor
from patients.models import Organization
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.factories import (
    IntegrationFactory,
    StaffMembershipFactory,
    UserFactory,
    sms_step_definition,
)
from workflows.models import Workflow, WorkflowVersion
from workflows.versions import workflow_document_save

pytestmark = pytest.mark.django_db
SENDER = "+15005550006"


def _save(workflow: Workflow, message: str, comment: str, sender: str = SENDER) -> None:
    document = {
        "name": "Shipped",
        "description": "",
        "definition": {"trigger": "order.shipped", "steps": [sms_step_definition(message, sender)]},
    }
    with audit_actor("Dana"):
        workflow_document_save(workflow=workflow, document=document, comment=comment)


def _workflow(integration: Integration, edits: int = 2) -> Workflow:
    """A workflow of the clinic with versions 1..edits+1: messages "Text 1", "Text 2", …"""
    workflow = Workflow(organization=integration.organization, enabled=True)
    _save(workflow, "Text 1", "First draft")
    for n in range(2, edits + 2):
        _save(workflow, f"Text {n}", f"Edit {n}")
    return workflow


@pytest.fixture
def integration() -> Integration:
    organization = Organization.objects.create(name="Sunrise", timezone="America/New_York")
    return IntegrationFactory(organization=organization, senders=[SENDER])


def _role(organization: Organization | None, role: str) -> Client:
    user = (
        StaffMembershipFactory(organization=organization).user
        if organization is not None
        else UserFactory()
    )
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def _urls(workflow: Workflow) -> dict[str, str]:
    args = [workflow.pk]
    return {
        "list": reverse("admin:workflows_workflow_versions", args=args),
        "compare": reverse("admin:workflows_workflow_version_compare", args=args),
        "restore": reverse("admin:workflows_workflow_version_restore", args=args),
    }


def _text(response: Any) -> str:
    return response.content.decode()


# --- the list ----------------------------------------------------------------------------


def test_the_list_shows_each_version_in_clinic_time_with_who_and_why(
    integration: Integration,
) -> None:
    workflow = _workflow(integration)
    WorkflowVersion.objects.filter(workflow=workflow, number=1).update(
        created_at="2026-03-01T15:30:00Z"
    )
    response = _role(integration.organization, CLINIC_ADMIN).get(_urls(workflow)["list"])
    assert response.status_code == 200
    page = _text(response)
    # 15:30 UTC is 10:30 in New York (EST).
    assert "10:30" in page and "Dana" in page
    assert "First draft" in page and "Edit 3" in page
    assert page.index('id="cf-version-3"') < page.index('id="cf-version-1"')  # newest first
    # Compare: by default the latest with the one before it.
    assert '<option value="2" selected>' in page and '<option value="3" selected>' in page
    assert "Restore version 1…" in page and "Restore version 3…" not in page  # 3 is current


def test_the_list_and_change_page_link_each_other(integration: Integration) -> None:
    workflow = _workflow(integration)
    client = _role(integration.organization, CLINIC_ADMIN)
    change = _text(client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk])))
    assert f'href="{_urls(workflow)["list"]}"' in change
    changelist = _text(client.get(reverse("admin:workflows_workflow_changelist")))
    assert f'href="{_urls(workflow)["list"]}"' in changelist


def test_a_restored_version_says_which_it_restored(integration: Integration) -> None:
    workflow = _workflow(integration)
    client = _role(integration.organization, CLINIC_ADMIN)
    client.post(_urls(workflow)["restore"], {"version": "1"})
    page = _text(client.get(_urls(workflow)["list"]))
    assert "Restored version 1" in page and "(restored from version 1)" in page


def test_a_workflow_without_versions_yet_says_so(integration: Integration) -> None:
    workflow = Workflow.objects.create(organization=integration.organization, name="Bare")
    client = _role(integration.organization, CLINIC_ADMIN)
    assert "No versions recorded yet" in _text(client.get(_urls(workflow)["list"]))
    response = client.get(_urls(workflow)["compare"])
    assert response.status_code == 200 and "nothing to compare" in _text(response)


# --- the diff ----------------------------------------------------------------------------


def test_the_diff_shows_the_changed_message_side_by_side(integration: Integration) -> None:
    workflow = _workflow(integration)
    client = _role(integration.organization, CLINIC_STAFF)
    response = client.get(_urls(workflow)["compare"], {"from": "1", "to": "3"})
    assert response.status_code == 200
    page = _text(response)
    assert "<del>Text 1</del>" in page and "<ins>Text 3</ins>" in page
    assert "Message" in page and "1 changed" in page
    assert f'<a href="{_urls(workflow)["list"]}">Versions</a> &rsaquo; Compare' in page
    assert '{"' not in page.split('id="cf-diff-steps"')[1]  # not a JSON dump


def test_the_diff_defaults_to_the_latest_and_the_one_before(integration: Integration) -> None:
    workflow = _workflow(integration)
    page = _text(_role(integration.organization, CLINIC_ADMIN).get(_urls(workflow)["compare"]))
    assert "<del>Text 2</del>" in page and "<ins>Text 3</ins>" in page


@pytest.mark.parametrize(
    "query",
    [{"from": "1", "to": "99"}, {"from": "x", "to": "2"}, {"from": "1"}, {"to": "-1"}],
)
def test_a_diff_of_versions_that_do_not_exist_is_a_clear_400(
    integration: Integration, query: dict[str, str]
) -> None:
    workflow = _workflow(integration)
    response = _role(integration.organization, CLINIC_ADMIN).get(_urls(workflow)["compare"], query)
    assert response.status_code == 400
    assert 'class="errornote"' in _text(response)


def test_the_diff_costs_a_bounded_number_of_queries(integration: Integration) -> None:
    client = _role(integration.organization, CLINIC_ADMIN)

    def cost(workflow: Workflow) -> int:
        with CaptureQueriesContext(connection) as queries:
            assert client.get(_urls(workflow)["compare"]).status_code == 200
            assert client.get(_urls(workflow)["list"]).status_code == 200
        return len(queries)

    assert cost(_workflow(integration, edits=2)) == cost(_workflow(integration, edits=12))


# --- restore -----------------------------------------------------------------------------


def test_restore_asks_first_then_saves_a_new_version(integration: Integration) -> None:
    workflow = _workflow(integration)
    client = _role(integration.organization, CLINIC_ADMIN)
    page = client.get(_urls(workflow)["restore"], {"version": "1"})
    assert page.status_code == 200
    text = _text(page)
    assert "Yes, restore version 1" in text and "<del>Text 3</del>" in text
    assert "<ins>Text 1</ins>" in text and "stays enabled" in text
    assert workflow.versions.count() == 3  # asking changed nothing
    response = client.post(_urls(workflow)["restore"], {"version": "1"})
    assert response.status_code == 302 and response["Location"] == _urls(workflow)["list"]
    workflow.refresh_from_db()
    latest = workflow.versions.get(number=4)
    assert (latest.comment, latest.restored_from) == ("Restored version 1", 1)
    assert workflow.enabled and workflow.steps.get().parameters["message"] == "Text 1"


def test_a_restore_the_clinic_can_no_longer_send_is_refused_with_why(
    integration: Integration,
) -> None:
    workflow = _workflow(integration, edits=0)
    integration.senders = [SENDER, "+15005550007"]
    integration.save()
    _save(workflow, "Other number", "New number", sender="+15005550007")
    integration.senders = ["+15005550007"]
    integration.save()
    response = _role(integration.organization, CLINIC_ADMIN).post(
        _urls(workflow)["restore"], {"version": "1"}
    )
    assert response.status_code == 400
    page = _text(response)
    assert "was not restored" in page and SENDER in page
    assert workflow.versions.count() == 2
    assert workflow.steps.get().parameters["message"] == "Other number"


@pytest.mark.parametrize("data", [{}, {"version": "abc"}, {"version": "99"}, {"version": "3"}])
def test_restoring_no_version_an_unknown_one_or_the_current_one_is_a_400(
    integration: Integration, data: dict[str, str]
) -> None:
    workflow = _workflow(integration)
    client = _role(integration.organization, CLINIC_ADMIN)
    for response in (
        client.get(_urls(workflow)["restore"], data),
        client.post(_urls(workflow)["restore"], data),
    ):
        assert response.status_code == 400
        assert 'class="errornote"' in _text(response)
    assert workflow.versions.count() == 3


def test_restore_needs_the_csrf_token() -> None:
    integration = IntegrationFactory(senders=[SENDER])
    workflow = _workflow(integration)
    user = StaffMembershipFactory(organization=integration.organization).user
    user.groups.add(Group.objects.get(name=CLINIC_ADMIN))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(_urls(workflow)["restore"], {"version": "1"}).status_code == 403
    assert workflow.versions.count() == 3


# --- roles and clinics -------------------------------------------------------------------


@pytest.mark.parametrize("role", [CLINIC_STAFF, SUPPORT_STAFF])
def test_read_only_roles_see_versions_and_diffs_but_cannot_restore(
    integration: Integration, role: str
) -> None:
    workflow = _workflow(integration)
    client = _role(None if role == SUPPORT_STAFF else integration.organization, role)
    urls = _urls(workflow)
    listing = client.get(urls["list"])
    assert listing.status_code == 200 and "Restore version" not in _text(listing)
    diff = client.get(urls["compare"], {"from": "1", "to": "2"})
    assert diff.status_code == 200 and "Restore version" not in _text(diff)
    assert client.get(urls["restore"], {"version": "1"}).status_code == 403
    assert client.post(urls["restore"], {"version": "1"}).status_code == 403
    assert workflow.versions.count() == 3
    # No change note on a page that cannot save.
    change = client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
    assert change.status_code == 200 and "Change note" not in _text(change)


def test_the_change_note_shows_after_the_builder_for_an_editor(integration: Integration) -> None:
    workflow = _workflow(integration)
    client = _role(integration.organization, CLINIC_ADMIN)
    page = _text(client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk])))
    assert 'name="comment"' in page
    assert page.index('id="careflow-builder"') < page.index('name="comment"')
    assert page.index('name="comment"') < page.index('name="_save"')


@pytest.mark.parametrize("role", [CLINIC_ADMIN, CLINIC_STAFF])
def test_another_clinics_workflow_is_a_404_on_every_versions_url(
    integration: Integration, role: str
) -> None:
    workflow = _workflow(integration)
    other = IntegrationFactory(senders=[SENDER]).organization
    client = _role(other, role)
    for url in _urls(workflow).values():
        assert client.get(url, {"from": "1", "to": "2", "version": "1"}).status_code == 404
    assert client.post(_urls(workflow)["restore"], {"version": "1"}).status_code == 404
    assert workflow.versions.count() == 3


def test_support_staff_see_any_clinics_versions(integration: Integration) -> None:
    workflow = _workflow(integration)
    client = _role(None, SUPPORT_STAFF)
    assert client.get(_urls(workflow)["list"]).status_code == 200
