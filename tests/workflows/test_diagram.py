"""The workflow diagram: numbered boxes, condition branches, delays, and escaped text."""

import re
import xml.etree.ElementTree as ET
from typing import Any

from workflows.diagram import step_detail, step_title, workflow_diagram

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
        "to {{customer.phone}}: “Hi",
        "{{customer.firstName}}”",
    ]
    assert texts[7:10] == ["2", "Delay", "wait 3 days"]
    assert texts[-1] == "End"
    assert svg.count('class="cf-d-step"') == 2


def test_a_filter_is_shown_under_the_trigger() -> None:
    texts = _texts(
        workflow_diagram(trigger="order.shipped", filter={"order.coupon": "X"}, steps=[])
    )
    assert texts[1] == 'only if {"order.coupon": "X"}'


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
    assert 'if {"order.totalAmount": 50}' in texts


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

    assert detail(kind="duration", seconds="90") == "wait 90 seconds"
    assert detail(kind="duration", seconds="3600") == "wait 1 hour"
    assert detail(kind="until_time", time="09:00") == "wait until 09:00, patient's time"
    assert (
        detail(kind="until_field", path="appointment.startsAt", offset_seconds="-86400")
        == "wait until appointment.startsAt − 1 day"
    )
    assert (
        detail(kind="until_field", path="appointment.startsAt") == "wait until appointment.startsAt"
    )


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
