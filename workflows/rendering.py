"""Message templates: `{{customer.firstName | default:"there"}}`.

A deliberately tiny language, not a general template engine: a dotted path into the event
data (array indexes allowed), then optional filters. Nothing else is evaluated, so an admin's
template can read payload data and nothing more: no attribute access, no calls, no code.
Rendering is all-or-nothing: any problem raises, and a half-rendered message never exists.
"""

import html
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from patients.inputs import JSONInputError, json_parse

_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|\d+))*\Z")
_FILTER = re.compile(
    r"""\s*(?P<name>[a-z_]+)\s*(?::\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'))?\s*\Z"""
)


class TemplateError(ValueError):
    """A template that cannot be rendered; the message is meant for a clinic admin."""

    def __init__(self, message: str, *, variable: str = "") -> None:
        super().__init__(message)
        self.variable = variable


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    argument: str | None


@dataclass(frozen=True, slots=True)
class Variable:
    path: str
    filters: tuple[Filter, ...]

    @property
    def default(self) -> str | None:
        for f in self.filters:
            if f.name == "default":
                return f.argument or ""
        return None


def _format_date(value: Any, argument: str | None, tz: tzinfo | None = None) -> str:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise TemplateError(f"“{value}” is not a date") from None
    if not isinstance(value, date):
        raise TemplateError(f"“{value}” is not a date")
    # An instant (a timestamp with an offset, as every payload time has) is shown as the
    # recipient's clock reads it: an appointment at 15:00Z is "9:00 AM" in Chicago in winter,
    # "10:00 AM" in summer. A date, or a time without an offset, is a calendar or wall-clock
    # value already and is shown as given: converting it would move a birthday by a day.
    if isinstance(value, datetime) and value.tzinfo is not None and tz is not None:
        value = value.astimezone(tz)
    return value.strftime(argument or "%b %-d, %Y")


def _format_money(value: Any, argument: str | None, tz: tzinfo | None = None) -> str:
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise TemplateError(f"“{value}” is not an amount of money") from None
    return f"{argument if argument is not None else '$'}{amount:,.2f}"


# Each formatter gets the value, the filter's argument and the recipient's time zone.
FORMATTERS: dict[str, Callable[[Any, str | None, tzinfo | None], str]] = {
    "upper": lambda value, _, __: _text(value).upper(),
    "lower": lambda value, _, __: _text(value).lower(),
    "date": _format_date,
    "money": _format_money,
}
FILTER_NAMES = ("default", *FORMATTERS)


def _parse_tag(source: str) -> Variable:
    path, *filter_sources = source.split("|")
    path = path.strip()
    if not _PATH.match(path):
        raise TemplateError(
            f"“{{{{{source.strip()}}}}}” is not a variable; write a name such as "
            "{{customer.firstName}}",
            variable=path,
        )
    filters = []
    for filter_source in filter_sources:
        match = _FILTER.match(filter_source)
        if not match or match["name"] not in FILTER_NAMES:
            raise TemplateError(
                f"unknown filter “{filter_source.strip()}” on {path}; "
                f"use one of: {', '.join(FILTER_NAMES)}",
                variable=path,
            )
        argument = match["dq"] if match["dq"] is not None else match["sq"]
        if match["name"] == "default" and argument is None:
            raise TemplateError(
                f'default needs a value, e.g. {path} | default:"there"', variable=path
            )
        filters.append(Filter(match["name"], argument))
    return Variable(path, tuple(filters))


# Tags and comments of the template languages admins may know (Django, Jinja, Liquid): this
# language has neither, so they would be texted to patients exactly as written.
_FOREIGN_SYNTAX = re.compile(r"\{[%#]")


def template_variables(template: str) -> list[Variable]:
    """The variables a template uses, raising TemplateError on a syntax mistake."""
    foreign = _FOREIGN_SYNTAX.search(template)
    if foreign:
        kind = "tag “{% … %}”" if foreign.group() == "{%" else "comment “{# … #}”"
        raise TemplateError(
            f"a template {kind} is not allowed here: only variables in double braces are "
            'filled in, e.g. {{customer.firstName}} or {{customer.firstName | default:"there"}}'
        )
    unclosed = template.count("{{") - len(_TAG.findall(template))
    if unclosed > 0:
        raise TemplateError("a “{{” is never closed with “}}”")
    return [_parse_tag(m.group(1)) for m in _TAG.finditer(template)]


MISSING = object()


def resolve_path(data: Any, path: str) -> Any:
    """Follow a dotted path through dicts and lists; `MISSING` where it leads nowhere."""
    value = data
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part, MISSING)
        elif isinstance(value, list) and part.isdigit():
            index = int(part)
            value = value[index] if index < len(value) else MISSING
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _render_variable(variable: Variable, data: Mapping[str, Any], tz: tzinfo | None) -> str:
    value = resolve_path(data, variable.path)
    if value is MISSING or value is None or value == "":
        if variable.default is not None:
            return variable.default
        what = "is not in this event's data" if value is MISSING else "is empty"
        raise TemplateError(
            f'{variable.path} {what}; add a fallback, e.g. {{{{{variable.path} | default:"…"}}}}',
            variable=variable.path,
        )
    if isinstance(value, (dict, list)):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise TemplateError(
            f"{variable.path} is {kind}, not text; pick one of its fields", variable=variable.path
        )
    text: str | None = None
    for f in variable.filters:
        if f.name != "default":
            text = FORMATTERS[f.name](value if text is None else text, f.argument, tz)
    return _text(value) if text is None else text


def template_render(template: str, data: Mapping[str, Any], *, tz: tzinfo | None = None) -> str:
    """Render all of `template` against `data`, or raise TemplateError naming the problem.
    `tz`: the recipient's time zone, which the date filter shows timestamps in (None: as
    given, e.g. UTC; only for text no patient reads)."""
    template_variables(template)  # syntax errors first, for the whole template
    return _TAG.sub(lambda m: _render_variable(_parse_tag(m.group(1)), data, tz), template)


def html_template_render(
    template: str, data: Mapping[str, Any], *, tz: tzinfo | None = None
) -> str:
    """Render an HTML template (Parameter.kind == "html"): as `template_render`, but every
    value filled in, a default's text included, is HTML-escaped (quotes too, as a value may
    stand in an attribute), so a patient named `<b>` reads "&lt;b&gt;" and no value can add
    markup or leave its attribute. The markup written around the variables is the admin's
    and is kept. Escaping does not vet URLs: `href="{{…}}"` may still receive a
    "javascript:" link, so links come from the admin, not from the data."""
    template_variables(template)
    return _TAG.sub(
        lambda m: html.escape(_render_variable(_parse_tag(m.group(1)), data, tz), quote=True),
        template,
    )


# --- JSON templates (Parameter.kind == "json") ------------------------------------------------
# Rendering the JSON text as one template would let a value end its string and add fields of
# its own (a first name of `", "admin": true, "x": "`). So the text is parsed first and only
# its string values are templates; the rendered document is serialised again by json.dumps.


def json_template_load(template: Any) -> dict[str, Any]:
    """A JSON template as a document: a JSON object (its text, or already decoded), or
    TemplateError saying why it is not one."""
    if isinstance(template, Mapping):
        return dict(template)
    try:
        # Bounded in depth and size: deep JSON makes the parser raise RecursionError.
        document = json_parse(str(template))
    except JSONInputError as exc:
        raise TemplateError(str(exc).removeprefix("is ")) from None
    if not isinstance(document, dict):
        kind = (
            "a list"
            if isinstance(document, list)
            else "a string"
            if isinstance(document, str)
            else "a single value"
        )
        raise TemplateError(f"must be a JSON object, {{…}}, not {kind}")
    return document


def json_template_map(document: Any, render: Callable[[str], Any]) -> Any:
    """`document` with every string value replaced by `render(value)`, at any depth. Keys,
    numbers, booleans and null are kept as they are."""
    if isinstance(document, str):
        return render(document)
    if isinstance(document, Mapping):
        return {key: json_template_map(value, render) for key, value in document.items()}
    if isinstance(document, list):
        return [json_template_map(value, render) for value in document]
    return document


def json_template_render(
    template: Any, data: Mapping[str, Any], *, tz: tzinfo | None = None
) -> dict[str, Any]:
    """Render a JSON template against `data`: each string value as a template, all or nothing."""
    document = json_template_load(template)
    json_template_map(document, template_variables)  # syntax errors first, in any value
    rendered: dict[str, Any] = json_template_map(
        document, lambda text: template_render(text, data, tz=tz)
    )
    return rendered


def parameter_render(
    template: Any, data: Mapping[str, Any], *, kind: str = "text", tz: tzinfo | None = None
) -> str:
    """One adapter parameter rendered as its kind says (see workflows.adapters.Parameter):
    a JSON parameter becomes the JSON text of the rendered document, an HTML one has its
    values escaped."""
    if kind == "json":
        return json.dumps(json_template_render(template, data, tz=tz), ensure_ascii=False)
    if kind == "html":
        return html_template_render(str(template), data, tz=tz)
    return template_render(str(template), data, tz=tz)
