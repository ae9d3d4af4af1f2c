"""Ready-made workflows ("recipes") a clinic adds in one click, then edits in the builder.

A recipe is data: a name, a one-line description, a trigger and its steps, written for the
clinic's own sending number. The recipes name providers' functions (Twilio's sendSMS, careflow
records' writes), so they live with the providers and register here, as adapters do
(`integrations.recipes`, registered by `IntegrationsConfig.ready()`); the engine's admin lists
this registry and never names a provider.

A workflow added from a recipe starts disabled, so nothing is sent before an admin has read it
and enabled it, and it is checked by the same save-time validation as one built by hand.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from patients.models import Organization
from workflows import builder
from workflows.models import Workflow
from workflows.validation import ClinicSenders
from workflows.versions import DefinitionInvalid, workflow_document_save

# The step definitions of a recipe, given the clinic's sending number.
StepsFor = Callable[[str], Sequence[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Recipe:
    """One ready-made workflow. `sender_adapter` names the adapter whose approved sender the
    recipe's messages are sent from (its integration must have one)."""

    slug: str
    name: str
    description: str
    trigger: str
    sender_adapter: str
    steps: StepsFor


class RecipeUnavailable(Exception):
    """The recipe cannot be added for this clinic as it is; the message says what to set."""


RECIPES: dict[str, Recipe] = {}


def recipe_register(recipe: Recipe) -> Recipe:
    RECIPES[recipe.slug] = recipe
    return recipe


def recipe_sender(
    *, recipe: Recipe, organization: Organization, senders: ClinicSenders, chosen: str = ""
) -> str:
    """The sender the recipe's messages use among the clinic's approved `senders`: its only
    one, or the one `chosen` among several. RecipeUnavailable says what to set otherwise."""
    approved = senders.get(recipe.sender_adapter)
    numbers = approved.numbers if approved is not None else ()
    integration = approved.integration if approved is not None else recipe.sender_adapter
    if not numbers:
        raise RecipeUnavailable(
            f"{organization} has no approved sending number yet: support staff add one to its "
            f"{integration} integration (and enable it), then add this workflow"
        )
    if chosen:
        if chosen not in numbers:
            raise RecipeUnavailable(
                f"{chosen} is not an approved sending number of {organization}; choose "
                f"{' or '.join(numbers)}"
            )
        return chosen
    if len(numbers) > 1:
        raise RecipeUnavailable(
            f"{organization} has several approved sending numbers: choose the one this "
            f"workflow sends from ({' or '.join(numbers)})"
        )
    return numbers[0]


def recipe_definition(*, recipe: Recipe, sender: str) -> dict[str, Any]:
    """The recipe as the builder posts a definition."""
    return {"trigger": recipe.trigger, "filter": {}, "steps": list(recipe.steps(sender))}


@transaction.atomic
def recipe_add(*, recipe: Recipe, organization: Organization, sender: str = "") -> Workflow:
    """Add the recipe to the clinic as a new, disabled workflow, validated as the builder's
    save validates one. RecipeUnavailable (nothing saved) says what to set first."""
    senders = builder.approved_senders(organization)
    chosen = recipe_sender(recipe=recipe, organization=organization, senders=senders, chosen=sender)
    workflow = Workflow(organization=organization, enabled=False)
    document = {
        "name": recipe.name,
        "description": recipe.description,
        "definition": recipe_definition(recipe=recipe, sender=chosen),
    }
    try:
        workflow_document_save(
            workflow=workflow, document=document, comment=f"Added from the recipe “{recipe.name}”"
        )
    except DefinitionInvalid as exc:
        raise RecipeUnavailable(str(exc)) from None
    return workflow
