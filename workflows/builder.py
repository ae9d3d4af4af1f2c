"""The visual workflow builder's server side, used by the builder endpoints of WorkflowAdmin.

The builder page edits one JSON document, the *definition*: `{"trigger", "filter", "steps",
"enrollment"}` (enrollment: `{"rule", "days", "exclusive"}`, the workflow's enrollment rule).
What each step type and adapter function needs comes from Python (workflows.steps, the
adapter registry, the event catalogue) through `builder_schema`; the JS only renders and
edits it. Everything the page posts is parsed here and validated by
`workflows.validation.workflow_validate`, the one validation there is.
"""

import json
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from django.db import transaction
from django.urls import reverse

from patients.inputs import JSONInputError, json_parse, json_problem
from patients.languages import LANGUAGES
from patients.models import ConsentRecord, Organization, Patient
from patients.zones import patient_zone
from workflows.adapters import REGISTRY, Adapter, Function
from workflows.catalogue import EVENT_TYPES, EventType, schema_example, schema_paths
from workflows.custom_events import EventTypes, event_types
from workflows.diagram import step_title, steps_tree
from workflows.dry_run import dry_run_payload
from workflows.enrollment import DAYS_MAX, DAYS_MIN, enrollment_problems
from workflows.models import Step, Workflow
from workflows.rendering import TemplateError, template_render
from workflows.replies import NO_REPLY, OTHERWISE, REPLY, SPLIT
from workflows.steps import STEP_TYPES
from workflows.validation import (
    ApprovedSenders,
    ClinicSenders,
    ValidationReport,
    goal_validate,
    workflow_validate,
)
from workflows.variants import VARIANTS


def _timeout_widgets(step_type: str) -> dict[str, dict[str, Any]]:
    """A delay's length and a wait-for-reply's timeout are the same fields, edited alike:
    seconds as a number and a unit (minutes, hours, days), shown by the kind chosen."""
    return {
        f"{step_type}.seconds": {"widget": "duration", "showWhen": {"kind": "duration"}},
        f"{step_type}.time": {"widget": "time", "showWhen": {"kind": "until_time"}},
        f"{step_type}.path": {"widget": "date-field", "showWhen": {"kind": "until_field"}},
        f"{step_type}.offset_seconds": {
            "widget": "duration",
            "signed": True,
            "showWhen": {"kind": "until_field"},
        },
    }


# How the builder shows a step type's parameter, by "<step type>.<name>". The parameters
# themselves (names, labels, help, required, choices) come from workflows.steps and the
# adapter registry; anything not listed here is a one-line text field (a code box for a JSON
# parameter, a text box for a multi-line one, a list for one with choices). An adapter
# function's previewed parameter and its sender take the widgets of `_function_widgets`.
WIDGETS: dict[str, dict[str, Any]] = {
    # The point-and-click query builder, with the JSON as its advanced view.
    "condition.query": {"widget": "query"},
    "condition.context": {"widget": "context"},
    "condition.else": {"widget": "step-target"},
    **_timeout_widgets("delay"),
    **_timeout_widgets(REPLY),
    # A wait's branches, "anything else" and "no reply": edited as forms, stored as JSON
    # (the parameters' own help describes the JSON).
    "reply.branches": {
        "widget": "reply-branches",
        "help": "Checked in order: the reply takes the first branch it matches. STOP, HELP "
        "and the other keywords keep their meaning and are never an answer.",
    },
    "reply.otherwise": {"widget": "reply-otherwise", "help": "A reply no branch matches."},
    "reply.no_reply": {"widget": "reply-no-reply", "help": "No reply by the time set above."},
    # An A/B split's branches: label, percent and target, edited as forms, stored as JSON.
    "split.branches": {
        "widget": "split-branches",
        "help": "2 to 5 branches whose percents add up to 100. Each patient always takes the "
        "same branch; the run records it as its variant.",
    },
}
# The wait-for-reply parameters that are JSON (a list of branches, two objects), whichever
# way they are posted: as the builder's JSON text, or as the values themselves.
REPLY_STRUCTURES = ("branches", OTHERWISE, NO_REPLY)
# The same for the other branching step: a split's branches are JSON too.
STRUCTURES = {REPLY: REPLY_STRUCTURES, SPLIT: ("branches",)}


def _function_widgets(function: Function) -> dict[str, dict[str, Any]]:
    """The widgets of an adapter function's own parameters: its previewed text (previewed as
    its channel's messages are), and its sender (one of the clinic's approved, or a
    {{variable}})."""
    widgets: dict[str, dict[str, Any]] = {}
    if function.preview_parameter:
        widgets[function.preview_parameter] = {"widget": "textarea", "preview": function.channel}
    if function.sender_parameter:
        noun = function.sender_noun
        widgets[function.sender_parameter] = {
            "widget": "sender",
            # The list's words: the function names its senders (numbers, addresses, …).
            "senders": {"choose": noun.choose, "none": noun.none, "unlisted": noun.unlisted},
        }
    return widgets


# The visual query builder's operators for each type of field, in menu order: (key, label).
# builder.js turns each key into the query language of workflows.filters and reads it back:
# "is" is an implicit $eq, "contains" a case-insensitive $regex of the escaped text, "is
# empty" {"$in": [null, ""]} (missing, null or blank). Anything else stays JSON.
_EMPTY = [("empty", "is empty"), ("notEmpty", "is not empty")]
_ORDERED = [
    ("eq", "= equals"),
    ("ne", "≠ does not equal"),
    ("lt", "< less than"),
    ("lte", "≤ at most"),
    ("gt", "> more than"),
    ("gte", "≥ at least"),
]
_TEXT = [
    ("eq", "is"),
    ("ne", "is not"),
    ("in", "is one of"),
    ("nin", "is none of"),
    ("contains", "contains"),
    ("notContains", "does not contain"),
    ("startsWith", "starts with"),
    ("regex", "matches the pattern"),
]
QUERY_OPERATORS: dict[str, list[tuple[str, str]]] = {
    "string": [*_TEXT, *_EMPTY],
    "number": [*_ORDERED, ("in", "is one of"), ("nin", "is none of"), *_EMPTY],
    "date": [
        ("eq", "is"),
        ("ne", "is not"),
        ("lt", "is before"),
        ("lte", "is on or before"),
        ("gt", "is after"),
        ("gte", "is on or after"),
        *_EMPTY,
    ],
    "datetime": [
        ("lt", "is before"),
        ("lte", "is at or before"),
        ("gt", "is after"),
        ("gte", "is at or after"),
        *_EMPTY,
    ],
    "boolean": [("true", "is true"), ("false", "is false"), *_EMPTY],
    # A path the data reference does not describe (a webhook's free-form data, an earlier
    # step's result): its values are typed as written.
    "any": [*_TEXT[:4], *_ORDERED[2:], *_TEXT[4:7], *_EMPTY],
}

# The JSON of one step as the builder holds it.
STEP_KEYS = ("id", "type", "adapter", "function", "parameters", "purpose", "urgent")


class DefinitionError(ValueError):
    """A definition that is not even the right shape (e.g. not JSON): nothing to validate."""


def _parameter(
    parameter: Any, key: str, *, templated: bool, widget: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    # A JSON parameter (a webhook body) is a multi-line document: a code box with room.
    by_kind: dict[str, Any] = {"widget": "text"}
    if parameter.kind == "json":
        by_kind = {"widget": "json", "rows": 8}
    elif parameter.multiline:
        by_kind = {"widget": "textarea", "rows": 6}
    if parameter.choices:
        by_kind = {"widget": "select", "choices": [list(choice) for choice in parameter.choices]}
    return {
        "name": parameter.name,
        "label": parameter.label,
        "help": parameter.help,
        "required": parameter.required,
        "example": parameter.example,
        "templated": templated,
        # A step may have this one per language (workflows.variants).
        "translatable": parameter.translatable,
        **by_kind,
        **(widget if widget is not None else WIDGETS.get(key, {})),
    }


def _consent_help(function: Function) -> str:
    """The help of a messaging step's "Consent needed": consent is kept by channel."""
    channel = CHANNEL_NAMES.get(function.channel, function.channel)
    return f"Which {channel + ' ' if channel else ''}consent the recipient must have given."


# How a channel is named in a sentence ("Which SMS consent …"); others as they are spelled.
CHANNEL_NAMES = {"sms": "SMS"}


def query_fields(event_type: str | EventType) -> list[dict[str, Any]]:
    """What a filter or condition on this trigger can test, for the visual query builder:
    every scalar of its payload with its type, grouped by the object it belongs to.

    An array is tested through its own path, as the query language matches a condition on
    any element: `order.lineItems.name` is "any line item's name", `changedFields` "any
    changed field" (a list field)."""
    fields: list[dict[str, Any]] = []
    for path, node in schema_paths(event_type):
        if node.type in ("object", "array"):
            continue  # their scalars are listed; a free-form object's keys are typed by hand
        parts = path.split(".")
        description = node.description
        if "0" in parts:
            array = ".".join(parts[: parts.index("0")])
            description = f"{description.rstrip('.')} (any of {array})."
        logical = [part for part in parts if part != "0"]
        fields.append(
            {
                "path": ".".join(logical),
                "type": node.type,
                "description": description,
                "group": ".".join(logical[:-1]) or logical[0],
                "list": parts[-1] == "0",
                "example": node.example,
            }
        )
    return fields


def _query_schema(events: EventTypes) -> dict[str, Any]:
    """The query builder's operators, and each trigger's fields; triggers that share a
    payload (every order.* event) share one list, which keeps the page small."""
    field_sets: list[list[dict[str, Any]]] = []
    by_json: dict[str, int] = {}
    field_set_of: dict[str, int] = {}
    for event in events.listed:
        fields = query_fields(event)
        key = json.dumps(fields, sort_keys=True, default=str)
        field_set_of[event.name] = by_json.setdefault(key, len(field_sets))
        if by_json[key] == len(field_sets):
            field_sets.append(fields)
    return {
        "operators": {kind: [list(op) for op in ops] for kind, ops in QUERY_OPERATORS.items()},
        "fieldSets": field_sets,
        "fieldSetOf": field_set_of,
    }


def builder_schema(*, organization_id: int | None = None) -> dict[str, Any]:
    """What the builder can build: triggers by category (with the custom event types of
    the clinic `organization_id`, if given), step types, adapters and their functions with
    parameter schemas, consent purposes, and what queries can test."""
    events = event_types(organization_id=organization_id)
    categories: dict[str, list[dict[str, str]]] = {}
    for event in events.listed:
        categories.setdefault(event.category, []).append(
            {"name": event.name, "description": event.description}
        )
    # The data reference of the same clinic: its custom types' variables come from there.
    clinic = f"&organization={organization_id}" if organization_id is not None else ""
    reference = reverse("careflow-reference-event", args=["__trigger__"])
    return {
        "query": _query_schema(events),
        "triggers": [{"category": name, "events": events} for name, events in categories.items()],
        "stepTypes": [
            {
                "name": step_type.name,
                "label": step_type.label,
                "description": step_type.description,
                "parameters": [
                    _parameter(p, f"{step_type.name}.{p.name}", templated=False)
                    for p in step_type.parameters
                ],
            }
            for step_type in STEP_TYPES.values()
        ],
        "adapters": [
            {
                "name": adapter.name,
                "label": adapter.label,
                "functions": [
                    {
                        "name": function.name,
                        "label": function.label,
                        # Whether the step's consent purpose and urgency mean anything.
                        "sendOptions": function.messages_patient,
                        "consentHelp": _consent_help(function),
                        # The engine renders every adapter parameter as a template.
                        "parameters": [
                            _parameter(
                                p,
                                f"{adapter.name}.{function.name}.{p.name}",
                                templated=True,
                                widget=_function_widgets(function).get(p.name, {}),
                            )
                            for p in function.parameters
                        ],
                    }
                    for function in adapter.functions.values()
                ],
            }
            for adapter in REGISTRY.values()
        ],
        "purposes": [[value, label] for value, label in ConsentRecord.Purpose.choices],
        # The languages a message variant may be written in (patients.languages).
        "languages": [list(language) for language in LANGUAGES],
        # The model's choices, the one list of rules there is.
        "enrollment": {
            "rules": [[value, label] for value, label in Workflow.Enrollment.choices],
            "period": Workflow.Enrollment.PERIOD.value,
            "daysMin": DAYS_MIN,
            "daysMax": DAYS_MAX,
        },
        "referenceUrl": f"{reference}?format=json{clinic}",
        "referencePage": f"{reference}?{clinic[1:]}" if clinic else reference,
    }


# --- the definition: from the database to the page and back ---------------------------------


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if value not in (None, {}, "") else ""


def definition_initial(workflow: Workflow | None) -> dict[str, Any]:
    """The definition of a saved workflow (or a new one) as the builder edits it: queries and
    the filter as the JSON text the admin sees and types."""
    if workflow is None or workflow.pk is None:
        return {
            "trigger": "",
            "filter": "",
            "steps": [],
            "enrollment": ENROLLMENT_DEFAULT,
            **goal_initial(None),
        }
    steps = []
    for step in workflow.steps.all():
        parameters = dict(step.parameters or {})
        if step.type == Step.Type.CONDITION and "query" in parameters:
            parameters["query"] = _json_text(parameters["query"])
        steps.append(
            {
                "id": step.pk,
                "type": step.type,
                "adapter": step.adapter if step.type == Step.Type.ADAPTER else "",
                "function": step.function if step.type == Step.Type.ADAPTER else "",
                "parameters": {
                    k: _json_text(v) if isinstance(v, (dict, list)) else str(v)
                    for k, v in parameters.items()
                },
                "purpose": step.purpose,
                "urgent": step.urgent,
            }
        )
    return {
        "trigger": workflow.trigger,
        "filter": json.dumps(workflow.filter, indent=2, ensure_ascii=False)
        if workflow.filter
        else "",
        "steps": steps,
        **goal_initial(workflow),
        "enrollment": {
            "rule": workflow.enrollment,
            "days": workflow.enrollment_days,
            "exclusive": workflow.enrollment_exclusive,
        },
    }


# A definition that does not mention enrollment (older pages, recipes): every time.
ENROLLMENT_DEFAULT: dict[str, Any] = {
    "rule": Workflow.Enrollment.EVERY.value,
    "days": None,
    "exclusive": False,
}


@dataclass(frozen=True)
class EnrollmentSettings:
    """The workflow's enrollment rule as the builder posts it (`Workflow.enrollment*`)."""

    rule: str = Workflow.Enrollment.EVERY.value
    days: int | None = None
    exclusive: bool = False

    @classmethod
    def of(cls, workflow: Workflow) -> "EnrollmentSettings":
        return cls(workflow.enrollment, workflow.enrollment_days, workflow.enrollment_exclusive)

    def apply(self, workflow: Workflow) -> None:
        workflow.enrollment = self.rule
        workflow.enrollment_days = self.days
        workflow.enrollment_exclusive = self.exclusive


def _parse_enrollment(raw: Any, problems: ValidationReport) -> EnrollmentSettings:
    if raw is None:
        raw = ENROLLMENT_DEFAULT
    if not isinstance(raw, Mapping):
        problems.enrollment.append("the enrollment settings must be an object")
        return EnrollmentSettings()
    rule = str(raw.get("rule") or Workflow.Enrollment.EVERY)
    days: Any = raw.get("days")
    # A number typed into a box may come as text; anything else is reported as it is.
    if isinstance(days, str) and days.strip().isdigit():
        days = int(days.strip())
    elif isinstance(days, str) and not days.strip():
        days = None
    exclusive = raw.get("exclusive", False)
    if not isinstance(exclusive, bool):
        problems.enrollment.append("“not while active” must be true or false")
        exclusive = False
    found = enrollment_problems(rule=rule, days=days, exclusive=exclusive)
    if found:
        problems.enrollment.extend(found)
        return EnrollmentSettings()
    return EnrollmentSettings(rule, days, exclusive)


@dataclass
class ParsedDefinition:
    """A definition ready for `workflow_validate` and for saving, with the problems found in
    reading it (JSON that does not parse, blanks) by the same places the report uses."""

    trigger: str
    filter: dict[str, Any]
    steps: list[dict[str, Any]]
    problems: ValidationReport = field(default_factory=ValidationReport)
    goal: "GoalDefinition" = field(default_factory=lambda: GoalDefinition())
    enrollment: EnrollmentSettings = field(default_factory=EnrollmentSettings)


def _step_parameter_names(step: Mapping[str, Any]) -> list[str] | None:
    """The parameter names a step of this type (and adapter function) has; None if unknown."""
    kind = step.get("type")
    if kind == "adapter":
        adapter = REGISTRY.get(str(step.get("adapter") or ""))
        function = adapter.functions.get(str(step.get("function") or "")) if adapter else None
        if function is None:
            return []
        names = [p.name for p in function.parameters]
        # A function with texts a patient reads may have them per language.
        return [*names, VARIANTS] if any(p.translatable for p in function.parameters) else names
    step_type = STEP_TYPES.get(str(kind))
    return [p.name for p in step_type.parameters] if step_type else None


def _parse_json_text(text: Any) -> Any:
    """JSON typed into a filter or query box; JSONInputError says why it cannot be read."""
    return json_parse(text) if isinstance(text, str) else text


def _parse_step(index: int, raw: Any, problems: ValidationReport) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise DefinitionError(f"step {index + 1} is not an object")
    kind = str(raw.get("type") or "")
    is_adapter = kind == "adapter"
    raw_parameters = raw.get("parameters") or {}
    if not isinstance(raw_parameters, Mapping):
        raise DefinitionError(f"the parameters of step {index + 1} are not an object")
    names = _step_parameter_names(raw)
    parameters: dict[str, Any] = {}
    for name, value in raw_parameters.items():
        if names is not None and name not in names:
            continue  # left over from another type or function: not part of this step
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        structure = (
            isinstance(value, Mapping)
            or name in STRUCTURES.get(kind, ())
            or (is_adapter and name == VARIANTS)
        )
        parameters[name] = value if structure else str(value)
    if kind == "condition":
        query = parameters.get("query")
        if query is None:
            problems.add_step(
                index,
                "query",
                'add a condition to test, or write the query as JSON, e.g. {"order.totalAmount": 50}',
            )
        else:
            try:
                parameters["query"] = _parse_json_text(query)
            except JSONInputError as exc:
                problems.add_step(index, "query", f"the query {exc}")
    if is_adapter and VARIANTS in parameters:
        try:
            parameters[VARIANTS] = _parse_json_text(parameters[VARIANTS])
        except JSONInputError as exc:
            problems.add_step(index, VARIANTS, f"the variants {exc}")
    if kind in STRUCTURES:
        for name in STRUCTURES[kind]:
            if name not in parameters:
                continue
            try:
                parameters[name] = _parse_json_text(parameters[name])
            except JSONInputError as exc:
                problems.add_step(index, name, f"the {name.replace('_', ' ')} {exc}")
    purpose = str(raw.get("purpose") or ConsentRecord.Purpose.TRANSACTIONAL)
    if purpose not in ConsentRecord.Purpose.values:
        problems.add_step(index, "purpose", f"unknown purpose {purpose!r}")
    step_id = raw.get("id")
    step = {
        "id": step_id if isinstance(step_id, int) else None,
        "type": kind,
        "adapter": str(raw.get("adapter") or "") if is_adapter else "",
        "function": str(raw.get("function") or "") if is_adapter else "",
        "parameters": parameters,
        "purpose": purpose,
        "urgent": bool(raw.get("urgent")) and is_adapter,
    }
    if is_adapter and step["adapter"] in REGISTRY and not step["function"]:
        problems.add_step(index, "function", "choose a function")
    return step


def definition_parse(raw: Any) -> ParsedDefinition:
    """Read a definition posted by the builder (JSON text or an already decoded object).
    Raise DefinitionError when it is not a definition at all."""
    if isinstance(raw, str):
        if not raw.strip():
            raw = {}
        else:
            try:
                raw = json_parse(raw)
            except JSONInputError as exc:
                raise DefinitionError(f"the definition {exc}") from None
    if not isinstance(raw, Mapping):
        raise DefinitionError("the definition must be a JSON object")
    # Bounded before anything walks it (validation, the diagram, saving it as jsonb).
    problem = json_problem(raw)
    if problem:
        raise DefinitionError(f"the definition {problem}")
    problems = ValidationReport()
    trigger = str(raw.get("trigger") or "")
    if not trigger:
        problems.trigger.append("choose the trigger that starts this workflow")
    filter_value: Any = raw.get("filter") or {}
    try:
        blank = isinstance(filter_value, str) and not filter_value.strip()
        filter_value = {} if blank else _parse_json_text(filter_value)
    except JSONInputError as exc:
        problems.filter.append(f"the filter {exc}")
        filter_value = {}
    steps_raw = raw.get("steps") or []
    if not isinstance(steps_raw, list):
        raise DefinitionError("steps must be a list")
    steps = [_parse_step(index, step, problems) for index, step in enumerate(steps_raw)]
    enrollment = _parse_enrollment(raw.get("enrollment"), problems)
    goal = goal_parse(raw, problems)
    return ParsedDefinition(
        trigger, filter_value, steps, problems, goal=goal, enrollment=enrollment
    )


def definition_report(
    parsed: ParsedDefinition,
    *,
    senders: ClinicSenders | None = None,
    events: Mapping[str, EventType] = EVENT_TYPES,
) -> ValidationReport:
    """`workflow_validate` on the parsed definition (with the clinic's approved `senders`,
    when known, and its event types `events`, workflows.custom_events.event_types); a
    problem found while reading a place (the trigger, the filter, a step's field) replaces
    what validation says about it."""
    report = workflow_validate(
        trigger=parsed.trigger,
        filter=parsed.filter,
        steps=parsed.steps,
        senders=senders,
        events=events,
    )
    problems = parsed.problems
    if problems.trigger:
        report.trigger = list(problems.trigger)
    if problems.filter:
        report.filter = list(problems.filter)
    report.enrollment = list(problems.enrollment)
    for index, fields in problems.steps.items():
        for name, messages in fields.items():
            report.steps.setdefault(index, {})[name] = list(messages)
    goal_report(parsed, report, events)
    # "Twilio has no function ''" says the same as "choose a function", less clearly.
    for index, step in enumerate(parsed.steps):
        fields = report.steps.get(index, {})
        if not step["function"] and "function" in fields:
            fields["function"] = ["choose a function"]
    return report


def definition_tree(steps: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each step's place in the tree the waits' branches make, for the builder to indent the
    steps under the branch that leads to them (`workflows.diagram.steps_tree`)."""
    return [asdict(row) for row in steps_tree(steps)[0]]


def report_lines(report: ValidationReport, steps: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report as sentences, for the form's error list (and pages without JavaScript)."""
    lines = [f"Trigger: {text}" for text in report.trigger]
    lines += [f"Filter: {text}" for text in report.filter]
    lines += goal_report_lines(report)
    lines += [f"Enrollment: {text}" for text in report.enrollment]
    for index in sorted(report.steps):
        step = steps[index] if index < len(steps) else {}
        labels = _parameter_labels(step)
        for name, messages in report.steps[index].items():
            place = labels.get(name, name)
            for text in messages:
                lines.append(f"Step {index + 1} ({step_title(step)}), {place}: {text}")
    return lines


def _parameter_labels(step: Mapping[str, Any]) -> dict[str, str]:
    labels = {"type": "type", "adapter": "adapter", "function": "function", "purpose": "purpose"}
    step_type = STEP_TYPES.get(str(step.get("type")))
    for parameter in step_type.parameters if step_type else ():
        labels[parameter.name] = parameter.label
    adapter = REGISTRY.get(str(step.get("adapter") or ""))
    function = adapter.functions.get(str(step.get("function") or "")) if adapter else None
    for parameter in function.parameters if function else ():
        labels[parameter.name] = parameter.label
    labels[VARIANTS] = "Languages"
    return labels


@transaction.atomic
def workflow_steps_save(*, workflow: Workflow, steps: Sequence[Mapping[str, Any]]) -> list[Step]:
    """Make the workflow's steps exactly `steps` (parsed and validated), in this order.

    A step that kept its id is updated in place, new ones are created, the others deleted.
    Runs are not affected: each pinned its definition when it started.
    """
    existing = {step.pk: step for step in workflow.steps.all()}
    saved = []
    for index, data in enumerate(steps):
        step = existing.pop(data.get("id"), None) or Step(workflow=workflow)  # type: ignore[arg-type]
        step.position = index + 1
        step.type = data["type"]
        step.adapter = data["adapter"]
        step.function = data["function"]
        step.parameters = dict(data["parameters"])
        step.purpose = data["purpose"]
        step.urgent = data["urgent"]
        step.save()
        saved.append(step)
    if existing:
        Step.objects.filter(pk__in=existing).delete()
    return saved


# --- the goal and the exit conditions ---------------------------------------------------------


@dataclass
class GoalDefinition:
    """A workflow's goal and exit conditions as parsed from the builder (workflows.goals
    says what they do): `event` "" means no goal."""

    event: str = ""
    filter: dict[str, Any] = field(default_factory=dict)
    scope: str = Workflow.Scope.PATIENT
    window_hours: Any = 168
    exits: list[dict[str, Any]] = field(default_factory=list)


def goal_initial(workflow: Workflow | None) -> dict[str, Any]:
    """The goal and exits of a saved workflow (or a new one's defaults) as the builder edits
    them: filters as JSON text."""
    if workflow is None or workflow.pk is None:
        workflow = Workflow()
    return {
        "goal": {
            "event": workflow.goal_event,
            "filter": _json_text(workflow.goal_filter),
            "scope": workflow.goal_scope,
            "windowHours": workflow.goal_window_hours,
        },
        "exits": [
            {
                "event": str(item.get("event") or ""),
                "filter": _json_text(item.get("filter")),
                "scope": str(item.get("scope") or Workflow.Scope.PATIENT),
            }
            for item in (workflow.exits if isinstance(workflow.exits, list) else [])
            if isinstance(item, Mapping)
        ],
    }


def _ending_filter(text: Any, problems: dict[str, list[str]]) -> dict[str, Any]:
    try:
        value = _parse_json_text(text) if text not in (None, "") else {}
    except JSONInputError as exc:
        problems.setdefault("filter", []).append(f"the filter {exc}")
        return {}
    if isinstance(value, str) and not value.strip():
        return {}
    if not isinstance(value, dict):
        problems.setdefault("filter", []).append(
            'the filter must be a JSON object, e.g. {"appointment.providerName": "Dr. Gomez"}'
        )
        return {}
    return value


def goal_parse(raw: Mapping[str, Any], problems: ValidationReport) -> GoalDefinition:
    """Read the definition's "goal" and "exits" (absent: no goal, no exits); what cannot be
    read (a filter that is not JSON, a window that is not a number) goes to `problems`."""
    goal_raw = raw.get("goal") or {}
    exits_raw = raw.get("exits") or []
    if not isinstance(goal_raw, Mapping):
        raise DefinitionError("the goal must be an object")
    if not isinstance(exits_raw, list):
        raise DefinitionError("the exit conditions must be a list")
    goal = GoalDefinition(
        event=str(goal_raw.get("event") or ""),
        scope=str(goal_raw.get("scope") or Workflow.Scope.PATIENT),
    )
    goal.filter = _ending_filter(goal_raw.get("filter"), problems.goal)
    window = goal_raw.get("windowHours", 168)
    try:
        goal.window_hours = int(str(window).strip()) if window not in (None, "") else 168
    except ValueError:
        problems.add_goal("window", "the window must be a whole number of hours")
        goal.window_hours = None
    for index, item in enumerate(exits_raw):
        if not isinstance(item, Mapping):
            raise DefinitionError(f"exit condition {index + 1} is not an object")
        found: dict[str, list[str]] = {}
        query = _ending_filter(item.get("filter"), found)
        for name, messages in found.items():
            for message in messages:
                problems.add_exit(index, name, message)
        goal.exits.append(
            {
                "event": str(item.get("event") or ""),
                "filter": query,
                "scope": str(item.get("scope") or Workflow.Scope.PATIENT),
            }
        )
    return goal


def goal_report(
    parsed: ParsedDefinition,
    report: ValidationReport,
    events: Mapping[str, EventType] = EVENT_TYPES,
) -> None:
    """Validate the parsed goal and exits into `report`; a problem found in reading a
    field (its JSON) replaces what validation says about it."""
    goal = parsed.goal
    goal_validate(
        report=report,
        event=goal.event,
        filter=goal.filter,
        scope=goal.scope,
        window_hours=goal.window_hours,
        exits=goal.exits,
        events=events,
    )
    for name, messages in parsed.problems.goal.items():
        report.goal[name] = list(messages)
    for index, fields in parsed.problems.exits.items():
        for name, messages in fields.items():
            report.exits.setdefault(index, {})[name] = list(messages)


_GOAL_PLACES = {"event": "event", "filter": "filter", "scope": "who", "window": "window"}


def goal_report_lines(report: ValidationReport) -> list[str]:
    lines = [
        f"Goal, {_GOAL_PLACES.get(name, name)}: {text}"
        for name, messages in report.goal.items()
        for text in messages
    ]
    for index in sorted(report.exits):
        for name, messages in report.exits[index].items():
            place = _GOAL_PLACES.get(name, name)
            lines += [f"Exit condition {index + 1}, {place}: {text}" for text in messages]
    return lines


def goal_apply(workflow: Workflow, goal: GoalDefinition) -> None:
    """Put a validated goal and exits on the workflow (saved by the caller)."""
    workflow.goal_event = goal.event
    workflow.goal_filter = goal.filter if goal.event else {}
    workflow.goal_scope = goal.scope if goal.event else Workflow.Scope.PATIENT
    if goal.event and isinstance(goal.window_hours, int):
        workflow.goal_window_hours = goal.window_hours
    workflow.exits = [dict(item) for item in goal.exits]


# --- the clinic's approved senders -------------------------------------------------------


def _sending_adapters() -> list[Adapter]:
    """The adapters with a function that names the clinic's own sender."""
    return [
        adapter
        for adapter in REGISTRY.values()
        if any(function.sender_parameter for function in adapter.functions.values())
    ]


def approved_numbers(*, organization_ids: Iterable[int] | None) -> dict[int, dict[str, list[str]]]:
    """The approved senders of each clinic's enabled integrations (None: of every clinic)
    by adapter, in the order support staff entered them, for the builder's sender lists: an
    email step offers the clinic's addresses, an SMS step its numbers."""
    found: dict[int, dict[str, list[str]]] = {}
    for adapter in _sending_adapters():
        for organization_id, senders in adapter.senders(organization_ids).items():
            found.setdefault(organization_id, {})[adapter.name] = list(senders)
    return found


def approved_senders(organization: Organization) -> ClinicSenders:
    """What a workflow of this clinic may send from, by adapter, for `workflow_validate`."""
    return {
        adapter.name: ApprovedSenders(
            clinic=str(organization),
            numbers=tuple(adapter.senders([organization.pk]).get(organization.pk, [])),
            integration=adapter.label,
        )
        for adapter in _sending_adapters()
    }


# --- message previews -------------------------------------------------------------------------


def _preview_data(event: EventType, patient: Patient | None) -> tuple[dict[str, Any], str]:
    if patient is not None:
        payload, source = dry_run_payload(trigger=event.name, patient=patient)
    else:
        payload, source = schema_example(event), "example data from the data reference"
    return {**payload, "trigger": payload, "history": {}}, source


def _previewer(key: str) -> tuple[Adapter, str] | None:
    """The adapter and function previewing a message named "<adapter>.<function>"; for a bare
    text (no name), the first registered function with a preview."""
    for adapter in REGISTRY.values():
        for function in adapter.functions.values():
            if function.preview_parameter and key in ("", f"{adapter.name}.{function.name}"):
                return adapter, function.name
    return None


def message_preview(
    template: str,
    data: Mapping[str, Any],
    *,
    tz: zoneinfo.ZoneInfo | None = None,
    function: str = "",
    organization: Organization | None = None,
    inputs: Mapping[str, str] | None = None,
    language: str = "",
) -> dict[str, Any]:
    """One message rendered against `data` (dates and times in `tz`), previewed by its
    adapter `function` ("<adapter>.<function>") with what it costs and what to watch out
    for: as `organization`'s rules would send it (in `language`, a variant's), with the
    step's other parameters (`inputs`, rendered too; one that cannot be rendered is
    previewed as blank)."""
    try:
        text = template_render(template, data, tz=tz)
    except TemplateError as exc:
        return {"error": str(exc)}
    previewer = _previewer(function)
    if previewer is None:
        return {"error": f"nothing previews {function!r}"}
    rendered = {}
    for name, value in (inputs or {}).items():
        try:
            rendered[name] = template_render(value, data, tz=tz)
        except TemplateError:
            rendered[name] = ""
    adapter, name = previewer
    return adapter.preview_for(
        name, text, organization=organization, inputs=rendered, language=language
    )


# The step's other parameters a preview is sent, at most (the builder sends a step's own).
MAX_PREVIEW_INPUTS = 20


def _message(value: Any) -> tuple[str, str, dict[str, str]]:
    """A message as the builder posts it: {"text", "function", "inputs"}, or a bare text."""
    if isinstance(value, Mapping):
        inputs = value.get("inputs")
        given = inputs.items() if isinstance(inputs, Mapping) else ()
        return (
            str(value.get("text") or ""),
            str(value.get("function") or ""),
            {str(k): v for k, v in list(given)[:MAX_PREVIEW_INPUTS] if isinstance(v, str)},
        )
    return str(value), "", {}


def message_previews(
    *,
    trigger: str,
    patient: Patient | None,
    messages: Mapping[str, Any],
    organization: Organization | None = None,
) -> dict[str, Any]:
    """Every message of the builder (by step index) rendered for the test patient, or for the
    data reference's example data when no patient is chosen. Dates and times are shown as the
    engine would text them: in the patient's zone, or for example data in `organization`'s."""
    owner = patient.organization if patient is not None else organization
    event = event_types(organization_id=owner.pk if owner is not None else None).get(trigger)
    if event is None:
        return {"source": "", "previews": {}, "error": "choose a trigger to preview messages"}
    data, source = _preview_data(event, patient)
    tz = patient_zone(patient, owner) if owner is not None else None
    return {
        "patient": str(patient) if patient else "",
        "source": source,
        "previews": {
            # A variant's key is "<step>:<language>" (builder.js), previewed in that language.
            str(key): message_preview(
                text,
                data,
                tz=tz,
                function=function,
                organization=owner,
                inputs=inputs,
                language=str(key).partition(":")[2],
            )
            for key, (text, function, inputs) in (
                (key, _message(value)) for key, value in messages.items()
            )
        },
    }


# --- dry run presentation -------------------------------------------------------------------


def dry_run_context(report: Mapping[str, Any]) -> dict[str, Any]:
    """Template context for the dry-run partial, from `DryRunReport.as_dict()`."""
    steps = list(report["steps"])
    return {
        "report": report,
        "steps": steps,
        "payload_json": json.dumps(report["payload"], indent=2, ensure_ascii=False, default=str),
        "sends": sum(1 for step in steps if step["outcome"] == "send"),
    }


def builder_test_patients(organization_ids: Iterable[int] | None) -> list[dict[str, Any]]:
    """Test patients (of these clinics; None: all), for the builder's patient picker."""
    patients = Patient.objects.filter(is_test=True)
    if organization_ids is not None:
        patients = patients.filter(organization_id__in=list(organization_ids))
    return [
        {"id": p.pk, "name": str(p), "organization": p.organization_id, "phone": p.phone}
        for p in patients.only("id", "first_name", "last_name", "organization_id", "phone")[:500]
    ]
