"""What careflow takes from a person or a system before it stores or walks it: text that
PostgreSQL can hold and a phone can show, and JSON of bounded depth and size.

PostgreSQL refuses a NUL in text and in jsonb, and a lone UTF-16 surrogate cannot be encoded
to UTF-8 at all: either, reaching an INSERT, was a 500 (or, in a worker, a run left running).
Other control characters are stored but invisible, and texted to patients as they are. Deep
JSON makes Python's parser and every recursive walk over it raise RecursionError. So these
are refused where the input arrives, with a message that says what and where.
"""

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput

# JSON a person or a clinic's system writes here is a filter (20 levels at most, see
# workflows.filters), a webhook body or an event's data: none needs more than this.
MAX_JSON_DEPTH = 32
# Values (objects, lists, strings, numbers…) in one document: a long $in list or a large
# order fits many times over; an attempt to make every walk over it slow does not.
MAX_JSON_VALUES = 20_000

# C0 controls but tab, line feed and carriage return; DEL; C1 controls; lone surrogates.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_BREAKS = re.compile("[\t\n\r]")


class JSONInputError(ValueError):
    """JSON that careflow will not read or store; the message says why, for the person."""


def control_character_problem(text: str, *, multiline: bool = True, where: str = "") -> str:
    """Why `text` cannot be stored or sent as it is, or "": a control character (tab and line
    breaks only where `multiline`). Phrased to follow a subject: "The message contains…"."""
    found = _CONTROL.search(text) or (None if multiline else _LINE_BREAKS.search(text))
    if found is None:
        return ""
    place = f"in “{where}” " if where else ""
    return (
        f"contains an invisible control character (U+{ord(found.group()):04X}) {place}at "
        f"position {found.start() + 1}; remove it (paste the text as plain text)"
    )


def json_problem(
    value: Any, *, max_depth: int = MAX_JSON_DEPTH, max_values: int = MAX_JSON_VALUES
) -> str:
    """Why a decoded JSON document cannot be taken, or "": objects or lists nested more than
    `max_depth` levels below the outermost value, more than `max_values` values, or a control
    character in a key or string (named by its dotted path). Phrased to follow a subject.
    Walked with a stack, not recursion, so any depth is safe."""
    pending: list[tuple[Any, str, int]] = [(value, "", 0)]
    count = 0
    while pending:
        item, where, depth = pending.pop()
        count += 1
        if count > max_values:
            return f"has more than {max_values:,} values; make it smaller"
        if isinstance(item, str):
            problem = control_character_problem(item, where=where)
            if problem:
                return problem
        elif isinstance(item, (Mapping, list)):
            if depth > max_depth:
                return f"is nested more than {max_depth} levels deep; simplify it"
            if isinstance(item, Mapping):
                for key, child in item.items():
                    path = f"{where}.{key}" if where else str(key)
                    problem = control_character_problem(str(key), where=f"{path} (a key)")
                    if problem:
                        return problem
                    pending.append((child, path, depth + 1))
            else:
                for index, child in enumerate(item):
                    pending.append((child, f"{where}.{index}" if where else str(index), depth + 1))
    return ""


def json_float_finite(text: str) -> float:
    """`parse_float` for json.loads: jsonb has no Infinity, so a number too large for a
    float (1e999) is refused here rather than failing at the INSERT."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def json_constant_refuse(name: str) -> Any:
    """`parse_constant` for json.loads: NaN and Infinity are Python's extensions, not JSON."""
    raise ValueError(f"{name} is not a number JSON allows")


def json_parse(
    text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, max_values: int = MAX_JSON_VALUES
) -> Any:
    """`json.loads`, but every way it can fail is a JSONInputError saying why (syntax,
    nesting too deep for the parser itself, size, control characters)."""
    try:
        document = json.loads(
            text, parse_float=json_float_finite, parse_constant=json_constant_refuse
        )
    except RecursionError:
        raise JSONInputError(f"is nested more than {max_depth} levels deep; simplify it") from None
    except json.JSONDecodeError as exc:
        raise JSONInputError(
            f"is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise JSONInputError(f"is not valid JSON: {exc}") from None
    problem = json_problem(document, max_depth=max_depth, max_values=max_values)
    if problem:
        raise JSONInputError(problem)
    return document


def _validate(value: Any, *, multiline: bool) -> None:
    if isinstance(value, str):
        problem = control_character_problem(value, multiline=multiline)
        if problem:
            raise ValidationError(
                "This %(problem)s.", code="control_character", params={"problem": problem}
            )


def validate_storable_text(value: Any) -> None:
    """Form validator for text that may span lines (a textarea)."""
    _validate(value, multiline=True)


def validate_storable_line(value: Any) -> None:
    """Form validator for one line of text (an input): no tab or line break either."""
    _validate(value, multiline=False)


class StorableJSONField(forms.JSONField):
    """forms.JSONField that answers a validation error, never a 500, for JSON too deep for
    the parser and for what jsonb cannot store."""

    def _problem(self, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            return ""
        try:
            json_parse(value)  # before Django's parse, which raises RecursionError
        except JSONInputError as exc:
            return str(exc)
        return ""

    def to_python(self, value: Any) -> Any:
        problem = "" if self.disabled else self._problem(value)
        if problem:
            raise ValidationError("This %(problem)s.", code="invalid", params={"problem": problem})
        return super().to_python(value)

    def bound_data(self, data: Any, initial: Any) -> Any:
        if not self.disabled and self._problem(data):
            return InvalidJSONInput(data)  # shown again as typed, beside its error
        return super().bound_data(data, initial)


def json_textarea(*, rows: int, css_class: str) -> forms.Textarea:
    """The box a JSON document is typed or pasted into by hand in an admin form (a workflow's
    definition, a segment's filter): wide, and not spell-checked."""
    return forms.Textarea(
        attrs={"rows": rows, "class": f"vLargeTextField {css_class}", "spellcheck": "false"}
    )
