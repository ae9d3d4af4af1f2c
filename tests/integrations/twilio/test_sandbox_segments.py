"""The sandbox's own model of Twilio's segment counting (integrations.twilio.sandbox_segments):
held to Twilio's segment calculator, independent of careflow's counter, and in agreement with
it on generated bodies, so that a counting bug in either shows up as a disagreement."""

import ast
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import integrations.twilio.sandbox as sandbox_module
import integrations.twilio.sandbox_segments as model_module
from integrations.sms import segment_info
from integrations.twilio.sandbox_segments import twilio_measure
from tests.integrations.segment_cases import (
    EMOJI,
    EURO,
    FAMILY,
    FLAG,
    QUOTE,
    THUMBS,
    calculator_cases,
)


@calculator_cases
def test_sandbox_counts_as_twilios_segment_calculator(
    body: str, encoding: str, segments: int
) -> None:
    assert twilio_measure(body) == (encoding, segments)


@pytest.mark.parametrize("module", [sandbox_module, model_module], ids=lambda m: m.__name__)
def test_sandbox_does_not_use_careflows_counter(module: object) -> None:
    """The sandbox checks careflow: sharing careflow's counter would make a counting bug
    invisible to every test that runs against it."""
    tree = ast.parse(Path(str(getattr(module, "__file__", ""))).read_text(encoding="utf-8"))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "integrations.sms" not in imported
    assert not any(name.startswith("integrations.sms.") for name in imported)


# Pieces that land on the edges: one and two septets, ESC, UTF-16 units, surrogate pairs,
# multi-code-point graphemes, CR LF; repeated runs of them reach the part boundaries.
_PIECES = [
    "a",
    "Z",
    " ",
    "\n",
    "\r\n",
    "ñ",
    "Δ",
    EURO,
    "{",
    "\f",
    "\x1b",
    QUOTE,
    "Í",
    EMOJI,
    FAMILY,
    THUMBS,
    FLAG,
    "e\u0301",
    "\u0301",
    "\u200d",
]
_runs = st.tuples(st.sampled_from(_PIECES), st.integers(min_value=1, max_value=160)).map(
    lambda run: run[0] * run[1]
)
_bodies = st.lists(
    st.one_of(_runs, st.sampled_from(_PIECES), st.text(max_size=20)), max_size=12
).map("".join)


@settings(max_examples=400, deadline=None)
@given(_bodies)
@example("a" * 152 + EURO + "a" * 152)
@example(EMOJI * 67)
@example(QUOTE * 62 + FAMILY + QUOTE * 61)
def test_careflow_and_the_sandbox_agree(body: str) -> None:
    info = segment_info(body)
    assert (info.encoding, info.segments) == twilio_measure(body)
