import json
from typing import Any

import pytest

from workflows.rendering import (
    TemplateError,
    json_template_render,
    parameter_render,
    template_render,
    template_variables,
)

DATA: dict[str, Any] = {
    "customer": {
        "firstName": "Ann",
        "phone": "+14155550123",
        "lastName": "",
        "defaultAddress": {"city": "Austin"},
        "acceptMarketing": True,
    },
    "order": {
        "number": "1001",
        "totalAmount": "1234.5",
        "createdAt": "2026-11-26T10:00:00+00:00",
        "lineItems": [{"name": "Vitamin D"}, {"name": "Zinc"}],
    },
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Hi {{customer.firstName}}!", "Hi Ann!"),
        ("Hi {{ customer.firstName }}!", "Hi Ann!"),
        ("{{order.lineItems.1.name}}", "Zinc"),
        ('{{customer.lastName | default:"friend"}}', "friend"),
        ("{{customer.nickname | default:'there'}}", "there"),
        ("{{customer.firstName | upper}}", "ANN"),
        ("{{order.totalAmount | money}}", "$1,234.50"),
        ('{{order.createdAt | date:"%Y-%m-%d"}}', "2026-11-26"),
        ("{{customer.acceptMarketing}}", "yes"),
        ("no variables", "no variables"),
    ],
)
def test_render(template: str, expected: str) -> None:
    assert template_render(template, DATA) == expected


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("Hi {{customer.frstName}}", "customer.frstName is not in this event's data"),
        ("Hi {{customer.lastName}}", "customer.lastName is empty"),
        ("{{customer.defaultAddress}}", "is an object"),
        ("{{order.lineItems}}", "is a list"),
        ("{{order.lineItems.5.name}}", "not in this event's data"),
        ("{{customer.firstName | shout}}", "unknown filter"),
        ("{{customer.firstName | default}}", "default needs a value"),
        ("{{customer.__class__}}", "not in this event's data"),
        ("{{ customer.firstName() }}", "is not a variable"),
        ("Hi {{customer.firstName", "never closed"),
        ("{{customer.firstName | date}}", "is not a date"),
    ],
)
def test_render_errors_name_the_problem(template: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as excinfo:
        template_render(template, DATA)
    assert fragment in str(excinfo.value)


def test_render_is_all_or_nothing() -> None:
    with pytest.raises(TemplateError):
        template_render("{{customer.firstName}} {{customer.missing}}", DATA)


def test_template_variables_lists_paths_and_defaults() -> None:
    variables = template_variables('{{a.b}} and {{c | default:"x"}}')
    assert [(v.path, v.default) for v in variables] == [("a.b", None), ("c", "x")]


# --- JSON templates -----------------------------------------------------------------------


def test_json_template_renders_string_values_at_any_depth_and_keeps_the_rest() -> None:
    template = """{
        "who": "{{customer.firstName}}",
        "{{customer.firstName}}": "keys are not templates",
        "order": {"number": "#{{order.number}}", "items": ["{{order.lineItems.0.name}}", 2]},
        "count": 3, "paid": true, "note": null
    }"""
    assert json_template_render(template, DATA) == {
        "who": "Ann",
        "{{customer.firstName}}": "keys are not templates",
        "order": {"number": "#1001", "items": ["Vitamin D", 2]},
        "count": 3,
        "paid": True,
        "note": None,
    }


def test_a_value_with_quotes_and_braces_stays_inside_its_string() -> None:
    # given a first name written to break out of its JSON string
    name = 'Ann", "admin": true, "x": {"y": "}'
    data = {**DATA, "customer": {**DATA["customer"], "firstName": name}}
    # when the body is rendered as a JSON parameter
    text = parameter_render('{"name": "{{customer.firstName}}"}', data, kind="json")
    # then it is still one field holding exactly that text
    assert json.loads(text) == {"name": name}


def test_a_text_parameter_is_rendered_as_one_template() -> None:
    assert parameter_render("Hi {{customer.firstName}}", DATA) == "Hi Ann"
    assert parameter_render("Hi {{customer.firstName}}", DATA, kind="text") == "Hi Ann"


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ('{"name": "{{customer.firstName}}"', "not valid JSON: Expecting ',' delimiter (line 1"),
        ("", "not valid JSON: Expecting value (line 1, column 1)"),
        ('["{{customer.firstName}}"]', "must be a JSON object, {…}, not a list"),
        ('"{{customer.firstName}}"', "must be a JSON object, {…}, not a string"),
        ("42", "must be a JSON object, {…}, not a single value"),
        ('{"a": "{{customer.missing}}"}', "customer.missing is not in this event's data"),
        ('{"a": "ok", "b": "{{customer.firstName"}', "never closed"),
    ],
)
def test_json_template_errors_name_the_problem(template: str, fragment: str) -> None:
    with pytest.raises(TemplateError) as excinfo:
        json_template_render(template, DATA)
    assert fragment in str(excinfo.value)


def test_a_json_template_already_decoded_is_rendered_too() -> None:
    assert json_template_render({"who": "{{customer.firstName}}"}, DATA) == {"who": "Ann"}
