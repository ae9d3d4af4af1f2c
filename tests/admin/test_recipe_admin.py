"""The "Add a ready-made workflow" page: one click adds a recipe to the user's own clinic,
disabled, and opens it in the builder; other clinics are neither seen nor written."""

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from tests.factories import (
    IntegrationFactory,
    OrganizationFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows.models import Workflow
from workflows.recipes import RECIPES

pytestmark = pytest.mark.django_db
URL = "/admin/workflows/workflow/recipes/"
SENDER = "+15005550006"
REMINDER = "appointment-reminder"


def _admin(organization, *extra: str) -> Client:
    return clinic_client(organization, "view_workflow", "add_workflow", "change_workflow", *extra)


def test_the_page_lists_every_recipe_with_its_description_and_the_changelist_links_it() -> None:
    organization = IntegrationFactory(senders=[SENDER]).organization
    client = _admin(organization)
    assert reverse("admin:workflows_workflow_recipes") == URL
    page = client.get(URL).content.decode()
    for recipe in RECIPES.values():
        assert recipe.name in page and f'value="{recipe.slug}"' in page
    assert "Send from" not in page  # one number: nothing to choose
    assert "cf-recipe-no-sender" not in page
    changelist = client.get(reverse("admin:workflows_workflow_changelist")).content.decode()
    assert 'id="cf-recipes-link"' in changelist and URL in changelist


def test_one_click_adds_it_disabled_to_the_users_clinic_and_opens_the_builder() -> None:
    organization = IntegrationFactory(senders=[SENDER]).organization
    response = _admin(organization).post(URL, {"recipe": REMINDER})
    workflow = Workflow.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:workflows_workflow_change", args=[workflow.pk])
    assert (workflow.organization, workflow.enabled) == (organization, False)
    assert workflow.steps.count() == 20
    builder_page = _admin(organization).get(response["Location"])
    assert builder_page.status_code == 200
    assert "careflow-builder-config" in builder_page.content.decode()


def test_a_user_without_add_permission_gets_403_and_nothing_is_added() -> None:
    organization = IntegrationFactory(senders=[SENDER]).organization
    client = clinic_client(organization, "view_workflow", "change_workflow")
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"recipe": REMINDER}).status_code == 403
    assert not Workflow.objects.exists()
    changelist = client.get(reverse("admin:workflows_workflow_changelist")).content.decode()
    assert "cf-recipes-link" not in changelist


def test_staff_of_no_clinic_get_403() -> None:
    user = UserFactory()
    user.user_permissions.set(Permission.objects.filter(codename="add_workflow"))
    client = Client()
    client.force_login(user)
    assert client.post(URL, {"recipe": REMINDER}).status_code == 403
    assert not Workflow.objects.exists()


def test_a_clinic_admin_cannot_add_into_or_see_another_clinics_workflows() -> None:
    mine = IntegrationFactory(senders=[SENDER]).organization
    theirs = IntegrationFactory(senders=["+15005550009"]).organization
    recipe = RECIPES[REMINDER]
    WorkflowFactory(organization=theirs, name=recipe.name)
    client = _admin(mine)
    page = client.get(URL).content.decode()
    assert "Already added" not in page  # their copy is not shown
    assert str(theirs) not in page and "+15005550009" not in page
    # Naming their clinic (or their number) does not add into it.
    response = client.post(URL, {"recipe": REMINDER, "organization": theirs.pk})
    assert response.status_code == 400
    assert "Choose the clinic" in response.content.decode()
    response = client.post(URL, {"recipe": REMINDER, "sender": "+15005550009"})
    assert response.status_code == 400
    assert "is not an approved sending number of" in response.content.decode()
    assert list(Workflow.objects.filter(organization=mine)) == []
    assert Workflow.objects.filter(organization=theirs).count() == 1
    # Its own copy, once added, is shown.
    client.post(URL, {"recipe": REMINDER})
    assert "Already added" in client.get(URL).content.decode()


def test_no_approved_number_is_a_clear_message_not_a_workflow() -> None:
    organization = OrganizationFactory(name="Bay Clinic")
    assert 'id="cf-recipe-no-sender"' in _admin(organization).get(URL).content.decode()
    response = _admin(organization).post(URL, {"recipe": REMINDER})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Bay Clinic has no approved sending number yet" in body
    assert "support staff add one to its" in body
    assert not Workflow.objects.exists()


def test_an_unknown_recipe_is_a_clear_400() -> None:
    organization = IntegrationFactory(senders=[SENDER]).organization
    response = _admin(organization).post(URL, {"recipe": "../../etc"})
    assert response.status_code == 400
    assert "Choose one of the ready-made workflows" in response.content.decode()
    assert not Workflow.objects.exists()


def test_several_numbers_offer_a_choice_and_the_chosen_one_is_used() -> None:
    organization = IntegrationFactory(senders=[SENDER, "+15005550007"]).organization
    client = _admin(organization)
    assert "Send from" in client.get(URL).content.decode()
    response = client.post(URL, {"recipe": "no-show-follow-up"})
    assert response.status_code == 400
    assert "several approved sending numbers" in response.content.decode()
    client.post(URL, {"recipe": "no-show-follow-up", "sender": "+15005550007"})
    workflow = Workflow.objects.get()
    assert {s.parameters["from"] for s in workflow.steps.filter(function="sendSMS")} == {
        "+15005550007"
    }


def test_support_staff_choose_the_clinic() -> None:
    first = IntegrationFactory(senders=[SENDER]).organization
    second = IntegrationFactory(senders=["+15005550007"]).organization
    user = UserFactory(is_superuser=True, is_staff=True)
    client = Client()
    client.force_login(user)
    page = client.get(URL).content.decode()
    assert str(first) in page and str(second) in page
    assert client.post(URL, {"recipe": REMINDER}).status_code == 400
    client.post(URL, {"recipe": REMINDER, "organization": second.pk})
    assert Workflow.objects.get().organization == second
