"""The workflow diagram: numbered boxes, condition branches, delays in days, hours or minutes,
escaped text, and nothing ever shown as "None"."""

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from workflows.adapters import REGISTRY
from workflows.diagram import (
    duration_text,
    step_detail,
    step_title,
    steps_tree,
    workflow_diagram,
)
from workflows.steps import STEP_TYPES

SVG = "{http://www.w3.org/2000/svg}"

SMS = {
    "type": "adapter",
    "adapter": "twilio",
    "function": "sendSMS",
    "parameters": {"message": "Hi {{customer.firstName}}", "to": "{{customer.phone}}"},
}


def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)  # noqa: S314 — our own output; also proves it is well-formed XML
    return [node.text or "" for node in root.iter(f"{SVG}text")]


def _condition(**parameters: Any) -> dict[str, Any]:
    return {"type": "condition", "parameters": {"query": {"order.totalAmount": 50}, **parameters}}


def test_steps_are_numbered_boxes_between_the_trigger_and_the_end() -> None:
    svg = workflow_diagram(
        trigger="order.shipped",
        filter={},
        steps=[SMS, {"type": "delay", "parameters": {"kind": "duration", "seconds": "259200"}}],
    )
    texts = _texts(svg)
    assert texts[:3] == [
        "When order.shipped",
        "The order was handed to the carrier",
        "(tracking number available).",
    ]
    assert texts[3:7] == [
        "1",
        "Twilio → Send SMS",
        "To {{customer.phone}}: “Hi",
        "{{customer.firstName}}”",
    ]
    assert texts[7:10] == ["2", "Delay", "Wait 3 days"]
    assert texts[-1] == "End"
    assert svg.count('class="cf-d-step"') == 2


def test_a_filter_is_shown_under_the_trigger() -> None:
    texts = _texts(
        workflow_diagram(trigger="order.shipped", filter={"order.coupon": "X"}, steps=[])
    )
    assert texts[1] == "only if order.coupon is “X”"


def test_a_query_the_builder_cannot_write_is_shown_as_json() -> None:
    texts = _texts(
        workflow_diagram(
            trigger="order.shipped", filter={"order.lineItems": {"$size": 2}}, steps=[]
        )
    )
    assert texts[1:3] == ['only if {"order.lineItems": {"$size":', "2}}"]


def test_conditions_branch_yes_down_and_no_to_their_target_or_the_end() -> None:
    svg = workflow_diagram(
        trigger="order.shipped",
        filter={},
        steps=[_condition(**{"else": "3"}), SMS, _condition(), SMS],
    )
    texts = _texts(svg)
    assert texts.count("yes") == 2
    assert "no → step 3" in texts
    assert "no → end" in texts
    assert "If order.totalAmount is 50" in texts


def test_a_target_that_is_not_a_later_step_is_drawn_to_the_end() -> None:
    texts = _texts(
        workflow_diagram(
            trigger="order.shipped", filter={}, steps=[_condition(**{"else": "9"}), SMS]
        )
    )
    assert "no → end" in texts and "no → step 9" not in texts


def test_delays_say_how_long_or_until_when() -> None:
    def detail(**params: Any) -> str:
        return step_detail({"type": "delay", "parameters": params})

    assert detail(kind="duration", seconds="259200") == "Wait 3 days"
    assert detail(kind="duration", seconds="90") == "Wait 90 seconds"
    assert detail(kind="duration", seconds="5400") == "Wait 90 minutes"
    assert detail(kind="duration", seconds="3600") == "Wait 1 hour"
    assert detail(kind="until_time", time="09:00") == "Wait until 09:00, patient's time"
    assert (
        detail(kind="until_field", path="appointment.startsAt", offset_seconds="-86400")
        == "Wait until appointment.startsAt − 1 day"
    )
    assert (
        detail(kind="until_field", path="appointment.startsAt", offset_seconds="7200")
        == "Wait until appointment.startsAt + 2 hours"
    )
    assert (
        detail(kind="until_field", path="appointment.startsAt", offset_seconds="0")
        == "Wait until appointment.startsAt"
    )
    assert (
        detail(kind="until_field", path="appointment.startsAt") == "Wait until appointment.startsAt"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (60, "1 minute"),
        (7200, "2 hours"),
        (86400 * 7, "7 days"),
        (86400 + 3600, "25 hours"),
        (61, "61 seconds"),
        ("-86400", "-1 day"),
        (None, ""),
        ("", ""),
        ("abc", "abc seconds"),
    ],
)
def test_durations_in_the_largest_unit_that_divides_them(seconds: Any, text: str) -> None:
    assert duration_text(seconds) == text


def test_all_text_is_escaped() -> None:
    hostile = '<script>alert("x")</script>'
    svg = workflow_diagram(
        trigger=hostile,
        filter={"a": hostile},
        steps=[{**SMS, "parameters": {"to": hostile, "message": "&"}}, _condition(context=hostile)],
    )
    assert "<script>" not in svg
    assert "&lt;script&gt;" in svg
    texts = _texts(svg)  # parses: nothing broke out of its element
    assert texts[0].startswith("When <script>")


def test_problem_steps_are_marked() -> None:
    svg = workflow_diagram(trigger="order.shipped", filter={}, steps=[SMS, SMS], problems={1})
    marked = re.findall(r'data-step="(\d)"><rect class="cf-d-box cf-d-problem"', svg)
    assert marked == ["2"]
    assert "⚠ Twilio → Send SMS" in _texts(svg)


def test_an_empty_workflow_still_draws() -> None:
    texts = _texts(workflow_diagram(trigger="", filter={}, steps=[]))
    assert texts == ["Choose a trigger", "no trigger chosen yet", "End"]


def test_titles() -> None:
    assert step_title({"type": "adapter", "adapter": "twilio", "function": ""}) == "Twilio"
    assert step_title({"type": "adapter"}) == "Adapter action"
    assert step_title({"type": "bogus"}) == "Unknown step type 'bogus'"
    assert step_title({"type": None}) == "Step without a type"
    assert step_title({}) == "Step without a type"


def _steps_with_missing_parameters() -> list[dict[str, Any]]:
    """Every step type (every adapter function, every delay kind) with each parameter
    missing, None, blank, or all of them at once."""
    shapes: list[dict[str, Any]] = []
    for step_type in STEP_TYPES.values():
        if step_type.name == "adapter":
            for adapter in REGISTRY.values():
                for function in adapter.functions.values():
                    names = [p.name for p in function.parameters]
                    base = {"type": "adapter", "adapter": adapter.name, "function": function.name}
                    shapes += [{**base, "parameters": params} for params in _gaps(names)]
                shapes += [{"type": "adapter", "adapter": adapter.name, "function": None}]
            continue
        names = [p.name for p in step_type.parameters]
        kinds: list[str | None] = [value for value, _ in step_type.parameters[0].choices]
        for kind in kinds if step_type.name == "delay" else [None]:
            for params in _gaps(names):
                if kind is not None:
                    params = {**params, "kind": kind}
                shapes.append({"type": step_type.name, "parameters": params})
    shapes += [{"type": None}, {}, {"type": "delay", "parameters": None}]
    return shapes


def _gaps(names: list[str]) -> list[dict[str, Any]]:
    filled = dict.fromkeys(names, "x")
    out: list[dict[str, Any]] = [{}, dict.fromkeys(names), dict.fromkeys(names, "")]
    for name in names:
        out += [{**filled, name: None}, {**filled, name: ""}]
        out.append({k: v for k, v in filled.items() if k != name})
    return out


def test_no_step_ever_shows_none_whatever_its_parameters() -> None:
    steps = _steps_with_missing_parameters()
    assert len(steps) > 80  # every type and kind, each parameter missing in three ways
    for step in steps:
        title, detail = step_title(step), step_detail(step)
        assert "None" not in title + detail and "null" not in detail, (step, title, detail)
        texts = _texts(workflow_diagram(trigger="order.shipped", filter=None, steps=[step]))
        assert not any("None" in text or "null" in text for text in texts), (step, texts)


def test_missing_parameters_are_said_to_be_missing() -> None:
    assert step_detail({"type": "delay", "parameters": {"kind": "duration"}}) == (
        "Wait (how long is not set yet)"
    )
    assert step_detail({"type": "condition", "parameters": {"query": None}}) == (
        "If (no condition yet)"
    )
    assert (
        step_detail(
            {
                "type": "adapter",
                "adapter": "twilio",
                "function": "sendSMS",
                "parameters": {"message": "Hi", "to": None},
            }
        )
        == "To (no recipient yet): “Hi”"
    )


def test_long_text_wraps_onto_two_lines_then_is_cut() -> None:
    message = "word " * 40
    texts = _texts(
        workflow_diagram(
            trigger="order.shipped", filter={}, steps=[{**SMS, "parameters": {"message": message}}]
        )
    )
    detail = texts[texts.index("Twilio → Send SMS") + 1 : texts.index("End")]
    assert len(detail) == 2
    assert all(len(line) <= 34 for line in detail)
    assert detail[1].endswith("…")


# --- a wait for a reply: a tree -------------------------------------------------------------


def _wait(branches: list[dict[str, Any]], **parameters: Any) -> dict[str, Any]:
    return {
        "type": "reply",
        "parameters": {"kind": "duration", "seconds": "86400", "branches": branches, **parameters},
    }


def _branch(label: str, goto: Any) -> dict[str, Any]:
    return {"label": label, "match": "keywords", "keywords": [label[0]], "goto": goto}


# 1 asks, 2 waits: Confirm → 3, Cancel → 4, Reschedule → end, anything else and no reply → 5
CONFIRMATION = [
    SMS,
    _wait(
        [_branch("Confirm", "next"), _branch("Cancel", 4), _branch("Reschedule", "end")],
        otherwise={"goto": 5},
        no_reply={"goto": 5},
    ),
    SMS,
    SMS,
    SMS,
]


def _box_x(svg: str) -> dict[int, int]:
    """Each step's box, by number, by how far it is indented."""
    return {
        int(number): int(x)
        for number, x in re.findall(r'data-step="(\d+)"><rect class="cf-d-box[^"]*" x="(\d+)"', svg)
    }


def test_a_waits_branches_are_a_tree_with_labelled_edges() -> None:
    svg = workflow_diagram(trigger="appointment.reminder", filter={}, steps=CONFIRMATION)
    texts = _texts(svg)
    assert texts[7:10] == ["2", "Wait for reply", "Wait up to 1 day for a reply"]
    # the edges, in order: the branch that ends the run first, then each branch's steps
    labels = [
        t for t in texts if t in ("Reschedule", "Confirm", "Cancel", "anything else, no reply")
    ]
    assert labels == ["Reschedule", "Confirm", "Cancel", "anything else, no reply"]
    # the wait's End for Reschedule, and the End each branch's last step leads to
    assert texts.count("End") == 4
    boxes = _box_x(svg)
    assert boxes[1] == boxes[2] and boxes[3] == boxes[4] == boxes[5] > boxes[2]
    title = ET.fromstring(svg).find(f"{SVG}title")  # noqa: S314 — our own output
    assert title is not None and title.text == (
        "Workflow diagram: when appointment.reminder: 1. Twilio → Send SMS, 2. Wait for reply "
        "(Confirm → step 3; Cancel → step 4; anything else, no reply → step 5; Reschedule → "
        "end), 3. Twilio → Send SMS, 4. Twilio → Send SMS, 5. Twilio → Send SMS"
    )


def test_a_wait_inside_a_branch_nests_deeper() -> None:
    inner = _wait([_branch("Yes", "next")], otherwise={"goto": "end"}, no_reply={"goto": 5})
    steps = [SMS, _wait([_branch("Confirm", "next")], no_reply={"goto": 6}), SMS, inner, SMS, SMS]
    rows, tree = steps_tree(steps)
    assert tree is not None
    assert [row.depth for row in rows] == [0, 0, 1, 1, 2, 1]
    assert [row.wait for row in rows] == [None, None, 2, 2, 4, 2]
    assert rows[4].branches == ("Yes", "no reply") and rows[5].branches == ("no reply",)
    assert [row.ends for row in rows] == [False, False, False, False, True, True]
    boxes = _box_x(workflow_diagram(trigger="appointment.reminder", filter={}, steps=steps))
    assert boxes[1] < boxes[3] < boxes[5]


def test_branches_that_do_not_make_a_tree_are_drawn_in_order() -> None:
    # nothing goes to step 3: validation says so; the diagram still draws every step
    steps = [SMS, _wait([_branch("Cancel", 4)]), SMS, SMS]
    rows, tree = steps_tree(steps)
    assert tree is None and {row.depth for row in rows} == {0}
    svg = workflow_diagram(trigger="appointment.reminder", filter={}, steps=steps, problems={1})
    assert len(set(_box_x(svg).values())) == 1
    assert "Cancel" not in _texts(svg)


def test_branch_labels_are_escaped() -> None:
    hostile = '<img src=x onerror="alert(1)">'
    steps = [SMS, _wait([_branch(hostile, "next")]), SMS]
    svg = workflow_diagram(trigger="appointment.reminder", filter={}, steps=steps)
    assert "<img" not in svg
    assert hostile in _texts(svg)


def test_a_waits_detail_says_how_long_it_waits() -> None:
    def detail(**params: Any) -> str:
        return step_detail({"type": "reply", "parameters": params})

    assert detail(kind="duration", seconds="172800") == "Wait up to 2 days for a reply"
    assert detail(kind="duration") == "Wait for a reply (how long is not set yet)"
    assert detail(kind="until_time", time="09:00") == "Wait for a reply until 09:00, patient's time"
    assert (
        detail(kind="until_field", path="appointment.startsAt", offset_seconds="-3600")
        == "Wait for a reply until appointment.startsAt − 1 hour"
    )
    assert step_title({"type": "reply"}) == "Wait for reply"
