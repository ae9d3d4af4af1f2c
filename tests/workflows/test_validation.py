import pytest

from workflows.validation import template_problems, workflow_validate


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
