"""The A/B split step, as pure functions (no database, no broker): which branch a patient
takes, and whether a split's branches are well formed.

A split step's parameters (Step.parameters):

    "branches": [{"label": "A", "percent": 50, "goto": "next"},
                 {"label": "B", "percent": 50, "goto": 4}],
    "seed": "spring-offer"   # optional; blank: the workflow's uuid

`goto` is what a wait's branch takes ("next", "end" or a later step number) and the steps
after a split form the same tree as a wait's (workflows.replies.branch_segments): a run that
takes a branch runs that branch's steps and ends.

The assignment is a hash, not a random draw: bucket = sha256("<seed>:<patient key>") mod
100, mapped onto the branches' cumulative percents. The same patient therefore takes the
same branch in every run of the workflow (and on every retry or redelivery of the step),
while another seed reshuffles everyone. sha256 is used for its uniformity, not secrecy.
"""

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workflows.replies import (
    MAX_LABEL_LENGTH,
    NO_REPLY,
    OTHERWISE,
    SPLIT,
    ReplyConfigError,
    goto_check,
)

MIN_BRANCHES = 2
MAX_BRANCHES = 5
MAX_SEED_LENGTH = 200
BUCKETS = 100
_PERCENT = re.compile(r"^[0-9]{1,3}$")

__all__ = ["SPLIT", "SplitChoice", "split_bucket", "split_choose", "split_parameters_validate"]


@dataclass(frozen=True, slots=True)
class SplitChoice:
    """The branch a patient falls into: its label and target, the bucket (0–99) and the
    buckets the branch covers, [low, high] inclusive."""

    label: str
    goto: str | int
    bucket: int
    low: int
    high: int

    def explanation(self) -> str:
        """Why, in the words the dry run and the run page use: "bucket 37 of 100 → B (0–49)"."""
        return f"bucket {self.bucket} of {BUCKETS} → {self.label} ({self.low}–{self.high})"


def split_seed(params: Mapping[str, Any], *, default: str) -> str:
    """The seed the buckets are drawn with: the step's own, else `default` (the workflow's
    uuid, so two workflows do not split the same patients the same way by accident)."""
    seed = params.get("seed")
    return seed.strip() if isinstance(seed, str) and seed.strip() else default


def split_bucket(seed: str, key: str) -> int:
    """The patient's bucket, 0 to 99, for this seed: stable across runs and processes."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
    return int(digest, 16) % BUCKETS


def split_choose(params: Mapping[str, Any], *, seed: str, key: str) -> SplitChoice:
    """The branch the patient with `key` takes. The parameters must be valid
    (`split_parameters_validate`): the percents sum to 100, so every bucket has a branch."""
    bucket = split_bucket(seed, key)
    low = 0
    for branch in params.get("branches") or ():
        percent = int(branch.get("percent") or 0)
        if percent and bucket < low + percent:
            goto = branch.get("goto", "next")
            target: str | int = goto if goto in ("next", "end") else int(goto)
            return SplitChoice(str(branch["label"]).strip(), target, bucket, low, low + percent - 1)
        low += percent
    raise ReplyConfigError(f"bucket {bucket} falls in no branch: the percents must sum to 100")


def _percent(branch: Mapping[str, Any], what: str) -> int:
    value = branch.get("percent")
    if isinstance(value, bool) or not _PERCENT.match(str(value if value is not None else "")):
        raise ReplyConfigError(f"{what}: the percent must be a whole number from 0 to 100")
    percent = int(str(value))
    if percent > 100:
        raise ReplyConfigError(f"{what}: the percent must be a whole number from 0 to 100")
    return percent


def split_parameters_validate(params: Mapping[str, Any], *, number: int, total: int) -> None:
    """Raise ReplyConfigError (field "branches" or "seed") unless the split step `number`
    (1-based, of `total` steps) can run: 2 to 5 branches with distinct labels, whole percents
    summing to 100, each going to "next", "end" or a later step."""
    branches = params.get("branches")
    if not isinstance(branches, list) or len(branches) < MIN_BRANCHES:
        raise ReplyConfigError(f"a split needs at least {MIN_BRANCHES} branches, e.g. A and B")
    if len(branches) > MAX_BRANCHES:
        raise ReplyConfigError(f"a split has at most {MAX_BRANCHES} branches")
    seen: set[str] = set()
    percents = 0
    for position, branch in enumerate(branches, start=1):
        if not isinstance(branch, Mapping):
            raise ReplyConfigError(
                f"branch {position} must be an object with a label and a percent"
            )
        label = branch.get("label")
        if not isinstance(label, str) or not label.strip():
            raise ReplyConfigError(f"branch {position} needs a label, e.g. A")
        label = label.strip()
        if len(label) > MAX_LABEL_LENGTH:
            raise ReplyConfigError(
                f"branch {position}: a label is at most {MAX_LABEL_LENGTH} characters"
            )
        what = f"branch “{label}”"
        if label.casefold() in (OTHERWISE, NO_REPLY, "no reply", "anything else"):
            raise ReplyConfigError(f"{what}: that label is kept for a wait's built-in branches")
        if label.casefold() in seen:
            raise ReplyConfigError(f"two branches are called “{label}”: labels must differ")
        seen.add(label.casefold())
        percents += _percent(branch, what)
        goto_check(
            branch.get("goto", "next"), number=number, total=total, field="branches", what=what
        )
    if percents != 100:
        raise ReplyConfigError(f"the percents add up to {percents}: they must add up to 100")
    seed = params.get("seed")
    if seed not in (None, ""):
        if not isinstance(seed, str):
            raise ReplyConfigError("the seed must be text", field="seed")
        if len(seed) > MAX_SEED_LENGTH:
            raise ReplyConfigError(
                f"the seed is at most {MAX_SEED_LENGTH} characters", field="seed"
            )
