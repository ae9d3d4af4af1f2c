"""A workflow as a picture: a server-rendered SVG of numbered boxes, top to bottom.

Conditions continue down on "yes" and draw their "no" branch to the step they jump to, or to
the end. Every piece of text comes from the admin's own input, so all of it is escaped.
"""

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from django.utils.html import escape

from workflows.adapters import REGISTRY
from workflows.catalogue import EVENT_TYPES
from workflows.filters import filter_summary

BOX_X = 24
BOX_WIDTH = 270
BOX_HEIGHT = 68
TRIGGER_HEIGHT = 70
GAP = 34
END_HEIGHT = 30
LANE_STEP = 18
LINE_CHARS = 34

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
    if kind == "adapter":
        if "to" in params or "message" in params:
            to = _text_of(params.get("to")) or "(no recipient yet)"
            return f"To {to}: “{_text_of(params.get('message'))}”"
        return ", ".join(f"{k}: {_text_of(v)}" for k, v in params.items() if _text_of(v))
    return ""


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


def workflow_diagram(
    *,
    trigger: str,
    filter: Any,
    steps: Sequence[Mapping[str, Any]],
    problems: Collection[int] = (),
) -> str:
    """The SVG of a workflow definition; `problems` are indexes of steps to mark as wrong."""
    centre = BOX_X + BOX_WIDTH / 2
    right = BOX_X + BOX_WIDTH
    top_of = [TRIGGER_HEIGHT + GAP + i * (BOX_HEIGHT + GAP) for i in range(len(steps))]
    end_top = TRIGGER_HEIGHT + GAP + len(steps) * (BOX_HEIGHT + GAP)
    conditions = [i for i, step in enumerate(steps) if step.get("type") == "condition"]
    width = right + 24 + LANE_STEP * max(len(conditions), 1) + 84
    height = end_top + END_HEIGHT + 8
    parts: list[str] = []

    event = EVENT_TYPES.get(trigger)
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
        top = top_of[index]
        problem = " cf-d-problem" if index in problems else ""
        parts.append(
            f'<g class="cf-d-step" data-step="{index + 1}">'
            f'<rect class="cf-d-box{problem}" x="{BOX_X}" y="{top}" rx="6" '
            f'width="{BOX_WIDTH}" height="{BOX_HEIGHT}"/>'
            f'<circle class="cf-d-num" cx="{BOX_X + 20}" cy="{top + BOX_HEIGHT / 2:.0f}" r="12"/>'
            + _text(BOX_X + 20, top + BOX_HEIGHT / 2 + 4, str(index + 1), "cf-d-num-text", "middle")
            + _text(
                BOX_X + 42,
                top + 21,
                _short(("⚠ " if problem else "") + step_title(step)),
                "cf-d-title",
            )
            + "".join(
                _text(BOX_X + 42, top + 40 + 15 * n, line, "cf-d-quiet")
                for n, line in enumerate(_wrap(step_detail(step)))
            )
            + "</g>"
        )
        bottom = top + BOX_HEIGHT
        parts.append(_arrow_down(centre, bottom, bottom + GAP))
        if step.get("type") == "condition":
            parts.append(_text(centre + 8, bottom + GAP / 2 + 4, "yes", "cf-d-label"))

    for lane, index in enumerate(conditions):
        step = steps[index]
        target = _else_target(step)
        if target is not None and not index < target < len(steps):
            target = None  # invalid targets are flagged by validation; draw them to the end
        y1 = top_of[index] + BOX_HEIGHT / 2
        y2 = top_of[target] + BOX_HEIGHT / 2 if target is not None else end_top + END_HEIGHT / 2
        x_lane = right + 24 + LANE_STEP * lane
        end_x = right if target is not None else centre + 40
        parts.append(
            f'<path class="cf-d-line" d="M{right} {y1:.0f} H{x_lane} V{y2:.0f} H{end_x + 7:.0f}"/>'
        )
        parts.append(_arrow_left(end_x, y2))
        label = f"no → step {target + 1}" if target is not None else "no → end"
        parts.append(_text(x_lane + 6, y1 - 6, label, "cf-d-label cf-d-no"))

    parts.append(
        f'<rect class="cf-d-end" x="{centre - 40:.0f}" y="{end_top}" rx="15" width="80" '
        f'height="{END_HEIGHT}"/>'
    )
    parts.append(_text(centre, end_top + 19, "End", "cf-d-title", "middle"))

    numbered = ", ".join(f"{i + 1}. {step_title(s)}" for i, s in enumerate(steps)) or "no steps"
    title = escape(f"Workflow diagram: when {trigger or '(no trigger)'}: {numbered}")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="cf-diagram-svg" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">'
        f"<title>{title}</title><style>{STYLE}</style>{''.join(parts)}</svg>"
    )
