"""Fault: the broker (this suite's own Redis, no persistence) stopped for 30 s in the middle of
a burst and started again, empty.

Run as part of `make test`, or on its own database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/careflow_faults .venv/bin/pytest -m faults

Everything Redis held is gone when it comes back: queued and unacknowledged tasks, ETAs, the
throttle's buckets. Events committed during the outage cannot be handed to the broker (their
publish fails and leaves them to the relay) and saving them must not wait for it; beat's
relay and sweeper, once beat has reconnected, must bring every event and run back from the
database, and the workers' consumers must reconnect by themselves. A worker must also live
through losing the broker while a task acknowledged late runs (celery 5.7 exited there).
"""

import time
from collections.abc import Callable

import pytest

from integrations.models import OutboundMessage
from integrations.sending import message_prepare
from integrations.tasks import message_send
from integrations.twilio.sandbox import SandboxServer
from tests.conftest import sandbox_account, wait_for
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory
from tests.faults.conftest import FaultWorker, PrivateRedis, tasks_received
from tests.faults.harness import (
    SmsBurst,
    assert_exactly_once,
    in_flight,
    report,
    wait_until_settled,
)

pytestmark = pytest.mark.faults

BURST = 1200
BEFORE, DURING = 400, 400  # shipped before the outage and during it; the rest after it
OUTAGE_SECONDS = 30.0
# A save made while the broker is down must not be held up by the publish of its event
# (a failing publish takes about 2 s of connection retries), whether that publish fails
# fast or happens off the request path.
PUBLISH_BOUND_SECONDS = 1.0
DONE = {OutboundMessage.Status.SENT, OutboundMessage.Status.DELIVERED}


def test_burst_is_sent_exactly_once_across_a_redis_outage(
    workers: list[FaultWorker], sandbox: SandboxServer, private_redis: PrivateRedis
) -> None:
    burst = SmsBurst(sandbox, size=BURST, tag="R", exchange="202")
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


def test_a_worker_running_a_task_when_the_broker_goes_away_lives_on(
    start_worker: Callable[..., FaultWorker], sandbox: SandboxServer, private_redis: PrivateRedis
) -> None:
    """The moment celery 5.7 crashed a worker at (config.celery.Consumer): the broker gone
    while a task acknowledged late (a send) is running and the consumer waits for the next.
    The worker must live through it, reconnect by itself, and take tasks again."""
    integration = sandbox_account(sandbox, IntegrationFactory())
    messages = []
    for index, phone in enumerate(("+14152060001", "+14152060002")):
        patient = PatientFactory(organization=integration.organization, phone=phone)
        ConsentFactory(patient=patient)
        messages.append(
            message_prepare(
                organization=integration.organization,
                integration=integration,
                idempotency_key=f"broker-lost:{index}",
                to=phone,
                from_number=integration.senders[0],
                body=f"Message {index}",
                purpose="transactional",
                patient=patient,
            )
        )
    slow, after = messages
    # Twilio answers the first send in 3 s, well within the worker's timeout here: the
    # task is simply running, unacknowledged, while the broker goes away.
    sandbox.add_fault({"kind": "slow", "delay": 3.0, "count": 1, "match": {"To": slow.to}})
    worker = start_worker("faults-c", TWILIO_HTTP_TIMEOUT="10")
    message_send.delay(slow.pk)

    def status(message: OutboundMessage) -> str:
        return OutboundMessage.objects.values_list("status", flat=True).get(pk=message.pk)

    wait_for(lambda: status(slow) == "sending", timeout=30, what="the first send to start")
    private_redis.stop()
    wait_for(lambda: status(slow) in DONE, timeout=30, what="the first send to finish")
    time.sleep(1.0)  # its acknowledgement fails meanwhile: the broker is still away
    crashed = "Unrecoverable error" in worker.log_tail(100_000)
    assert not crashed, "the worker crashed on losing the broker (its log is printed below)"
    assert worker.alive()
    private_redis.start()

    message_send.delay(after.pk)
    wait_for(lambda: status(after) in DONE, timeout=60, what="a task after the outage")
    assert worker.alive()
    assert [message["to"] for message in sandbox.messages()] == [slow.to, after.to]
