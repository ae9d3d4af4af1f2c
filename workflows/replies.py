"""The Wait-for-reply step, as pure functions (no database, no broker): which branch a reply
takes, whether a step's branches are well formed, and how the steps after a wait form a tree.

A wait step's parameters (Step.parameters) hold its timeout (the Delay step's "kind",
"seconds", "time", "path", "offset_seconds") and its branches:

    "branches": [{"label": "Confirm", "match": "keywords", "keywords": ["c", "yes"],
                  "goto": "next"}, {"label": "Low", "match": "number", "min": 1, "max": 2,
                  "goto": 7}, {"label": "Code", "match": "pattern", "pattern": "^[0-9]{6}$",
                  "goto": "end"}],
    "otherwise": {"goto": 9, "reask": "Sorry, please reply C or X."},
    "no_reply": {"goto": 10}

`goto` is "next" (the step right after the wait), "end" (the run ends, succeeded), or a later
step's 1-based number. The distinct numeric targets of a wait split the steps after it into
segments (`branch_segments`): a run that takes a branch runs that branch's segment and ends.
There are no backward gotos, so no cycles; the only loop is the bounded re-ask: the first
"anything else" reply may be answered once with `otherwise.reask` while the wait goes on.

The A/B split step (workflows.splits) has branches of the same shape ({"label", "goto"},
without "otherwise" and "no_reply"): `branch_segments` builds one tree for both kinds of
branching step (BRANCHING), and in it a split is a `Wait` like any other.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.keywords import (
    ALL_KEYWORD_LANGUAGES,
    keyword_compact,
    keyword_family,
    keyword_normalize,
)

REPLY = "reply"  # the step type (Step.Type.REPLY)
# The A/B split step (Step.Type.SPLIT, workflows.splits): its branches ({"label", "goto"})
# divide the steps after it exactly as a wait's do, so both share this module's tree.
SPLIT = "split"
BRANCHING = (REPLY, SPLIT)  # the step types whose branches make the tree (branch_segments)
OTHERWISE = "otherwise"  # the branch an unmatched reply takes
NO_REPLY = "no_reply"  # the branch the timeout takes
MATCHES = (
    ("keywords", "One of these words"),
    ("number", "A number"),
    ("pattern", "Text matching a pattern"),
)
MAX_BRANCHES = 20
MAX_KEYWORDS = 50
MAX_KEYWORD_LENGTH = 60
MAX_LABEL_LENGTH = 60
# Python's re has no match timeout: a short pattern keeps a pathological one cheap enough.
MAX_PATTERN_LENGTH = 200
MAX_REASK_LENGTH = 1600  # the longest SMS Twilio accepts
# Keywords that keep their meaning whenever a patient texts them (YES and START, opt-in
# words, are answers from a number that has not opted out: see workflows.conversations).
_NEVER_ANSWERS = {
    "opt_out": "an opt-out keyword: the patient is unsubscribed",
    "help": "a help keyword: the patient gets the clinic's help text",
}
# No number-matching reply is longer; int() of a huge digit string is slow and pointless.
_MAX_NUMBER_DIGITS = 9


class ReplyConfigError(ValueError):
    """A wait step's branches that cannot run. `field` names the parameter at fault
    ("branches", "otherwise", "no_reply"); `index`, when set, is the 0-based step at fault
    (for `branch_segments`, which looks at the whole workflow)."""

    def __init__(self, message: str, *, field: str = "branches", index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.index = index


@dataclass(frozen=True, slots=True)
class BranchChoice:
    """The branch a reply (or its absence) takes: its label ("otherwise", "no_reply" for
    those), and where the run goes: "next", "end" or a 1-based step number."""

    label: str
    goto: str | int


def branch_display(label: str) -> str:
    """A taken branch as pages name it: the label, or what the two fixed branches mean."""
    return {OTHERWISE: "anything else", NO_REPLY: "no reply"}.get(label, label)


def reply_normalize(text: str) -> str:
    """A reply as keywords and numbers are matched (the opt-out keywords' normalisation)."""
    return keyword_normalize(text)


def _keyword_keys(text: str) -> set[str]:
    """The compact forms a reply is matched by: the whole of it, and its first word ("yes 👍"
    is "yes", "C. thanks" is "c")."""
    normal = keyword_normalize(text)
    keys = {keyword_compact(normal)}
    first = normal.split(" ", 1)[0]
    if first:
        keys.add(keyword_compact(keyword_normalize(first)))
    keys.discard("")
    return keys


def _number(text: str) -> int | None:
    """The integer the reply is ("3", "3.", "３", "٣"), or None. The normaliser strips a
    leading sign as punctuation, so a minus is read from the reply itself."""
    digits = keyword_normalize(text)
    if not digits or len(digits) > _MAX_NUMBER_DIGITS or not digits.isdecimal():
        return None
    negative = text.strip().lstrip("\u200b\ufeff")[:1] in ("-", "\u2212")
    return -int(digits) if negative else int(digits)


def _bound(value: Any) -> int | None:
    return None if value in (None, "") else int(value)


def _branch_matches(branch: Mapping[str, Any], text: str) -> bool:
    match = branch.get("match")
    if match == "keywords":
        wanted = {keyword_compact(keyword_normalize(str(k))) for k in branch.get("keywords") or ()}
        return bool(_keyword_keys(text) & (wanted - {""}))
    if match == "number":
        number = _number(text)
        if number is None:
            return False
        low, high = _bound(branch.get("min")), _bound(branch.get("max"))
        return (low is None or number >= low) and (high is None or number <= high)
    if match == "pattern":
        pattern = str(branch.get("pattern") or "")
        return bool(pattern) and re.fullmatch(pattern, text.strip(), re.IGNORECASE) is not None
    return False


def _goto(value: Any) -> str | int:
    if value in ("next", "end"):
        return str(value)
    return int(value)


def branch_choose(params: Mapping[str, Any], text: str | None) -> BranchChoice:
    """The branch `text` takes (None: no reply before the timeout): the first branch, in list
    order, that matches, else "otherwise". The parameters must be valid
    (`reply_parameters_validate`)."""
    if text is None:
        return BranchChoice(NO_REPLY, _goto((params.get(NO_REPLY) or {}).get("goto", "end")))
    # NUL and other controls cannot be part of a meaningful answer; the inbound path already
    # replaces NUL, and the normaliser drops the rest.
    for branch in params.get("branches") or ():
        if _branch_matches(branch, text):
            return BranchChoice(str(branch["label"]), _goto(branch.get("goto", "next")))
    return BranchChoice(OTHERWISE, _goto((params.get(OTHERWISE) or {}).get("goto", "end")))


def branch_by_label(params: Mapping[str, Any], label: str) -> BranchChoice:
    """The choice a wait recorded by its label (as `branch_choose` made it)."""
    if label in (OTHERWISE, NO_REPLY):
        value = params.get(label)
        goto = value.get("goto", "end") if isinstance(value, Mapping) else "end"
        return BranchChoice(label, _goto(goto))
    for branch in params.get("branches") or ():
        if str(branch.get("label")) == label:
            return BranchChoice(label, _goto(branch.get("goto", "next")))
    raise ReplyConfigError(f"this wait has no branch “{label}”")


def reask_text(params: Mapping[str, Any]) -> str:
    """The clarifying text sent once on the first unmatched reply ("" = none)."""
    return str((params.get(OTHERWISE) or {}).get("reask") or "").strip()


def goto_index(goto: str | int, *, wait_index: int) -> int | None:
    """A branch's target as the 0-based index of the next step to run (None: end the run)."""
    if goto == "end":
        return None
    if goto == "next":
        return wait_index + 1
    return int(goto) - 1


def goto_check(value: Any, *, number: int, total: int, field: str, what: str) -> None:
    """Raise ReplyConfigError unless `value` is "next", "end" or a later step (of `total`)
    for a branch of step `number` (1-based); `what` names the branch in the message."""
    if value == "end":
        return
    if value == "next" and number >= total:
        raise ReplyConfigError(f'{what}: there is no later step; go to "end"', field=field)
    if value == "next":
        return
    try:
        target = int(value)
    except (TypeError, ValueError):
        raise ReplyConfigError(
            f'{what}: go to "next", "end" or a later step number', field=field
        ) from None
    if isinstance(value, bool) or not number < target <= total:
        if number >= total:
            raise ReplyConfigError(
                f'{what}: there is no later step; go to "end"', field=field
            ) from None
        raise ReplyConfigError(
            f"{what}: branches only go forward, to a step from {number + 1} to {total}",
            field=field,
        )


def _int_bound(branch: Mapping[str, Any], name: str, what: str) -> int | None:
    value: Any = branch.get(name)
    if value in (None, ""):
        return None
    if isinstance(value, bool) or not re.fullmatch(r"[+-]?[0-9]{1,9}", str(value).strip()):
        raise ReplyConfigError(f"{what}: {name} must be a whole number")
    return int(value)


def _branch_validate(branch: Any, *, position: int, number: int, total: int) -> str:
    """Check one branch; return its label."""
    if not isinstance(branch, Mapping):
        raise ReplyConfigError(f"branch {position} must be an object with a label and a match")
    label = branch.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ReplyConfigError(f"branch {position} needs a label, e.g. Confirm")
    label = label.strip()
    what = f"branch “{label}”" if len(label) <= MAX_LABEL_LENGTH else f"branch {position}"
    if len(label) > MAX_LABEL_LENGTH:
        raise ReplyConfigError(f"{what}: a label is at most {MAX_LABEL_LENGTH} characters")
    if label.casefold() in (OTHERWISE, NO_REPLY, "no reply", "anything else"):
        raise ReplyConfigError(f"{what}: that label is kept for the built-in branches")
    match = branch.get("match")
    if match == "keywords":
        keywords = branch.get("keywords")
        if not isinstance(keywords, list) or not keywords:
            raise ReplyConfigError(f"{what}: list the words that take it, e.g. C, confirm")
        if len(keywords) > MAX_KEYWORDS:
            raise ReplyConfigError(f"{what}: at most {MAX_KEYWORDS} words")
        for keyword in keywords:
            if not isinstance(keyword, str) or len(keyword) > MAX_KEYWORD_LENGTH:
                raise ReplyConfigError(
                    f"{what}: each word is text of at most {MAX_KEYWORD_LENGTH} characters"
                )
            if not keyword_compact(keyword_normalize(keyword)):
                raise ReplyConfigError(
                    f"{what}: {keyword!r} has no letters or digits a reply could match"
                )
            family, listed = keyword_family(keyword, languages=ALL_KEYWORD_LANGUAGES)
            if family in _NEVER_ANSWERS:
                raise ReplyConfigError(
                    f"{what}: “{keyword}” is {_NEVER_ANSWERS[family]} ({listed}), so it is "
                    "never an answer; use another word, e.g. X or N"
                )
    elif match == "number":
        low = _int_bound(branch, "min", what)
        high = _int_bound(branch, "max", what)
        if low is not None and high is not None and low > high:
            raise ReplyConfigError(f"{what}: min ({low}) is more than max ({high})")
    elif match == "pattern":
        pattern = branch.get("pattern")
        if not isinstance(pattern, str) or not pattern.strip():
            raise ReplyConfigError(f"{what}: enter a pattern, e.g. ^[0-9]{{6}}$")
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise ReplyConfigError(f"{what}: a pattern is at most {MAX_PATTERN_LENGTH} characters")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ReplyConfigError(f"{what}: the pattern is not valid ({exc})") from None
    else:
        choices = ", ".join(name for name, _ in MATCHES)
        raise ReplyConfigError(f"{what}: match must be one of {choices}")
    goto_check(branch.get("goto", "next"), number=number, total=total, field="branches", what=what)
    return label


def reply_parameters_validate(params: Mapping[str, Any], *, number: int, total: int) -> None:
    """Raise ReplyConfigError unless the branches of the wait step `number` (1-based, of
    `total` steps) can run. The timeout fields are the Delay step's, checked by steps.py."""
    branches = params.get("branches")
    if not isinstance(branches, list) or not branches:
        raise ReplyConfigError("add at least one branch, e.g. Confirm for C or YES")
    if len(branches) > MAX_BRANCHES:
        raise ReplyConfigError(f"a wait has at most {MAX_BRANCHES} branches")
    seen: set[str] = set()
    for position, branch in enumerate(branches, start=1):
        label = _branch_validate(branch, position=position, number=number, total=total)
        if label.casefold() in seen:
            raise ReplyConfigError(f"two branches are called “{label}”: labels must differ")
        seen.add(label.casefold())
    for field, what in ((OTHERWISE, "anything else"), (NO_REPLY, "no reply")):
        value = params.get(field)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ReplyConfigError(f"{what} must be an object with a goto", field=field)
        goto_check(value.get("goto", "end"), number=number, total=total, field=field, what=what)
    reask = (params.get(OTHERWISE) or {}).get("reask")
    if reask not in (None, ""):
        if not isinstance(reask, str):
            raise ReplyConfigError("the clarifying text must be text", field=OTHERWISE)
        if len(reask) > MAX_REASK_LENGTH:
            raise ReplyConfigError(
                f"the clarifying text is at most {MAX_REASK_LENGTH} characters", field=OTHERWISE
            )


def _gotos(step: Mapping[str, Any]) -> list[tuple[str, str | int]]:
    """Every (label, goto) of a branching step: its branches, then (a wait's) "otherwise"
    and "no_reply"."""
    params = step.get("parameters") or {}
    branches = params.get("branches")
    pairs = [
        (str(b.get("label")), _goto(b.get("goto", "next")))
        for b in (branches if isinstance(branches, list) else ())
        if isinstance(b, Mapping)
    ]
    if step.get("type") != REPLY:
        return pairs
    for field in (OTHERWISE, NO_REPLY):
        value = params.get(field)
        pairs.append(
            (field, _goto(value.get("goto", "end") if isinstance(value, Mapping) else "end"))
        )
    return pairs


@dataclass(frozen=True, slots=True)
class Segment:
    """The steps one or more branches of a wait lead to: 0-based [start, end)."""

    wait: int  # the wait step's 0-based index
    labels: tuple[str, ...]  # the branches that go here ("otherwise", "no_reply" included)
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Wait:
    index: int  # 0-based
    segments: tuple[Segment, ...]  # in step order
    ends: tuple[str, ...]  # the branches that end the run
    end: int  # the end (exclusive) of the segment the wait itself is in


@dataclass(frozen=True, slots=True)
class BranchTree:
    """How the steps after each wait form a tree. `ends[i]` is the 0-based index at which a
    run that ran step i stops (the end of the innermost segment holding step i; the number of
    steps at the top level); `segments[i]` is that segment (None at the top level)."""

    waits: dict[int, Wait]
    ends: tuple[int, ...]
    segments: tuple[Segment | None, ...]

    def segment_end(self, index: int) -> int:
        return self.ends[index]


def branch_segments(steps: Sequence[Mapping[str, Any]]) -> BranchTree:
    """The tree the waits' branches make of `steps` (definitions in run order), the single
    source of it for the engine, validation, the builder, the diagram and the dry run.

    The distinct numeric targets of a wait ("next" = the step after it) split the steps after
    it, within the segment the wait is in: the segment of target t runs from t up to the next
    larger target, the last one up to the end of the enclosing segment. A wait inside a
    segment splits that segment further. Raise ReplyConfigError (with `index`) where a step
    after a wait is reached by no branch, or a branch goes outside the wait's own segment."""
    total = len(steps)
    ends = [total] * total
    segments: list[Segment | None] = [None] * total
    waits: dict[int, Wait] = {}

    def split(start: int, end: int, segment: Segment | None) -> None:
        for index in range(start, end):
            ends[index], segments[index] = end, segment
            step = steps[index]
            if step.get("type") not in BRANCHING:
                continue
            noun = "wait" if step.get("type") == REPLY else "split"
            try:
                pairs = [(label, goto_index(g, wait_index=index)) for label, g in _gotos(step)]
            except (TypeError, ValueError):
                raise ReplyConfigError(
                    'a branch goes to something other than "next", "end" or a step number',
                    index=index,
                ) from None
            targets = sorted({t for _, t in pairs if t is not None})
            for target in targets:
                if not index < target < end:
                    where = (
                        f"steps {index + 2} to {end}" if index + 1 < end else "no step (go to end)"
                    )
                    raise ReplyConfigError(
                        f"a branch goes to step {target + 1}, outside this {noun}'s part of the "
                        f"workflow: its branches can go to {where}",
                        index=index,
                    )
            if index + 1 < end and (not targets or targets[0] != index + 1):
                first = targets[0] + 1 if targets else end + 1
                raise ReplyConfigError(
                    f"no branch goes to step {index + 2}: steps {index + 2} to {first - 1} "
                    'could never run (let a branch go to "next")',
                    index=index,
                )
            parts = []
            for position, target in enumerate(targets):
                part_end = targets[position + 1] if position + 1 < len(targets) else end
                labels = tuple(label for label, t in pairs if t == target)
                parts.append(Segment(index, labels, target, part_end))
            waits[index] = Wait(
                index,
                tuple(parts),
                tuple(label for label, t in pairs if t is None),
                end,
            )
            for part in parts:
                split(part.start, part.end, part)
            return

    split(0, total, None)
    return BranchTree(waits, tuple(ends), tuple(segments))


def condition_goto_problem(tree: BranchTree, *, index: int, goto_index: int) -> str:
    """Why a condition at `index` may not jump to `goto_index` (0-based), or "": a jump must
    stay within the condition's own branch and not enter a later wait's branches."""
    if goto_index >= len(tree.ends) or tree.segments[goto_index] == tree.segments[index]:
        return ""
    segment = tree.segments[index]
    if segment is None:
        return (
            f"step {goto_index + 1} is inside a wait's branch; skip to the wait instead "
            "(or a step before it)"
        )
    return (
        f"step {goto_index + 1} is outside this branch (steps {segment.start + 1} to "
        f"{segment.end}); choose a step in it or end"
    )


def _on_path(tree: BranchTree, earlier: int, index: int) -> bool:
    """Whether every run that reaches step `index` has passed step `earlier` (< index)."""
    segment = tree.segments[earlier]
    return segment is None or segment.start <= index < segment.end


def question_steps(
    steps: Sequence[Mapping[str, Any]],
    tree: BranchTree,
    index: int,
    *,
    asks: Callable[[Mapping[str, Any]], bool],
) -> list[int]:
    """The 0-based indexes of the steps whose text the wait at `index` may wait for an answer
    to, nearest first: the earlier steps on its path that `asks` (text the patient). The
    question is the nearest of them that sent its text (a condition may have skipped some)."""
    return [
        earlier
        for earlier in range(index - 1, -1, -1)
        if asks(steps[earlier]) and _on_path(tree, earlier, index)
    ]
