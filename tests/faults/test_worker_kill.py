"""Fault: worker processes SIGKILLed (parent, prefork children and beat together) at random
moments while a burst of order.shipped events is processed, and started again.

Run as part of `make test`, or on its own database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/careflow_faults .venv/bin/pytest -m faults

A killed worker leaves its tasks unacknowledged in Redis (acks_late), and Redis hands them out
again only after the visibility timeout (600 s), far beyond this test's bounds: recovery must
come from the database. A run held by the dead worker is taken over when its lease expires
(CAREFLOW_RUN_LEASE_SECONDS=10 for this suite), and a message it left `sending` is looked up
at the sandbox before anything is sent again. With RabbitMQ as the broker (.ci/run's second
pass) the opposite holds: the broker hands a killed worker's tasks to the other worker at once,
while the dead worker's run leases and `sending` messages still stand, so the redelivered
task meets the half-done work it must neither repeat nor lose. Once for SMS (Twilio's sandbox) and once for
email (the Postmark sandbox).
"""

import random
import time

import pytest

from integrations.email.sandbox import SandboxServer as EmailSandbox
from integrations.twilio.sandbox import SandboxServer
from tests.faults.conftest import FaultWorker, tasks_received
from tests.faults.harness import (
    Burst,
    EmailBurst,
    Injector,
    SmsBurst,
    assert_exactly_once,
    fault_random,
    in_flight,
    report,
    ship_under_faults,
    wait_until_settled,
)

pytestmark = pytest.mark.faults

BURST = 1000
EMAIL_BURST = 600
KILLS = 8


class Killer(Injector):
    """SIGKILLs a random worker's process group, then starts the worker again."""

    def __init__(self, workers: list[FaultWorker], burst: Burst, rng: random.Random) -> None:
        super().__init__(burst, [int(rng.uniform(0.02, 0.75) * burst.size) for _ in range(KILLS)])
        self.workers, self.rng = workers, rng
        self.log: list[str] = []

    def inject(self) -> None:
        victim = self.rng.choice(self.workers)
        spared = [worker for worker in self.workers if worker.kills == 0]
        if not self.points and spared:
            victim = spared[0]  # each worker (beat included) dies at least once
        sending = in_flight(self.burst)
        if self.rng.random() < 0.5:
            # Every other kill, aim: wait (briefly) for a message between its claim and the
            # record of Twilio's answer, the window where a kill makes an attempt ambiguous.
            aim_until = time.monotonic() + 2.0
            while not sending and time.monotonic() < aim_until:
                sending = in_flight(self.burst)
        victim.kill()
        accepted = self.burst.sandbox.stats()["accepted"]
        self.log.append(f"{victim.name}@{accepted}accepted/{sending}sending")
        time.sleep(self.rng.uniform(0.0, 1.5))
        victim.start()


def _sent_exactly_once_while_workers_are_killed(
    workers: list[FaultWorker], burst: Burst, rng: random.Random, seed: int, scenario: str
) -> None:
    killer = Killer(workers, burst, rng)
    started = time.monotonic()

    ship_under_faults(burst, killer, timeout=300, scenario=scenario, while_shipping=True)
    tally = wait_until_settled(burst, timeout=480, started=started, scenario=scenario)

    elapsed = time.monotonic() - started
    report(
        scenario,
        tally,
        elapsed,
        f"seed {seed}; {killer.injected} kills (worker@accepted/in-flight): "
        f"{', '.join(killer.log)}; tasks received: {tasks_received(workers)}",
    )
    assert killer.injected == KILLS
    assert_exactly_once(burst, tally)


def test_burst_is_sent_exactly_once_while_workers_are_killed_at_random(
    workers: list[FaultWorker], sandbox: SandboxServer
) -> None:
    rng, seed = fault_random("kill")
    burst = SmsBurst(sandbox, size=BURST, tag="K", exchange="201")
    _sent_exactly_once_while_workers_are_killed(workers, burst, rng, seed, "worker SIGKILL")


def test_email_burst_is_sent_exactly_once_while_workers_are_killed_at_random(
    workers: list[FaultWorker], email_sandbox: EmailSandbox
) -> None:
    """The same for email, with no delivery webhooks (they would settle most of what a
    killed worker left "sending"): each such message is found again by its metadata in
    Postmark's outbound search before anything is resent."""
    rng, seed = fault_random("kill-email")
    burst = EmailBurst(email_sandbox, size=EMAIL_BURST, tag="KE")
    _sent_exactly_once_while_workers_are_killed(workers, burst, rng, seed, "email SIGKILL")
