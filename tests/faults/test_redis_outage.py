"""Fault: the broker (this suite's own Redis, no persistence) stopped for 30 s in the middle of
a burst and started again, empty.

Run as part of `make test`, or on its own database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/careflow_faults .venv/bin/pytest -m faults

Everything Redis held is gone when it comes back: queued and unacknowledged tasks, ETAs, the
throttle's buckets. Events committed during the outage cannot be handed to the broker (their
publish fails and leaves them to the relay) and saving them must not wait for it; beat's
relay and sweeper, once beat has reconnected, must bring every event and run back from the
database, and the workers' consumers must reconnect by themselves.
"""

import time

import pytest

from integrations.twilio.sandbox import SandboxServer
from tests.faults.conftest import FaultWorker, PrivateRedis, tasks_received
from tests.faults.harness import Burst, assert_exactly_once, in_flight, report, wait_until_settled

pytestmark = pytest.mark.faults

BURST = 1200
BEFORE, DURING = 400, 400  # shipped before the outage and during it; the rest after it
OUTAGE_SECONDS = 30.0
# A save made while the broker is down must not be held up by the publish of its event
# (a failing publish takes about 2 s of connection retries), whether that publish fails
# fast or happens off the request path.
PUBLISH_BOUND_SECONDS = 1.0


def test_burst_is_sent_exactly_once_across_a_redis_outage(
    workers: list[FaultWorker], sandbox: SandboxServer, private_redis: PrivateRedis
) -> None:
    burst = Burst(sandbox, size=BURST, tag="R", exchange="202")
    started = time.monotonic()
    burst.ship(BEFORE)

    # Let the workers get going, so the outage catches work in every state.
    deadline = time.monotonic() + 60
    while burst.tally().accepted < 50 and time.monotonic() < deadline:
        time.sleep(0.2)
    accepted_before = burst.tally().accepted
    sending = in_flight(burst)
    private_redis.stop()
    outage_started = time.monotonic()

    burst.ship(DURING)
    publish_during = burst.publish_seconds[BEFORE : BEFORE + DURING]
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - outage_started)))
    private_redis.start()
    outage = time.monotonic() - outage_started

    burst.ship()
    tally = wait_until_settled(burst, timeout=300, started=started, scenario="redis outage")

    elapsed = time.monotonic() - started
    report(
        "redis outage",
        tally,
        elapsed,
        f"redis down {outage:.1f}s after {accepted_before} accepted ({sending} in flight); "
        f"{DURING} events committed meanwhile, publish took max "
        f"{max(publish_during):.2f}s, mean {sum(publish_during) / DURING:.3f}s per save"
        f"; tasks received: {tasks_received(workers)}",
    )
    assert_exactly_once(burst, tally)
    assert max(publish_during) < PUBLISH_BOUND_SECONDS, "a save waited for the dead broker"
