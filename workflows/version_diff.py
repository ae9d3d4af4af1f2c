"""What changed between two versions of a workflow (`workflows.versions`), in the builder's
words: its fields as before → after, and its steps matched across the two versions as
added, removed, changed, moved or unchanged, with their parameters side by side.

Steps carry no ids in a version, so they are matched by what they are: first the steps that
are the same in both (type, adapter, function and every parameter), in order; then, in each
stretch between those, steps of the same kind (type, adapter, function) pair up as changed.
A step removed in one place and added unchanged in another is a move.
"""

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

from patients.models import ConsentRecord
from workflows.adapters import REGISTRY
from workflows.diagram import step_title
from workflows.models import Workflow
from workflows.steps import STEP_TYPES

ADDED, REMOVED, CHANGED, MOVED, UNCHANGED = "added", "removed", "changed", "moved", "unchanged"


@dataclass(frozen=True, slots=True)
class Row:
    """One field or parameter, before and after (blank where a side has none)."""

    label: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True, slots=True)
class StepChange:
    """A step as the two versions have it: `before`/`after` are its numbers in each (None
    on the side it is missing from)."""

    kind: str
    title: str
    before: int | None
    after: int | None
    rows: tuple[Row, ...]

    @property
    def changed_rows(self) -> tuple[Row, ...]:
        return tuple(row for row in self.rows if row.changed)


@dataclass(frozen=True)
class VersionDiff:
    fields: list[Row] = field(default_factory=list)
    steps: list[StepChange] = field(default_factory=list)

    @property
    def changed_fields(self) -> list[Row]:
        return [row for row in self.fields if row.changed]

    @property
    def counts(self) -> dict[str, int]:
        found = dict.fromkeys((ADDED, REMOVED, CHANGED, MOVED, UNCHANGED), 0)
        for step in self.steps:
            found[step.kind] += 1
        return found

    @property
    def has_changes(self) -> bool:
        return bool(self.changed_fields) or any(s.kind != UNCHANGED for s in self.steps)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    return str(value)


def _choice(choices: Sequence[tuple[str, str]], value: Any) -> str:
    return dict(choices).get(str(value), _text(value))


def _enrollment(definition: Mapping[str, Any]) -> str:
    enrollment = definition.get("enrollment") or {}
    if not isinstance(enrollment, Mapping):
        return _text(enrollment)
    text = _choice(Workflow.Enrollment.choices, enrollment.get("rule") or "every")
    if enrollment.get("days") not in (None, ""):
        text += f" (N = {enrollment.get('days')} days)"
    if enrollment.get("exclusive"):
        text += "; not while the patient has a run of it in progress"
    return text


def _goal(definition: Mapping[str, Any]) -> str:
    goal = definition.get("goal") or {}
    if not isinstance(goal, Mapping) or not goal.get("event"):
        return "no goal"
    parts = [str(goal.get("event")), f"who: {_choice(Workflow.Scope.choices, goal.get('scope'))}"]
    parts.append(f"within {_text(goal.get('windowHours'))} hours")
    if goal.get("filter"):
        parts.append(f"only if {_text(goal.get('filter'))}")
    return "; ".join(parts)


def _exits(definition: Mapping[str, Any]) -> str:
    exits = definition.get("exits") or []
    if not isinstance(exits, list):
        return _text(exits)
    lines = []
    for item in exits:
        if not isinstance(item, Mapping):
            continue
        line = f"{item.get('event')} (who: {_choice(Workflow.Scope.choices, item.get('scope'))})"
        if item.get("filter"):
            line += f" only if {_text(item.get('filter'))}"
        lines.append(line)
    return "\n".join(lines)


def _definition(document: Mapping[str, Any]) -> Mapping[str, Any]:
    definition = document.get("definition") or {}
    return definition if isinstance(definition, Mapping) else {}


def _field_rows(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Row]:
    old, new = _definition(before), _definition(after)
    return [
        Row("Name", _text(before.get("name")), _text(after.get("name"))),
        Row("Description", _text(before.get("description")), _text(after.get("description"))),
        Row("Trigger", _text(old.get("trigger")), _text(new.get("trigger"))),
        Row("Filter", _text(old.get("filter")), _text(new.get("filter"))),
        Row("Enrollment", _enrollment(old), _enrollment(new)),
        Row("Goal", _goal(old), _goal(new)),
        Row("Exit conditions", _exits(old), _exits(new)),
    ]


def _steps(document: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    steps = _definition(document).get("steps") or []
    return [step for step in steps if isinstance(step, Mapping)] if isinstance(steps, list) else []


def _identity(step: Mapping[str, Any]) -> tuple[str, str, str]:
    return (
        str(step.get("type") or ""),
        str(step.get("adapter") or ""),
        str(step.get("function") or ""),
    )


def _whole(step: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in step.items() if k != "id"}, sort_keys=True, default=str)


def step_labels(step: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A step's parameters as (name, label), in the order and with the labels the builder
    shows them (the step type's or the adapter function's schema), then its send options."""
    kind = str(step.get("type") or "")
    step_type = STEP_TYPES.get(kind)
    labels = [(p.name, p.label) for p in step_type.parameters] if step_type else []
    adapter = REGISTRY.get(str(step.get("adapter") or "")) if kind == "adapter" else None
    function = adapter.functions.get(str(step.get("function") or "")) if adapter else None
    if function is not None:
        labels = [(p.name, p.label) for p in function.parameters]
        if function.messages_patient:
            labels += [("purpose", "Consent needed"), ("urgent", "Urgent")]
    return labels


def _value(step: Mapping[str, Any] | None, name: str) -> str:
    if step is None:
        return ""
    if name == "purpose":
        return _choice(ConsentRecord.Purpose.choices, step.get("purpose"))
    if name == "urgent":
        return _text(bool(step.get("urgent")))
    parameters = step.get("parameters") or {}
    return _text(parameters.get(name)) if isinstance(parameters, Mapping) else ""


def _rows(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> tuple[Row, ...]:
    labelled: dict[str, str] = {}
    for step in (after, before):
        if step is None:
            continue
        for name, label in step_labels(step):
            labelled.setdefault(name, label)
        # A parameter no schema names (an adapter since changed) still shows, by its name.
        parameters = step.get("parameters") or {}
        for name in parameters if isinstance(parameters, Mapping) else ():
            labelled.setdefault(str(name), str(name))
    return tuple(
        Row(label, _value(before, name), _value(after, name))
        for name, label in labelled.items()
        if _value(before, name) or _value(after, name)
    )


def _change(
    kind: str,
    old: Sequence[Mapping[str, Any]],
    new: Sequence[Mapping[str, Any]],
    i: int | None,
    j: int | None,
) -> StepChange:
    before = old[i] if i is not None else None
    after = new[j] if j is not None else None
    shown = after if after is not None else before
    return StepChange(
        kind=kind,
        title=step_title(shown or {}),
        before=None if i is None else i + 1,
        after=None if j is None else j + 1,
        rows=_rows(before, after),
    )


def _steps_diff(
    old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[StepChange]:
    changes: list[StepChange] = []
    whole = SequenceMatcher(None, [_whole(s) for s in old], [_whole(s) for s in new], False)
    for tag, i1, i2, j1, j2 in whole.get_opcodes():
        if tag == "equal":
            changes += [_change(UNCHANGED, old, new, i1 + k, j1 + k) for k in range(i2 - i1)]
            continue
        # Between the steps that are the same, pair those of the same kind as changed.
        kinds = SequenceMatcher(
            None, [_identity(s) for s in old[i1:i2]], [_identity(s) for s in new[j1:j2]], False
        )
        for kind_tag, a1, a2, b1, b2 in kinds.get_opcodes():
            if kind_tag == "equal":
                changes += [
                    _change(CHANGED, old, new, i1 + a1 + k, j1 + b1 + k) for k in range(a2 - a1)
                ]
                continue
            changes += [_change(REMOVED, old, new, i1 + k, None) for k in range(a1, a2)]
            changes += [_change(ADDED, old, new, None, j1 + k) for k in range(b1, b2)]
    return _moves(changes, old, new)


def _moves(
    changes: list[StepChange], old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]
) -> list[StepChange]:
    """A removed step that reappears unchanged elsewhere is shown once, as moved, where it
    now is."""
    removed: dict[str, list[int]] = {}
    for change in changes:
        if change.kind == REMOVED and change.before is not None:
            removed.setdefault(_whole(old[change.before - 1]), []).append(change.before)
    moved_from: set[int] = set()
    result = []
    for change in changes:
        if change.kind == ADDED and change.after is not None:
            sources = removed.get(_whole(new[change.after - 1]))
            if sources:
                origin = sources.pop(0)
                moved_from.add(origin)
                result.append(_change(MOVED, old, new, origin - 1, change.after - 1))
                continue
        result.append(change)
    return [c for c in result if not (c.kind == REMOVED and c.before in moved_from)]


def version_diff(*, before: Mapping[str, Any], after: Mapping[str, Any]) -> VersionDiff:
    """What changed from the document `before` to `after` (`workflows.versions` documents)."""
    return VersionDiff(
        fields=_field_rows(before, after), steps=_steps_diff(_steps(before), _steps(after))
    )
