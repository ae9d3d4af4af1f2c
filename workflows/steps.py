"""Step types: what each one needs (its parameter schema, the source of truth for the admin
and the builder), how it is validated at save time, and how condition and delay steps act
(a wait-for-reply's branches: workflows.replies; an A/B split's: workflows.splits).
Adapter steps are described by the adapter registry (workflows.adapters)."""

import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from workflows.adapters import REGISTRY, Parameter
from workflows.filters import FilterError, filter_matches, filter_validate
from workflows.rendering import MISSING, TemplateError, parameter_render, resolve_path
from workflows.replies import REPLY as REPLY_TYPE
from workflows.replies import ReplyConfigError, reply_parameters_validate
from workflows.splits import SPLIT as SPLIT_TYPE
from workflows.splits import split_parameters_validate
from workflows.variants import parameters_in

_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_HISTORY_PATH = re.compile(r"^history\.(\d+)\.result(?:\.[A-Za-z0-9_.]+)?$")
MAX_DELAY = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class StepType:
    name: str
    label: str
    description: str
    parameters: tuple[Parameter, ...]


CONDITION = StepType(
    "condition",
    "Condition",
    "Continue only when the data matches a query; otherwise end the run or jump ahead.",
    (
        Parameter(
            "query",
            "Continue only if",
            "The conditions the data must meet (stored as a MongoDB-style query).",
            example='{"subscription.status": "active"}',
        ),
        Parameter(
            "context",
            "Test",
            "What the conditions look at: the event's data (blank), or an earlier step's "
            "result (history.<step>.result), e.g. the answer a webhook returned.",
            required=False,
            example="",
        ),
        Parameter(
            "else",
            "If false",
            'End the run ("end"), or skip ahead to a later step (its number).',
            required=False,
            example="end",
        ),
    ),
)
DELAY_KIND = Parameter(
    "kind",
    "Wait",
    "What to wait for.",
    example="duration",
    choices=(
        ("duration", "For a length of time"),
        ("until_time", "Until a time of day (patient's time zone)"),
        ("until_field", "Until a date in the event data"),
    ),
)
DELAY = StepType(
    "delay",
    "Delay",
    "Wait before the next step: a duration, until a time of day in the patient's time zone, "
    "or until a date in the event data plus or minus an offset.",
    (
        DELAY_KIND,
        # Stored in seconds; the builder edits it in minutes, hours or days.
        Parameter("seconds", "Duration", "How long to wait.", required=False, example="259200"),
        Parameter(
            "time",
            "Time of day (HH:MM)",
            "For until_time, in the patient's time zone.",
            required=False,
            example="09:00",
        ),
        Parameter(
            "path",
            "Date field",
            "The date or time in the event's data to wait for, e.g. appointment.startsAt.",
            required=False,
            example="appointment.startsAt",
        ),
        Parameter(
            "offset_seconds",
            "Offset",
            "How long before or after that date (none: at that moment).",
            required=False,
            example="-86400",
        ),
    ),
)
REPLY = StepType(
    REPLY_TYPE,
    "Wait for reply",
    "Wait for the patient's reply to the text an earlier step sent, then branch on it: by "
    "keywords, a number or a pattern, with an “anything else” branch (optionally asking once "
    "more) and a “no reply” branch when the time is up.",
    (
        Parameter(
            "kind",
            "Wait up to",
            "When to stop waiting and take the “no reply” branch.",
            example="duration",
            choices=DELAY_KIND.choices,
        ),
        *DELAY.parameters[1:],
        Parameter(
            "branches",
            "Branches",
            "Each with a label, what it matches (keywords, a number from min to max, or a "
            'pattern) and where it goes ("next", "end" or a later step number); the first '
            "that matches wins.",
            example='[{"label": "Confirm", "match": "keywords", "keywords": ["c", "confirm"], '
            '"goto": "next"}]',
        ),
        Parameter(
            "otherwise",
            "Anything else",
            'Where any other reply goes, and "reask": a clarifying text sent once first.',
            required=False,
            example='{"goto": "end", "reask": "Sorry, please reply C or X."}',
        ),
        Parameter(
            "no_reply",
            "No reply",
            "Where the run goes when the time is up.",
            required=False,
            example='{"goto": "end"}',
        ),
    ),
)
SPLIT = StepType(
    SPLIT_TYPE,
    "A/B split",
    "Send each patient down one of 2 to 5 branches by percentage, at random but always the "
    "same branch for the same patient; the branch is recorded on the run as its variant.",
    (
        Parameter(
            "branches",
            "Branches",
            'Each with a label, a percent (together 100) and where it goes ("next", "end" or '
            "a later step number).",
            example='[{"label": "A", "percent": 50, "goto": "next"}, '
            '{"label": "B", "percent": 50, "goto": 4}]',
        ),
        Parameter(
            "seed",
            "Seed",
            "Patients are assigned by a hash of this text and their id: blank uses the "
            "workflow's own id. Change it to reshuffle everyone.",
            required=False,
            example="",
        ),
    ),
)
ADAPTER = StepType(
    "adapter", "Adapter action", "Act through an integration, e.g. Twilio → sendSMS.", ()
)
STEP_TYPES: dict[str, StepType] = {t.name: t for t in (CONDITION, DELAY, ADAPTER, REPLY, SPLIT)}


class StepConfigError(ValueError):
    """A step definition that cannot run; `field` names the parameter at fault."""

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.field = field


def _int(params: Mapping[str, Any], name: str) -> int:
    value = params.get(name)
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise StepConfigError(f"{name} must be a whole number of seconds", field=name) from None


def _offset(params: Mapping[str, Any]) -> int:
    return 0 if params.get("offset_seconds") in (None, "") else _int(params, "offset_seconds")


def _wait_validate(params: Mapping[str, Any]) -> None:
    """A delay's length, or a wait-for-reply's timeout (the same fields)."""
    delay_kind = params.get("kind")
    if delay_kind == "duration":
        if params.get("seconds") in (None, ""):
            raise StepConfigError("enter how long to wait, e.g. 3 days", field="seconds")
        seconds = _int(params, "seconds")
        if not 0 < seconds <= MAX_DELAY.total_seconds():
            raise StepConfigError("a delay lasts from 1 second to 366 days", field="seconds")
    elif delay_kind == "until_time":
        if not _HHMM.match(str(params.get("time", ""))):
            raise StepConfigError("time must be HH:MM, e.g. 09:00", field="time")
    elif delay_kind == "until_field":
        if not str(params.get("path", "")).strip():
            raise StepConfigError("name the date field to wait for", field="path")
        if abs(_offset(params)) > MAX_DELAY.total_seconds():
            raise StepConfigError("the offset is at most 366 days", field="offset_seconds")
    else:
        *first, last = (value for value, _ in DELAY_KIND.choices)
        raise StepConfigError(f"wait must be {', '.join(first)} or {last}", field="kind")


def step_validate(step: Mapping[str, Any], *, number: int, total: int) -> None:
    """Raise StepConfigError unless the step (1-based `number` of `total`) can run."""
    params = step.get("parameters") or {}
    kind = step.get("type")
    if kind == CONDITION.name:
        try:
            filter_validate(params.get("query"))
        except FilterError as exc:
            raise StepConfigError(f"query: {exc}", field="query") from exc
        context = params.get("context") or ""
        if context:
            match = _HISTORY_PATH.match(context)
            if not match or not 1 <= int(match[1]) < number:
                raise StepConfigError(
                    f"context must be blank or history.<n>.result with n an earlier step "
                    f"(1 to {number - 1})",
                    field="context",
                )
        target = params.get("else", "end") or "end"
        if target != "end":
            try:
                goto = int(target)
            except (TypeError, ValueError):
                raise StepConfigError(
                    '"if false" must be "end" or a step number', field="else"
                ) from None
            if not number < goto <= total:
                raise StepConfigError(
                    f"“if false” can only go forward: a step number from {number + 1} to {total}",
                    field="else",
                )
    elif kind == DELAY.name:
        _wait_validate(params)
    elif kind == REPLY.name:
        _wait_validate(params)
        try:
            reply_parameters_validate(params, number=number, total=total)
        except ReplyConfigError as exc:
            raise StepConfigError(str(exc), field=exc.field) from exc
    elif kind == SPLIT.name:
        try:
            split_parameters_validate(params, number=number, total=total)
        except ReplyConfigError as exc:
            raise StepConfigError(str(exc), field=exc.field) from exc
    elif kind == ADAPTER.name:
        adapter = REGISTRY.get(step.get("adapter", ""))
        if adapter is None:
            raise StepConfigError("choose an adapter", field="adapter")
        function = adapter.functions.get(step.get("function", ""))
        if function is None:
            raise StepConfigError(
                f"{adapter.label} has no function {step.get('function')!r}", field="function"
            )
        for parameter in function.parameters:
            if parameter.required and not str(params.get(parameter.name, "")).strip():
                raise StepConfigError(f"{parameter.label} is required", field=parameter.name)
    else:
        raise StepConfigError(f"unknown step type {kind!r}", field="type")


def adapter_inputs_render(
    step: Mapping[str, Any],
    data: Mapping[str, Any],
    *,
    into: dict[str, str],
    tz: zoneinfo.ZoneInfo,
    language: str = "",
) -> None:
    """Render an adapter step's parameters against `data` into `into`, each as its parameter's
    kind says (text, or JSON rendered value by value), with dates and times in `tz`, the
    recipient's zone (`patients.zones.patient_zone`), and the texts of its variant in
    `language` where it has one (`workflows.variants.step_language` chooses it). Raise
    StepConfigError naming the first that cannot be filled in; the ones before it are left in
    `into` (a dry run shows them)."""
    adapter = REGISTRY.get(str(step.get("adapter") or ""))
    function = adapter.functions.get(str(step.get("function") or "")) if adapter else None
    parameters = parameters_in(step.get("parameters") or {}, language, function=function)
    for name, template in parameters.items():
        parameter = function.parameter(name) if function else None
        try:
            into[name] = parameter_render(
                template, data, kind=parameter.kind if parameter else "text", tz=tz
            )
        except TemplateError as exc:
            raise StepConfigError(f"could not fill in {name}: {exc}", field=name) from exc


@dataclass(frozen=True, slots=True)
class ConditionResult:
    matched: bool
    goto_index: int | None  # 0-based index of the next step; None = end the run


def condition_evaluate(params: Mapping[str, Any], data: Mapping[str, Any]) -> ConditionResult:
    """Evaluate a condition step; raise StepConfigError if its context is unusable."""
    subject: Any = data
    context = params.get("context") or ""
    if context:
        subject = resolve_path(data, context)
        if not isinstance(subject, Mapping):
            raise StepConfigError(f"{context} is not an object this condition can test")
    try:
        matched = filter_matches(params.get("query") or {}, subject)
    except FilterError as exc:
        raise StepConfigError(str(exc)) from exc
    target = params.get("else", "end") or "end"
    return ConditionResult(matched, None if target == "end" else int(target) - 1)


def _parse_moment(value: Any, tz: zoneinfo.ZoneInfo) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            moment = datetime.combine(date.fromisoformat(value), time(0, 0))
        except ValueError:
            return None
    return moment if moment.tzinfo else moment.replace(tzinfo=tz)


def delay_until(
    params: Mapping[str, Any],
    *,
    data: Mapping[str, Any],
    started_at: datetime,
    tz: zoneinfo.ZoneInfo,
) -> datetime:
    """When a delay step that started at `started_at` is over (an aware datetime)."""
    kind = params.get("kind")
    if kind == "duration":
        return started_at + timedelta(seconds=_int(params, "seconds"))
    if kind == "until_time":
        hour, minute = (int(part) for part in str(params["time"]).split(":"))
        local = started_at.astimezone(tz)
        candidate = datetime.combine(local.date(), time(hour, minute), tzinfo=tz)
        if candidate <= local:
            candidate = datetime.combine(
                local.date() + timedelta(days=1), time(hour, minute), tzinfo=tz
            )
        return candidate
    if kind == "until_field":
        path = str(params.get("path", ""))
        value = resolve_path(data, path)
        moment = _parse_moment(value, tz) if value is not MISSING else None
        if moment is None:
            raise StepConfigError(f"{path} is not a date in this event's data", field="path")
        return moment + timedelta(seconds=_offset(params))
    raise StepConfigError(f"unknown delay kind {kind!r}", field="kind")
