"""Fault: every PostgreSQL connection to the test database but this test's own is terminated
(`pg_terminate_backend`), again and again at random moments, while a burst is processed.

Run as part of `make test`, or on its own database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/careflow_faults .venv/bin/pytest -m faults

The workers' connections die idle, mid-query and mid-transaction (between Twilio's answer and
its record, too); the live server's die under the status-callback webhooks. Workers must
reconnect by themselves and the engine must finish every run exactly once.
"""

import random
import time

import pytest
from django.db import connection

from integrations.twilio.sandbox import SandboxServer
from tests.faults.conftest import FaultWorker, tasks_received
from tests.faults.harness import (
    Burst,
    Injector,
    SmsBurst,
    assert_exactly_once,
    fault_random,
    report,
    ship_under_faults,
    wait_until_settled,
)

pytestmark = pytest.mark.faults

BURST = 1000
ROUNDS = 12


class Terminator(Injector):
    """Terminates every backend of the test database but this test's own."""

    def __init__(self, burst: Burst, rng: random.Random) -> None:
        super().__init__(burst, [int(rng.uniform(0.0, 0.75) * burst.size) for _ in range(ROUNDS)])
        self.terminated: list[int] = []

    def inject(self) -> None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND backend_type = 'client backend'"
            )
            (count,) = cursor.fetchone()
        self.terminated.append(int(count))


def test_burst_is_sent_exactly_once_while_database_connections_are_dropped(
    workers: list[FaultWorker], sandbox: SandboxServer
) -> None:
    rng, seed = fault_random("postgres")
    burst = SmsBurst(sandbox, size=BURST, tag="P", exchange="203")
    terminator = Terminator(burst, rng)
    started = time.monotonic()

    ship_under_faults(burst, terminator, timeout=300, scenario="postgres drops")
    tally = wait_until_settled(burst, timeout=420, started=started, scenario="postgres drops")

    elapsed = time.monotonic() - started
    report(
        "postgres drops",
        tally,
        elapsed,
        f"seed {seed}; {terminator.injected} rounds of pg_terminate_backend, backends "
        f"terminated per round: {terminator.terminated}; "
        f"tasks received: {tasks_received(workers)}",
    )
    assert terminator.injected == ROUNDS
    assert sum(terminator.terminated) >= ROUNDS, "hardly any connection was dropped"
    assert_exactly_once(burst, tally)
