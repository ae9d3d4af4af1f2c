from typing import Any

import pytest

from integrations.twilio.adapter import SEND_SMS
from workflows.builder import report_lines
from workflows.validation import (
    ApprovedSenders,
    sender_problem,
    template_problems,
    workflow_validate,
)


@pytest.mark.parametrize(
    "template",
    [
        "Hi {{customer.firstName}}, order {{order.number}} shipped",
        '{{customer.lastName | default:""}} {{order.lineItems.0.name}}',
        "{{trigger.order.trackingNumber}}",
        "{{history.1.result.sid}}",
        "no variables at all",
    ],
)
def test_valid_templates_have_no_problems(template: str) -> None:
    assert template_problems(template, trigger="order.shipped", step_number=2) == []


def test_unknown_variable_suggests_the_nearest_names() -> None:
    (problem,) = template_problems(
        "Hi {{customer.frstName}}", trigger="order.shipped", step_number=1
    )
    assert problem.startswith("{{customer.frstName}} is not a variable of order.shipped")
    assert "did you mean {{customer.firstName}}" in problem


def test_variable_of_another_trigger_is_unknown() -> None:
    (problem,) = template_problems("{{order.number}}", trigger="customer.signup", step_number=1)
    assert "is not a variable of customer.signup" in problem


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        (
            "{{customer.defaultAddress}}",
            "is an object, not text: use one of its fields, e.g. {{customer.defaultAddress.",
        ),
        (
            "{{order.lineItems}}",
            "is a list, not text: use one of its fields, e.g. {{order.lineItems.0.",
        ),
        ("{{trigger.order.customer}}", "e.g. {{trigger.order.customer."),
    ],
)
def test_objects_and_lists_are_refused(template: str, fragment: str) -> None:
    (problem,) = template_problems(template, trigger="order.shipped", step_number=1)
    assert fragment in problem


def test_history_may_only_look_back() -> None:
    (problem,) = template_problems(
        "{{history.2.result.sid}}", trigger="order.shipped", step_number=2
    )
    assert "earlier step (1 to 1)" in problem


def test_syntax_errors_are_reported() -> None:
    (problem,) = template_problems(
        "Hi {{customer.firstName", trigger="order.shipped", step_number=1
    )
    assert "never closed" in problem


def test_workflow_validate_reports_each_problem_where_it_belongs() -> None:
    report = workflow_validate(
        trigger="order.shipped",
        filter={"order.status": {"$gtee": 1}},
        steps=[
            {"type": "delay", "parameters": {"kind": "duration", "seconds": "0"}},
            {
                "type": "adapter",
                "adapter": "twilio",
                "function": "sendSMS",
                "parameters": {
                    "message": "Hi {{customer.nam}}",
                    "to": "{{customer.phone}}",
                    "from": "+15005550006",
                },
            },
            {"type": "condition", "parameters": {"query": {"a": 1}, "else": "1"}},
        ],
    )
    assert not report.ok
    assert "$gtee" in report.filter[0]
    assert "1 second" in report.steps[0]["seconds"][0]
    assert "{{customer.nam}} is not a variable" in report.steps[1]["message"][0]
    assert "only go forward" in report.steps[2]["else"][0]
    assert set(report.as_dict()["steps"]) == {"0", "1", "2"}


def test_workflow_validate_unknown_trigger() -> None:
    report = workflow_validate(trigger="order.teleported", filter={}, steps=[])
    assert report.trigger == ["unknown trigger 'order.teleported'"]


def test_a_good_workflow_is_ok() -> None:
    report = workflow_validate(
        trigger="order.shipped",
        filter={"order.status": "shipped"},
        steps=[
            {
                "type": "adapter",
                "adapter": "twilio",
                "function": "sendSMS",
                "parameters": {
                    "message": "Hi {{customer.firstName}}",
                    "to": "{{customer.phone}}",
                    "from": "+15005550006",
                },
            }
        ],
    )
    assert report.ok, report.as_dict()


@pytest.mark.parametrize(
    ("trigger", "variable"),
    [
        ("prescription.fulfilled", "prescription.medication.name"),
        ("requisition.resulted", "requisition.testPanel"),
    ],
)
def test_clinical_details_are_kept_out_of_sms(trigger: str, variable: str) -> None:
    report = workflow_validate(
        trigger=trigger,
        filter={},
        steps=[
            {
                "type": "adapter",
                "adapter": "twilio",
                "function": "sendSMS",
                "parameters": {
                    "message": f"Your {{{{{variable}}}}} is ready",
                    "to": "{{customer.phone}}",
                    "from": "+15005550006",
                },
            }
        ],
    )
    (problem,) = report.steps[0]["message"]
    assert problem.startswith(f"{{{{{variable}}}}} is clinical information")
    assert (
        template_problems(
            f"{{{{{variable}}}}}", trigger=trigger, step_number=1, clinical_data_allowed=True
        )
        == []
    )


# --- the outbound webhook's parameters: a JSON body and a URL --------------------------------


def _webhook_step(body: str, url: str = "https://93.184.216.34/hooks/careflow") -> dict:
    return {
        "type": "adapter",
        "adapter": "webhook",
        "function": "postJSON",
        "parameters": {"url": url, "body": body},
    }


def _webhook_report(step: dict, trigger: str = "order.shipped") -> dict:
    report = workflow_validate(trigger=trigger, filter={}, steps=[step])
    return report.steps.get(0, {})


def test_a_valid_webhook_step_has_no_problems() -> None:
    body = '{"order": "{{order.number}}", "who": {"first": "{{customer.firstName}}"}, "n": 1}'
    assert _webhook_report(_webhook_step(body)) == {}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '{"order": "{{order.number}}",}',
            "not valid JSON: Expecting property name enclosed in double quotes (line 1, column 30)",
        ),
        ('["{{order.number}}"]', "must be a JSON object, {…}, not a list"),
        ('"{{order.number}}"', "must be a JSON object, {…}, not a string"),
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused_with_the_step_and_parameter_named(
    body: str, expected: str
) -> None:
    step = _webhook_step(body)
    assert _webhook_report(step) == {"body": [expected]}
    report = workflow_validate(trigger="order.shipped", filter={}, steps=[step])
    assert report_lines(report, [step]) == [
        f"Step 1 (Outbound webhook → Post JSON), Body (JSON): {expected}"
    ]


def test_unknown_variables_inside_the_body_are_found_in_every_value() -> None:
    body = '{"a": "{{customer.frstName}}", "deep": [{"b": "{{order.numbr}}"}], "again": "{{customer.frstName}}"}'
    (first, second) = _webhook_report(_webhook_step(body))["body"]
    assert first.startswith("{{customer.frstName}} is not a variable of order.shipped")
    assert "did you mean {{customer.firstName}}" in first
    assert second.startswith("{{order.numbr}} is not a variable of order.shipped")


def test_clinical_details_are_kept_out_of_webhook_bodies() -> None:
    body = '{"medication": "{{prescription.medication.name}}"}'
    (problem,) = _webhook_report(_webhook_step(body), trigger="prescription.fulfilled")["body"]
    assert problem == (
        "{{prescription.medication.name}} is clinical information; keep it out of webhook "
        "bodies: the receiver is a third party (send an id it can look up instead)"
    )


def test_an_empty_body_is_reported_once_as_required() -> None:
    assert _webhook_report(_webhook_step("")) == {"body": ["Body (JSON) is required"]}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://93.184.216.34/hook",
            "the URL must start with https:// (webhooks are only sent encrypted)",
        ),
        ("hooks.example.com/careflow", "write the whole URL, starting with https://"),
        ("https://user:secret@93.184.216.34/", "put no user name or password in the URL"),
        ("https://127.0.0.1/hook", "127.0.0.1 is not a public address"),
        # resolved: ::1 or 127.0.0.1 first, depending on the resolver
        ("https://localhost:8443/hook", "localhost ("),
        ("https://10.1.2.3/hook", "10.1.2.3 is not a public address"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is not a public address"),
        ("https://[::1]/hook", "::1 is not a public address"),
    ],
)
def test_a_literal_url_is_checked_at_save_time(url: str, expected: str, settings: Any) -> None:
    settings.CAREFLOW_WEBHOOK_ALLOW_PRIVATE = False
    (problem,) = _webhook_report(_webhook_step('{"a": 1}', url=url))["url"]
    assert problem.startswith(expected)
    if "://" in url and "@" not in url and url.startswith("https"):
        assert "is not a public address; webhooks only go to public addresses" in problem


def test_a_templated_url_is_left_to_the_send_time_check() -> None:
    step = _webhook_step('{"a": 1}', url="https://{{customer.email}}/hook")
    assert _webhook_report(step) == {}


# --- the sender: one of the clinic's approved numbers --------------------------------------

SUNRISE = ApprovedSenders(
    clinic="Sunrise", numbers=("+15005550006", "+14155550100"), integration="Twilio"
)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("+15005550006", ""),
        (" +14155550100 ", ""),
        ("{{customer.phone}}", ""),  # checked when the message is sent
        ("", ""),  # "required" is step_validate's to say
        (None, ""),
        (
            "+15005550007",
            "+15005550007 is not an approved sending number of Sunrise; choose +15005550006 "
            "or +14155550100, or use a {{variable}}",
        ),
    ],
)
def test_sender_problem(value: Any, problem: str) -> None:
    assert sender_problem(value, SUNRISE, SEND_SMS.sender_noun) == problem


def test_a_clinic_without_numbers_is_told_who_adds_them() -> None:
    problem = sender_problem(
        "+15005550006",
        ApprovedSenders(clinic="Dawn", numbers=(), integration="Twilio"),
        SEND_SMS.sender_noun,
    )
    assert problem == (
        "Dawn has no approved sending numbers yet: support staff add them to its Twilio integration"
    )


def _sms_step(sender: str) -> dict[str, Any]:
    return {
        "type": "adapter",
        "adapter": "twilio",
        "function": "sendSMS",
        "parameters": {"message": "Hi", "to": "{{customer.phone}}", "from": sender},
    }


def test_workflow_validate_checks_senders_only_when_given_them() -> None:
    steps = [_sms_step("+19995550000")]
    assert workflow_validate(trigger="order.shipped", filter={}, steps=steps).ok
    report = workflow_validate(
        trigger="order.shipped", filter={}, steps=steps, senders={"twilio": SUNRISE}
    )
    assert list(report.steps[0]) == ["from"]
    assert "not an approved sending number of Sunrise" in report.steps[0]["from"][0]
    # also when the trigger is unknown (the template checks need one; this one does not)
    report = workflow_validate(trigger="nope", filter={}, steps=steps, senders={"twilio": SUNRISE})
    assert "from" in report.steps[0]


def test_a_missing_sender_is_reported_once_as_required() -> None:
    report = workflow_validate(
        trigger="order.shipped", filter={}, steps=[_sms_step("")], senders={"twilio": SUNRISE}
    )
    assert report.steps[0]["from"] == ["From Phone is required"]


# --- only {{variables}}: other template syntax would be texted verbatim ----------------------


@pytest.mark.parametrize(
    ("template", "kind"),
    [
        ("{% if customer.firstName %}Hi{% endif %}", "tag “{% … %}”"),
        ("Hi {{customer.firstName}} {# greet #}", "comment “{# … #}”"),
        ("{%- raw -%}", "tag “{% … %}”"),
    ],
)
def test_tags_and_comments_are_refused_with_what_is_allowed(template: str, kind: str) -> None:
    (problem,) = template_problems(template, trigger="order.shipped", step_number=1)
    assert problem.startswith(f"a template {kind} is not allowed here")
    assert "{{customer.firstName}}" in problem


@pytest.mark.parametrize("parameter", ["message", "to", "from"])
def test_tags_are_refused_in_every_sms_parameter(parameter: str) -> None:
    parameters = {"message": "Hi", "to": "{{customer.phone}}", "from": "+15005550006"}
    parameters[parameter] = "{% if x %}{{customer.phone}}{% endif %}"
    step = {"type": "adapter", "adapter": "twilio", "function": "sendSMS", "parameters": parameters}
    report = workflow_validate(trigger="order.shipped", filter={}, steps=[step])
    assert "is not allowed here" in report.steps[0][parameter][0]


@pytest.mark.parametrize(
    ("body", "url"),
    [
        ('{"a": "{# note #}{{order.number}}"}', "https://hooks.example.com/x"),
        ('{"a": "{{order.number}}"}', "https://hooks.example.com/{% now %}/{{order.number}}"),
    ],
)
def test_tags_are_refused_in_webhook_urls_and_body_strings(body: str, url: str) -> None:
    report = _webhook_report(_webhook_step(body, url=url))
    assert any(
        "is not allowed here" in problem for problems in report.values() for problem in problems
    )


def test_a_percent_or_hash_beside_a_brace_alone_is_text() -> None:
    assert (
        template_problems("50% off {{order.number}} #1 {x}", trigger="order.shipped", step_number=1)
        == []
    )


# --- a second messaging adapter: email ------------------------------------------------------

DAWN_MAIL = ApprovedSenders(
    clinic="Dawn", numbers=("care@dawn.example", "news@dawn.example"), integration="Email"
)


def _email_step(**parameters: str) -> dict[str, Any]:
    return {
        "type": "adapter",
        "adapter": "email",
        "function": "sendEmail",
        "parameters": {
            "subject": "Order {{order.number}}",
            "body": "Hi {{customer.firstName}}",
            "to": "{{customer.email}}",
            "from": "care@dawn.example",
            **parameters,
        },
    }


def _email_report(step: dict[str, Any], trigger: str = "order.shipped") -> dict[str, list[str]]:
    report = workflow_validate(
        trigger=trigger, filter={}, steps=[step], senders={"email": DAWN_MAIL}
    )
    return report.steps.get(0, {})


@pytest.mark.usefixtures("email_adapter")
def test_an_email_sender_is_named_as_an_address() -> None:
    assert _email_report(_email_step()) == {}
    (problem,) = _email_report(_email_step(**{"from": "care@dusk.example"}))["from"]
    assert problem == (
        "care@dusk.example is not a verified sender address of Dawn; choose care@dawn.example "
        "or news@dawn.example, or use a {{variable}}"
    )
    none = ApprovedSenders(clinic="Dawn", numbers=(), integration="Email")
    report = workflow_validate(
        trigger="order.shipped", filter={}, steps=[_email_step()], senders={"email": none}
    )
    assert report.steps[0]["from"] == [
        "Dawn has no verified sender addresses yet: support staff add them to its Email integration"
    ]


def test_a_function_without_a_noun_names_its_senders_neutrally() -> None:
    problem = sender_problem("x", ApprovedSenders(clinic="Dawn", numbers=("y",), integration="I"))
    assert problem == "x is not an approved sender of Dawn; choose y, or use a {{variable}}"


@pytest.mark.usefixtures("email_adapter")
@pytest.mark.parametrize(
    ("html", "fragment"),
    [
        ("<p>{{customer.frstName}}</p>", "did you mean {{customer.firstName}}"),
        ("<p>{{customer.firstName</p>", "never closed"),
        ("<p>{% if customer.firstName %}Hi{% endif %}</p>", "is not allowed here"),
        ("<p>{{customer.defaultAddress}}</p>", "is an object, not text"),
    ],
)
def test_an_html_body_is_validated_as_a_text_template(html: str, fragment: str) -> None:
    (problem,) = _email_report(_email_step(html=html))["html"]
    assert fragment in problem


@pytest.mark.usefixtures("email_adapter")
def test_clinical_details_are_kept_out_of_every_email_part() -> None:
    medication = "{{prescription.medication.name}}"
    step = _email_step(subject=medication, body="Hi", html=f"<b>{medication}</b>")
    report = _email_report(step, trigger="prescription.fulfilled")
    assert set(report) == {"subject", "html"}
    assert all("keep it out of emails" in problem for (problem,) in report.values())


@pytest.mark.usefixtures("email_adapter")
def test_a_literal_recipient_must_be_an_email_address() -> None:
    (problem,) = _email_report(_email_step(to="not an address"))["to"]
    assert problem == "is not a valid email address"
    assert _email_report(_email_step(to="pat@example.org")) == {}


SMS_STEP = {
    "type": "adapter",
    "adapter": "twilio",
    "function": "sendSMS",
    "parameters": {
        "message": "Reply C to confirm",
        "to": "{{customer.phone}}",
        "from": "+15005550006",
    },
}
WEBHOOK_STEP = {
    "type": "adapter",
    "adapter": "webhook",
    "function": "postJSON",
    "parameters": {"url": "https://example.com/hook", "body": '{"a": "b"}'},
}


def _wait(goto: Any = "next", otherwise: Any = "end") -> dict[str, Any]:
    return {
        "type": "reply",
        "parameters": {
            "kind": "duration",
            "seconds": "3600",
            "branches": [
                {"label": "Confirm", "match": "keywords", "keywords": ["c"], "goto": goto}
            ],
            "otherwise": {"goto": otherwise},
            "no_reply": {"goto": "end"},
        },
    }


def _condition(target: str) -> dict[str, Any]:
    return {
        "type": "condition",
        "parameters": {"query": {"customer.phone": {"$exists": True}}, "else": target},
    }


def test_a_wait_after_a_text_with_branches_to_every_step_is_ok() -> None:
    steps = [SMS_STEP, _wait("next", otherwise=4), SMS_STEP, SMS_STEP]
    report = workflow_validate(trigger="appointment.reminder", filter={}, steps=steps)
    assert report.ok, report.as_dict()
    # A wait in a branch whose text is the first question's (no text in its own branch).
    steps = [SMS_STEP, _wait("next", otherwise=4), SMS_STEP, _wait("end")]
    report = workflow_validate(trigger="appointment.reminder", filter={}, steps=steps)
    assert report.ok, report.as_dict()


@pytest.mark.parametrize(
    ("steps", "index", "field", "fragment"),
    [
        ([_wait("end")], 0, "type", "needs an earlier step on its path that texts the patient"),
        (
            [WEBHOOK_STEP, _wait("end")],
            1,
            "type",
            "needs an earlier step on its path that texts the patient",
        ),
        ([SMS_STEP, _wait(4), SMS_STEP, SMS_STEP], 1, "branches", "no branch goes to step 3"),
        (
            [_condition("4"), SMS_STEP, _wait("next", otherwise=5), SMS_STEP, SMS_STEP],
            0,
            "else",
            "inside a wait's branch",
        ),
    ],
)
def test_a_wait_is_checked_against_the_whole_workflow(
    steps: list[dict[str, Any]], index: int, field: str, fragment: str
) -> None:
    report = workflow_validate(trigger="appointment.reminder", filter={}, steps=steps)
    messages = report.steps.get(index, {}).get(field, [])
    assert any(fragment in message for message in messages), report.as_dict()


# --- a clinic's custom event types ----------------------------------------------------------


@pytest.mark.django_db
def test_a_custom_triggers_data_are_variables_for_its_clinic_only() -> None:
    from tests.factories import CustomEventTypeFactory
    from workflows.custom_events import event_types
    from workflows.validation import workflow_validate

    custom = CustomEventTypeFactory()
    step: dict[str, Any] = {
        "type": "adapter",
        "adapter": "twilio",
        "function": "sendSMS",
        "parameters": {
            "message": "Kit {{data.kitId}} for {{customer.firstName}} ({{trigger.data.kitId}})",
            "to": "{{customer.phone}}",
            "from": "+15005550006",
        },
    }
    events = event_types(organization_id=custom.organization_id)
    report = workflow_validate(trigger=custom.type_name, filter={}, steps=[step], events=events)
    assert report.ok, report.as_dict()
    typo = {**step, "parameters": {**step["parameters"], "message": "{{data.kitid}}"}}
    report = workflow_validate(trigger=custom.type_name, filter={}, steps=[typo], events=events)
    assert report.steps[0]["message"] == [
        "{{data.kitid}} is not a variable of custom.lab_results_ready; did you mean {{data.kitId}}?"
    ]
    # the catalogue alone (no clinic), or another clinic: no such trigger
    for other in (None, CustomEventTypeFactory(name="kit_lost").organization_id):
        report = workflow_validate(
            trigger=custom.type_name,
            filter={},
            steps=[step],
            events=event_types(organization_id=other),
        )
        assert report.trigger == ["unknown trigger 'custom.lab_results_ready'"]


@pytest.mark.django_db
def test_a_custom_type_can_be_a_goal_or_an_exit_of_its_clinic() -> None:
    from tests.factories import CustomEventTypeFactory
    from workflows.custom_events import event_types
    from workflows.validation import ValidationReport, goal_validate

    custom = CustomEventTypeFactory()
    exits = [{"event": custom.type_name, "filter": {}, "scope": "patient"}]
    report = ValidationReport()
    goal_validate(
        report=report,
        event=custom.type_name,
        filter={"data.kitId": "K"},
        scope="patient",
        window_hours=24,
        exits=exits,
        events=event_types(organization_id=custom.organization_id),
    )
    assert (report.goal, report.exits) == ({}, {})
    report = ValidationReport()
    goal_validate(
        report=report,
        event=custom.type_name,
        filter={},
        scope="patient",
        window_hours=24,
        exits=[],
        events=event_types(organization_id=None),
    )
    assert report.goal["event"] == [
        "unknown event 'custom.lab_results_ready': choose one from the list"
    ]
