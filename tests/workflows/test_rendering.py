import json
import zoneinfo
from datetime import UTC, datetime
from typing import Any

import pytest

from integrations.twilio.sandbox import SandboxServer
from tests.conftest import sandbox_account
from tests.factories import (
    SANDBOX_FROM,
    AppointmentFactory,
    IntegrationFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.builder import message_previews
from workflows.dry_run import workflow_dry_run
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, StepRun
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


# --- dates and times in the recipient's time zone ------------------------------------------

CHICAGO = zoneinfo.ZoneInfo("America/Chicago")
WHEN = '{{appointment.startsAt | date:"%b %-d at %-I:%M %p %Z"}}'


@pytest.mark.parametrize(
    ("starts_at", "expected"),
    [
        # Spring forward: 2:00 CST becomes 3:00 CDT on Sunday 8 March 2026 (08:00 UTC).
        ("2026-03-07T15:00:00+00:00", "Mar 7 at 9:00 AM CST"),
        ("2026-03-08T07:30:00+00:00", "Mar 8 at 1:30 AM CST"),
        ("2026-03-08T08:30:00+00:00", "Mar 8 at 3:30 AM CDT"),
        ("2026-03-08T15:00:00Z", "Mar 8 at 10:00 AM CDT"),
        # Fall back: 2:00 CDT becomes 1:00 CST on Sunday 1 November 2026 (07:00 UTC).
        ("2026-11-01T06:30:00+00:00", "Nov 1 at 1:30 AM CDT"),
        ("2026-11-01T07:30:00+00:00", "Nov 1 at 1:30 AM CST"),
        ("2026-11-01T15:00:00+00:00", "Nov 1 at 9:00 AM CST"),
        # Late evening in Chicago is already the next day in UTC: the patient's day is shown.
        ("2026-11-02T03:30:00+00:00", "Nov 1 at 9:30 PM CST"),
        # An offset other than UTC is an instant too.
        ("2026-03-08T11:00:00-05:00", "Mar 8 at 11:00 AM CDT"),
    ],
)
def test_date_shows_a_timestamp_on_the_recipients_clock_across_dst(
    starts_at: str, expected: str
) -> None:
    data = {"appointment": {"startsAt": starts_at}}
    assert template_render(WHEN, data, tz=CHICAGO) == expected


@pytest.mark.parametrize("zone", ["America/Chicago", "Pacific/Honolulu", "Pacific/Kiritimati"])
def test_a_date_without_a_time_is_never_moved_to_another_day(zone: str) -> None:
    data = {"customer": {"birthDate": "2026-03-08"}, "order": {"dueOn": "2026-11-01"}}
    tz = zoneinfo.ZoneInfo(zone)
    assert template_render("{{customer.birthDate | date}}", data, tz=tz) == "Mar 8, 2026"
    assert template_render('{{order.dueOn | date:"%A %-d %B"}}', data, tz=tz) == "Sunday 1 November"


def test_a_time_without_an_offset_is_shown_as_given() -> None:
    data = {"webhook": {"data": {"pickupAt": "2026-03-08T09:15:00"}}}
    template = '{{webhook.data.pickupAt | date:"%-I:%M %p"}}'
    assert template_render(template, data, tz=CHICAGO) == "9:15 AM"


def test_json_parameters_render_dates_in_the_recipients_zone_too() -> None:
    data = {"appointment": {"startsAt": "2026-03-08T15:00:00+00:00"}}
    text = parameter_render(
        '{"when": "{{appointment.startsAt | date:\\"%H:%M\\"}}"}', data, kind="json", tz=CHICAGO
    )
    assert json.loads(text) == {"when": "10:00"}
    assert parameter_render(WHEN, data, tz=CHICAGO) == "Mar 8 at 10:00 AM CDT"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("starts_at", "expected"),
    [
        (datetime(2026, 3, 7, 15, 0, tzinfo=UTC), "Your visit: Mar 7 at 9:00 AM"),
        (datetime(2026, 3, 8, 15, 0, tzinfo=UTC), "Your visit: Mar 8 at 10:00 AM"),
        (datetime(2026, 11, 1, 15, 0, tzinfo=UTC), "Your visit: Nov 1 at 9:00 AM"),
    ],
)
def test_engine_dry_run_and_preview_text_the_same_local_time(
    sandbox: SandboxServer, starts_at: datetime, expected: str
) -> None:
    """A clinic in New York, a patient with no time zone of their own whose address is in
    Illinois: the text shows Chicago time, the same in the run, the dry run and the preview."""
    integration = sandbox_account(sandbox, IntegrationFactory())
    organization = integration.organization
    organization.timezone = "America/New_York"
    organization.save()
    template = 'Your visit: {{appointment.startsAt | date:"%b %-d at %-I:%M %p"}}'
    workflow = WorkflowFactory(organization=organization, trigger="appointment.booked")
    SmsStepFactory(
        workflow=workflow,
        parameters={"message": template, "to": "{{customer.phone}}", "from": SANDBOX_FROM},
    )
    patient = PatientFactory(
        organization=organization, timezone="", province_code="IL", phone="+13125550123"
    )
    AppointmentFactory(patient=patient, starts_at=starts_at)
    event = Event.objects.get(type="appointment.booked")
    assert event.payload["appointment"]["timezone"] == "America/Chicago"  # startsAtLocal agrees

    (run_id,) = event_dispatch(event_id=event.pk)
    run_advance(run_id=run_id)
    assert StepRun.objects.get(run_id=run_id).inputs["message"] == expected

    (sms,) = workflow_dry_run(workflow=workflow, patient=patient).steps
    assert sms.inputs["message"] == expected

    previews = message_previews(
        trigger="appointment.booked", patient=patient, messages={"0": template}
    )
    assert previews["previews"]["0"]["text"] == expected
    example = message_previews(
        trigger="appointment.booked",
        patient=None,
        messages={"0": template},
        organization=organization,
    )
    assert "error" not in example["previews"]["0"]


# --- HTML templates (Parameter.kind == "html") ------------------------------------------------
# What a patient's data may hold, and what it must become: text, never markup, wherever the
# admin placed the variable (between tags or inside a quoted attribute).
HTML_ATTACKS = [
    ("<b>", "&lt;b&gt;"),
    ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
    ("</p><img src=x onerror=alert(1)>", "&lt;/p&gt;&lt;img src=x onerror=alert(1)&gt;"),
    ('" onmouseover="alert(1)', "&quot; onmouseover=&quot;alert(1)"),
    ("' onfocus='alert(1)", "&#x27; onfocus=&#x27;alert(1)"),
    ("&amp; &lt;b&gt; &#60;", "&amp;amp; &amp;lt;b&amp;gt; &amp;#60;"),
    ("<!-- -->", "&lt;!-- --&gt;"),
    ("{{customer.lastName}}", "{{customer.lastName}}"),  # data is never a template
    ("Zoë 👋", "Zoë 👋"),
]


@pytest.mark.parametrize(("value", "escaped"), HTML_ATTACKS)
def test_html_parameters_escape_every_value_and_keep_the_admins_markup(
    value: str, escaped: str
) -> None:
    data = {"customer": {"firstName": value}}
    template = '<p title="{{customer.firstName}}">Hi <b>{{customer.firstName}}</b></p>'
    assert parameter_render(template, data, kind="html") == (
        f'<p title="{escaped}">Hi <b>{escaped}</b></p>'
    )
    # the same template as text keeps the value as it is (an SMS shows it as written)
    assert parameter_render("{{customer.firstName}}", data) == value


def test_html_escapes_defaults_and_formatted_values_too() -> None:
    data = {"customer": {"firstName": "", "lastName": "<i>o'neil</i>"}, "order": {"total": "5"}}
    template = (
        '<p>{{customer.firstName | default:"<em>there</em>"}} {{customer.lastName | upper}}'
        ' {{order.total | money:"<$>"}}</p>'
    )
    assert parameter_render(template, data, kind="html") == (
        "<p>&lt;em&gt;there&lt;/em&gt; &lt;I&gt;O&#x27;NEIL&lt;/I&gt; &lt;$&gt;5.00</p>"
    )


def test_html_templates_fail_as_text_templates_do() -> None:
    with pytest.raises(TemplateError, match="never closed"):
        parameter_render("<p>{{customer.firstName</p>", DATA, kind="html")
    with pytest.raises(TemplateError, match="is not in this event's data"):
        parameter_render("<p>{{customer.nothing}}</p>", DATA, kind="html")
    with pytest.raises(TemplateError, match="not allowed"):
        parameter_render("<p>{% if x %}</p>", DATA, kind="html")
    # all or nothing: no half-escaped document
    with pytest.raises(TemplateError):
        parameter_render("<p>{{customer.firstName}} {{customer.nothing}}</p>", DATA, kind="html")


def test_html_without_variables_is_kept_exactly() -> None:
    markup = '<a href="https://clinic.example/?a=1&amp;b=2">Portal</a> &copy; <br/>'
    assert parameter_render(markup, DATA, kind="html") == markup


# --- Exact outcomes each piece of the language promises (written out, not read back) -------


@pytest.mark.parametrize(
    ("template", "data", "message"),
    [
        ("{{when | date}}", {"when": "soon"}, "“soon” is not a date"),
        ("{{when | date}}", {"when": 5}, "“5” is not a date"),
        ("{{total | money}}", {"total": "abc"}, "“abc” is not an amount of money"),
    ],
)
def test_a_value_a_filter_cannot_format_is_named_in_the_error(
    template: str, data: dict[str, Any], message: str
) -> None:
    with pytest.raises(TemplateError) as error:
        template_render(template, data)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("template", "variable"),
    [
        ("Hi {{customer.middleName}}", "customer.middleName"),
        ("Hi {{customer.lastName}}", "customer.lastName"),
        ("Hi {{customer.defaultAddress}}", "customer.defaultAddress"),
        ("Hi {{order.lineItems}}", "order.lineItems"),
    ],
)
def test_a_value_that_cannot_be_filled_in_names_its_variable(template: str, variable: str) -> None:
    with pytest.raises(TemplateError) as error:
        template_render(template, DATA)
    assert error.value.variable == variable


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ('{{customer.firstName | default:"there"}}', "Ann"),
        ('{{customer.firstName | default:"there" | upper}}', "ANN"),
        ("{{customer.acceptMarketing}}", "yes"),
        ("{{flag}}", "no"),
        ("{{flag | upper}}", "NO"),
    ],
)
def test_a_present_value_ignores_its_default_and_booleans_read_yes_or_no(
    template: str, expected: str
) -> None:
    assert template_render(template, {**DATA, "flag": False}) == expected


@pytest.mark.parametrize(
    "template",
    ["{{customer.firstName.0}}", "{{order.lineItems.2.name}}", "{{order.number.1}}"],
)
def test_a_path_past_the_end_of_a_list_or_into_text_leads_nowhere(template: str) -> None:
    with pytest.raises(TemplateError, match="is not in this event's data"):
        template_render(template, DATA)


def test_html_and_json_parameters_show_timestamps_on_the_recipients_clock() -> None:
    chicago = zoneinfo.ZoneInfo("America/Chicago")
    data = {"at": "2026-01-15T15:00:00+00:00", "name": "Zoë"}
    html = parameter_render('<b>{{at | date:"%H:%M"}}</b>', data, kind="html", tz=chicago)
    assert html == "<b>09:00</b>"
    as_json = parameter_render({"name": "{{name}}"}, data, kind="json", tz=chicago)
    assert as_json == '{"name": "Zoë"}'  # not escaped to \\u00eb


def test_a_json_template_reports_a_syntax_mistake_before_a_missing_value() -> None:
    with pytest.raises(TemplateError, match="tag"):
        json_template_render({"a": "{{customer.middleName}}", "b": "{% if x %}"}, DATA)


def test_invalid_json_is_named_without_a_doubled_is() -> None:
    with pytest.raises(TemplateError) as error:
        json_template_render("{not json", DATA)
    assert str(error.value).startswith("not valid JSON: ")


EXAMPLE = 'e.g. {{customer.firstName}} or {{customer.firstName | default:"there"}}'


@pytest.mark.parametrize(
    ("template", "message", "variable"),
    [
        (
            "Hi {{1x}}",
            "“{{1x}}” is not a variable; write a name such as {{customer.firstName}}",
            "1x",
        ),
        (
            "Hi {{name | shout}}",
            "unknown filter “shout” on name; use one of: default, upper, lower, date, money",
            "name",
        ),
        ("Hi {{name | default}}", 'default needs a value, e.g. name | default:"there"', "name"),
        (
            "{% if x %}Hi{% endif %}",
            "a template tag “{% … %}” is not allowed here: only variables in double braces are "
            f"filled in, {EXAMPLE}",
            "",
        ),
        (
            "{# note #}Hi",
            "a template comment “{# … #}” is not allowed here: only variables in double braces "
            f"are filled in, {EXAMPLE}",
            "",
        ),
        ("Hi {{name", "a “{{” is never closed with “}}”", ""),
    ],
)
def test_each_syntax_mistake_has_its_exact_message_and_variable(
    template: str, message: str, variable: str
) -> None:
    with pytest.raises(TemplateError) as error:
        template_render(template, {"name": "Ann"})
    assert (str(error.value), error.value.variable) == (message, variable)


def test_filters_apply_in_order_each_to_the_last_ones_text() -> None:
    assert template_render('{{order.createdAt | date:"%b %-d" | upper}}', DATA) == "NOV 26"
