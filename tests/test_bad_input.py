"""Input that must neither crash nor slip through: JSON nested thousands of levels deep,
bodies of megabytes, control characters PostgreSQL cannot store, a To Phone that is not a
phone number. Every entry point answers with a clear, specific error — never a
500 — and nothing is saved half-way; a run is never left running by bad data."""

import json
from typing import Any

import pytest
from django import forms
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db import DataError
from django.test import Client, RequestFactory
from django.urls import reverse

from integrations.models import OutboundMessage
from integrations.twilio.adapter import TwilioAdapter
from integrations.twilio.sandbox import SandboxServer
from patients.inputs import (
    MAX_JSON_DEPTH,
    StorableJSONField,
    json_parse,
    json_problem,
    validate_storable_line,
    validate_storable_text,
)
from patients.models import Order, Patient
from tests.conftest import sandbox_account
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    StaffMembershipFactory,
    UserFactory,
    WorkflowFactory,
)
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, Run, StepRun, Workflow
from workflows.validation import workflow_validate

pytestmark = pytest.mark.django_db

DEEP = 10_000
DEEP_ARRAY = "[" * DEEP + "]" * DEEP
DEEP_OBJECT = '{"a":' * DEEP + "1" + "}" * DEEP
FIVE_MB = 5 * 1024 * 1024
SMS: dict[str, Any] = {
    "type": "adapter",
    "adapter": "twilio",
    "function": "sendSMS",
    "parameters": {
        "message": "Hi {{customer.firstName}}",
        "to": "{{customer.phone}}",
        "from": "+15005550006",
    },
    "purpose": "transactional",
}


def _nested(levels: int) -> Any:
    """An object with `levels` objects nested below it."""
    value: Any = {"a": 1}
    for _ in range(levels):
        value = {"a": value}
    return value


def _sms(**parameters: Any) -> dict[str, Any]:
    return {**SMS, "parameters": {**SMS["parameters"], **parameters}}


def _webhook(body: Any) -> dict[str, Any]:
    return {
        "type": "adapter",
        "adapter": "webhook",
        "function": "postJSON",
        "parameters": {"url": "https://93.184.216.34/hook", "body": body},
    }


def _condition(query: Any) -> dict[str, Any]:
    return {"type": "condition", "parameters": {"query": query}}


@pytest.fixture
def workflow() -> Workflow:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization, enabled=False)
    SmsStepFactory(workflow=workflow)
    return workflow


@pytest.fixture
def staff(workflow: Workflow) -> Client:
    user = StaffMembershipFactory(organization=workflow.organization).user
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_workflow", "add_workflow", "change_workflow"])
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def superuser() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


# --- the shared checks ---------------------------------------------------------------------


@pytest.mark.parametrize("text", [DEEP_ARRAY, DEEP_OBJECT, json.dumps(_nested(MAX_JSON_DEPTH + 1))])
def test_json_nested_too_deep_is_refused_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValueError, match="nested more than 32 levels deep"):
        json_parse(text)


def test_json_at_the_depth_limit_is_taken() -> None:
    assert json_parse(json.dumps(_nested(MAX_JSON_DEPTH))) == _nested(MAX_JSON_DEPTH)


def test_json_with_too_many_values_is_refused() -> None:
    assert "more than 20,000 values" in json_problem(list(range(30_000)))


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"steps": [{"message": "Hi\x00"}]}, "steps.0.message"),
        ({"a": "\ud800"}, "a"),
        ({"k\x1b": 1}, "k\x1b (a key)"),
        (["\x7f"], "0"),
    ],
)
def test_control_characters_and_lone_surrogates_are_named_where_they_are(
    value: Any, where: str
) -> None:
    problem = json_problem(value)
    assert problem.startswith("contains an invisible control character")
    assert f"in “{where}”" in problem


def test_tabs_and_line_breaks_are_text_but_not_in_one_line_fields() -> None:
    validate_storable_text("Hi\r\n\tthere")
    with pytest.raises(forms.ValidationError, match="U\\+000A"):
        validate_storable_line("Ann\nSmith")


# --- item 6: the builder's endpoints and the workflow form --------------------------------

ENDPOINTS = ["builder_validate", "builder_diagram", "builder_preview", "builder_dry_run"]


def _endpoint(name: str, workflow: Workflow) -> str:
    return reverse(f"admin:workflows_workflow_{name}", args=[workflow.pk])


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT, '{"definition": ' + DEEP_ARRAY + "}"])
def test_a_deep_request_body_is_a_400_with_a_message(
    staff: Client, workflow: Workflow, name: str, body: str
) -> None:
    response = staff.post(_endpoint(name, workflow), body, content_type="application/json")
    assert response.status_code == 400
    assert "nested more than 32 levels deep" in response.json()["error"]


@pytest.mark.parametrize("name", ENDPOINTS)
def test_a_five_megabyte_body_is_a_400(staff: Client, workflow: Workflow, name: str) -> None:
    body = json.dumps({"definition": {"trigger": "order.shipped", "x": "a" * FIVE_MB}})
    response = staff.post(_endpoint(name, workflow), body, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("definition", "place"),
    [
        ({"trigger": "order.shipped", "filter": DEEP_ARRAY, "steps": []}, "filter"),
        ({"trigger": "order.shipped", "filter": DEEP_OBJECT, "steps": []}, "filter"),
        ({"trigger": "order.shipped", "steps": [_condition(DEEP_OBJECT)]}, "query"),
        ({"trigger": "order.shipped", "steps": [_webhook(DEEP_OBJECT)]}, "body"),
    ],
)
def test_deep_json_typed_into_a_filter_query_or_body_is_reported_where_it_is(
    staff: Client, workflow: Workflow, definition: dict[str, Any], place: str
) -> None:
    response = staff.post(
        _endpoint("builder_validate", workflow),
        json.dumps({"definition": definition}),
        content_type="application/json",
    )
    assert response.status_code == 200
    report = response.json()
    assert not report["ok"]
    problems = report["filter"] if place == "filter" else report["steps"]["0"][place]
    assert "nested more than" in problems[0]


def test_a_filter_deeper_than_the_builder_makes_but_within_json_limits_gets_the_filter_message(
    staff: Client, workflow: Workflow
) -> None:
    deep_filter: Any = {"order.status": "shipped"}
    for _ in range(25):
        deep_filter = {"$and": [deep_filter]}
    response = staff.post(
        _endpoint("builder_validate", workflow),
        json.dumps({"definition": {"trigger": "order.shipped", "filter": json.dumps(deep_filter)}}),
        content_type="application/json",
    )
    assert response.status_code == 200
    assert "nested more than" in response.json()["filter"][0]


def _form(org: Any, definition: str, **fields: Any) -> dict[str, Any]:
    return {
        "organization": org.pk,
        "name": "Shipped",
        "description": "",
        "definition": definition,
        **fields,
    }


@pytest.mark.parametrize(
    "definition",
    [
        DEEP_ARRAY,
        DEEP_OBJECT,
        json.dumps({"trigger": "order.shipped", "filter": DEEP_ARRAY, "steps": []}),
        json.dumps({"trigger": "order.shipped", "steps": [_condition(DEEP_ARRAY)]}),
        json.dumps({"trigger": "order.shipped", "steps": [_webhook(DEEP_ARRAY)]}),
    ],
)
def test_the_workflow_form_refuses_deep_json_on_the_page_and_saves_nothing(
    superuser: Client, definition: str
) -> None:
    org = IntegrationFactory().organization
    response = superuser.post(reverse("admin:workflows_workflow_add"), _form(org, definition))
    assert response.status_code == 200
    assert "nested more than" in response.content.decode()
    assert not Workflow.objects.exists()


def test_a_five_megabyte_form_post_is_a_400(superuser: Client) -> None:
    org = IntegrationFactory().organization
    response = superuser.post(
        reverse("admin:workflows_workflow_add"), _form(org, "{}", description="a" * FIVE_MB)
    )
    assert response.status_code == 400
    assert not Workflow.objects.exists()


def test_the_custom_event_webhook_refuses_deep_and_huge_bodies() -> None:
    from patients.services import organization_webhook_token_issue

    org = PatientFactory(email="ann@example.com").organization
    token = organization_webhook_token_issue(organization=org)
    url = reverse("webhook-custom-event", args=[org.uuid])
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    for body, status in ((DEEP_ARRAY, 400), (DEEP_OBJECT, 400), ("a" * FIVE_MB, 413)):
        response = Client().post(url, body, content_type="application/json", **headers)
        assert response.status_code == status
        assert response.json()["error"]
    lone = '{"name": "x", "idempotencyKey": "k", "customer": {"email": "\\ud800@x"}}'
    response = Client().post(url, lone, content_type="application/json", **headers)
    assert response.status_code == 400
    assert "control character (U+D800)" in response.json()["error"]


# --- item 8: control characters, at save, in every text field ------------------------------


@pytest.mark.parametrize(
    ("step", "parameter"),
    [
        (_sms(message="Hi\x00 {{customer.firstName}}"), "message"),
        (_sms(message="Hi \x1b[31m {{customer.firstName}}"), "message"),
        (_sms(to="{{customer.phone}}\x00"), "to"),
        (_webhook('{"a": "\\u0000"}'), "body"),
        (_webhook({"a": "\ud800"}), "body"),
    ],
)
def test_control_characters_in_a_step_parameter_are_refused_where_they_are(
    step: dict[str, Any], parameter: str
) -> None:
    report = workflow_validate(trigger="order.shipped", filter={}, steps=[step])
    assert "invisible control character" in " ".join(report.steps[0][parameter])


def test_a_nul_in_the_filter_is_refused() -> None:
    report = workflow_validate(trigger="order.shipped", filter={"order.number": "7\x00"}, steps=[])
    assert "invisible control character (U+0000)" in report.filter[0]


@pytest.mark.parametrize(
    "definition",
    [
        {"trigger": "order.shipped", "steps": [_sms(message="Hi\x00")]},
        {"trigger": "order.shipped", "filter": {"order.number": "\x00"}, "steps": [SMS]},
        {"trigger": "order.shipped", "steps": [{**SMS, "purpose": "transactional\x00"}]},
        {"trigger": "order.shipped", "steps": [SMS], "extra\x00": 1},
    ],
)
def test_the_workflow_form_refuses_a_nul_anywhere_instead_of_a_500(
    superuser: Client, definition: dict[str, Any]
) -> None:
    org = IntegrationFactory().organization
    response = superuser.post(
        reverse("admin:workflows_workflow_add"), _form(org, json.dumps(definition))
    )
    assert response.status_code == 200
    assert "control character" in response.content.decode() or "unknown purpose" in (
        response.content.decode()
    )
    assert not Workflow.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"), [("name", "Ship\x00ped"), ("name", "Ship\nped"), ("description", "a\x07")]
)
def test_the_workflow_name_and_description_refuse_control_characters(
    superuser: Client, field: str, value: str
) -> None:
    org = IntegrationFactory().organization
    definition = json.dumps({"trigger": "order.shipped", "steps": [SMS]})
    response = superuser.post(
        reverse("admin:workflows_workflow_add"), _form(org, definition, **{field: value})
    )
    assert response.status_code == 200
    assert response.context["adminform"].form.errors[field]
    assert not Workflow.objects.exists()


def test_a_description_may_span_lines(superuser: Client) -> None:
    org = IntegrationFactory().organization
    definition = json.dumps({"trigger": "order.shipped", "steps": [SMS]})
    response = superuser.post(
        reverse("admin:workflows_workflow_add"),
        _form(org, definition, description="Line one\r\n\tLine two"),
    )
    assert response.status_code == 302
    assert Workflow.objects.get().description == "Line one\r\n\tLine two"


def test_patient_fields_refuse_control_characters(superuser: Client) -> None:
    org = IntegrationFactory().organization
    url = reverse("admin:patients_patient_add")
    prefix = superuser.get(url).context["inline_admin_formsets"][0].formset.prefix
    response = superuser.post(
        url,
        {
            "organization": org.pk,
            "first_name": "Ann\x07",
            "last_name": "Lee\x00",
            "country_code": "US",
            f"{prefix}-TOTAL_FORMS": 0,
            f"{prefix}-INITIAL_FORMS": 0,
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "invisible control character (U+0007)" in errors["first_name"][0]
    assert errors["last_name"]
    assert not Patient.objects.exists()


def test_every_admin_form_of_every_model_guards_its_text_and_json_fields() -> None:
    request = RequestFactory().get("/")
    request.user = UserFactory(is_superuser=True)
    checked = 0
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label not in ("patients", "workflows", "integrations"):
            continue
        form = model_admin.get_form(request)
        declared = set(form.declared_fields)
        for name, field in form.base_fields.items():
            if name in declared:
                continue  # the form's own field (a definition, a write-only token): its own checks
            if isinstance(field, forms.JSONField):
                assert isinstance(field, StorableJSONField), (model, name)
                checked += 1
            elif isinstance(field, forms.CharField):
                guards = (validate_storable_text, validate_storable_line)
                assert any(v in guards for v in field.validators), (model, name)
                checked += 1
    assert checked > 20


@pytest.mark.parametrize("text", [DEEP_ARRAY, '{"a": "\\u0000"}', '["\\ud800"]'])
def test_an_admin_json_field_answers_a_form_error_not_a_500(text: str) -> None:
    field = StorableJSONField(required=False)
    with pytest.raises(forms.ValidationError):
        field.clean(text)
    assert field.bound_data(text, None) == text  # shown again as typed


def test_an_order_with_deep_line_items_is_a_form_error(superuser: Client) -> None:
    order = OrderFactory()
    url = reverse("admin:patients_order_change", args=[order.pk])
    form = superuser.get(url).context["adminform"].form
    data = {
        name: form[name].value() if form[name].value() is not None else "" for name in form.fields
    }
    data = {
        name: (
            field.prepare_value(data[name]) if isinstance(field, forms.JSONField) else data[name]
        )
        for name, field in form.fields.items()
    }
    data["line_items"] = DEEP_ARRAY
    response = superuser.post(url, data)
    assert response.status_code == 200
    assert "nested more than" in " ".join(response.context["adminform"].form.errors["line_items"])
    order.refresh_from_db()
    assert order.line_items != []  # unchanged


# --- item 8: phone numbers written in a step, and rendered at run time ----------------------


@pytest.mark.parametrize(
    ("to", "expected"),
    [
        ("not a phone", "is not a phone number"),
        ("+1555", "is not a valid phone number"),
        ("(415) 555-0101", "write the number in E.164 form: +14155550101"),
    ],
)
def test_a_literal_to_phone_must_be_e164_at_save(to: str, expected: str) -> None:
    report = workflow_validate(trigger="order.shipped", filter={}, steps=[_sms(to=to)])
    assert expected in report.steps[0]["to"][0]


def test_a_literal_e164_to_phone_is_fine() -> None:
    report = workflow_validate(trigger="order.shipped", filter={}, steps=[_sms(to="+14155550101")])
    assert report.ok


@pytest.fixture
def clinic(sandbox: SandboxServer) -> dict[str, Any]:
    integration = sandbox_account(sandbox, IntegrationFactory())
    org = integration.organization
    workflow = WorkflowFactory(organization=org, trigger="order.shipped")
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=org, first_name="Ann", phone="+14155550123")
    ConsentFactory(patient=patient)
    return {"org": org, "workflow": workflow, "patient": patient}


def _ship_and_run(patient: Patient) -> Run:
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT, number="7001")
    order.status = Order.Status.SHIPPED
    order.save()
    event = Event.objects.get(type="order.shipped", subject_id=str(order.pk))
    (run_id,) = event_dispatch(event_id=event.pk)
    run = run_advance(run_id=run_id)
    assert run is not None
    run.refresh_from_db()
    return run


@pytest.mark.parametrize(
    ("to", "shown"),
    [
        ("{{customer.email}}", "“ann@example.com”"),
        ("{{customer.firstName}} {{customer.email}} " + "x" * 60, "“Ann ann@example.com xxx…”"),
    ],
)
def test_a_rendered_to_that_is_not_a_phone_skips_the_step_with_that_reason(
    clinic: dict[str, Any], sandbox: SandboxServer, to: str, shown: str
) -> None:
    Patient.objects.filter(pk=clinic["patient"].pk).update(email="ann@example.com")
    step = clinic["workflow"].steps.get()
    step.parameters = {**step.parameters, "to": to}
    step.save()
    run = _ship_and_run(clinic["patient"])
    assert run.status != Run.Status.RUNNING
    step_run = StepRun.objects.get(run=run)
    assert step_run.status == StepRun.Status.SKIPPED
    assert step_run.skip_reason == f"To Phone {shown} is not a valid phone number"
    assert "not a patient of this clinic" not in step_run.skip_reason
    assert not OutboundMessage.objects.exists()
    assert sandbox.messages() == []


def test_data_the_database_refuses_fails_the_run_instead_of_leaving_it_running(
    clinic: dict[str, Any], sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Any, **kwargs: Any) -> Any:
        raise DataError("value too long for type character varying(32)")

    monkeypatch.setattr(TwilioAdapter, "execute", refuse)
    run = _ship_and_run(clinic["patient"])
    assert run.status == Run.Status.FAILED
    assert "this step's data could not be stored (DataError)" in run.error
    assert StepRun.objects.get(run=run).status == StepRun.Status.FAILED


def test_a_skip_reason_longer_than_its_column_is_cut_not_a_stuck_run(
    clinic: dict[str, Any], sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workflows.adapters import Outcome

    # A step before the last is written on its own (the last one with the run's end).
    SmsStepFactory(workflow=clinic["workflow"], position=2)
    monkeypatch.setattr(
        TwilioAdapter, "execute", lambda self, **kwargs: Outcome("skipped", reason="why " * 100)
    )
    run = _ship_and_run(clinic["patient"])
    assert run.status == Run.Status.SKIPPED
    assert [len(s.skip_reason) for s in StepRun.objects.filter(run=run)] == [200, 200]


def test_the_dry_run_says_what_the_engine_says_of_a_to_that_is_not_a_phone() -> None:
    from workflows.dry_run import workflow_dry_run

    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization, trigger="order.shipped")
    SmsStepFactory(workflow=workflow, parameters={**SMS["parameters"], "to": "{{customer.email}}"})
    patient = PatientFactory(
        organization=workflow.organization, email="tess@example.com", is_test=True
    )
    ConsentFactory(patient=patient)
    (sms,) = workflow_dry_run(workflow=workflow, patient=patient).steps
    assert (sms.outcome, sms.detail) == (
        "skip",
        "would not send: To Phone “tess@example.com” is not a valid phone number",
    )


def test_a_definition_with_too_many_values_is_a_400_before_anything_walks_it(
    staff: Client, workflow: Workflow
) -> None:
    huge = {"order.number": {"$in": [str(n) for n in range(30_000)]}}
    body = json.dumps({"definition": {"trigger": "order.shipped", "filter": huge, "steps": [SMS]}})
    response = staff.post(
        _endpoint("builder_validate", workflow), body, content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"] == (
        "The request body has more than 20,000 values; make it smaller."
    )
