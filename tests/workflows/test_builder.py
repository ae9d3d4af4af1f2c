"""The builder's endpoints on WorkflowAdmin: validate, preview, diagram, dry run, live test,
enable/disable; staff only, scoped to the user's clinic, CSRF-protected."""

import json
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from integrations.models import OutboundMessage
from patients.models import AuditEntry
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    OrganizationFactory,
    PatientFactory,
    SmsStepFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows import builder
from workflows.adapters import REGISTRY
from workflows.models import Event, Run, Workflow
from workflows.steps import DELAY_KIND

pytestmark = pytest.mark.django_db

SMS: dict[str, Any] = {
    "type": "adapter",
    "adapter": "twilio",
    "function": "sendSMS",
    "parameters": {
        "message": "Hi {{customer.firstName}}, order {{order.number}} has shipped!",
        "to": "{{customer.phone}}",
        "from": "+15005550006",
    },
}
WORKFLOW_PERMISSIONS = ["view_workflow", "add_workflow", "change_workflow"]


def _url(name: str, workflow: Workflow | None = None) -> str:
    return reverse(f"admin:workflows_workflow_{name}", args=[workflow.pk] if workflow else [])


def _post(client: Client, url: str, body: dict[str, Any]) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json")


def _definition(
    *steps: dict[str, Any], trigger: str = "order.shipped", filter: Any = ""
) -> dict[str, Any]:
    return {"trigger": trigger, "filter": filter, "steps": list(steps)}


def _sms(message: str) -> dict[str, Any]:
    return {**SMS, "parameters": {**SMS["parameters"], "message": message}}


@pytest.fixture
def workflow() -> Workflow:
    integration = IntegrationFactory()
    workflow = WorkflowFactory(organization=integration.organization, enabled=False)
    SmsStepFactory(workflow=workflow)
    return workflow


@pytest.fixture
def staff(workflow: Workflow) -> Client:
    return clinic_client(workflow.organization, *WORKFLOW_PERMISSIONS)


@pytest.fixture
def test_patient(workflow: Workflow) -> Any:
    patient = PatientFactory(
        organization=workflow.organization, first_name="Tess", phone="+14155550199", is_test=True
    )
    ConsentFactory(patient=patient)
    OrderFactory(patient=patient, number="7007")
    return patient


# --- validate ------------------------------------------------------------------------------


def test_validate_reports_each_problem_on_its_step_and_field(
    staff: Client, workflow: Workflow
) -> None:
    definition = _definition(
        _sms("fine {{customer.firstName}}"),
        {"type": "delay", "parameters": {"kind": "duration", "seconds": "0"}},
        _sms("Hi {{customer.frstName}}"),
    )
    response = _post(staff, _url("builder_validate", workflow), {"definition": definition})
    assert response.status_code == 200
    report = response.json()
    assert report["ok"] is False
    assert set(report["steps"]) == {"1", "2"}
    assert report["steps"]["1"] == {"seconds": ["a delay lasts from 1 second to 366 days"]}
    assert "did you mean {{customer.firstName}}" in report["steps"]["2"]["message"][0]
    assert report["trigger"] == [] and report["filter"] == []


def test_validate_accepts_a_valid_definition_on_the_add_page(staff: Client) -> None:
    response = _post(staff, _url("builder_validate"), {"definition": _definition(SMS)})
    assert response.json() == {
        "ok": True,
        "trigger": [],
        "filter": [],
        "steps": {},
        "goal": {},
        "exits": {},
        "enrollment": [],
        "tree": [{"depth": 0, "wait": None, "branches": [], "ends": False}],
    }


def test_validate_reports_filter_and_query_json_errors(staff: Client, workflow: Workflow) -> None:
    definition = _definition(
        {"type": "condition", "parameters": {"query": "{nope"}}, filter="{also nope"
    )
    report = _post(staff, _url("builder_validate", workflow), {"definition": definition}).json()
    assert report["filter"][0].startswith("the filter is not valid JSON")
    assert report["steps"]["0"]["query"][0].startswith("the query is not valid JSON")


def test_a_definition_of_the_wrong_shape_is_a_400(staff: Client, workflow: Workflow) -> None:
    response = _post(staff, _url("builder_validate", workflow), {"definition": {"steps": [1]}})
    assert response.status_code == 400
    assert response.json() == {"error": "step 1 is not an object"}


def test_endpoints_only_take_posts(staff: Client, workflow: Workflow) -> None:
    assert staff.get(_url("builder_validate", workflow)).status_code == 405


# --- preview -------------------------------------------------------------------------------


def _preview(
    client: Client, workflow: Workflow | None, patient: Any, messages: dict[str, Any]
) -> Any:
    body = {
        "trigger": "order.shipped",
        "patient": patient.pk if patient else None,
        "messages": messages,
    }
    response = _post(client, _url("builder_preview", workflow), body)
    assert response.status_code == 200, response.content
    return response.json()


def test_preview_renders_for_the_test_patient_with_counts(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    data = _preview(staff, workflow, test_patient, {"7": SMS["parameters"]["message"]})
    assert data["patient"] == str(test_patient)
    assert "latest order record" in data["source"]
    preview = data["previews"]["7"]
    assert preview["text"] == "Hi Tess, order 7007 has shipped!"
    assert (preview["characters"], preview["segments"], preview["encoding"]) == (32, 1, "GSM-7")
    assert preview["warnings"] == []


def test_preview_without_a_patient_uses_the_reference_examples(
    staff: Client, workflow: Workflow
) -> None:
    data = _preview(staff, workflow, None, {"1": "Hi {{customer.firstName}}"})
    assert data["previews"]["1"]["text"] == "Hi Ann"
    assert data["source"] == "example data from the data reference"


def test_preview_warns_about_ucs2(staff: Client, workflow: Workflow, test_patient: Any) -> None:
    preview = _preview(staff, workflow, test_patient, {"1": "Your order’s on its way 📦"})[
        "previews"
    ]["1"]
    assert preview["encoding"] == "UCS-2"
    assert preview["segments"] == 1
    assert preview["perSegment"] == 70
    assert "“’”" in preview["warnings"][0] and "UCS-2" in preview["warnings"][0]


def test_preview_warns_above_160_characters(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    previews = _preview(staff, workflow, test_patient, {"1": "x" * 160, "2": "x" * 161})["previews"]
    assert (previews["1"]["segments"], previews["1"]["warnings"]) == (1, [])
    assert previews["2"]["characters"] == 161
    assert previews["2"]["segments"] == 2
    assert previews["2"]["warnings"] == [
        "Longer than 160 characters: sent as 2 segments, each billed as one SMS."
    ]


def test_preview_reports_a_template_error(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    preview = _preview(staff, workflow, test_patient, {"1": "Hi {{customer.firstName"})["previews"][
        "1"
    ]
    assert "never closed" in preview["error"]


def test_message_preview_warns_over_twilios_limit() -> None:
    preview = builder.message_preview("y" * 1601, {})
    assert preview["warnings"][-1] == "Twilio refuses messages over 1,600 characters."


def test_a_message_is_previewed_by_the_function_it_names(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    messages: Any = {
        "1": {"text": "Hi {{customer.firstName}}", "function": "twilio.sendSMS"},
        "2": {"text": "Hi", "function": "webhook.postJSON"},
        "3": {"text": "Hi {{customer.firstName", "function": "nobody.nothing"},
    }
    previews = _preview(staff, workflow, test_patient, messages)["previews"]
    assert (previews["1"]["text"], previews["1"]["encoding"]) == ("Hi Tess", "GSM-7")
    assert previews["2"] == {"error": "nothing previews 'webhook.postJSON'"}
    assert "never closed" in previews["3"]["error"]  # the template's error comes first


def test_the_builder_schema_marks_each_functions_preview_and_sender() -> None:
    [twilio] = [a for a in builder.builder_schema()["adapters"] if a["name"] == "twilio"]
    [send_sms] = twilio["functions"]
    widgets = {p["name"]: (p["widget"], p.get("preview")) for p in send_sms["parameters"]}
    assert widgets == {
        "message": ("textarea", "sms"),
        "to": ("text", None),
        "from": ("sender", None),
        "media": ("text", None),
    }


# --- diagram -------------------------------------------------------------------------------


def test_diagram_endpoint_returns_svg_with_problems_marked(
    staff: Client, workflow: Workflow
) -> None:
    definition = _definition(SMS, _sms("<b>{{nope}}"))
    response = _post(staff, _url("builder_diagram", workflow), {"definition": definition})
    assert response["Content-Type"] == "image/svg+xml; charset=utf-8"
    svg = response.content.decode()
    assert svg.startswith("<svg") and svg.count('class="cf-d-step"') == 2
    assert svg.count('class="cf-d-box cf-d-problem"') == 1
    assert "&lt;b&gt;" in svg and "<b>" not in svg


# --- dry run -------------------------------------------------------------------------------


def test_dry_run_shows_payload_filter_path_message_and_every_check(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    events = Event.objects.count()
    body = {"patient": test_patient.pk, "definition": _definition(SMS)}
    response = _post(staff, _url("builder_dry_run", workflow), body)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Dry run for Tess Lee" in html
    assert "Tess Lee&#x27;s latest order record" in html
    assert "No filter" in html
    assert "would send now" in html
    assert "Hi Tess, order 7007 has shipped!" in html
    assert "32 characters · 1 segment · GSM-7" in html
    for check in ("consent", "opt-out", "frequency cap", "quiet hours", "sender", "recipient"):
        assert f'<th scope="row">{check}</th>' in html
    assert "✗ failed" not in html
    assert Event.objects.count() == events and not Run.objects.exists()
    assert not OutboundMessage.objects.exists()


def test_dry_run_lists_the_checks_not_reached_after_a_refusal(
    staff: Client, workflow: Workflow
) -> None:
    unconsented = PatientFactory(organization=workflow.organization, is_test=True)
    body = {"patient": unconsented.pk, "definition": _definition(SMS)}
    html = _post(staff, _url("builder_dry_run", workflow), body).content.decode()
    assert "would not send: no SMS consent" in html
    assert html.count("✗ failed") == 1
    assert html.count("– not checked") == 6


def test_dry_run_escapes_what_the_admin_typed(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    body = {
        "patient": test_patient.pk,
        "definition": _definition(_sms("<img src=x onerror=alert(1)>")),
    }
    html = _post(staff, _url("builder_dry_run", workflow), body).content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img" not in html


def test_dry_run_of_an_invalid_definition_lists_the_problems(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    body = {"patient": test_patient.pk, "definition": _definition(_sms("{{nope}}"))}
    html = _post(staff, _url("builder_dry_run", workflow), body).content.decode()
    assert "Fix these first" in html and "{{nope}} is not a variable" in html


def test_dry_run_on_the_add_page_uses_the_patients_clinic(staff: Client, test_patient: Any) -> None:
    body = {
        "patient": test_patient.pk,
        "organization": test_patient.organization_id,
        "definition": _definition(SMS),
    }
    html = _post(staff, _url("builder_dry_run"), body).content.decode()
    assert "would send now" in html


def test_dry_run_needs_a_patient(staff: Client, workflow: Workflow) -> None:
    response = _post(staff, _url("builder_dry_run", workflow), {"definition": _definition(SMS)})
    assert response.status_code == 400
    assert response.json() == {"error": "Choose a test patient first."}


# --- live test -----------------------------------------------------------------------------


def test_live_test_runs_the_saved_workflow_for_a_test_patient(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    response = _post(staff, _url("live_test", workflow), {"patient": test_patient.pk})
    assert response.status_code == 200, response.content
    run = Run.objects.get()
    assert run.is_test and run.workflow == workflow
    assert response.json()["url"] == reverse("admin:workflows_run_change", args=[run.pk])


def test_live_test_refuses_a_patient_who_is_not_a_test_patient(
    staff: Client, workflow: Workflow
) -> None:
    patient = PatientFactory(organization=workflow.organization, is_test=False)
    response = _post(staff, _url("live_test", workflow), {"patient": patient.pk})
    assert response.status_code == 400
    assert response.json() == {
        "error": "Live tests only run for test patients (tick “test patient”)."
    }
    assert not Run.objects.exists()


def test_live_test_refuses_a_saved_workflow_with_problems(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    workflow.steps.update(parameters={"message": "{{nope}}", "to": "x", "from": "y"})
    response = _post(staff, _url("live_test", workflow), {"patient": test_patient.pk})
    assert response.status_code == 400
    assert "fix them and save first" in response.json()["error"]


def test_live_test_needs_the_change_permission(workflow: Workflow, test_patient: Any) -> None:
    viewer = clinic_client(workflow.organization, "view_workflow")
    response = _post(viewer, _url("live_test", workflow), {"patient": test_patient.pk})
    assert response.status_code == 403
    assert not Run.objects.exists()


# --- clinic scoping, staff only, CSRF ------------------------------------------------------

ENDPOINTS = [
    "builder_validate",
    "builder_diagram",
    "builder_preview",
    "builder_dry_run",
    "live_test",
]


@pytest.mark.parametrize("name", ENDPOINTS)
def test_another_clinics_workflow_is_a_404(
    name: str, workflow: Workflow, test_patient: Any
) -> None:
    other_clinic = clinic_client(OrganizationFactory(), *WORKFLOW_PERMISSIONS)
    body = {"patient": test_patient.pk, "definition": _definition(SMS), "messages": {}}
    assert _post(other_clinic, _url(name, workflow), body).status_code == 404
    assert not Run.objects.exists()


@pytest.mark.parametrize("name", ["builder_preview", "builder_dry_run", "live_test"])
def test_another_clinics_patient_is_a_404(name: str, staff: Client, workflow: Workflow) -> None:
    stranger = PatientFactory(is_test=True)  # another clinic's test patient
    body = {"patient": stranger.pk, "definition": _definition(SMS), "messages": {"1": "hi"}}
    assert _post(staff, _url(name, workflow), body).status_code == 404


@pytest.mark.parametrize("name", ["builder_preview", "builder_dry_run"])
def test_another_clinics_patient_is_a_404_on_the_add_page(name: str, staff: Client) -> None:
    stranger = PatientFactory(is_test=True)
    body = {
        "patient": stranger.pk,
        "organization": stranger.organization_id,
        "definition": _definition(SMS),
        "messages": {"1": "hi"},
        "trigger": "order.shipped",
    }
    assert _post(staff, _url(name), body).status_code == 404


@pytest.mark.parametrize("name", ["enable", "disable"])
def test_another_clinics_enable_and_disable_are_404(name: str, workflow: Workflow) -> None:
    other_clinic = clinic_client(OrganizationFactory(), *WORKFLOW_PERMISSIONS)
    assert other_clinic.get(_url(name, workflow)).status_code == 404
    assert other_clinic.post(_url(name, workflow)).status_code == 404


def test_non_staff_are_sent_to_the_login_page(workflow: Workflow) -> None:
    client = Client()
    client.force_login(UserFactory(is_staff=False))
    response = _post(client, _url("builder_validate", workflow), {"definition": {}})
    assert response.status_code == 302
    assert reverse("admin:login") in response["Location"]


def test_posts_need_the_csrf_token(workflow: Workflow, test_patient: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    user = UserFactory(is_superuser=True)
    client.force_login(user)
    body = json.dumps({"patient": test_patient.pk})
    assert (
        client.post(_url("live_test", workflow), body, content_type="application/json").status_code
        == 403
    )
    # the change page hands out the token the builder sends back in X-CSRFToken
    client.get(_url("change", workflow))
    token = client.cookies["csrftoken"].value
    response = client.post(
        _url("live_test", workflow),
        body,
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 200
    assert Run.objects.count() == 1


# --- enable / disable ----------------------------------------------------------------------


def test_disable_confirmation_says_how_many_runs_are_waiting(
    staff: Client, workflow: Workflow
) -> None:
    Workflow.objects.filter(pk=workflow.pk).update(enabled=True)
    for status in ("waiting", "pending", "succeeded"):
        event = Event.objects.create(
            organization=workflow.organization, type="order.shipped", dedupe_key=f"e-{status}"
        )
        Run.objects.create(workflow=workflow, event=event, status=status)
    page = staff.get(_url("disable", workflow)).content.decode()
    assert "2 runs are waiting" in page
    response = staff.post(_url("disable", workflow), follow=True)
    assert "is disabled; 2 waiting run(s) were cancelled" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.enabled is False
    assert Run.objects.filter(status="cancelled").count() == 2


def test_enable_after_confirmation(staff: Client, workflow: Workflow) -> None:
    page = staff.get(_url("enable", workflow)).content.decode()
    assert "Yes, enable it" in page
    workflow.refresh_from_db()
    assert workflow.enabled is False  # a GET only asks
    response = staff.post(_url("enable", workflow), follow=True)
    assert "is enabled" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.enabled is True
    entry = AuditEntry.objects.filter(model="workflows.Workflow", action="updated").get()
    assert entry.changes["enabled"] == [False, True]
    assert entry.actor == response.wsgi_request.user


def test_enable_is_refused_while_the_saved_workflow_has_problems(
    staff: Client, workflow: Workflow
) -> None:
    workflow.steps.update(
        parameters={"message": "{{nope}}", "to": "{{customer.phone}}", "from": "+1"}
    )
    page = staff.post(_url("enable", workflow)).content.decode()
    assert "cannot be enabled yet" in page
    assert "{{nope}} is not a variable" in page
    workflow.refresh_from_db()
    assert workflow.enabled is False


def test_enable_warns_when_the_clinic_has_no_twilio_integration() -> None:
    workflow = WorkflowFactory(organization=OrganizationFactory(), enabled=False)
    SmsStepFactory(workflow=workflow, parameters={**SMS["parameters"], "from": "{{x.y}}"})
    SmsStepFactory(workflow=workflow, position=2)
    client = clinic_client(workflow.organization, *WORKFLOW_PERMISSIONS)
    page = client.get(_url("enable", workflow)).content.decode()
    assert "cannot be enabled yet" in page
    assert "has no approved sending numbers yet: support staff add them" in page


def test_enable_lists_each_adapter_the_clinic_has_not_set_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workflow = WorkflowFactory(organization=OrganizationFactory(), enabled=False)
    SmsStepFactory(
        workflow=workflow, parameters={**SMS["parameters"], "from": "{{customer.phone}}"}
    )
    SmsStepFactory(
        workflow=workflow,
        position=2,
        adapter="webhook",
        function="postJSON",
        parameters={"url": "https://93.184.216.34/hooks/careflow", "body": '{"a": 1}'},
    )
    client = clinic_client(workflow.organization, *WORKFLOW_PERMISSIONS)
    page = client.get(_url("enable", workflow)).content.decode()
    assert page.count('<p class="errornote">') == 1  # the webhook needs no set-up
    monkeypatch.setattr(
        REGISTRY["webhook"], "setup_problem", lambda organization: "no endpoint is allowed yet"
    )
    page = client.get(_url("enable", workflow)).content.decode()
    assert "its Twilio steps will fail until support staff set one up" in page
    assert "No endpoint is allowed yet: its Outbound webhook steps will fail" in page
    assert "Yes, enable it" in page


def test_enable_warns_about_the_integration_when_the_sender_is_a_variable() -> None:
    workflow = WorkflowFactory(organization=OrganizationFactory(), enabled=False)
    SmsStepFactory(
        workflow=workflow, parameters={**SMS["parameters"], "from": "{{customer.phone}}"}
    )
    client = clinic_client(workflow.organization, *WORKFLOW_PERMISSIONS)
    page = client.get(_url("enable", workflow)).content.decode()
    assert "no enabled Twilio integration" in page
    assert "Yes, enable it" in page


def test_enable_and_live_test_are_refused_once_the_number_is_no_longer_approved(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    workflow.organization.integrations.update(senders=["+14155550100"])
    page = staff.post(_url("enable", workflow)).content.decode()
    assert "+15005550006 is not an approved sending number" in page
    workflow.refresh_from_db()
    assert workflow.enabled is False
    response = _post(staff, _url("live_test", workflow), {"patient": test_patient.pk})
    assert response.status_code == 400
    assert not Run.objects.exists()


# --- From Phone: checked against the clinic's approved numbers, live --------------------------


def test_validate_checks_the_sender_against_the_workflows_clinic(
    staff: Client, workflow: Workflow
) -> None:
    IntegrationFactory(senders=["+14155550100"])  # another clinic's number
    definition = _definition({**SMS, "parameters": {**SMS["parameters"], "from": "+14155550100"}})
    report = _post(staff, _url("builder_validate", workflow), {"definition": definition}).json()
    assert report["steps"]["0"]["from"] == [
        f"+14155550100 is not an approved sending number of {workflow.organization}; choose "
        "+15005550006, or use a {{variable}}"
    ]


def test_validate_on_the_add_page_uses_the_users_clinic_whatever_is_posted(
    staff: Client, workflow: Workflow
) -> None:
    other = IntegrationFactory(senders=["+14155550100"])
    definition = _definition({**SMS, "parameters": {**SMS["parameters"], "from": "+14155550100"}})
    body = {"definition": definition, "organization": other.organization_id}
    report = _post(staff, _url("builder_validate"), body).json()
    assert "is not an approved sending number" in report["steps"]["0"]["from"][0]
    body = {"definition": _definition(SMS), "organization": other.organization_id}
    assert _post(staff, _url("builder_validate"), body).json()["ok"] is True


def test_a_superuser_validates_for_the_clinic_chosen_on_the_page(workflow: Workflow) -> None:
    other = IntegrationFactory(senders=["+14155550100"])
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    definition = _definition({**SMS, "parameters": {**SMS["parameters"], "from": "+14155550100"}})
    for url in (_url("builder_validate"), _url("builder_validate", workflow)):
        body = {"definition": definition, "organization": other.organization_id}
        assert _post(client, url, body).json()["ok"] is True
        body = {"definition": definition, "organization": "not a number"}
        report = _post(client, url, body).json()
        assert report["ok"] is (url == _url("builder_validate"))  # no clinic: not checked


def test_support_staff_validate_for_the_clinic_chosen_too(workflow: Workflow) -> None:
    from django.contrib.auth.models import Group

    from patients.roles import SUPPORT_STAFF

    other = IntegrationFactory(senders=["+14155550100"])
    user = UserFactory(is_staff=True)
    user.groups.add(Group.objects.get(name=SUPPORT_STAFF))
    client = Client()
    client.force_login(user)
    definition = _definition({**SMS, "parameters": {**SMS["parameters"], "from": "+14155550100"}})
    body = {"definition": definition, "organization": other.organization_id}
    assert _post(client, _url("builder_validate", workflow), body).json()["ok"] is True
    body = {"definition": definition}
    assert _post(client, _url("builder_validate", workflow), body).json()["ok"] is False
    config = client.get(_url("change", workflow)).context["builder"]
    assert config["senders"][str(other.organization_id)] == {"twilio": ["+14155550100"]}


def test_a_dry_run_lists_an_unapproved_sender(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    definition = _definition({**SMS, "parameters": {**SMS["parameters"], "from": "+19995550000"}})
    body = {"patient": test_patient.pk, "definition": definition}
    page = _post(staff, _url("builder_dry_run", workflow), body).content.decode()
    assert "+19995550000 is not an approved sending number" in page


# --- the page ------------------------------------------------------------------------------


def test_builder_page_offers_only_the_clinics_test_patients_and_numbers(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    PatientFactory(organization=workflow.organization, is_test=False)
    PatientFactory(is_test=True)  # another clinic's
    IntegrationFactory(senders=["+15005559999"])  # another clinic's
    config = staff.get(_url("change", workflow)).context["builder"]
    assert [p["id"] for p in config["testPatients"]] == [test_patient.pk]
    assert config["senders"] == {str(workflow.organization_id): {"twilio": ["+15005550006"]}}
    assert config["organization"] == workflow.organization_id
    assert config["urls"]["liveTest"] == _url("live_test", workflow)
    assert config["editable"] is True


def test_schema_comes_from_the_python_step_types_and_registry(staff: Client) -> None:
    schema = staff.get(_url("builder_schema")).json()
    assert [t["name"] for t in schema["stepTypes"]] == [
        "condition",
        "delay",
        "adapter",
        "reply",
        "split",
    ]
    twilio = next(a for a in schema["adapters"] if a["name"] == "twilio")
    send_sms = twilio["functions"][0]
    assert send_sms["name"] == "sendSMS"
    assert [p["name"] for p in send_sms["parameters"]] == ["message", "to", "from", "media"]
    assert send_sms["parameters"][0]["preview"] == "sms"
    assert all(p["templated"] for p in send_sms["parameters"])
    order = next(c for c in schema["triggers"] if c["category"] == "Order")
    shipped = next(e for e in order["events"] if e["name"] == "order.shipped")
    assert shipped["description"].startswith("The order was handed to the carrier")


def test_schema_offers_the_webhook_with_a_code_box_for_its_json_body(staff: Client) -> None:
    schema = staff.get(_url("builder_schema")).json()
    webhook = next(a for a in schema["adapters"] if a["name"] == "webhook")
    assert webhook["label"] == "Outbound webhook"
    (post_json,) = webhook["functions"]
    assert (post_json["name"], post_json["sendOptions"]) == ("postJSON", False)
    url, body = post_json["parameters"]
    assert (url["name"], url["widget"], url["templated"]) == ("url", "text", True)
    assert (body["name"], body["widget"], body["rows"], body["templated"]) == (
        "body",
        "json",
        8,
        True,
    )
    send_sms = next(a for a in schema["adapters"] if a["name"] == "twilio")["functions"][0]
    assert send_sms["sendOptions"] is True


@pytest.mark.django_db
def test_a_body_stored_as_an_object_is_edited_as_json_text() -> None:
    workflow = WorkflowFactory()
    SmsStepFactory(
        workflow=workflow,
        adapter="webhook",
        function="postJSON",
        parameters={"url": "https://93.184.216.34/h", "body": {"who": "{{customer.firstName}}"}},
    )
    (step,) = builder.definition_initial(workflow)["steps"]
    assert step["parameters"]["body"] == '{"who": "{{customer.firstName}}"}'


def test_schema_offers_a_parameters_choices_as_a_list(staff: Client) -> None:
    schema = staff.get(_url("builder_schema")).json()
    delay = next(t for t in schema["stepTypes"] if t["name"] == "delay")
    kind = next(p for p in delay["parameters"] if p["name"] == "kind")
    assert kind["widget"] == "select"
    assert kind["choices"] == [list(choice) for choice in DELAY_KIND.choices]
    assert [value for value, _ in kind["choices"]] == ["duration", "until_time", "until_field"]


# --- the query builder's and the other widgets' data, from Python -------------------------


def test_schema_gives_every_trigger_its_fields_with_types(staff: Client) -> None:
    query = staff.get(_url("builder_schema")).json()["query"]
    triggers = [
        e["name"] for c in staff.get(_url("builder_schema")).json()["triggers"] for e in c["events"]
    ]
    assert set(query["fieldSetOf"]) == set(triggers)
    # every order.* event has the same payload: one list for all of them
    assert query["fieldSetOf"]["order.shipped"] == query["fieldSetOf"]["order.created"]
    assert len(query["fieldSets"]) < len(triggers)
    fields = {f["path"]: f for f in query["fieldSets"][query["fieldSetOf"]["order.shipped"]]}
    assert fields["order.totalAmount"]["type"] == "number"
    assert fields["order.status"] == {
        "path": "order.status",
        "type": "string",
        "description": fields["order.status"]["description"],
        "group": "order",
        "list": False,
        "example": "shipped",
    }
    assert fields["customer.acceptMarketing"]["type"] == "boolean"
    assert fields["customer.dob"]["type"] == "date"
    assert fields["order.createdAt"]["type"] == "datetime"
    # an array's elements are tested through the array's path (any element matches)
    assert fields["order.lineItems.name"]["group"] == "order.lineItems"
    assert fields["order.lineItems.name"]["description"].endswith("(any of order.lineItems).")
    assert not any(".0" in path for path in fields)
    assert "order.lineItems" not in fields and "order" not in fields  # containers
    updated = query["fieldSets"][query["fieldSetOf"]["customer.updated"]]
    changed = next(f for f in updated if f["path"] == "changedFields")
    assert (changed["type"], changed["list"]) == ("string", True)


def test_every_field_offered_is_a_path_the_query_language_reaches() -> None:
    """Built for the class: for every trigger, each field the builder offers finds its
    value in the data reference's example payload, with the type it is offered as."""
    from workflows.catalogue import CATALOGUE, schema_example
    from workflows.filters import filter_matches

    types = {"string": str, "number": (int, float), "boolean": bool, "date": str, "datetime": str}
    for event in CATALOGUE:
        example = schema_example(event.name)
        for found in builder.query_fields(event.name):
            path, kind = found["path"], found["type"]
            assert filter_matches({path: {"$exists": True}}, example), (event.name, path)
            if found["example"] is not None:
                assert isinstance(found["example"], types[kind]), (event.name, found)
                value = found["example"]
                assert filter_matches({path: value}, example), (event.name, path)


def test_schema_offers_operators_that_fit_each_type(staff: Client) -> None:
    operators = staff.get(_url("builder_schema")).json()["query"]["operators"]
    names = {kind: [op for op, _ in ops] for kind, ops in operators.items()}
    assert set(names) == {"string", "number", "date", "datetime", "boolean", "any"}
    assert names["boolean"] == ["true", "false", "empty", "notEmpty"]
    assert names["number"][:6] == ["eq", "ne", "lt", "lte", "gt", "gte"]
    assert "contains" in names["string"] and "contains" not in names["number"]
    assert "regex" in names["string"]
    assert all(ops[-2:] == ["empty", "notEmpty"] for ops in names.values())
    assert dict(operators["number"])["gte"] == "≥ at least"


def test_schema_widgets_for_delays_conditions_and_the_sender(staff: Client) -> None:
    schema = staff.get(_url("builder_schema")).json()
    types = {t["name"]: {p["name"]: p for p in t["parameters"]} for t in schema["stepTypes"]}
    assert types["delay"]["seconds"]["widget"] == "duration"
    assert types["delay"]["seconds"]["label"] == "Duration"
    assert types["delay"]["offset_seconds"]["widget"] == "duration"
    assert types["delay"]["offset_seconds"]["signed"] is True
    assert types["delay"]["path"]["widget"] == "date-field"
    assert types["delay"]["time"]["widget"] == "time"
    assert types["condition"]["query"]["widget"] == "query"
    assert types["condition"]["context"]["widget"] == "context"
    twilio = next(a for a in schema["adapters"] if a["name"] == "twilio")
    sender = next(p for p in twilio["functions"][0]["parameters"] if p["name"] == "from")
    assert sender["widget"] == "sender"


def test_a_condition_without_a_query_asks_for_a_condition(
    staff: Client, workflow: Workflow
) -> None:
    definition = _definition({"type": "condition", "parameters": {"query": ""}}, SMS)
    report = _post(staff, _url("builder_validate", workflow), {"definition": definition}).json()
    assert report["steps"]["0"]["query"][0].startswith("add a condition to test")


# --- a second messaging adapter: email ------------------------------------------------------

MAIL_SENDERS = ["care@sunrise.example", "news@sunrise.example"]


def _email_integration(organization: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An enabled email integration of this clinic with MAIL_SENDERS verified, made as the
    email provider's own tests make it (its account reader stands in until the
    provider-neutral Integration columns land)."""
    from integrations.email import adapter as email_module
    from integrations.email.account import EmailAccount
    from integrations.models import Integration

    integration = IntegrationFactory(organization=organization, adapter="email")
    if hasattr(Integration, "senders"):
        integration.senders = list(MAIL_SENDERS)
        integration.save()
    else:
        account = EmailAccount(
            esp="postmark",
            server_token="t",
            webhook_auth="",
            message_stream="outbound",
            senders=tuple(MAIL_SENDERS),
            send_rate=None,
        )
        monkeypatch.setattr(email_module, "email_account", lambda integration: account)
    return integration


def _email(**parameters: str) -> dict[str, Any]:
    return {
        "type": "adapter",
        "adapter": "email",
        "function": "sendEmail",
        "parameters": {
            "subject": "Order {{order.number}}",
            "body": "Hi {{customer.firstName}},\nyour order has shipped.",
            "to": "{{customer.email}}",
            "from": MAIL_SENDERS[0],
            **parameters,
        },
    }


@pytest.mark.usefixtures("email_adapter")
def test_the_schema_gives_email_its_text_boxes_and_sender_words(staff: Client) -> None:
    schema = staff.get(_url("builder_schema")).json()
    adapters = {a["name"]: a for a in schema["adapters"]}
    [send_email] = adapters["email"]["functions"]
    parameters = {p["name"]: p for p in send_email["parameters"]}
    widgets = {name: (p["widget"], p.get("preview")) for name, p in parameters.items()}
    assert widgets == {
        "subject": ("text", None),
        "body": ("textarea", "email"),
        "html": ("textarea", None),
        "to": ("text", None),
        "from": ("sender", None),
    }
    assert parameters["html"]["rows"] == 6 and parameters["html"]["required"] is False
    assert parameters["from"]["senders"] == {
        "choose": "Choose an address…",
        "none": "No verified sender addresses yet",
        "unlisted": "(not a verified sender address)",
    }
    assert send_email["consentHelp"] == "Which email consent the recipient must have given."
    # SMS keeps its words
    [send_sms] = adapters["twilio"]["functions"]
    sms_from = next(p for p in send_sms["parameters"] if p["name"] == "from")
    assert sms_from["senders"] == {
        "choose": "Choose a number…",
        "none": "No approved numbers yet",
        "unlisted": "(not an approved number)",
    }
    assert send_sms["consentHelp"] == "Which SMS consent the recipient must have given."


def test_a_function_with_no_channel_asks_for_consent_in_general() -> None:
    from workflows.adapters import Function

    assert builder._consent_help(Function("f", "F", ())) == (
        "Which consent the recipient must have given."
    )


@pytest.mark.usefixtures("email_adapter")
def test_the_builder_page_offers_senders_per_adapter(
    staff: Client, workflow: Workflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    _email_integration(workflow.organization, monkeypatch)
    IntegrationFactory()  # another clinic's
    config = staff.get(_url("change", workflow)).context["builder"]
    assert config["senders"] == {
        str(workflow.organization_id): {"twilio": ["+15005550006"], "email": MAIL_SENDERS}
    }
    assert builder.approved_numbers(organization_ids=None)[workflow.organization_id] == {
        "twilio": ["+15005550006"],
        "email": MAIL_SENDERS,
    }


@pytest.mark.usefixtures("email_adapter")
def test_an_email_step_is_validated_against_the_clinics_addresses(
    staff: Client, workflow: Workflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    _email_integration(workflow.organization, monkeypatch)
    body = {"definition": _definition(SMS, _email())}
    assert _post(staff, _url("builder_validate", workflow), body).json()["ok"] is True
    # an SMS number is no email sender, nor the other way round
    wrong = _definition(
        {**SMS, "parameters": {**SMS["parameters"], "from": MAIL_SENDERS[0]}},
        _email(**{"from": "+15005550006"}),
    )
    report = _post(staff, _url("builder_validate", workflow), {"definition": wrong}).json()
    assert report["steps"]["0"]["from"] == [
        f"{MAIL_SENDERS[0]} is not an approved sending number of {workflow.organization}; "
        "choose +15005550006, or use a {{variable}}"
    ]
    assert report["steps"]["1"]["from"] == [
        f"+15005550006 is not a verified sender address of {workflow.organization}; choose "
        f"{MAIL_SENDERS[0]} or {MAIL_SENDERS[1]}, or use a {{{{variable}}}}"
    ]


@pytest.mark.usefixtures("email_adapter")
def test_without_an_email_integration_the_clinic_is_told_who_adds_addresses(
    staff: Client, workflow: Workflow
) -> None:
    report = _post(
        staff, _url("builder_validate", workflow), {"definition": _definition(_email())}
    ).json()
    assert report["steps"]["0"]["from"] == [
        f"{workflow.organization} has no verified sender addresses yet: support staff add "
        "them to its Email integration"
    ]


@pytest.mark.usefixtures("email_adapter")
def test_each_message_is_previewed_as_its_channel_counts(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    messages: Any = {
        "1": {"text": "Hi {{customer.firstName}}", "function": "twilio.sendSMS"},
        "2": {"text": "Hi {{customer.firstName}},\nsee you.", "function": "email.sendEmail"},
        "3": {"text": "  ", "function": "email.sendEmail"},
        "4": {"text": "Hi {{customer.frstName}}", "function": "email.sendEmail"},
    }
    previews = _preview(staff, workflow, test_patient, messages)["previews"]
    assert (previews["1"]["text"], previews["1"]["segments"]) == ("Hi Tess", 1)
    assert previews["2"] == {
        "text": "Hi Tess,\nsee you.",
        "characters": 17,
        "lines": 2,
        "warnings": [],
    }
    assert "segments" not in previews["2"]
    assert previews["3"]["warnings"] == ["the body is empty"]
    assert "is not in this event's data" in previews["4"]["error"]


@pytest.mark.usefixtures("email_adapter")
def test_an_email_step_is_saved_with_its_parameters(
    staff: Client, workflow: Workflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    _email_integration(workflow.organization, monkeypatch)
    step = _email(html="<p>Hi <b>{{customer.firstName}}</b></p>")
    parsed = builder.definition_parse(_definition(step))
    report = builder.definition_report(
        parsed, senders=builder.approved_senders(workflow.organization)
    )
    assert report.ok, report.as_dict()
    [saved] = builder.workflow_steps_save(workflow=workflow, steps=parsed.steps)
    assert (saved.adapter, saved.function) == ("email", "sendEmail")
    assert saved.parameters == step["parameters"]
    # and it comes back to the builder as written
    assert builder.definition_initial(workflow)["steps"][0]["parameters"] == step["parameters"]


def test_the_dry_run_shows_an_email_with_its_subject_html_source_and_warnings() -> None:
    from django.template.loader import render_to_string

    message = {
        "to": "pat@example.org",
        "from": MAIL_SENDERS[0],
        "subject": "Your order <shipped>",
        "body": "Hi Pat",
        "html": "<p>Hi <b>Pat</b></p><script>x()</script>",
        "characters": 6,
        "warnings": ["the subject is over 78 characters: inboxes will cut it"],
    }
    step = {"number": 1, "title": "Email → Send email", "outcome": "send", "detail": "ok"}
    report = {
        "trigger": "order.shipped",
        "payload_source": "example data",
        "filter_matches": True,
        "filter_detail": "no filter",
        "payload": {},
        "steps": [{**step, "message": message}],
    }
    html = render_to_string(
        "admin/workflows/workflow/dry_run.html",
        {**builder.dry_run_context(report), "patient": "Pat", "problems": []},
    )
    assert "Subject: <strong>Your order &lt;shipped&gt;</strong>" in html
    # the HTML body is shown as its source, never as markup of the admin page
    assert "&lt;p&gt;Hi &lt;b&gt;Pat&lt;/b&gt;&lt;/p&gt;&lt;script&gt;x()&lt;/script&gt;" in html
    assert "<script>" not in html
    assert "6 characters</p>" in html and "segment" not in html
    assert "inboxes will cut it" in html


# --- "Wait for reply" -------------------------------------------------------------------------

WAIT_PARAMETERS: dict[str, Any] = {
    "kind": "until_field",
    "path": "appointment.startsAt",
    "offset_seconds": "-3600",
    "branches": [
        {"label": "Confirm", "match": "keywords", "keywords": ["c", "yes"], "goto": "next"},
        {"label": "Low", "match": "number", "min": 1, "max": 2, "goto": 4},
        {"label": "Code", "match": "pattern", "pattern": "^[0-9]{6}$", "goto": "end"},
    ],
    "otherwise": {"goto": 4, "reask": "Sorry, please reply C."},
    "no_reply": {"goto": "end"},
}


def _wait(**parameters: Any) -> dict[str, Any]:
    return {"type": "reply", "parameters": {**WAIT_PARAMETERS, **parameters}}


def test_schema_gives_a_wait_the_delays_timeout_widgets_and_its_branch_editors(
    staff: Client,
) -> None:
    schema = staff.get(_url("builder_schema")).json()
    reply = next(t for t in schema["stepTypes"] if t["name"] == "reply")
    assert reply["label"] == "Wait for reply"
    widgets = {p["name"]: p for p in reply["parameters"]}
    assert widgets["kind"]["widget"] == "select"
    assert [choice for choice, _ in widgets["kind"]["choices"]] == [
        value for value, _ in DELAY_KIND.choices
    ]
    assert widgets["seconds"] | {"label": "", "help": ""} == {
        **widgets["seconds"],
        "label": "",
        "help": "",
        "widget": "duration",
        "showWhen": {"kind": "duration"},
    }
    assert widgets["offset_seconds"]["signed"] is True
    assert widgets["path"]["widget"] == "date-field"
    assert [widgets[name]["widget"] for name in ("branches", "otherwise", "no_reply")] == [
        "reply-branches",
        "reply-otherwise",
        "reply-no-reply",
    ]
    # the builder's help, not the parameters' description of their JSON
    assert "first branch it matches" in widgets["branches"]["help"]


def test_a_waits_structures_are_read_from_json_text_or_as_they_are() -> None:
    as_text = {
        name: json.dumps(value) if isinstance(value, (list, dict)) else value
        for name, value in WAIT_PARAMETERS.items()
    }
    for parameters in (as_text, WAIT_PARAMETERS):
        parsed = builder.definition_parse(
            _definition(SMS, {"type": "reply", "parameters": parameters}, SMS, SMS)
        )
        assert parsed.problems.ok
        assert parsed.steps[1]["parameters"] == WAIT_PARAMETERS


@pytest.mark.parametrize("name", ["branches", "otherwise", "no_reply"])
def test_a_waits_structure_that_is_not_json_is_a_problem_on_its_field(name: str) -> None:
    parsed = builder.definition_parse(_definition(SMS, _wait(**{name: "[{"}), SMS, SMS))
    assert list(parsed.problems.steps) == [1]
    (message,) = parsed.problems.steps[1][name]
    assert message.startswith(f"the {name.replace('_', ' ')} ")
    report = builder.definition_report(parsed)
    assert report.steps[1][name] == [message]  # not also validation's reading of the text


def test_a_saved_wait_round_trips_through_the_builder() -> None:
    workflow = WorkflowFactory(trigger="appointment.reminder")
    SmsStepFactory(workflow=workflow, position=1)
    SmsStepFactory(
        workflow=workflow,
        position=2,
        type="reply",
        adapter="",
        function="",
        parameters=WAIT_PARAMETERS,
    )
    SmsStepFactory(workflow=workflow, position=3)
    SmsStepFactory(workflow=workflow, position=4)
    initial = builder.definition_initial(workflow)
    edited = initial["steps"][1]["parameters"]
    assert json.loads(edited["branches"]) == WAIT_PARAMETERS["branches"]  # JSON text
    parsed = builder.definition_parse(json.dumps(initial))
    assert parsed.steps[1]["parameters"] == WAIT_PARAMETERS
    builder.workflow_steps_save(workflow=workflow, steps=parsed.steps)
    assert workflow.steps.get(position=2).parameters == WAIT_PARAMETERS


def test_validate_gives_each_steps_place_in_the_branch_tree(staff: Client) -> None:
    hi = _sms("Hi")
    definition = _definition(hi, _wait(), hi, hi, trigger="appointment.reminder")
    report = _post(staff, _url("builder_validate"), {"definition": definition}).json()
    assert report["ok"] is True, report
    assert report["tree"] == [
        {"depth": 0, "wait": None, "branches": [], "ends": False},
        {"depth": 0, "wait": None, "branches": [], "ends": False},
        {"depth": 1, "wait": 2, "branches": ["Confirm"], "ends": True},
        {"depth": 1, "wait": 2, "branches": ["Low", "anything else"], "ends": True},
    ]


def test_the_dry_run_takes_a_simulated_reply(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    ConsentFactory(patient=test_patient)
    definition = _definition(
        _sms("Reply C"), _wait(), _sms("Confirmed"), _sms("Low"), trigger="appointment.reminder"
    )
    body = {"definition": definition, "patient": test_patient.pk, "reply": "Yes!"}
    page = _post(staff, _url("builder_dry_run", workflow), body).content.decode()
    assert "branch <strong>Confirm</strong>" in page
    assert "Step 3 · Twilio → Send SMS" in page and "Step 4" not in page
    # blank is no reply: the timeout's branch, which ends the run
    page = _post(staff, _url("builder_dry_run", workflow), {**body, "reply": "  "}).content.decode()
    assert "branch <strong>no reply</strong>" in page and "Step 3" not in page
    assert not OutboundMessage.objects.exists()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (5, "The simulated reply must be text (or null: no reply)."),
        ("x" * 1601, "A simulated reply is at most 1600 characters."),
    ],
)
def test_a_simulated_reply_that_is_not_a_text_message_is_refused(
    staff: Client, workflow: Workflow, test_patient: Any, reply: Any, error: str
) -> None:
    definition = _definition(SMS, _wait(), SMS, SMS, trigger="appointment.reminder")
    body = {"definition": definition, "patient": test_patient.pk, "reply": reply}
    response = _post(staff, _url("builder_dry_run", workflow), body)
    assert (response.status_code, response.json()) == (400, {"error": error})


@pytest.mark.parametrize(
    "parameters",
    [
        {"branches": "x", "otherwise": "[", "no_reply": "5"},
        {"branches": [1, None, "a"], "otherwise": [], "no_reply": {"goto": None}},
        {"branches": [{"label": "A", "match": "keywords", "keywords": ["a"], "goto": "abc"}]},
        {"branches": [{"label": "A", "match": "number", "min": "x", "goto": True}]},
        {"branches": [{"label": "A\u0000", "match": "pattern", "pattern": "(" * 300}]},
        {"branches": [{"label": "<b>", "match": "keywords", "keywords": [{"a": 1}]}] * 30},
        {"kind": "until_field", "path": "", "offset_seconds": "9" * 40},
    ],
)
def test_a_malformed_wait_is_never_a_server_error(
    staff: Client, workflow: Workflow, test_patient: Any, parameters: dict[str, Any]
) -> None:
    wait = {"type": "reply", "parameters": {**WAIT_PARAMETERS, **parameters}}
    definition = _definition(
        _sms("Hi"), wait, _sms("Hi"), _sms("Hi"), trigger="appointment.reminder"
    )
    report = _post(staff, _url("builder_validate", workflow), {"definition": definition})
    assert report.status_code in (200, 400)
    if report.status_code == 200:
        assert report.json()["ok"] is False and report.json()["steps"]["1"]
    diagram = _post(staff, _url("builder_diagram", workflow), {"definition": definition})
    assert diagram.status_code in (200, 400)
    body = {"definition": definition, "patient": test_patient.pk, "reply": "a"}
    dry_run = _post(staff, _url("builder_dry_run", workflow), body)
    assert dry_run.status_code in (200, 400)
    if dry_run.status_code == 200:
        assert "Fix these first" in dry_run.content.decode()


# --- a clinic's custom event types ----------------------------------------------------------

CUSTOM = "custom.lab_results_ready"


def _kit_sms() -> dict[str, Any]:
    return _sms("Hi {{customer.firstName}}, kit {{data.kitId}} is in")


def test_the_builder_schema_offers_a_clinics_custom_triggers_to_it_alone(
    workflow: Workflow,
) -> None:
    from tests.factories import CustomEventTypeFactory

    CustomEventTypeFactory(organization=workflow.organization)
    schema = builder.builder_schema(organization_id=workflow.organization_id)
    [custom] = [t for t in schema["triggers"] if t["category"] == "Custom"]
    assert [e["name"] for e in custom["events"]] == [CUSTOM]
    fields = schema["query"]["fieldSets"][schema["query"]["fieldSetOf"][CUSTOM]]
    assert {"data.kitId", "data.readyAt", "data.panels", "customer.firstName"} <= {
        f["path"] for f in fields
    }
    assert schema["referenceUrl"].endswith(f"?format=json&organization={workflow.organization_id}")
    for other in (None, OrganizationFactory().pk):
        schema = builder.builder_schema(organization_id=other)
        assert "Custom" not in [t["category"] for t in schema["triggers"]]
        assert CUSTOM not in schema["query"]["fieldSetOf"]


def test_the_builder_page_and_schema_endpoint_show_the_users_clinics_custom_triggers(
    staff: Client, workflow: Workflow
) -> None:
    from tests.factories import CustomEventTypeFactory

    CustomEventTypeFactory(organization=workflow.organization)
    CustomEventTypeFactory(name="kit_lost")  # another clinic's
    for url in (
        reverse("admin:workflows_workflow_change", args=[workflow.pk]),
        reverse("admin:workflows_workflow_add"),
    ):
        html = staff.get(url).content.decode()
        assert CUSTOM in html and "custom.kit_lost" not in html
    schema = staff.get(_url("builder_schema")).json()
    names = [e["name"] for t in schema["triggers"] for e in t["events"]]
    assert CUSTOM in names and "custom.kit_lost" not in names
    # a clinic user cannot ask for another clinic's
    other = CustomEventTypeFactory(name="kit_found").organization_id
    schema = staff.get(_url("builder_schema"), {"organization": other}).json()
    assert "custom.kit_found" not in [e["name"] for t in schema["triggers"] for e in t["events"]]


def test_a_custom_triggers_variables_validate_for_its_clinic_only(
    staff: Client, workflow: Workflow
) -> None:
    from tests.factories import CustomEventTypeFactory

    definition = _definition(_kit_sms(), trigger=CUSTOM)
    body = {"definition": definition}
    report = _post(staff, _url("builder_validate", workflow), body).json()
    assert report["trigger"] == [f"unknown trigger {CUSTOM!r}"]
    CustomEventTypeFactory(organization=workflow.organization)
    report = _post(staff, _url("builder_validate", workflow), body).json()
    assert report["ok"] is True, report
    report = _post(staff, _url("builder_validate"), body).json()  # the add page: their clinic
    assert report["ok"] is True, report
    typo = _definition(_sms("kit {{data.kit}}"), trigger=CUSTOM)
    report = _post(staff, _url("builder_validate", workflow), {"definition": typo}).json()
    assert (
        "{{data.kit}} is not a variable of custom.lab_results_ready"
        in (report["steps"]["0"]["message"][0])
    )


def test_a_workflow_on_a_custom_trigger_saves_and_is_enabled(
    staff: Client, workflow: Workflow
) -> None:
    from tests.factories import CustomEventTypeFactory

    CustomEventTypeFactory(organization=workflow.organization)
    staff = clinic_client(workflow.organization, *WORKFLOW_PERMISSIONS, "view_organization")
    response = staff.post(
        reverse("admin:workflows_workflow_add"),
        {
            "organization": workflow.organization_id,
            "name": "Kit in",
            "description": "",
            "definition": json.dumps(_definition(_kit_sms(), trigger=CUSTOM)),
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    saved = Workflow.objects.get(name="Kit in")
    assert saved.trigger == CUSTOM
    response = staff.post(_url("enable", saved))
    assert response.status_code == 302
    saved.refresh_from_db()
    assert saved.enabled


def test_previews_dry_runs_and_diagrams_of_a_custom_trigger(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    from tests.factories import CustomEventTypeFactory

    CustomEventTypeFactory(organization=workflow.organization)
    messages = {"0": {"text": "Kit {{data.kitId}}", "function": "twilio.sendSMS"}}
    preview = _post(
        staff, _url("builder_preview", workflow), {"trigger": CUSTOM, "messages": messages}
    ).json()
    assert preview["previews"]["0"]["text"] == "Kit KIT-2291"
    body = {"patient": test_patient.pk, "definition": _definition(_kit_sms(), trigger=CUSTOM)}
    html = _post(staff, _url("builder_dry_run", workflow), body).content.decode()
    assert "Hi Tess, kit KIT-2291 is in" in html
    svg = _post(staff, _url("builder_diagram", workflow), body).content.decode()
    assert "Lab results ready" in svg
    # another clinic's workflow editor does not know the trigger
    other = WorkflowFactory(enabled=False)
    client = clinic_client(other.organization, *WORKFLOW_PERMISSIONS)
    preview = _post(
        client, _url("builder_preview", other), {"trigger": CUSTOM, "messages": messages}
    ).json()
    assert preview["error"] == "choose a trigger to preview messages"


# --- first contact and MMS in the preview and the dry run ----------------------------------


def _first_contact(workflow: Workflow, **fields: Any) -> None:
    from integrations.models import MessagingPolicy
    from integrations.policy import messaging_policy_forget

    MessagingPolicy.objects.update_or_create(
        organization=workflow.organization,
        defaults={"first_contact_enabled": True, "brand_name": "Sunrise Telehealth", **fields},
    )
    messaging_policy_forget()


def test_preview_shows_and_counts_the_clinics_first_contact_wording(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    _first_contact(workflow, first_contact_every_days=30)
    message = {"text": "x" * 130, "function": "twilio.sendSMS"}
    preview = _preview(staff, workflow, test_patient, {"1": message})["previews"]["1"]
    assert preview["text"] == "Sunrise Telehealth: " + "x" * 130 + " Reply STOP to opt out."
    # 20 + 130 + 23 = 173: the wording tips it into a second segment.
    assert (preview["characters"], preview["segments"]) == (173, 2)
    assert "again every 30 days" in preview["firstContact"]
    assert "Without them: 130 characters, 1 segment." in preview["firstContact"]


def test_preview_without_first_contact_wording_says_nothing_of_it(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    preview = _preview(staff, workflow, test_patient, {"1": {"text": "Hi", "function": ""}})
    assert "firstContact" not in preview["previews"]["1"]


def test_preview_shows_the_media_of_an_mms(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    message = {
        "text": "x" * 200,
        "function": "twilio.sendSMS",
        "inputs": {"media": "https://cdn.example.com/{{order.number}}.pdf", "to": "x"},
    }
    preview = _preview(staff, workflow, test_patient, {"1": message})["previews"]["1"]
    assert preview["media"] == {
        "url": "https://cdn.example.com/7007.pdf",
        "kind": "pdf",
        "problem": "",
    }
    assert (preview["mms"], preview["segments"]) == (True, 1)  # billed as one MMS
    assert preview["warnings"][0].startswith("Sent as an MMS with the media")


def test_preview_warns_of_a_media_url_twilio_cannot_fetch(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    message = {
        "text": "Hi",
        "function": "twilio.sendSMS",
        "inputs": {"media": "http://10.0.0.1/{{order.number}}.png"},
    }
    preview = _preview(staff, workflow, test_patient, {"1": message})["previews"]["1"]
    assert "Media URL: the media URL must start with https://" in preview["warnings"][-1]


def test_dry_run_shows_the_wording_on_a_first_text_and_not_after_one(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    _first_contact(workflow)
    body = {"patient": test_patient.pk, "definition": _definition(SMS)}
    html = _post(staff, _url("builder_dry_run", workflow), body).content.decode()
    assert "Sunrise Telehealth: Hi Tess, order 7007 has shipped! Reply STOP to opt out." in html
    assert "first text to this number" in html
    assert "75 characters · 1 segment · GSM-7" in html
    assert not OutboundMessage.objects.exists()  # a dry run records nothing

    OutboundMessage.objects.create(
        organization=workflow.organization,
        integration=workflow.organization.integrations.get(),
        idempotency_key="earlier",
        to=test_patient.phone,
        body="earlier",
        purpose="transactional",
        status=OutboundMessage.Status.DELIVERED,
        first_contact=True,
    )
    html = _post(staff, _url("builder_dry_run", workflow), body).content.decode()
    assert "Hi Tess, order 7007 has shipped!</p>" in html
    assert "left out: this number had it" in html


def test_dry_run_shows_media_as_an_escaped_link(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    step = {**SMS, "parameters": {**SMS["parameters"], "media": 'https://x.example/a".png'}}
    html = _post(
        staff,
        _url("builder_dry_run", workflow),
        {"patient": test_patient.pk, "definition": _definition(step)},
    ).content.decode()
    assert "MMS with an image" in html
    assert 'href="https://x.example/a&quot;.png"' in html
    assert "(billed as one MMS)" in html


# --- short links in the preview and the dry run --------------------------------------------

TRACKING = "https://carrier.example/track/{{order.number}}?utm_source=sms&utm_medium=careflow"


def _short_links(workflow: Workflow) -> None:
    from integrations.models import MessagingPolicy
    from integrations.policy import messaging_policy_forget

    MessagingPolicy.objects.update_or_create(
        organization=workflow.organization,
        defaults={"short_links_enabled": True, "short_link_domain": "https://go.sunrise.example"},
    )
    messaging_policy_forget()


def test_preview_counts_links_as_short_as_they_will_be_sent(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    message = {"text": "x" * 100 + f" {TRACKING}", "function": "twilio.sendSMS"}
    long = _preview(staff, workflow, test_patient, {"1": message})["previews"]["1"]
    assert long["segments"] == 2 and "shortLinks" not in long
    _short_links(workflow)
    preview = _preview(staff, workflow, test_patient, {"1": message})["previews"]["1"]
    short = "https://go.sunrise.example/l/xxxxxxxxxx"
    assert preview["text"] == "x" * 100 + f" {short}"
    assert (preview["characters"], preview["segments"]) == (101 + len(short), 1)
    assert preview["shortLinks"] == (
        f"Links are shortened when sent: 1 link, it is ~{len(short)} characters "
        "(https://go.sunrise.example/l/…), counted as such."
    )


def test_dry_run_shows_the_short_links_a_text_would_carry(
    staff: Client, workflow: Workflow, test_patient: Any
) -> None:
    _short_links(workflow)
    step = {**SMS, "parameters": {**SMS["parameters"], "message": f"Track it: {TRACKING}"}}
    body = {"patient": test_patient.pk, "definition": _definition(step)}
    html = _post(staff, _url("builder_dry_run", workflow), body).content.decode()
    assert "Track it: https://go.sunrise.example/l/xxxxxxxxxx" in html
    assert "Links are shortened when sent: 1 link" in html
    assert not OutboundMessage.objects.exists()
    from integrations.models import ShortLink

    assert not ShortLink.objects.exists()  # a dry run records nothing
