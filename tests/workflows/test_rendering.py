import pytest

from workflows.rendering import TemplateError, template_render, template_variables

DATA = {
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
