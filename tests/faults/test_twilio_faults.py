"""Fault: the Twilio sandbox misbehaves for a fraction of a burst's messages — 429s, a 500
after accepting, answers slower than the client's timeout, connections dropped after
accepting (and a few before) — plus a count of 429s for whichever requests come first.

Run as part of `make test`, or on its own database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/careflow_faults .venv/bin/pytest -m faults

The workers run with TWILIO_HTTP_TIMEOUT=1 against `slow` rules of 2 s, so those requests
time out on our side after the sandbox has, or will have, accepted them. Every ambiguous
answer must be reconciled by a lookup before anything is resent: the sandbox must end up
with each message exactly once.
"""

import time
from typing import Any

import pytest

from integrations.models import MessagingPolicy
from integrations.twilio.sandbox import SandboxServer
from tests.faults.conftest import FaultWorker, tasks_received
from tests.faults.harness import (
    Expected,
    SmsBurst,
    assert_exactly_once,
    report,
    wait_until_settled,
)

pytestmark = pytest.mark.faults

BURST = 1000
# Every message of it takes the first-contact lock and query: a smaller burst says as much.
FIRST_CONTACT_BURST = 300


def _rule(index: int, phone: str) -> dict[str, Any] | None:
    """The fault for the index-th recipient: 4 in 10 messages meet one, 1 in 100 two kinds."""
    match = {"To": phone}
    if index % 100 == 99:  # dropped before acceptance: must be resent, once
        return {"kind": "drop", "count": 1, "match": match}
    return {
        1: {"kind": "error", "status": 429, "code": 20429, "count": 2, "match": match},
        3: {"kind": "accept_then_error", "status": 500, "code": 20500, "count": 1, "match": match},
        5: {"kind": "slow", "delay": 2.0, "count": 1, "match": match},
        7: {"kind": "accept_then_drop", "count": 1, "match": match},
    }.get(index % 10)


class FirstContactBurst(SmsBurst):
    """Each shipment texts a new number: every text is a first contact, and goes out (and is
    looked up, when Twilio's answer is lost) with the clinic's wording, as claimed."""

    def __init__(self, sandbox: SandboxServer, *, size: int, tag: str, exchange: str) -> None:
        super().__init__(sandbox, size=size, tag=tag, exchange=exchange)
        MessagingPolicy.objects.update_or_create(
            organization=self.integration.organization,
            defaults={"first_contact_enabled": True, "brand_name": "Sunrise Telehealth"},
        )

    def expect(self, recipient: str, *, first_name: str, order: str) -> Expected:
        plain = super().expect(recipient, first_name=first_name, order=order)
        return Expected(recipient, f"Sunrise Telehealth: {plain.body} Reply STOP to opt out.")


@pytest.mark.parametrize(
    ("burst_class", "size", "exchange"),
    [(SmsBurst, BURST, "204"), (FirstContactBurst, FIRST_CONTACT_BURST, "205")],
    ids=["plain", "first-contact"],
)
def test_burst_is_sent_exactly_once_when_twilio_misbehaves(
    workers: list[FaultWorker],
    sandbox: SandboxServer,
    burst_class: type[SmsBurst],
    size: int,
    exchange: str,
) -> None:
    burst = burst_class(sandbox, size=size, tag="T", exchange=exchange)
    rules = [rule for index, phone in enumerate(burst.phones) if (rule := _rule(index, phone))]
    rules.append({"kind": "error", "status": 429, "code": 20429, "count": 25})  # any To
    for rule in rules:
        sandbox.add_fault(rule)
    kinds: dict[str, int] = {}
    for rule in rules:
        kinds[rule["kind"]] = kinds.get(rule["kind"], 0) + rule["count"]
    started = time.monotonic()

    burst.ship()
    tally = wait_until_settled(burst, timeout=420, started=started, scenario="twilio faults")

    elapsed = time.monotonic() - started
    left = sandbox.faults()
    report(
        "twilio faults",
        tally,
        elapsed,
        f"faults injected (by kind, counts): {kinds}; rules not consumed: {len(left)}"
        f"; tasks received: {tasks_received(workers)}",
    )
    assert_exactly_once(burst, tally)
    assert left == [], "some faults were never met: the scenario tested less than it says"
