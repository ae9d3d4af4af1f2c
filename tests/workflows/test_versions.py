"""Workflow versions (workflows.versions): every save path records the definition it left as
a version (who, when, why); restoring one saves it again as a new version, validated as any
save is; runs keep the definition they pinned."""

import json
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from integrations.models import Integration
from integrations.recipes import RECIPES
from integrations.twilio.sandbox import SandboxServer
from patients.audit import audit_actor
from patients.models import Order
from tests.conftest import sandbox_account
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    UserFactory,
    sms_step_definition,
)
from tests.patients import conftest as migration_helpers
from tests.patients.conftest import migrate
from workflows.engine import event_dispatch, run_advance, workflow_definition
from workflows.models import Event, Run, Step, StepRun, Workflow, WorkflowVersion
from workflows.recipes import recipe_add
from workflows.versions import (
    DefinitionInvalid,
    workflow_document,
    workflow_document_save,
    workflow_version_restore,
)

pytestmark = pytest.mark.django_db
migrated_back = migration_helpers.migrated_back
SENDER = "+15005550006"


DELAY = {
    "type": "delay",
    "adapter": "",
    "function": "",
    "parameters": {"kind": "duration", "seconds": "3600"},
    "purpose": "transactional",
    "urgent": False,
}


def _document(*steps: dict[str, Any], name: str = "Shipped", trigger: str = "order.shipped"):
    return {
        "name": name,
        "description": "",
        "definition": {"trigger": trigger, "filter": "", "steps": list(steps)},
    }


def _saved(integration: Integration, *steps: dict[str, Any], comment: str = "") -> Workflow:
    workflow = Workflow(organization=integration.organization, enabled=False)
    workflow_document_save(workflow=workflow, document=_document(*steps), comment=comment)
    return workflow


@pytest.fixture
def integration() -> Integration:
    return IntegrationFactory(senders=[SENDER])


def _form(integration: Integration, message: str, comment: str) -> dict[str, Any]:
    """The builder's form, posted with one SMS step and a change note."""
    definition = {"trigger": "order.shipped", "steps": [sms_step_definition(message)]}
    return {
        "organization": integration.organization.pk,
        "name": "Shipped",
        "description": "",
        "definition": json.dumps(definition),
        "comment": comment,
    }


def _messages(workflow: Workflow) -> list[str]:
    return [s.parameters.get("message", "") for s in workflow.steps.all()]


# --- recording ---------------------------------------------------------------------------


def test_the_admins_save_records_a_version_with_its_user_and_change_note(
    integration: Integration,
) -> None:
    user = UserFactory(is_superuser=True, username="dana")
    client = Client()
    client.force_login(user)
    data = _form(integration, "First", "  First draft  ")
    response = client.post(reverse("admin:workflows_workflow_add"), data)
    assert response.status_code == 302
    workflow = Workflow.objects.get()
    data = _form(integration, "Second", "Friendlier text")
    response = client.post(reverse("admin:workflows_workflow_change", args=[workflow.pk]), data)
    assert response.status_code == 302
    versions = list(WorkflowVersion.objects.order_by("number"))
    assert [(v.number, v.comment, v.created_by, v.created_by_repr) for v in versions] == [
        (1, "First draft", user, "dana"),
        (2, "Friendlier text", user, "dana"),
    ]
    workflow.refresh_from_db()
    assert workflow.version == 2
    steps = versions[1].document["definition"]["steps"]
    assert [s["parameters"]["message"] for s in steps] == ["Second"]
    assert "id" not in steps[0]  # a document names no database rows


def test_a_change_note_longer_than_the_field_is_refused_by_the_form(
    integration: Integration,
) -> None:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    data = _form(integration, "First", "x" * 201)
    response = client.post(reverse("admin:workflows_workflow_add"), data)
    assert response.status_code == 200
    assert "at most 200 characters" in response.content.decode()
    assert not Workflow.objects.exists() and not WorkflowVersion.objects.exists()


def test_adding_a_recipe_records_version_one_by_the_system(integration: Integration) -> None:
    recipe = RECIPES[0]
    workflow = recipe_add(recipe=recipe, organization=integration.organization)
    version = WorkflowVersion.objects.get(workflow=workflow)
    assert (version.number, version.created_by, version.created_by_repr) == (1, None, "system")
    assert version.comment == f"Added from the recipe “{recipe.name}”"
    assert version.document == workflow_document(workflow)
    assert workflow.version == 1 and not workflow.enabled


def test_a_save_in_a_named_actors_name_records_that_name(integration: Integration) -> None:
    with audit_actor("API key “ops”"):
        workflow = _saved(integration, sms_step_definition("Hi"))
    assert workflow.versions.get().created_by_repr == "API key “ops”"


def test_a_workflow_saved_before_history_began_numbers_its_next_version_after_its_own(
    integration: Integration,
) -> None:
    # Saved without a version (as factories and older code did), at version 4.
    workflow = Workflow.objects.create(
        organization=integration.organization, name="Old", trigger="order.shipped", version=4
    )
    version = workflow_document_save(
        workflow=workflow, document=_document(sms_step_definition("Hi"))
    )
    assert version.number == 5
    workflow.refresh_from_db()
    assert workflow.version == 5


# --- restoring ---------------------------------------------------------------------------


def test_restoring_saves_the_old_definition_as_a_new_version(integration: Integration) -> None:
    workflow = _saved(integration, sms_step_definition("First"), comment="v1")
    workflow_document_save(
        workflow=workflow,
        document=_document(sms_step_definition("Second"), DELAY, sms_step_definition("Third")),
        comment="v2",
    )
    first = workflow.versions.get(number=1)
    restored = workflow_version_restore(version=first)
    assert (restored.number, restored.restored_from, restored.comment) == (
        3,
        1,
        "Restored version 1",
    )
    workflow.refresh_from_db()
    assert workflow.version == 3
    assert _messages(workflow) == ["First"]
    assert restored.document == first.document
    # Versions in between stay in the history, unchanged.
    assert list(workflow.versions.values_list("number", flat=True)) == [3, 2, 1]
    assert workflow.versions.get(number=2).comment == "v2"


def test_a_restore_keeps_the_workflows_enabled_flag(integration: Integration) -> None:
    workflow = _saved(integration, sms_step_definition("First"))
    workflow_document_save(workflow=workflow, document=_document(sms_step_definition("Second")))
    Workflow.objects.filter(pk=workflow.pk).update(enabled=True)
    workflow_version_restore(version=workflow.versions.get(number=1))
    workflow.refresh_from_db()
    assert workflow.enabled and _messages(workflow) == ["First"]
    Workflow.objects.filter(pk=workflow.pk).update(enabled=False)
    workflow_version_restore(version=workflow.versions.get(number=2))
    workflow.refresh_from_db()
    assert not workflow.enabled and _messages(workflow) == ["Second"]


def test_a_restore_updates_steps_in_place_and_removes_the_extra_ones(
    integration: Integration,
) -> None:
    workflow = _saved(integration, sms_step_definition("First"))
    first_step = workflow.steps.get().pk
    workflow_document_save(
        workflow=workflow, document=_document(sms_step_definition("Second"), DELAY)
    )
    workflow_version_restore(version=workflow.versions.get(number=1))
    assert list(workflow.steps.values_list("pk", "position")) == [(first_step, 1)]
    assert Step.objects.filter(workflow=workflow).count() == 1


def test_a_version_whose_sender_is_no_longer_approved_is_refused_and_nothing_changes(
    integration: Integration,
) -> None:
    workflow = _saved(integration, sms_step_definition("First"))
    integration.senders = [SENDER, "+15005550007"]
    integration.save()
    workflow_document_save(
        workflow=workflow, document=_document(sms_step_definition("Second", "+15005550007"))
    )
    # The first number is withdrawn: version 1 would not save today.
    integration.senders = ["+15005550007"]
    integration.save()
    before = (workflow_document(workflow), WorkflowVersion.objects.count())
    with pytest.raises(DefinitionInvalid) as refused:
        workflow_version_restore(version=workflow.versions.get(number=1))
    assert any(SENDER in line for line in refused.value.lines), refused.value.lines
    workflow.refresh_from_db()
    assert (workflow_document(workflow), WorkflowVersion.objects.count()) == before
    assert workflow.version == 2


def test_a_document_that_is_not_a_definition_is_refused_with_a_sentence(
    integration: Integration,
) -> None:
    workflow = _saved(integration, sms_step_definition("First"))
    with pytest.raises(DefinitionInvalid, match="Definition:"):
        workflow_document_save(workflow=workflow, document={"name": "x", "definition": "[1, 2"})
    with pytest.raises(DefinitionInvalid, match="Trigger"):
        workflow_document_save(
            workflow=workflow,
            document=_document(sms_step_definition("Hi"), trigger="no.such.event"),
        )
    workflow.refresh_from_db()
    assert workflow.version == 1 and _messages(workflow) == ["First"]


def test_a_run_started_before_a_restore_finishes_on_its_old_steps(
    integration: Integration, sandbox: SandboxServer
) -> None:
    sandbox_account(sandbox, integration)
    workflow = _saved(integration, sms_step_definition("Old {{customer.firstName}}"))
    workflow_document_save(
        workflow=workflow,
        document=_document(DELAY, sms_step_definition("Pinned {{customer.firstName}}")),
    )
    Workflow.objects.filter(pk=workflow.pk).update(enabled=True)
    patient = PatientFactory(organization=integration.organization, first_name="Ann")
    ConsentFactory(patient=patient)
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()
    (run_id,) = event_dispatch(event_id=Event.objects.get(type="order.shipped").pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.WAITING
    assert run.definition["version"] == 2

    workflow_version_restore(version=workflow.versions.get(number=1))
    workflow.refresh_from_db()
    assert workflow.version == 3
    assert workflow_definition(workflow)["steps"][0]["parameters"]["message"].startswith("Old")

    # The delay is over.
    past = timezone.now() - timedelta(seconds=1)
    Run.objects.filter(pk=run_id).update(due_at=past)
    for step_run in StepRun.objects.filter(run_id=run_id, status="waiting"):
        step_run.due_at = past
        step_run.result = {"until": past.isoformat()}
        step_run.save()
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.SUCCEEDED, run.error
    assert [m["body"] for m in sandbox.messages()] == ["Pinned Ann"]


# --- concurrency -------------------------------------------------------------------------


def _in_threads(target: Callable[[int], Any], count: int) -> list[Any]:
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            barrier.wait()
            results.append(target(index))
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    return results


@pytest.mark.django_db(transaction=True)
def test_concurrent_saves_of_one_workflow_get_distinct_numbers(integration: Integration) -> None:
    workflow = _saved(integration, sms_step_definition("First"))

    def save(index: int) -> int:
        # Each loads the workflow as a form would, before the others commit.
        stale = Workflow.objects.select_related("organization").get(pk=workflow.pk)
        document = _document(sms_step_definition(f"Edit {index}"))
        return workflow_document_save(workflow=stale, document=document).number

    numbers = _in_threads(save, 4)
    assert sorted(numbers) == [2, 3, 4, 5]
    workflow.refresh_from_db()
    assert workflow.version == 5
    latest = workflow.versions.get(number=5)
    assert latest.document == workflow_document(workflow)


@pytest.mark.django_db(transaction=True)
def test_concurrent_admin_saves_from_stale_pages_get_distinct_numbers(
    integration: Integration,
) -> None:
    workflow = _saved(integration, sms_step_definition("First"))
    user = UserFactory(is_superuser=True)
    url = reverse("admin:workflows_workflow_change", args=[workflow.pk])

    def save(index: int) -> int:
        client = Client()
        client.force_login(user)
        data = _form(integration, f"E{index}", f"edit {index}")
        return client.post(url, data).status_code

    assert _in_threads(save, 3) == [302, 302, 302]
    assert sorted(workflow.versions.values_list("number", flat=True)) == [1, 2, 3, 4]
    workflow.refresh_from_db()
    assert workflow.version == 4


# --- the migration that began the history -------------------------------------------------


@pytest.mark.usefixtures("migrated_back")
def test_the_migration_starts_each_workflows_history_with_its_definition_then() -> None:
    old = migrate([("workflows", "0012_analytics")])
    organization = old.get_model("patients", "Organization").objects.create(
        name="Clinic", slug="clinic", timezone="UTC"
    )
    workflow = old.get_model("workflows", "Workflow").objects.create(
        organization=organization, name="Shipped", trigger="order.shipped", version=3
    )
    for position, message in ((2, "Second"), (1, "First")):
        old.get_model("workflows", "Step").objects.create(
            workflow=workflow,
            position=position,
            type="adapter",
            adapter="twilio",
            function="sendSMS",
            parameters={"message": message, "to": "{{customer.phone}}", "from": SENDER},
        )
    old.get_model("workflows", "Workflow").objects.create(
        organization=organization, name="Empty", trigger="order.shipped"
    )

    new = migrate([("workflows", "0013_versions")])
    versions = new.get_model("workflows", "WorkflowVersion").objects.order_by("workflow_id")
    shipped, empty = list(versions)
    assert (shipped.number, shipped.created_by_repr) == (3, "system")
    assert shipped.comment == "Recorded when version history began"
    definition = shipped.document["definition"]
    assert shipped.document["name"] == "Shipped" and definition["trigger"] == "order.shipped"
    assert [s["parameters"]["message"] for s in definition["steps"]] == ["First", "Second"]
    assert (empty.number, empty.document["definition"]["steps"]) == (1, [])
