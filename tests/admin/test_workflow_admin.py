"""Building a workflow in the admin: the builder posts the whole definition as one JSON field;
invalid filters and templates are refused at save with messages a clinic admin understands,
on the step and field they belong to, and nothing is saved. A From number must be one the
clinic's integration approved; "enabled" is not a field of the form."""

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from tests.factories import (
    IntegrationFactory,
    OrganizationFactory,
    SmsStepFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows.models import Run, Step, Workflow

pytestmark = pytest.mark.django_db

SMS = {"message": "Hi {{customer.firstName}}", "to": "{{customer.phone}}", "from": "+15005550006"}


def _clinic(numbers: tuple[str, ...] = ("+15005550006",)) -> Any:
    """A clinic whose Twilio integration approved `numbers`."""
    return IntegrationFactory(senders=list(numbers)).organization


@pytest.fixture
def client_() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


def _sms(**parameters: Any) -> dict[str, Any]:
    return {
        "type": "adapter",
        "adapter": "twilio",
        "function": "sendSMS",
        "parameters": {**SMS, **parameters},
        "purpose": "transactional",
    }


def _post_data(
    org: Any,
    steps: list[dict[str, Any]],
    *,
    trigger: str = "order.shipped",
    filter: Any = "",
    **fields: Any,
) -> dict[str, Any]:
    return {
        "organization": org.pk,
        "name": "Shipped",
        "description": "",
        "definition": json.dumps({"trigger": trigger, "filter": filter, "steps": steps}),
        **fields,
    }


def _text(response: Any) -> str:
    return response.content.decode().replace("&quot;", '"').replace("&#x27;", "'")


def test_the_guides_workflow_saves(client_: Client) -> None:
    org = _clinic()
    response = client_.post(reverse("admin:workflows_workflow_add"), _post_data(org, [_sms()]))
    assert response.status_code == 302, _text(response)[:3000]
    step = Step.objects.get()
    assert step.parameters == SMS
    assert (step.position, step.type, step.adapter, step.function) == (
        1,
        "adapter",
        "twilio",
        "sendSMS",
    )
    assert step.workflow.trigger == "order.shipped"
    assert step.workflow.filter == {}


def test_trigger_filter_and_conditions_are_saved_from_the_definition(client_: Client) -> None:
    org = _clinic()
    condition = {
        "type": "condition",
        "parameters": {"query": '{"order.totalAmount": {"$gte": 50}}', "else": "end"},
    }
    delay = {"type": "delay", "parameters": {"kind": "duration", "seconds": "3600", "time": ""}}
    data = _post_data(
        org, [condition, delay, _sms()], trigger="order.created", filter='{"order.coupon": "VIP"}'
    )
    response = client_.post(reverse("admin:workflows_workflow_add"), data)
    assert response.status_code == 302, _text(response)[:3000]
    workflow = Workflow.objects.get()
    assert (workflow.trigger, workflow.filter) == ("order.created", {"order.coupon": "VIP"})
    steps = list(workflow.steps.all())
    assert [s.type for s in steps] == ["condition", "delay", "adapter"]
    assert steps[0].parameters == {"query": {"order.totalAmount": {"$gte": 50}}, "else": "end"}
    assert (steps[0].adapter, steps[0].function) == ("", "")
    # blank parameters are not stored
    assert steps[1].parameters == {"kind": "duration", "seconds": "3600"}


@pytest.mark.parametrize(
    ("steps", "definition", "place", "message"),
    [
        (
            [_sms(message="Hi {{customer.frstName}}")],
            {},
            ("0", "message"),
            "{{customer.frstName}} is not a variable of order.shipped; did you mean {{customer.firstName}}",
        ),
        ([_sms(to="{{customer}}")], {}, ("0", "to"), "{{customer}} is an object, not text"),
        ([_sms(message="Hi {{customer.firstName")], {}, ("0", "message"), "never closed"),
        ([_sms(**{"from": ""})], {}, ("0", "from"), "From Phone is required"),
        ([_sms()], {"filter": '{"order.totalAmount": {"$gtee": 5}}'}, ("filter",), "$gtee"),
        ([_sms()], {"filter": "{not json"}, ("filter",), "the filter is not valid JSON"),
        ([_sms()], {"trigger": ""}, ("trigger",), "choose the trigger"),
        (
            [{"type": "condition", "parameters": {"query": "{oops"}}, _sms()],
            {},
            ("0", "query"),
            "the query is not valid JSON",
        ),
        (
            [{"type": "delay", "parameters": {"kind": "until_time", "time": "9am"}}],
            {},
            ("0", "time"),
            "time must be HH:MM",
        ),
        (
            [{"type": "adapter", "adapter": "twilio", "function": "", "parameters": {}}],
            {},
            ("0", "function"),
            "choose a function",
        ),
    ],
)
def test_invalid_definitions_are_refused_on_the_right_place_and_nothing_is_saved(
    client_: Client,
    steps: list[dict[str, Any]],
    definition: dict[str, Any],
    place: tuple[str, ...],
    message: str,
) -> None:
    org = _clinic()
    response = client_.post(
        reverse("admin:workflows_workflow_add"), _post_data(org, steps, **definition)
    )
    assert response.status_code == 200
    assert message in _text(response)  # in the form's error list, for pages without JS
    errors = response.context["builder"]["errors"]
    where = errors["steps"][place[0]][place[1]] if len(place) == 2 else errors[place[0]]
    assert any(message in text for text in where), errors
    assert not Workflow.objects.exists()


def test_an_error_is_reported_on_the_step_it_belongs_to(client_: Client) -> None:
    org = _clinic()
    steps = [_sms(), _sms(message="Hello {{customer.frstName}}")]
    response = client_.post(reverse("admin:workflows_workflow_add"), _post_data(org, steps))
    errors = response.context["builder"]["errors"]["steps"]
    assert list(errors) == ["1"]
    assert list(errors["1"]) == ["message"]
    assert "Step 2 (Twilio → Send SMS), Message: {{customer.frstName}}" in _text(response)


def test_a_refused_save_keeps_everything_that_was_typed(client_: Client) -> None:
    org = _clinic()
    steps = [_sms(message="Typed with care {{customer.frstName}} ✓")]
    data = _post_data(org, steps, filter='{"order.coupon": "X"}', name="My draft")
    response = client_.post(reverse("admin:workflows_workflow_add"), data)
    assert response.status_code == 200
    kept = response.context["builder"]["definition"]
    assert kept["steps"][0]["parameters"]["message"] == "Typed with care {{customer.frstName}} ✓"
    assert kept["filter"] == '{"order.coupon": "X"}'
    assert response.context["adminform"].form["name"].value() == "My draft"


def test_a_definition_that_is_not_json_is_an_error_on_its_field(client_: Client) -> None:
    org = _clinic()
    data = {**_post_data(org, []), "definition": "{oops"}
    response = client_.post(reverse("admin:workflows_workflow_add"), data)
    assert response.status_code == 200
    assert "the definition is not valid JSON" in _text(response)
    assert response.context["builder"]["definition"] is None  # the builder leaves the text alone
    assert not Workflow.objects.exists()


def test_editing_bumps_the_version_and_keeps_step_ids(client_: Client) -> None:
    workflow = WorkflowFactory(organization=_clinic())
    step = SmsStepFactory(workflow=workflow)
    data = _post_data(workflow.organization, [{**_sms(message="New text"), "id": step.pk}])
    response = client_.post(reverse("admin:workflows_workflow_change", args=[workflow.pk]), data)
    assert response.status_code == 302
    workflow.refresh_from_db()
    assert workflow.version == 2
    assert list(workflow.steps.values_list("pk", "parameters__message")) == [(step.pk, "New text")]


def test_saving_reorders_adds_and_removes_steps(client_: Client) -> None:
    workflow = WorkflowFactory(organization=_clinic())
    first = SmsStepFactory(workflow=workflow, position=1)
    second = SmsStepFactory(workflow=workflow, position=2)
    gone = SmsStepFactory(workflow=workflow, position=3)
    steps = [
        {**_sms(message="second"), "id": second.pk},
        {"type": "delay", "parameters": {"kind": "duration", "seconds": "60"}},
        {**_sms(message="first"), "id": first.pk},
        # an id of another workflow's step is not taken over: a new step is made
        {**_sms(message="new"), "id": SmsStepFactory().pk},
    ]
    data = _post_data(workflow.organization, steps)
    response = client_.post(reverse("admin:workflows_workflow_change", args=[workflow.pk]), data)
    assert response.status_code == 302, _text(response)[:2000]
    saved = list(workflow.steps.order_by("position"))
    assert [(s.position, s.type, s.parameters.get("message")) for s in saved] == [
        (1, "adapter", "second"),
        (2, "delay", None),
        (3, "adapter", "first"),
        (4, "adapter", "new"),
    ]
    assert saved[0].pk == second.pk and saved[2].pk == first.pk
    assert not Step.objects.filter(pk=gone.pk).exists()


def test_a_refused_edit_changes_nothing(client_: Client) -> None:
    workflow = WorkflowFactory()
    step = SmsStepFactory(workflow=workflow)
    data = _post_data(workflow.organization, [{**_sms(message="{{nope}}"), "id": step.pk}])
    response = client_.post(reverse("admin:workflows_workflow_change", args=[workflow.pk]), data)
    assert response.status_code == 200
    workflow.refresh_from_db()
    step.refresh_from_db()
    assert workflow.version == 1
    assert step.parameters["message"].startswith("Hi {{customer.firstName}}")


@pytest.mark.parametrize("enabled", [True, False])
def test_the_form_neither_enables_nor_disables(client_: Client, enabled: bool) -> None:
    """Only the banner's Enable…/Disable… do, after their checks and confirmation: a posted
    "enabled" (an old form, a crafted post) changes nothing."""
    workflow = WorkflowFactory(organization=_clinic(), enabled=enabled)
    data = _post_data(workflow.organization, [_sms()], enabled="" if enabled else "on")
    response = client_.post(reverse("admin:workflows_workflow_change", args=[workflow.pk]), data)
    assert response.status_code == 302, _text(response)[:2000]
    workflow.refresh_from_db()
    assert workflow.enabled is enabled
    assert workflow.version == 2  # the rest was saved


def test_the_form_has_no_enabled_checkbox_and_a_new_workflow_starts_disabled(
    client_: Client,
) -> None:
    page = client_.get(reverse("admin:workflows_workflow_add"))
    assert "enabled" not in page.context["adminform"].form.fields
    assert 'name="enabled"' not in page.content.decode()
    assert "A new workflow starts disabled" in page.content.decode()
    response = client_.post(
        reverse("admin:workflows_workflow_add"), _post_data(_clinic(), [_sms()], enabled="on")
    )
    assert response.status_code == 302
    assert Workflow.objects.get().enabled is False


def test_the_changelist_still_shows_and_filters_by_enabled(client_: Client) -> None:
    WorkflowFactory(name="On", enabled=True)
    WorkflowFactory(name="Off", enabled=False)
    response = client_.get(reverse("admin:workflows_workflow_changelist") + "?enabled__exact=1")
    assert [w.name for w in response.context["cl"].result_list] == ["On"]
    assert "column-enabled" in response.content.decode()


# --- From Phone: one of the clinic's approved numbers, or a variable ------------------------


@pytest.mark.parametrize("sender", ["+15005550006", "+14155550100", "{{customer.phone}}"])
def test_an_approved_number_or_a_variable_is_accepted(client_: Client, sender: str) -> None:
    org = _clinic(("+15005550006", "+14155550100"))
    data = _post_data(org, [_sms(**{"from": sender})])
    response = client_.post(reverse("admin:workflows_workflow_add"), data)
    assert response.status_code == 302, _text(response)[:2000]
    assert Step.objects.get().parameters["from"] == sender


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        (
            ("+15005550006",),
            "+15005550007 is not an approved sending number of {clinic}; choose +15005550006, "
            "or use a {{variable}}",
        ),
        (
            (),
            "{clinic} has no approved sending numbers yet: support staff add them to its "
            "Twilio integration",
        ),
    ],
)
def test_a_number_that_is_not_approved_is_refused_on_its_field(
    client_: Client, numbers: tuple[str, ...], message: str
) -> None:
    org = _clinic(numbers) if numbers else OrganizationFactory()
    data = _post_data(org, [_sms(**{"from": "+15005550007"})])
    response = client_.post(reverse("admin:workflows_workflow_add"), data)
    assert response.status_code == 200
    expected = message.replace("{clinic}", str(org))
    assert response.context["builder"]["errors"]["steps"]["0"]["from"] == [expected]
    assert f"Step 1 (Twilio → Send SMS), From Phone: {expected}" in _text(response)
    assert not Workflow.objects.exists()


def test_another_clinics_number_is_not_approved_for_this_one(client_: Client) -> None:
    _clinic(("+14155550100",))
    org = _clinic(("+15005550006",))
    data = _post_data(org, [_sms(**{"from": "+14155550100"})])
    response = client_.post(reverse("admin:workflows_workflow_add"), data)
    assert response.status_code == 200
    assert "is not an approved sending number" in _text(response)


def test_a_disabled_integrations_numbers_are_not_approved(client_: Client) -> None:
    integration = IntegrationFactory(enabled=False)
    data = _post_data(integration.organization, [_sms()])
    response = client_.post(reverse("admin:workflows_workflow_add"), data)
    assert response.status_code == 200
    assert "has no approved sending numbers yet" in _text(response)


def test_the_change_page_shows_the_saved_definition_to_the_builder(client_: Client) -> None:
    workflow = WorkflowFactory(filter={"order.coupon": "VIP"})
    step = SmsStepFactory(workflow=workflow)
    response = client_.get(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
    config = response.context["builder"]
    assert config["definition"]["trigger"] == "order.shipped"
    assert json.loads(config["definition"]["filter"]) == {"order.coupon": "VIP"}
    assert config["definition"]["steps"][0]["id"] == step.pk
    assert config["errors"] is None
    assert 'id="careflow-builder-config"' in response.content.decode()
    assert Run.objects.count() == 0


def test_a_user_who_may_only_view_gets_a_read_only_builder() -> None:
    workflow = WorkflowFactory()
    SmsStepFactory(workflow=workflow)
    client = clinic_client(workflow.organization, "view_workflow")
    response = client.get(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
    assert response.status_code == 200
    config = response.context["builder"]
    assert config["editable"] is False
    assert config["definition"]["steps"][0]["parameters"]["to"] == "{{customer.phone}}"
    assert "liveTest" in config["urls"]  # the URL is there, but the page offers no button
    assert 'id="cf-live-test"' not in response.content.decode()


# --- "Wait for reply" ------------------------------------------------------------------------


# The appointment confirmation's wait: C → next, X → step 4, a score ends the run, no reply
# and anything else → step 5.
WAIT = {
    "kind": "duration",
    "seconds": "86400",
    "branches": [
        {"label": "Confirm", "match": "keywords", "keywords": ["c", "yes"], "goto": "next"},
        {"label": "Cancel", "match": "keywords", "keywords": ["x"], "goto": 4},
        {"label": "Score", "match": "number", "min": 1, "max": 5, "goto": "end"},
    ],
    "otherwise": {"goto": 5, "reask": "Sorry, please reply C or X."},
    "no_reply": {"goto": 5},
}


def _wait(**parameters: Any) -> dict[str, Any]:
    """The wait as the builder posts it: its structures as JSON text."""
    values = {**WAIT, **parameters}
    return {
        "type": "reply",
        "parameters": {
            name: json.dumps(value) if isinstance(value, (list, dict)) else value
            for name, value in values.items()
        },
    }


def _confirmation(**wait: Any) -> list[dict[str, Any]]:
    return [_sms(), _wait(**wait), _sms(), _sms(), _sms()]


def test_a_wait_for_reply_is_saved_with_its_branches_as_json(client_: Client) -> None:
    org = _clinic()
    response = client_.post(
        reverse("admin:workflows_workflow_add"),
        _post_data(org, _confirmation(), trigger="appointment.reminder"),
    )
    assert response.status_code == 302, _text(response)[:3000]
    wait = Step.objects.get(position=2)
    assert (wait.type, wait.adapter, wait.function) == ("reply", "", "")
    assert wait.parameters == WAIT  # the structures as JSON, not text
    # the change page gives the builder the same definition back, the structures as JSON text
    page = client_.get(reverse("admin:workflows_workflow_change", args=[wait.workflow_id]))
    reread = page.context["builder"]["definition"]["steps"][1]["parameters"]
    assert json.loads(reread["branches"]) == wait.parameters["branches"]
    assert json.loads(reread["otherwise"]) == wait.parameters["otherwise"]


_BAD_PATTERN = [
    {"label": "Code", "match": "pattern", "pattern": "([0-9", "goto": "next"},
]


@pytest.mark.parametrize(
    ("steps", "place", "message"),
    [
        (
            _confirmation(branches=_BAD_PATTERN),
            ("1", "branches"),
            "branch “Code”: the pattern is not valid",
        ),
        (
            _confirmation(branches=[{"label": " ", "match": "keywords", "keywords": ["c"]}]),
            ("1", "branches"),
            "branch 1 needs a label",
        ),
        (
            # nothing goes to step 3: it could never run
            _confirmation(
                branches=[{"label": "Yes", "match": "keywords", "keywords": ["y"], "goto": 4}]
            ),
            ("1", "branches"),
            "no branch goes to step 3",
        ),
        (
            _confirmation(
                branches=[{"label": "Yes", "match": "keywords", "keywords": ["y"], "goto": 1}]
            ),
            ("1", "branches"),
            "branches only go forward",
        ),
        (
            [
                _wait(
                    branches=[{"label": "Yes", "match": "keywords", "keywords": ["y"]}],
                    otherwise={"goto": "end"},
                    no_reply={"goto": "end"},
                ),
                _sms(),
            ],
            ("0", "type"),
            "needs an earlier step on its path that texts the patient",
        ),
        (
            _confirmation(otherwise='{"goto": 5, "reask": '),
            ("1", "otherwise"),
            "the otherwise",
        ),
    ],
)
def test_an_invalid_wait_for_reply_is_refused_on_its_field_and_nothing_is_saved(
    client_: Client, steps: list[dict[str, Any]], place: tuple[str, str], message: str
) -> None:
    org = _clinic()
    response = client_.post(
        reverse("admin:workflows_workflow_add"),
        _post_data(org, steps, trigger="appointment.reminder"),
    )
    assert response.status_code == 200
    assert message in _text(response)  # in the form's error list, for pages without JS
    errors = response.context["builder"]["errors"]["steps"]
    assert any(message in text for text in errors[place[0]][place[1]]), errors
    assert not Workflow.objects.exists()
    assert not Step.objects.exists()
