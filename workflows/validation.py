"""Save-time validation of a whole workflow definition, shared by the admin forms and the
builder: every problem is reported on the step and parameter it belongs to, in words a
clinic admin can act on."""

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from patients.inputs import json_problem
from patients.languages import language_name
from workflows.adapters import (
    REGISTRY,
    SMS_CLINICAL_DATA_NOTE,
    Function,
    Parameter,
    SenderNoun,
    step_asks,
)
from workflows.catalogue import EVENT_TYPES, EventType, schema_field, schema_variables
from workflows.filters import FilterError, filter_validate
from workflows.rendering import (
    TemplateError,
    json_template_load,
    json_template_map,
    template_variables,
)
from workflows.replies import (
    REPLY,
    ReplyConfigError,
    branch_segments,
    condition_goto_problem,
    question_steps,
)
from workflows.steps import StepConfigError, step_validate
from workflows.variants import VARIANTS, variants_shape_problems


@dataclass
class ValidationReport:
    """Problems by place: the trigger, the filter, each step's parameters (by index) and
    the enrollment rule."""

    trigger: list[str] = field(default_factory=list)
    filter: list[str] = field(default_factory=list)
    steps: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    # The goal's fields (event, filter, scope, window) and each exit condition's (by index).
    goal: dict[str, list[str]] = field(default_factory=dict)
    exits: dict[int, dict[str, list[str]]] = field(default_factory=dict)
    # The enrollment rule's settings (workflows.enrollment.enrollment_problems).
    enrollment: list[str] = field(default_factory=list)

    def add_step(self, index: int, name: str, message: str) -> None:
        self.steps.setdefault(index, {}).setdefault(name, []).append(message)

    def add_goal(self, name: str, message: str) -> None:
        self.goal.setdefault(name, []).append(message)

    def add_exit(self, index: int, name: str, message: str) -> None:
        self.exits.setdefault(index, {}).setdefault(name, []).append(message)

    @property
    def ok(self) -> bool:
        return not (
            self.trigger or self.filter or self.steps or self.enrollment or self.goal or self.exits
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "trigger": self.trigger,
            "filter": self.filter,
            "steps": {str(i): fields for i, fields in self.steps.items()},
            "goal": self.goal,
            "exits": {str(i): fields for i, fields in self.exits.items()},
            "enrollment": self.enrollment,
        }


@dataclass(frozen=True, slots=True)
class ApprovedSenders:
    """The senders a clinic may use with one adapter (its enabled integration's), with the
    clinic's name and the adapter's label for the messages that say so.

    A sender written as the value of a function's `sender_parameter` must be one of them: a
    typo would otherwise be found only when the first patient's message is skipped. A
    {{variable}} is left to the send-time check, which refuses unapproved senders too."""

    clinic: str
    numbers: tuple[str, ...]
    integration: str


# A clinic's approved senders by adapter name.
ClinicSenders = Mapping[str, ApprovedSenders]


_SENDERS = SenderNoun()


def sender_problem(value: Any, senders: ApprovedSenders, noun: SenderNoun = _SENDERS) -> str:
    """Why `value` cannot be the sender, or "" if it can (or is a {{variable}}); `noun`
    names the senders as the function does (`Function.sender_noun`)."""
    literal = str(value or "").strip()
    if not literal or "{{" in literal or literal in senders.numbers:
        return ""
    if not senders.numbers:
        return (
            f"{senders.clinic} has no {noun.many} yet: support staff add them to "
            f"its {senders.integration} integration"
        )
    return (
        f"{literal} is not {noun.one} of {senders.clinic}; choose "
        f"{' or '.join(senders.numbers)}, or use a {{{{variable}}}}"
    )


def _scalar_paths(trigger: str | EventType) -> list[str]:
    return [path for path, f in schema_variables(trigger) if f.type not in ("object", "array")]


def template_problems(
    template: str,
    *,
    trigger: str | EventType,
    step_number: int,
    clinical_data_allowed: bool = False,
    clinical_data_note: str = SMS_CLINICAL_DATA_NOTE,
) -> list[str]:
    """Problems with one template: syntax, unknown variables (with the nearest valid names),
    variables that are objects or lists rather than text, and clinical details where the
    channel is not private enough for them (`clinical_data_note` says where they stay out).
    `trigger`: a catalogue name, or a clinic's EventType (workflows.custom_events)."""
    name = trigger.name if isinstance(trigger, EventType) else trigger
    try:
        variables = template_variables(template)
    except TemplateError as exc:
        return [str(exc)]
    problems = []
    for variable in variables:
        path = variable.path
        head, _, rest = path.partition(".")
        if head == "history":
            number = rest.split(".", 1)[0]
            if not (number.isdigit() and 1 <= int(number) < step_number):
                problems.append(
                    f"{{{{{path}}}}}: history can only refer to an earlier step "
                    f"(1 to {step_number - 1})"
                )
            continue
        lookup = rest if head == "trigger" else path
        found = schema_field(trigger, lookup) if lookup else None
        if found is None:
            known = _scalar_paths(trigger)
            suggestions = difflib.get_close_matches(lookup, known, n=3, cutoff=0.6)
            hint = (
                f"; did you mean {', '.join('{{' + s + '}}' for s in suggestions)}?"
                if (suggestions)
                else "; see the data reference for this trigger"
            )
            problems.append(f"{{{{{path}}}}} is not a variable of {name}{hint}")
        elif found.type in ("object", "array"):
            kind = "an object" if found.type == "object" else "a list"
            inside = [p for p in _scalar_paths(trigger) if p.startswith(lookup + ".")]
            example = ("trigger." if head == "trigger" else "") + inside[0] if inside else ""
            pick = f": use one of its fields, e.g. {{{{{example}}}}}" if example else ""
            problems.append(f"{{{{{path}}}}} is {kind}, not text{pick}")
        elif found.sensitive and not clinical_data_allowed:
            problems.append(f"{{{{{path}}}}} is clinical information; {clinical_data_note}")
    return problems


def parameter_problems(
    parameter: Parameter,
    value: Any,
    *,
    function: Function,
    trigger: str | EventType,
    step_number: int,
) -> list[str]:
    """Problems with one adapter parameter's value, as the engine will render it: a text
    template, or a JSON object whose string values are templates (each checked as one)."""
    if parameter.kind == "json":
        if not isinstance(value, Mapping) and not str(value).strip():
            return []  # "required" is step_validate's to say
        try:
            document = json_template_load(value)
        except TemplateError as exc:
            return [str(exc)]
        templates: list[str] = []
        json_template_map(document, templates.append)
    else:
        templates = [str(value)]
        literal = templates[0].strip()
        if parameter.check is not None and literal and "{{" not in literal:
            problem = parameter.check(literal)
            if problem:
                return [problem]
    problems = [
        problem
        for template in templates
        for problem in template_problems(
            template,
            trigger=trigger,
            step_number=step_number,
            clinical_data_allowed=function.clinical_data_allowed,
            clinical_data_note=function.clinical_data_note,
        )
    ]
    return list(dict.fromkeys(problems))  # a variable used twice is one problem


def workflow_validate(
    *,
    trigger: str,
    filter: Any,
    steps: Sequence[Mapping[str, Any]],
    senders: ClinicSenders | None = None,
    events: Mapping[str, EventType] = EVENT_TYPES,
) -> ValidationReport:
    """Everything wrong with a workflow definition; `steps` are definitions in run order.
    With `senders` (the workflow's clinic's, by adapter), a literal sender must be one of
    them. `events`: the event types of the workflow's clinic (its custom types with the
    catalogue's, workflows.custom_events.event_types); the catalogue's by default."""
    report = ValidationReport()
    event = events.get(trigger)
    if event is None:
        report.trigger.append(f"unknown trigger {trigger!r}")
    # What PostgreSQL's jsonb cannot store (a NUL, a lone surrogate) made saving a 500;
    # other control characters would be texted as they are. Depth and size are bounded too,
    # before anything walks the value.
    problem = json_problem(filter or {})
    if problem:
        report.filter.append(f"the filter {problem}")
    else:
        try:
            filter_validate(filter or {})
        except FilterError as exc:
            report.filter.append(str(exc))
    for index, step in enumerate(steps):
        number = index + 1
        given = step.get("parameters")
        unstorable = {
            str(name): f"this value {problem}"
            for name, value in (given.items() if isinstance(given, Mapping) else ())
            if (problem := json_problem(value))
        }
        for name, problem in unstorable.items():
            report.add_step(index, name, problem)
        if unstorable:
            continue
        try:
            step_validate(step, number=number, total=len(steps))
        except StepConfigError as exc:
            report.add_step(index, exc.field or "type", str(exc))
        adapter = REGISTRY.get(step.get("adapter", ""))
        function = adapter.functions.get(step.get("function", "")) if adapter else None
        if step.get("type") != "adapter" or adapter is None or function is None:
            continue
        params = step.get("parameters") or {}
        for parameter in function.parameters:
            if event is not None:
                for problem in parameter_problems(
                    parameter,
                    params.get(parameter.name, ""),
                    function=function,
                    trigger=event,
                    step_number=number,
                ):
                    report.add_step(index, parameter.name, problem)
            approved = senders.get(adapter.name) if senders is not None else None
            if approved is not None and parameter.name == function.sender_parameter:
                problem = sender_problem(params.get(parameter.name), approved, function.sender_noun)
                # "required" (or a template error) says more than "not approved" would.
                if problem and parameter.name not in report.steps.get(index, {}):
                    report.add_step(index, parameter.name, problem)
        if event is not None:
            for problem in _variants_problems(
                params, function=function, event=event, number=number
            ):
                report.add_step(index, VARIANTS, problem)
    if not report.steps:
        _branches_validate(steps, report)
    return report


def _variants_problems(
    params: Mapping[str, Any], *, function: Function, event: EventType, number: int
) -> list[str]:
    """Each variant's texts checked exactly as the step's own (syntax, unknown variables,
    clinical details), each problem naming its language and parameter."""
    given = params.get(VARIANTS)
    problems = variants_shape_problems(given, function=function)
    if problems or not isinstance(given, Mapping):
        return problems
    for code, texts in given.items():
        for name, text in texts.items():
            parameter = function.parameter(name)
            if parameter is None or not text.strip():
                continue
            for problem in parameter_problems(
                parameter, text, function=function, trigger=event, step_number=number
            ):
                problems.append(f"{language_name(code)} {parameter.label.lower()}: {problem}")
    return problems


def _branches_validate(steps: Sequence[Mapping[str, Any]], report: ValidationReport) -> None:
    """What only the whole workflow shows: the tree the waits' branches make (every step
    reachable, branches inside their wait's part), conditions jumping within their own
    branch, and a question (an earlier text on the same path) before every wait."""
    try:
        tree = branch_segments(steps)
    except ReplyConfigError as exc:
        report.add_step(exc.index or 0, exc.field, str(exc))
        return
    for index, step in enumerate(steps):
        params = step.get("parameters") or {}
        target = params.get("else", "end") or "end"
        if step.get("type") == "condition" and target != "end":
            problem = condition_goto_problem(tree, index=index, goto_index=int(target) - 1)
            if problem:
                report.add_step(index, "else", problem)
        if step.get("type") == REPLY and not question_steps(steps, tree, index, asks=step_asks):
            report.add_step(
                index,
                "type",
                "a Wait for reply needs an earlier step on its path that texts the patient "
                "(e.g. Twilio → Send SMS): its reply is the answer",
            )


# --- goal and exit conditions ---------------------------------------------------------------

# A goal counts within 1 hour to 365 days of enrollment.
GOAL_WINDOW_HOURS = (1, 365 * 24)
SCOPES = ("patient", "record")


def _ending_problems(
    event: Any, query: Any, scope: Any, events: Mapping[str, EventType]
) -> dict[str, list[str]]:
    """What is wrong with a goal's or an exit's event, filter and scope."""
    problems: dict[str, list[str]] = {}
    if not isinstance(event, str) or event not in events:
        problems["event"] = [
            f"unknown event {event!r}: choose one from the list" if event else "choose the event"
        ]
    problem = json_problem(query or {})
    if problem:
        problems["filter"] = [f"the filter {problem}"]
    else:
        try:
            filter_validate(query or {})
        except FilterError as exc:
            problems["filter"] = [str(exc)]
    if scope not in SCOPES:
        problems["scope"] = ["choose “the same patient” or “the same record”"]
    return problems


def goal_validate(
    *,
    report: ValidationReport,
    event: str,
    filter: Any,
    scope: str,
    window_hours: Any,
    exits: Sequence[Mapping[str, Any]],
    events: Mapping[str, EventType] = EVENT_TYPES,
) -> None:
    """Add to `report` what is wrong with the goal (none: no goal) and the exit conditions:
    events not in the catalogue, filters the query language refuses, a window outside
    1 hour–365 days, an exit listed twice."""
    if event:
        for name, messages in _ending_problems(event, filter, scope, events).items():
            report.goal.setdefault(name, []).extend(messages)
        low, high = GOAL_WINDOW_HOURS
        if not isinstance(window_hours, int) or not low <= window_hours <= high:
            report.add_goal(
                "window", f"the window must be from {low} hour to 365 days ({high} hours)"
            )
    elif filter:
        report.add_goal("event", "choose the goal's event, or remove its filter")
    seen: set[str] = set()
    for index, item in enumerate(exits):
        exit_event = item.get("event")
        for name, messages in _ending_problems(
            exit_event, item.get("filter"), item.get("scope"), events
        ).items():
            report.exits.setdefault(index, {}).setdefault(name, []).extend(messages)
        key = json.dumps(
            [exit_event, item.get("filter") or {}, item.get("scope")], sort_keys=True, default=str
        )
        if exit_event and key in seen:
            report.add_exit(index, "event", "this exit condition is listed twice")
        seen.add(key)
        if exit_event and exit_event == event and not item.get("filter") and not filter:
            report.add_exit(
                index, "event", "this is the goal's event: reaching the goal already ends the run"
            )
