"""A workflow as a picture: a server-rendered SVG of numbered boxes, top to bottom.

Conditions continue down on "yes" and draw their "no" branch to the step they jump to, or to
the end. A wait for a reply is a tree: the steps of each of its branches are indented under
it, each reached by an edge labelled with the branches that lead there, and ending the run
when they are done. Every piece of text comes from the admin's own input, so all of it is
escaped.
"""

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.utils.html import escape

from workflows.adapters import REGISTRY
from workflows.catalogue import EVENT_TYPES, EventType
from workflows.filters import filter_summary
from workflows.replies import (
    NO_REPLY,
    OTHERWISE,
    REPLY,
    SPLIT,
    BranchTree,
    ReplyConfigError,
    Wait,
    branch_segments,
)

BOX_X = 24
BOX_WIDTH = 270
BOX_HEIGHT = 68
TRIGGER_HEIGHT = 70
GAP = 34
END_HEIGHT = 30
LANE_STEP = 18
LINE_CHARS = 34
INDENT = 30  # a branch's steps, under their wait
PILL_GAP = 22  # between a branch's last step and the End that follows it

STYLE = """
.cf-d-box { fill: var(--body-bg, #fff); stroke: var(--border-color, #ccc); stroke-width: 1.5; }
.cf-d-trigger { fill: var(--darkened-bg, #f8f8f8); stroke: var(--primary, #79aec8); }
.cf-d-problem { stroke: var(--error-fg, #ba2121); stroke-width: 2; }
.cf-d-end { fill: var(--darkened-bg, #f8f8f8); stroke: var(--border-color, #ccc); }
.cf-d-num { fill: var(--primary, #79aec8); }
.cf-d-num-text { fill: var(--header-link-color, #fff); font-weight: 700; }
text { fill: var(--body-fg, #333); font: 12px system-ui, -apple-system, "Segoe UI", sans-serif; }
.cf-d-title { font-weight: 600; font-size: 13px; }
.cf-d-quiet { fill: var(--body-quiet-color, #666); }
.cf-d-label { font-size: 11px; font-weight: 600; }
.cf-d-no { fill: var(--body-quiet-color, #666); }
.cf-d-line { stroke: var(--body-quiet-color, #666); stroke-width: 1.5; fill: none; }
.cf-d-arrow { fill: var(--body-quiet-color, #666); }
.cf-d-branch { fill: var(--link-fg, #447e9b); }
"""


def _short(text: str, limit: int = LINE_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _wrap(text: str, limit: int = LINE_CHARS, lines: int = 2) -> list[str]:
    """Up to `lines` lines of at most `limit` characters; the last one ends in … if cut."""
    words = " ".join(str(text).split())
    out: list[str] = []
    while words and len(out) < lines:
        if len(words) <= limit:
            out.append(words)
            words = ""
            break
        cut = words.rfind(" ", 0, limit + 1)
        cut = cut if cut > limit // 2 else limit
        out.append(words[:cut].rstrip())
        words = words[cut:].lstrip()
    if words:
        out[-1] = _short(out[-1] + " " + words, limit)
    return out


def _text_of(value: Any) -> str:
    """A parameter as text: "" for a missing or blank one (never "None")."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return " ".join(str(value).split())


def duration_text(seconds: Any) -> str:
    """A number of seconds in the largest unit that divides it: "3 days", "90 minutes";
    "" when there is none, the value itself when it is not a whole number."""
    text = _text_of(seconds)
    try:
        total = int(text)
    except ValueError:
        return f"{text} seconds" if text else ""
    sign, total = ("-" if total < 0 else ""), abs(total)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if total and total % size == 0:
            count = total // size
            return f"{sign}{count} {unit}{'s' if count != 1 else ''}"
    return f"{sign}{total} second{'s' if total != 1 else ''}"


def step_title(step: Mapping[str, Any]) -> str:
    """A step in a few words: "Twilio → Send SMS", "Condition", "Delay"."""
    kind = step.get("type")
    if kind == "adapter":
        adapter = REGISTRY.get(str(step.get("adapter") or ""))
        function = adapter.functions.get(str(step.get("function") or "")) if adapter else None
        if adapter and function:
            return f"{adapter.label} → {function.label}"
        return adapter.label if adapter else "Adapter action"
    if kind == "condition":
        return "Condition"
    if kind == "delay":
        return "Delay"
    if kind == REPLY:
        return "Wait for reply"
    if kind == SPLIT:
        return "A/B split"
    if not kind:
        return "Step without a type"
    return f"Unknown step type {kind!r}"


def _delay_detail(params: Mapping[str, Any]) -> str:
    kind = params.get("kind")
    if kind == "duration":
        duration = duration_text(params.get("seconds"))
        return f"Wait {duration}" if duration else "Wait (how long is not set yet)"
    if kind == "until_time":
        time = _text_of(params.get("time")) or "(a time not set yet)"
        return f"Wait until {time}, patient's time"
    if kind == "until_field":
        path = _text_of(params.get("path")) or "(a date field not set yet)"
        offset = _text_of(params.get("offset_seconds"))
        after = duration_text(offset.lstrip("-")) if offset.lstrip("-0") else ""
        shift = f" {'−' if offset.startswith('-') else '+'} {after}" if after else ""
        return f"Wait until {path}{shift}"
    return "Wait"


def _reply_detail(params: Mapping[str, Any]) -> str:
    timeout = _delay_detail(params).removeprefix("Wait").strip()
    if params.get("kind") == "duration" and not timeout.startswith("("):
        return f"Wait up to {timeout} for a reply"
    return f"Wait for a reply {timeout}".strip()


def _split_detail(params: Mapping[str, Any]) -> str:
    branches = params.get("branches")
    if not isinstance(branches, list) or not branches:
        return "Split (no branches yet)"
    shares = [
        f"{_text_of(b.get('label')) or '?'} {_text_of(b.get('percent')) or '?'}%"
        for b in branches
        if isinstance(b, Mapping)
    ]
    return "Split: " + ", ".join(shares)


def step_detail(step: Mapping[str, Any]) -> str:
    """What the step does with its parameters, in one line; parameters not set yet are
    said to be so, never shown as "None"."""
    params = step.get("parameters") or {}
    if not isinstance(params, Mapping):
        return ""
    kind = step.get("type")
    if kind == "condition":
        query = params.get("query")
        context = _text_of(params.get("context"))
        subject = f" in {context}" if context else ""
        if query in (None, "", {}):
            return f"If (no condition yet){subject}"
        return f"If {filter_summary(query) or _text_of(query)}{subject}"
    if kind == "delay":
        return _delay_detail(params)
    if kind == REPLY:
        return _reply_detail(params)
    if kind == SPLIT:
        return _split_detail(params)
    if kind == "adapter":
        if "to" in params or "message" in params:
            to = _text_of(params.get("to")) or "(no recipient yet)"
            return f"To {to}: “{_text_of(params.get('message'))}”"
        return ", ".join(f"{k}: {_text_of(v)}" for k, v in params.items() if _text_of(v))
    return ""


# How the built-in branches are named to the admin.
BRANCH_NAMES = {OTHERWISE: "anything else", NO_REPLY: "no reply"}


def branch_name(label: str) -> str:
    """A branch as the admin knows it: its label, or "anything else" / "no reply"."""
    return BRANCH_NAMES.get(label, label)


@dataclass(frozen=True, slots=True)
class TreeRow:
    """Where a step sits in the tree the waits' branches make (`branch_segments`): how deep,
    under which wait (its 1-based number; None at the top level), the branches that lead to
    it when it starts a branch, and whether the run ends after it (the last of a branch)."""

    depth: int = 0
    wait: int | None = None
    branches: tuple[str, ...] = ()
    ends: bool = False


def steps_tree(steps: Sequence[Mapping[str, Any]]) -> tuple[list[TreeRow], BranchTree | None]:
    """Each step's place in the tree, and the tree; steps whose branches do not make a tree
    yet (validation says why) are shown flat, in order."""
    try:
        tree = branch_segments(steps)
    except ReplyConfigError:
        return [TreeRow() for _ in steps], None
    rows: list[TreeRow] = []
    for index, segment in enumerate(tree.segments):
        if segment is None:
            rows.append(TreeRow())
            continue
        rows.append(
            TreeRow(
                depth=rows[segment.wait].depth + 1,
                wait=segment.wait + 1,
                branches=tuple(branch_name(label) for label in segment.labels)
                if segment.start == index
                else (),
                ends=index not in tree.waits and index + 1 == segment.end,
            )
        )
    return rows, tree


def _else_target(step: Mapping[str, Any]) -> int | None:
    """0-based index a condition jumps to when false; None for the end."""
    target = (step.get("parameters") or {}).get("else") or "end"
    try:
        return None if target == "end" else int(target) - 1
    except (TypeError, ValueError):
        return None


def _text(x: float, y: float, text: str, css: str = "", anchor: str = "start") -> str:
    klass = f' class="{css}"' if css else ""
    return f'<text x="{x:.0f}" y="{y:.0f}"{klass} text-anchor="{anchor}">{escape(text)}</text>'


def _arrow_down(x: float, y1: float, y2: float) -> str:
    return (
        f'<path class="cf-d-line" d="M{x:.0f} {y1:.0f} V{y2 - 6:.0f}"/>'
        f'<path class="cf-d-arrow" d="M{x - 5:.0f} {y2 - 7:.0f} L{x + 5:.0f} {y2 - 7:.0f} '
        f'L{x:.0f} {y2:.0f} Z"/>'
    )


def _arrow_left(x: float, y: float) -> str:
    return f'<path class="cf-d-arrow" d="M{x + 7:.0f} {y - 5:.0f} L{x + 7:.0f} {y + 5:.0f} L{x:.0f} {y:.0f} Z"/>'


def _pill(x: float, y: float) -> str:
    """An End: where the run stops."""
    return (
        f'<rect class="cf-d-end" x="{x:.0f}" y="{y:.0f}" rx="15" width="80" '
        f'height="{END_HEIGHT}"/>' + _text(x + 40, y + 19, "End", "cf-d-title", "middle")
    )


def _tree_summary(index: int, step: Mapping[str, Any], tree: BranchTree | None) -> str:
    """A step for the diagram's text alternative; a wait with where each branch goes."""
    text = f"{index + 1}. {step_title(step)}"
    wait = tree.waits.get(index) if tree is not None else None
    if wait is None:
        return text
    goes = [
        f"{', '.join(branch_name(label) for label in segment.labels)} → step {segment.start + 1}"
        for segment in wait.segments
    ]
    if wait.ends:
        goes.append(f"{', '.join(branch_name(label) for label in wait.ends)} → end")
    return f"{text} ({'; '.join(goes)})"


def workflow_diagram(
    *,
    trigger: str,
    filter: Any,
    steps: Sequence[Mapping[str, Any]],
    problems: Collection[int] = (),
    ends_when: str = "",
    events: Mapping[str, EventType] = EVENT_TYPES,
) -> str:
    """The SVG of a workflow definition; `problems` are indexes of steps to mark as wrong;
    `ends_when` (`ending_summary`) is written under it; `events`: the clinic's event types
    (workflows.custom_events.event_types), for the trigger's description."""
    rows, tree = steps_tree(steps)
    waits = tree.waits if tree is not None else {}
    x_of = [BOX_X + INDENT * row.depth for row in rows]
    # Top to bottom: each step's box; after a wait whose branches end the run, their End;
    # after the last step of a branch, the End it leads to.
    top_of: list[float] = []
    ends_of: dict[int, float] = {}  # a wait's "these branches end the run" End, by index
    leaf_end: dict[int, float] = {}  # the End after the last step of a branch, by index
    y: float = TRIGGER_HEIGHT + GAP
    for index, row in enumerate(rows):
        top_of.append(y)
        y += BOX_HEIGHT + GAP
        if index in waits and waits[index].ends:
            ends_of[index] = y
            y += END_HEIGHT + GAP
        if row.ends:
            leaf_end[index] = y - GAP + PILL_GAP
            y += END_HEIGHT + PILL_GAP
    end_top = y
    conditions = [i for i, step in enumerate(steps) if step.get("type") == "condition"]
    right = max([x + BOX_WIDTH for x in x_of], default=BOX_X + BOX_WIDTH)
    width = right + 24 + LANE_STEP * max(len(conditions), 1) + 84
    # The End below the steps, unless every way ends at a branch's own End.
    last = len(steps) - 1
    flat_end = last < 0 or (rows[last].depth == 0 and last not in waits)
    bottom_end = flat_end or any(_else_target(steps[i]) is None for i in conditions)
    height = end_top + (END_HEIGHT if bottom_end else 0) + 8
    ending_lines = _wrap(ends_when, LINE_CHARS + 6, lines=4) if ends_when else []
    ending_top = height + 6
    height += 15 * len(ending_lines) + (10 if ending_lines else 0)
    centre = BOX_X + BOX_WIDTH / 2
    parts: list[str] = []

    event = events.get(trigger)
    parts.append(
        f'<rect class="cf-d-box cf-d-trigger" x="{BOX_X}" y="2" rx="8" '
        f'width="{BOX_WIDTH}" height="{TRIGGER_HEIGHT - 4}"/>'
    )
    parts.append(
        _text(
            BOX_X + 14,
            22,
            _short(f"When {trigger}" if trigger else "Choose a trigger", LINE_CHARS + 6),
            "cf-d-title",
        )
    )
    filter_text = (
        f"only if {filter_summary(filter) or _text_of(filter)}"
        if filter
        else (event.description if event else "no trigger chosen yet")
    )
    for line_number, line in enumerate(_wrap(filter_text, LINE_CHARS + 6)):
        parts.append(_text(BOX_X + 14, 40 + 15 * line_number, line, "cf-d-quiet"))
    parts.append(_arrow_down(centre, TRIGGER_HEIGHT - 2, TRIGGER_HEIGHT + GAP))

    for index, step in enumerate(steps):
        top, x = top_of[index], x_of[index]
        problem = " cf-d-problem" if index in problems else ""
        parts.append(
            f'<g class="cf-d-step" data-step="{index + 1}">'
            f'<rect class="cf-d-box{problem}" x="{x}" y="{top}" rx="6" '
            f'width="{BOX_WIDTH}" height="{BOX_HEIGHT}"/>'
            f'<circle class="cf-d-num" cx="{x + 20}" cy="{top + BOX_HEIGHT / 2:.0f}" r="12"/>'
            + _text(x + 20, top + BOX_HEIGHT / 2 + 4, str(index + 1), "cf-d-num-text", "middle")
            + _text(
                x + 42,
                top + 21,
                _short(("⚠ " if problem else "") + step_title(step)),
                "cf-d-title",
            )
            + "".join(
                _text(x + 42, top + 40 + 15 * n, line, "cf-d-quiet")
                for n, line in enumerate(_wrap(step_detail(step)))
            )
            + "</g>"
        )
        bottom, middle = top + BOX_HEIGHT, x + BOX_WIDTH / 2
        if index in waits:
            parts.append(_wait_edges(index, waits[index], x, bottom, top_of, ends_of))
        elif index in leaf_end:
            parts.append(_arrow_down(middle, bottom, leaf_end[index]))
            parts.append(_pill(middle - 40, leaf_end[index]))
        else:
            parts.append(_arrow_down(middle, bottom, bottom + GAP))
        if step.get("type") == "condition":
            parts.append(_text(middle + 8, bottom + GAP / 2 + 4, "yes", "cf-d-label"))

    for lane, index in enumerate(conditions):
        step = steps[index]
        target = _else_target(step)
        if target is not None and not index < target < len(steps):
            target = None  # invalid targets are flagged by validation; draw them to the end
        y1 = top_of[index] + BOX_HEIGHT / 2
        y2 = top_of[target] + BOX_HEIGHT / 2 if target is not None else end_top + END_HEIGHT / 2
        x_lane = right + 24 + LANE_STEP * lane
        end_x = x_of[target] + BOX_WIDTH if target is not None else centre + 40
        parts.append(
            f'<path class="cf-d-line" d="M{x_of[index] + BOX_WIDTH} {y1:.0f} H{x_lane} '
            f'V{y2:.0f} H{end_x + 7:.0f}"/>'
        )
        parts.append(_arrow_left(end_x, y2))
        label = f"no → step {target + 1}" if target is not None else "no → end"
        parts.append(_text(x_lane + 6, y1 - 6, label, "cf-d-label cf-d-no"))

    if bottom_end:
        parts.append(_pill(centre - 40, end_top))
    for line_number, line in enumerate(ending_lines):
        parts.append(_text(BOX_X, ending_top + 15 * line_number, line, "cf-d-quiet"))

    numbered = ", ".join(_tree_summary(i, s, tree) for i, s in enumerate(steps)) or "no steps"
    ending = f"; {ends_when}" if ends_when else ""
    title = escape(f"Workflow diagram: when {trigger or '(no trigger)'}: {numbered}{ending}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="cf-diagram-svg" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">'
        f"<title>{title}</title><style>{STYLE}</style>{''.join(parts)}</svg>"
    )


def _wait_edges(
    index: int,
    wait: Wait,
    x: float,
    bottom: float,
    top_of: Sequence[float],
    ends_of: Mapping[int, float],
) -> str:
    """A wait's branches: a spine down its left side with an edge to the first step of each
    branch (and to the End of those that end the run), labelled with the branches' names."""
    spine = x + 16
    child = x + INDENT
    edges: list[tuple[float, tuple[str, ...], str]] = []  # (top, labels, the End or not)
    if index in ends_of:
        edges.append((ends_of[index], wait.ends, "end"))
    edges += [(top_of[segment.start], segment.labels, "") for segment in wait.segments]
    parts = []
    last = max(top for top, _, _ in edges) + 14 if edges else bottom
    parts.append(f'<path class="cf-d-line" d="M{spine:.0f} {bottom:.0f} V{last:.0f}"/>')
    for top, labels, kind in edges:
        y = top + 14
        parts.append(f'<path class="cf-d-line" d="M{spine:.0f} {y:.0f} H{child - 6:.0f}"/>')
        parts.append(
            f'<path class="cf-d-arrow" d="M{child - 7:.0f} {y - 5:.0f} L{child - 7:.0f} '
            f'{y + 5:.0f} L{child:.0f} {y:.0f} Z"/>'
        )
        names = ", ".join(branch_name(label) for label in labels)
        parts.append(
            _text(child + 4, top - 6, _short(names, LINE_CHARS + 4), "cf-d-label cf-d-branch")
        )
        if kind == "end":
            parts.append(_pill(child, top))
    return "".join(parts)


def ending_summary(*, goal_event: str, exits: Sequence[Mapping[str, Any]]) -> str:
    """How a workflow's runs end early, in a line: "Ends early when appointment.confirmed
    (the goal) or appointment.cancelled (exit)"; "" with no goal and no exits."""
    parts = [f"{goal_event} (the goal)"] if goal_event else []
    parts += [f"{item.get('event')} (exit)" for item in exits if item.get("event")]
    return f"Ends early when {' or '.join(parts)}" if parts else ""
