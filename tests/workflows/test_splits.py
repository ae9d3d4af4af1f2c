"""The A/B split step as pure functions: assignment, its stability, validation, and the tree
its branches make (shared with the wait-for-reply step)."""

from collections import Counter
from typing import Any

import pytest

from workflows.replies import ReplyConfigError, branch_segments
from workflows.splits import split_bucket, split_choose, split_parameters_validate, split_seed
from workflows.steps import StepConfigError, step_validate


def _params(*shares: tuple[str, int, Any]) -> dict[str, Any]:
    return {"branches": [{"label": name, "percent": p, "goto": g} for name, p, g in shares]}


@pytest.mark.parametrize(
    "shares",
    [
        (("A", 50, "next"), ("B", 50, "end")),
        (("A", 10, "next"), ("B", 30, "next"), ("C", 60, "end")),
        (
            ("A", 20, "next"),
            ("B", 20, "next"),
            ("C", 20, "next"),
            ("D", 20, "next"),
            ("E", 20, "end"),
        ),
        (("Control", 90, "next"), ("Test", 10, "end")),
    ],
)
def test_ten_thousand_patients_fall_into_branches_within_two_points_of_the_percents(
    shares: tuple[tuple[str, int, Any], ...],
) -> None:
    params = _params(*shares)
    counts = Counter(
        split_choose(params, seed="wf-seed", key=f"patient-{n}").label for n in range(10_000)
    )
    for label, percent, _ in shares:
        assert abs(counts[label] / 100 - percent) <= 2, (label, counts)


def test_a_zero_percent_branch_gets_nobody() -> None:
    params = _params(("A", 0, "next"), ("B", 100, "end"))
    assert {split_choose(params, seed="s", key=str(n)).label for n in range(500)} == {"B"}


def test_the_same_patient_always_takes_the_same_branch_and_another_seed_reshuffles() -> None:
    params = _params(("A", 50, "next"), ("B", 50, "end"))
    first = [split_choose(params, seed="one", key=f"p{n}").label for n in range(200)]
    again = [split_choose(params, seed="one", key=f"p{n}").label for n in range(200)]
    other = [split_choose(params, seed="two", key=f"p{n}").label for n in range(200)]
    assert first == again
    # Independent hashes: about half the patients change branch, never none of them.
    changed = sum(a != b for a, b in zip(first, other, strict=True))
    assert 60 < changed < 140


def test_the_bucket_is_sha256_of_seed_and_key_and_explained() -> None:
    import hashlib

    expected = int(hashlib.sha256(b"s:k").hexdigest(), 16) % 100
    assert split_bucket("s", "k") == expected
    choice = split_choose(_params(("A", 37, "next"), ("B", 63, 4)), seed="s", key="k")
    assert choice.bucket == expected
    if expected < 37:
        assert (choice.label, choice.low, choice.high, choice.goto) == ("A", 0, 36, "next")
    else:
        assert (choice.label, choice.low, choice.high, choice.goto) == ("B", 37, 99, 4)
    assert choice.explanation() == (
        f"bucket {expected} of 100 → {choice.label} ({choice.low}–{choice.high})"
    )


def test_the_seed_defaults_to_the_given_workflow_id() -> None:
    assert split_seed({}, default="uuid") == "uuid"
    assert split_seed({"seed": "  "}, default="uuid") == "uuid"
    assert split_seed({"seed": "spring"}, default="uuid") == "spring"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "at least 2 branches"),
        (_params(("A", 100, "next")), "at least 2 branches"),
        (_params(*[(c, 20, "next") for c in "ABCDEF"]), "at most 5 branches"),
        (_params(("A", 50, "next"), ("", 50, "next")), "branch 2 needs a label"),
        (_params(("A", 50, "next"), ("a", 50, "next")), "two branches are called “a”"),
        (_params(("A", 50, "next"), ("B", 40, "next")), "add up to 90: they must add up to 100"),
        (_params(("A", 50.5, "next"), ("B", 49.5, "next")), "whole number from 0 to 100"),
        (_params(("A", -10, "next"), ("B", 110, "next")), "whole number from 0 to 100"),
        (_params(("A", True, "next"), ("B", 99, "next")), "whole number from 0 to 100"),
        (_params(("A", "fifty", "next"), ("B", 50, "next")), "whole number from 0 to 100"),
        (_params(("A", 50, "next"), ("B", 50, 1)), "branches only go forward"),
        (_params(("A", 50, "next"), ("B", 50, "later")), 'go to "next", "end" or a later step'),
        (_params(("A", 50, "next"), ("otherwise", 50, "end")), "kept for a wait's built-in"),
        ({**_params(("A", 50, "next"), ("B", 50, "end")), "seed": 7}, "the seed must be text"),
    ],
)
def test_invalid_splits_are_refused_with_a_clear_reason(
    params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ReplyConfigError, match=message):
        split_parameters_validate(params, number=2, total=4)


def test_a_valid_split_passes_step_validation_and_errors_name_the_field() -> None:
    step = {"type": "split", "parameters": _params(("A", 50, "next"), ("B", 50, 4))}
    step_validate(step, number=2, total=4)
    step["parameters"]["seed"] = "x" * 201
    with pytest.raises(StepConfigError) as error:
        step_validate(step, number=2, total=4)
    assert error.value.field == "seed"


def test_a_splits_branches_make_the_same_tree_as_a_waits() -> None:
    sms = {"type": "adapter", "parameters": {}}
    steps = [
        {"type": "split", "parameters": _params(("A", 50, "next"), ("B", 50, 4))},
        sms,
        sms,
        sms,
    ]
    tree = branch_segments(steps)
    (segment_a, segment_b) = tree.waits[0].segments
    assert (segment_a.labels, segment_a.start, segment_a.end) == (("A",), 1, 3)
    assert (segment_b.labels, segment_b.start, segment_b.end) == (("B",), 3, 4)
    assert tree.waits[0].ends == ()  # a split has no built-in "no reply" branch


def test_a_step_no_branch_of_a_split_reaches_is_reported() -> None:
    sms = {"type": "adapter", "parameters": {}}
    steps = [{"type": "split", "parameters": _params(("A", 50, 3), ("B", 50, "end"))}, sms, sms]
    with pytest.raises(ReplyConfigError, match="no branch goes to step 2"):
        branch_segments(steps)
