"""Fault, for each ESP: the email provider (the sandbox's Postmark or Mailgun API) misbehaves for a fraction of a burst's
messages — 429s, a 500 after accepting, answers slower than the client's timeout, connections
dropped after accepting (and a few before) — and so does its search (Postmark's outbound
message search, Mailgun's Events API), the look-up that settles an ambiguous send; plus a count of 429s for whichever sends come first.

Run as part of `make test`, or on its own database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/careflow_faults .venv/bin/pytest -m faults

The workers run with CAREFLOW_EMAIL_HTTP_TIMEOUT=1 against `slow` rules of 2 s, so those sends
time out on our side after the sandbox has, or will have, accepted them. Every ambiguous
answer must be settled by the metadata search before anything is resent; a search that fails
settles nothing (the message stays unknown and is looked up again), and only the provider
saying "not there" after the grace period lets a message go again. The sandbox must end up
with each email exactly once.
"""

import time
from typing import Any

import pytest

from integrations.email.sandbox import SandboxServer as EmailSandbox
from tests.faults.conftest import FaultWorker, tasks_received
from tests.faults.harness import EmailBurst, assert_exactly_once, report, wait_until_settled

pytestmark = pytest.mark.faults

BURST = 800
SLOW = 2.0  # seconds: twice the workers' CAREFLOW_EMAIL_HTTP_TIMEOUT
SEARCH_FAULTS = ("error", "slow", "drop", "accept_then_drop")


def _send_rule(index: int, address: str) -> dict[str, Any] | None:
    """The send fault of the index-th recipient: 4 in 10 emails meet one, 1 in 100 the
    connection dropped before the sandbox read it."""
    match = {"To": address}
    if index % 100 == 99:  # never accepted: found missing after the grace, then sent once
        return {"kind": "drop", "count": 1, "match": match}
    return {
        1: {"kind": "error", "status": 429, "code": 429, "count": 2, "match": match},
        3: {"kind": "accept_then_error", "status": 500, "code": 500, "count": 1, "match": match},
        5: {"kind": "slow", "delay": SLOW, "count": 1, "match": match},
        7: {"kind": "accept_then_drop", "count": 1, "match": match},
    }.get(index % 10)


def _search_rule(index: int, address: str) -> dict[str, Any] | None:
    """The search fault of the index-th recipient: half the ambiguous sends that were
    accepted, and half those that were not, meet a failing look-up first (every kind in turn:
    an error, a time-out, a connection dropped before or after the search ran)."""
    match = {"recipient": address}
    if index % 200 == 199:  # not at the provider: the failed look-ups must not count as "not there"
        return {
            "kind": "error",
            "status": 500,
            "code": 500,
            "count": 2,
            "on": "search",
            "match": match,
        }
    if index % 20 not in (3, 5, 7):
        return None
    kind = SEARCH_FAULTS[(index // 20) % len(SEARCH_FAULTS)]
    rule: dict[str, Any] = {"kind": kind, "count": 1, "on": "search", "match": match}
    if kind == "slow":
        rule["delay"] = SLOW
    return rule


@pytest.mark.parametrize("esp", ["postmark", "mailgun"])
def test_email_burst_is_sent_exactly_once_when_the_provider_misbehaves(
    workers: list[FaultWorker], email_sandbox: EmailSandbox, live_server: Any, esp: str
) -> None:
    burst = EmailBurst(email_sandbox, size=BURST, tag="E", webhook_origin=live_server.url, esp=esp)
    rules = [
        rule
        for index, address in enumerate(burst.addresses)
        for rule in (_send_rule(index, address), _search_rule(index, address))
        if rule is not None
    ]
    rules.append({"kind": "error", "status": 429, "code": 429, "count": 25})  # any To
    for rule in rules:
        email_sandbox.add_fault(rule)
        if rule.get("on") == "search":
            # No delivery webhook for these (it would settle the ambiguous send first, and
            # the search fault would never be met): only the search can tell.
            email_sandbox.set_scenario(rule["match"]["recipient"], [])
    kinds: dict[str, int] = {}
    for rule in rules:
        kind = rule["kind"] if rule.get("on", "email") == "email" else f"search {rule['kind']}"
        kinds[kind] = kinds.get(kind, 0) + rule["count"]
    started = time.monotonic()

    burst.ship()
    tally = wait_until_settled(
        burst, timeout=300, started=started, scenario=f"email faults ({esp})"
    )

    elapsed = time.monotonic() - started
    left = email_sandbox.faults()
    left = [rule for rule in left if rule["count"] != 0]
    report(
        f"email faults ({esp})",
        tally,
        elapsed,
        f"faults injected (by kind, counts): {kinds}; rules not consumed: {len(left)}"
        f"; tasks received: {tasks_received(workers)}",
    )
    assert_exactly_once(burst, tally)
    assert left == [], "some faults were never met: the scenario tested less than it says"
