"""The Wait-for-reply step's pure parts: which branch a reply takes, what a wait's
parameters may be, and the tree the branches make of the steps after a wait."""

from typing import Any

import pytest

from workflows.replies import (
    MAX_PATTERN_LENGTH,
    BranchChoice,
    ReplyConfigError,
    Segment,
    branch_choose,
    branch_segments,
    condition_goto_problem,
    goto_index,
    question_steps,
    reask_text,
    reply_normalize,
    reply_parameters_validate,
)
from workflows.steps import STEP_TYPES, StepConfigError, step_validate

CONFIRM = {"label": "Confirm", "match": "keywords", "keywords": ["c", "confirm", "yes"]}
CANCEL = {"label": "Cancel", "match": "keywords", "keywords": ["x", "cancel appointment"]}
LOW = {"label": "Low score", "match": "number", "min": 1, "max": 2, "goto": 5}
HIGH = {"label": "High score", "match": "number", "min": "3", "goto": "end"}
CODE = {"label": "Code", "match": "pattern", "pattern": "^[0-9]{6}$", "goto": "end"}
PARAMS: dict[str, Any] = {
    "kind": "duration",
    "seconds": "86400",
    "branches": [
        {**CONFIRM, "goto": "next"},
        {**CANCEL, "goto": 4},
        LOW,
        HIGH,
        CODE,
    ],
    "otherwise": {"goto": 6, "reask": "Sorry, please reply C or X."},
    "no_reply": {"goto": 7},
}


@pytest.mark.parametrize(
    ("reply", "label"),
    [
        ("C", "Confirm"),
        ("c", "Confirm"),
        ("C.", "Confirm"),
        ("  c  ", "Confirm"),
        ("Confirm!", "Confirm"),
        ("CONFIRM", "Confirm"),
        ("yes 👍", "Confirm"),
        ("Yes, see you then", "Confirm"),  # the first word
        ("ＣＯＮＦＩＲＭ", "Confirm"),  # full-width
        ("c\u200b", "Confirm"),  # zero-width space
        ("\u00a0C\u00a0", "Confirm"),
        ("X", "Cancel"),
        ("Cancel appointment", "Cancel"),  # a keyword of two words, whole
        ("cancel-appointment", "Cancel"),  # hyphens and spaces inside do not matter
        ("1", "Low score"),
        ("2.", "Low score"),
        (" 2 ", "Low score"),
        ("٢", "Low score"),  # Arabic-Indic two
        ("３", "High score"),  # full-width three
        ("5", "High score"),
        ("123456", "High score"),  # a number first: list order decides
        ("0", "otherwise"),  # below Low's min, and High's min is 3
        ("-1", "otherwise"),
        ("confirmed", "otherwise"),  # not the word, only like it
        ("c'est bon", "otherwise"),  # "c'est" is not "c"
        ("", "otherwise"),
        ("👍", "otherwise"),
        ("?", "otherwise"),
    ],
)
def test_a_reply_takes_the_first_branch_that_matches(reply: str, label: str) -> None:
    assert branch_choose(PARAMS, reply).label == label


def test_pattern_matches_the_whole_stripped_reply_in_any_case() -> None:
    params = {
        "branches": [
            {"label": "Code", "match": "pattern", "pattern": "^ab[0-9]{4}$", "goto": "end"},
        ],
        "otherwise": {"goto": "end"},
    }
    assert branch_choose(params, " AB1234\n").label == "Code"
    assert branch_choose(params, "ab12345").label == "otherwise"
    assert branch_choose(params, "xab1234").label == "otherwise"


def test_the_choice_says_where_the_run_goes() -> None:
    assert branch_choose(PARAMS, "c") == BranchChoice("Confirm", "next")
    assert branch_choose(PARAMS, "x") == BranchChoice("Cancel", 4)
    assert branch_choose(PARAMS, "9") == BranchChoice("High score", "end")
    assert branch_choose(PARAMS, "what?") == BranchChoice("otherwise", 6)
    assert branch_choose(PARAMS, None) == BranchChoice("no_reply", 7)
    assert goto_index("next", wait_index=2) == 3
    assert goto_index("end", wait_index=2) is None
    assert goto_index(6, wait_index=2) == 5


def test_otherwise_and_no_reply_end_the_run_when_not_set() -> None:
    params = {"branches": [{**CONFIRM, "goto": "next"}]}
    assert branch_choose(params, "maybe") == BranchChoice("otherwise", "end")
    assert branch_choose(params, None) == BranchChoice("no_reply", "end")
    assert reask_text(params) == ""
    assert reask_text(PARAMS) == "Sorry, please reply C or X."
    assert reask_text({"otherwise": {"goto": "end", "reask": "   "}}) == ""


# What patients, phones and attackers send. None of it may raise, take long, or match a
# branch it should not.
ATTACKS = [
    "\x00",
    "C\x00",  # the inbound path turns NUL into U+FFFD; the matcher must cope with either
    "C\ufffd",
    "\u202eC",  # right-to-left override
    "\u200fC\u200f",  # right-to-left marks
    "نعم",  # Arabic "yes"
    "כן",  # Hebrew "yes"
    "C" * 10_000,
    "a" * 10_000 + "!",
    "1" * 10_000,  # int() of it would be slow; it is no number a branch takes
    "9" * 10 + "0",
    "(a+)+$",
    ".*",
    "^[0-9]{6}$",
    "{{customer.firstName}}",
    "%s%s%n",
    "' OR 1=1 --",
    "<script>alert(1)</script>",
    "👨\u200d👩\u200d👧" * 500,
    "\U0010ffff",
    "\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace"),
    "C\r\nX",
]


@pytest.mark.parametrize("reply", ATTACKS)
def test_hostile_replies_take_otherwise_or_a_sensible_branch(reply: str) -> None:
    choice = branch_choose(PARAMS, reply)
    assert choice.label in ("otherwise", "Confirm")
    # Only a reply whose first word is C is a confirmation.
    assert (choice.label == "Confirm") == (reply_normalize(reply).split(" ")[0] in ("c", "c\ufffd"))


def test_a_slow_pattern_is_bounded_by_its_length_and_the_reply_still_matches_quickly() -> None:
    params = {
        "branches": [{"label": "A", "match": "pattern", "pattern": "^(a|b)*c$", "goto": "end"}]
    }
    reply_parameters_validate(params, number=2, total=2)
    assert branch_choose(params, "a" * 10_000).label == "otherwise"
    assert branch_choose(params, "ab" * 100 + "c").label == "A"


def test_reply_normalisation_is_the_opt_out_keywords_one() -> None:
    from common.keywords import keyword_normalize

    for text in ("Yes 👍", "C.", "ＳＴＯＰ", "don’t", "\ufeffx"):
        assert reply_normalize(text) == keyword_normalize(text)


def _params(**changes: Any) -> dict[str, Any]:
    return {**PARAMS, **changes}


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        (_params(branches=[]), "branches", "at least one branch"),
        (_params(branches="c"), "branches", "at least one branch"),
        (_params(branches=[{**CONFIRM, "goto": "next"}] * 21), "branches", "at most 20"),
        (_params(branches=["c"]), "branches", "must be an object"),
        (_params(branches=[{**CONFIRM, "label": " "}]), "branches", "needs a label"),
        (_params(branches=[{**CONFIRM, "label": 7}]), "branches", "needs a label"),
        (_params(branches=[{**CONFIRM, "label": "L" * 61}]), "branches", "at most 60"),
        (_params(branches=[{**CONFIRM, "label": "Otherwise"}]), "branches", "built-in"),
        (_params(branches=[CONFIRM, {**CANCEL, "label": "confirm"}]), "branches", "two branches"),
        (_params(branches=[{**CONFIRM, "match": "regex"}]), "branches", "keywords, number"),
        (_params(branches=[{**CONFIRM, "keywords": []}]), "branches", "list the words"),
        (_params(branches=[{**CONFIRM, "keywords": "c"}]), "branches", "list the words"),
        (_params(branches=[{**CONFIRM, "keywords": ["👍"]}]), "branches", "no letters or digits"),
        (_params(branches=[{**CONFIRM, "keywords": ["..."]}]), "branches", "no letters"),
        (_params(branches=[{**CONFIRM, "keywords": [3]}]), "branches", "each word is text"),
        (
            _params(branches=[{**CONFIRM, "keywords": ["c", "Cancel"]}]),
            "branches",
            "“Cancel” is an opt-out keyword: the patient is unsubscribed (CANCEL)",
        ),
        (_params(branches=[{**CONFIRM, "keywords": ["opt-out"]}]), "branches", "(OPT OUT)"),
        (_params(branches=[{**CONFIRM, "keywords": ["Info"]}]), "branches", "a help keyword"),
        (_params(branches=[{**CONFIRM, "keywords": ["c"] * 51}]), "branches", "at most 50"),
        (_params(branches=[{**LOW, "min": "one"}]), "branches", "min must be a whole number"),
        (_params(branches=[{**LOW, "max": True}]), "branches", "max must be a whole number"),
        (_params(branches=[{**LOW, "max": 2.5}]), "branches", "max must be a whole number"),
        (_params(branches=[{**LOW, "max": "1e9"}]), "branches", "max must be a whole number"),
        (_params(branches=[{**LOW, "min": 5, "max": 2}]), "branches", "min (5) is more than"),
        (_params(branches=[{**CODE, "pattern": ""}]), "branches", "enter a pattern"),
        (_params(branches=[{**CODE, "pattern": "(["}]), "branches", "not valid"),
        (
            _params(branches=[{**CODE, "pattern": "a" * (MAX_PATTERN_LENGTH + 1)}]),
            "branches",
            "at most 200",
        ),
        (_params(branches=[{**CONFIRM, "goto": 2}]), "branches", "only go forward"),
        (_params(branches=[{**CONFIRM, "goto": 99}]), "branches", "from 3 to 8"),
        (_params(branches=[{**CONFIRM, "goto": "later"}]), "branches", '"next", "end"'),
        (_params(branches=[{**CONFIRM, "goto": None}]), "branches", '"next", "end"'),
        (_params(otherwise={"goto": 1}), "otherwise", "only go forward"),
        (_params(otherwise="end"), "otherwise", "must be an object"),
        (_params(otherwise={"goto": "end", "reask": 5}), "otherwise", "must be text"),
        (_params(otherwise={"goto": "end", "reask": "x" * 1601}), "otherwise", "1600"),
        (_params(no_reply={"goto": "soon"}), "no_reply", '"next", "end"'),
    ],
)
def test_malformed_parameters_are_refused_with_a_clear_error(
    params: dict[str, Any], field: str, fragment: str
) -> None:
    with pytest.raises(ReplyConfigError, match=None) as caught:
        reply_parameters_validate(params, number=2, total=8)
    assert fragment in str(caught.value)
    assert caught.value.field == field
    # The same problem through the step's save-time validation, on the same field.
    with pytest.raises(StepConfigError) as through_step:
        step_validate({"type": "reply", "parameters": params}, number=2, total=8)
    assert str(through_step.value) == str(caught.value)
    assert through_step.value.field == field


def test_a_last_step_wait_may_only_end() -> None:
    params = _params(branches=[{**CONFIRM, "goto": "next"}], otherwise={}, no_reply={})
    with pytest.raises(ReplyConfigError, match='there is no later step; go to "end"'):
        reply_parameters_validate(params, number=3, total=3)
    reply_parameters_validate(
        _params(branches=[{**CONFIRM, "goto": "end"}], otherwise={}, no_reply={}),
        number=3,
        total=3,
    )


@pytest.mark.parametrize(
    ("timeout", "field"),
    [
        ({"kind": "duration", "seconds": "0"}, "seconds"),
        ({"kind": "until_time", "time": "9am"}, "time"),
        ({"kind": "until_field", "path": ""}, "path"),
        ({"kind": "forever"}, "kind"),
        ({}, "kind"),
    ],
)
def test_the_timeout_is_checked_as_a_delays_length(timeout: dict[str, Any], field: str) -> None:
    params = {k: v for k, v in PARAMS.items() if k not in ("kind", "seconds")}
    with pytest.raises(StepConfigError) as caught:
        step_validate({"type": "reply", "parameters": {**params, **timeout}}, number=2, total=8)
    assert caught.value.field == field


def test_a_valid_wait_passes_and_its_type_is_listed() -> None:
    step_validate({"type": "reply", "parameters": PARAMS}, number=2, total=8)
    assert STEP_TYPES["reply"].label == "Wait for reply"
    names = [p.name for p in STEP_TYPES["reply"].parameters]
    assert names[:5] == ["kind", "seconds", "time", "path", "offset_seconds"]
    assert {"branches", "otherwise", "no_reply"} <= set(names)


def _send() -> dict[str, Any]:
    return {"type": "adapter", "adapter": "twilio", "function": "sendSMS", "parameters": {}}


def _wait(*gotos: Any, otherwise: Any = "end", no_reply: Any = "end") -> dict[str, Any]:
    branches = [
        {"label": f"B{n}", "match": "keywords", "keywords": [f"b{n}"], "goto": goto}
        for n, goto in enumerate(gotos)
    ]
    return {
        "type": "reply",
        "parameters": {
            "kind": "duration",
            "seconds": "60",
            "branches": branches,
            "otherwise": {"goto": otherwise},
            "no_reply": {"goto": no_reply},
        },
    }


def test_segments_of_one_wait() -> None:
    # 1 send, 2 wait (B0 → next, B1 → 5, otherwise → 5, no reply → end), 3, 4, 5, 6
    steps = [_send(), _wait("next", 5, otherwise=5), _send(), _send(), _send(), _send()]
    tree = branch_segments(steps)
    wait = tree.waits[1]
    assert wait.segments == (
        Segment(1, ("B0",), 2, 4),
        Segment(1, ("B1", "otherwise"), 4, 6),
    )
    assert wait.ends == ("no_reply",)
    assert tree.ends == (6, 6, 4, 4, 6, 6)
    assert tree.segments[0] is None and tree.segments[1] is None
    assert tree.segment_end(3) == 4  # the Confirm branch ends after step 4


def test_nested_waits_split_their_segment() -> None:
    # 1 send, 2 wait (→3, →7), 3 send, 4 wait (→5, →6), 5, 6, 7 send, 8
    steps = [
        _send(),
        _wait("next", 7),
        _send(),
        _wait("next", 6),
        _send(),
        _send(),
        _send(),
        _send(),
    ]
    tree = branch_segments(steps)
    assert set(tree.waits) == {1, 3}
    assert [(s.start, s.end) for s in tree.waits[1].segments] == [(2, 6), (6, 8)]
    assert [(s.start, s.end) for s in tree.waits[3].segments] == [(4, 5), (5, 6)]
    assert tree.waits[3].end == 6
    assert tree.ends == (8, 8, 6, 6, 5, 6, 8, 8)

    def asks(step: dict[str, Any]) -> bool:
        return bool(step["type"] == "adapter")

    assert question_steps(steps, tree, 3, asks=asks) == [2, 0]
    assert question_steps(steps, tree, 1, asks=asks) == [0]
    # Step 7 is in the wait's second branch: step 3 (the first branch's) is not on its path.
    assert question_steps(steps, tree, 7, asks=asks) == [6, 0]


@pytest.mark.parametrize(
    ("steps", "index", "fragment"),
    [
        # A gap: nothing goes to step 3, so steps 3 and 4 never run.
        ([_send(), _wait(5), _send(), _send(), _send()], 1, "no branch goes to step 3"),
        # Every branch ends, yet steps follow the wait.
        ([_send(), _wait("end"), _send()], 1, "no branch goes to step 3"),
        # The inner wait's branch leaves its own segment (steps 3 to 5 of the outer wait).
        (
            [_send(), _wait("next", 6), _send(), _wait("next", 6), _send(), _send()],
            3,
            "outside this wait's part",
        ),
        # An inner wait at the end of its segment cannot go "next" into the sibling segment.
        ([_send(), _wait("next", 4), _wait("next"), _send()], 2, "outside this wait's part"),
    ],
)
def test_unreachable_steps_and_branches_leaving_their_part_are_refused(
    steps: list[dict[str, Any]], index: int, fragment: str
) -> None:
    with pytest.raises(ReplyConfigError) as caught:
        branch_segments(steps)
    assert fragment in str(caught.value)
    assert caught.value.index == index


def test_a_wait_that_only_ends_may_close_the_workflow() -> None:
    tree = branch_segments([_send(), _wait("end")])
    assert tree.waits[1].segments == ()
    assert tree.waits[1].ends == ("B0", "otherwise", "no_reply")


def test_conditions_jump_only_within_their_own_branch() -> None:
    # 1 condition, 2 send, 3 wait (→4, →6), 4 condition, 5 send, 6 send, 7 send
    steps = [_send(), _send(), _wait("next", 6), _send(), _send(), _send(), _send()]
    tree = branch_segments(steps)
    assert condition_goto_problem(tree, index=0, goto_index=2) == ""  # to the wait itself
    assert "inside a wait's branch" in condition_goto_problem(tree, index=0, goto_index=4)
    assert condition_goto_problem(tree, index=3, goto_index=4) == ""
    assert "outside this branch (steps 4 to 5)" in condition_goto_problem(
        tree, index=3, goto_index=5
    )
    assert condition_goto_problem(tree, index=5, goto_index=6) == ""


def test_no_steps_no_waits() -> None:
    tree = branch_segments([])
    assert tree.waits == {} and tree.ends == ()
