"""The ready-made workflows (integrations.recipes) added through workflows.recipes: each one
saves for a clinic with one approved number, disabled, and passes the builder's validation."""

import pytest

from integrations.recipes import RECIPES
from tests.factories import IntegrationFactory, OrganizationFactory
from workflows import builder
from workflows.engine import workflow_definition
from workflows.models import Workflow
from workflows.recipes import RECIPES as REGISTERED
from workflows.recipes import Recipe, RecipeUnavailable, recipe_add
from workflows.validation import workflow_validate

pytestmark = pytest.mark.django_db
SENDER = "+15005550006"


def test_every_recipe_is_registered_when_the_apps_are_ready() -> None:
    assert [REGISTERED[r.slug] for r in RECIPES] == list(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda r: r.slug)
def test_each_recipe_saves_disabled_and_validates(recipe) -> None:
    integration = IntegrationFactory(senders=[SENDER])
    workflow = recipe_add(recipe=recipe, organization=integration.organization)
    workflow.refresh_from_db()
    assert (workflow.enabled, workflow.name, workflow.trigger) == (
        False,
        recipe.name,
        recipe.trigger,
    )
    steps = workflow_definition(workflow)["steps"]
    assert len(steps) == len(recipe.steps(SENDER))
    report = workflow_validate(
        trigger=workflow.trigger,
        filter=workflow.filter,
        steps=steps,
        senders=builder.approved_senders(integration.organization),
    )
    assert report.ok, report.as_dict()
    texts = [s for s in steps if s["function"] == "sendSMS"]
    assert texts and {s["parameters"]["from"] for s in texts} == {SENDER}


def test_the_appointment_reminder_asks_twice_and_reasks_once() -> None:
    recipe = REGISTERED["appointment-reminder"]
    steps = recipe.steps(SENDER)
    waits = [(n, s["parameters"]) for n, s in enumerate(steps, start=1) if s["type"] == "reply"]
    assert [n for n, _ in waits] == [2, 12]
    (_, p1), (_, p2) = waits
    assert p1["no_reply"] == {"goto": 11} and p2["no_reply"] == {"goto": "end"}
    assert p1["otherwise"]["reask"] and p2["otherwise"]["reask"]
    assert [b["label"] for b in p1["branches"]] == ["Confirm", "Cancel", "Reschedule"]


def test_a_clinic_without_an_approved_number_is_told_what_to_set_and_nothing_is_saved() -> None:
    organization = OrganizationFactory(name="Bay Clinic")
    with pytest.raises(RecipeUnavailable, match="Bay Clinic has no approved sending number"):
        recipe_add(recipe=RECIPES[0], organization=organization)
    assert not Workflow.objects.exists()


def test_a_disabled_integration_s_numbers_are_not_used() -> None:
    integration = IntegrationFactory(senders=[SENDER], enabled=False)
    with pytest.raises(RecipeUnavailable, match="no approved sending number"):
        recipe_add(recipe=RECIPES[0], organization=integration.organization)
    assert not Workflow.objects.exists()


def test_several_numbers_need_a_choice_among_them() -> None:
    other = "+15005550007"
    integration = IntegrationFactory(senders=[SENDER, other])
    organization = integration.organization
    with pytest.raises(RecipeUnavailable, match="several approved sending numbers"):
        recipe_add(recipe=RECIPES[1], organization=organization)
    with pytest.raises(RecipeUnavailable, match="is not an approved sending number"):
        recipe_add(recipe=RECIPES[1], organization=organization, sender="+15550000000")
    assert not Workflow.objects.exists()
    workflow = recipe_add(recipe=RECIPES[1], organization=organization, sender=other)
    froms = {s.parameters.get("from") for s in workflow.steps.all() if s.function == "sendSMS"}
    assert froms == {other}


def test_a_recipe_that_fails_validation_is_refused_with_its_problems_and_not_saved() -> None:
    integration = IntegrationFactory(senders=[SENDER])
    broken = Recipe(
        slug="broken",
        name="Broken",
        description="A typo in a variable.",
        trigger="appointment.no_show",
        sender_adapter="twilio",
        steps=lambda sender: [
            {
                "type": "adapter",
                "adapter": "twilio",
                "function": "sendSMS",
                "parameters": {
                    "message": "Hi {{customer.frstName}}",
                    "to": "{{customer.phone}}",
                    "from": sender,
                },
            }
        ],
    )
    with pytest.raises(RecipeUnavailable, match=r"customer\.frstName"):
        recipe_add(recipe=broken, organization=integration.organization)
    assert not Workflow.objects.exists()
