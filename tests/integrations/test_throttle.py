"""Per-sender throughput shaping through Redis: slots are reserved atomically, bursts queue
instead of exceeding the rate, and an unreachable throttle never means sending unshaped."""

import itertools
import threading
import time
import uuid
from typing import Any

import pytest
from django.utils import timezone

from integrations.models import OutboundMessage
from integrations.sending import message_prepare, message_prepare_and_deliver, message_send
from integrations.throttle import throttle_backlog, throttle_key, throttle_reserve
from integrations.twilio.sandbox import SandboxServer
from tests.conftest import sandbox_account
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

Status = OutboundMessage.Status


def _key() -> str:
    return throttle_key(scope="AC" + uuid.uuid4().hex, sender="+15005550006")


def test_reservations_are_spaced_by_the_rate_and_segments() -> None:
    key = _key()
    waits = [throttle_reserve(key=key, rate=10, segments=s) for s in (1, 1, 3, 1)]
    assert waits[0] == pytest.approx(0, abs=0.02)
    assert waits[1] == pytest.approx(0.1, abs=0.02)
    assert waits[2] == pytest.approx(0.2, abs=0.02)
    assert waits[3] == pytest.approx(0.5, abs=0.02)  # the 3-segment message took 0.3 s
    assert throttle_backlog(key=key) == pytest.approx(0.6, abs=0.05)


def test_concurrent_reservations_never_share_a_slot() -> None:
    key, waits, lock = _key(), [], threading.Lock()

    def reserve() -> None:
        called = time.time()
        wait = throttle_reserve(key=key, rate=50, segments=1)
        with lock:
            waits.append(called + wait)  # the slot, in absolute time

    threads = [threading.Thread(target=reserve) for _ in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slots = sorted(waits)
    gaps = [later - earlier for earlier, later in itertools.pairwise(slots)]
    # 40 distinct slots, 20 ms apart (less a few ms of call latency): no double booking
    assert min(gaps) > 0.015
    assert slots[-1] - slots[0] == pytest.approx(39 * 0.02, abs=0.05)


def test_without_redis_the_bucket_is_per_process(settings: Any) -> None:
    settings.CAREFLOW_THROTTLE_REDIS_URL = "filesystem://"
    key = _key()
    assert throttle_reserve(key=key, rate=4, segments=1) == pytest.approx(0, abs=0.02)
    assert throttle_reserve(key=key, rate=4, segments=1) == pytest.approx(0.25, abs=0.02)


@pytest.fixture
def slow_sender(sandbox: SandboxServer, db: None) -> Any:
    integration = sandbox_account(sandbox, IntegrationFactory(segments_per_second=1.0))
    patient = PatientFactory(organization=integration.organization)
    ConsentFactory(patient=patient)

    def prepare(n: int) -> OutboundMessage:
        return message_prepare(
            organization=integration.organization,
            integration=integration,
            idempotency_key=f"thr:{uuid.uuid4()}",
            to=patient.phone,
            from_number="+15005550006",
            body=f"message {n}",
            purpose="transactional",
            patient=patient,
        )

    return prepare


def test_a_burst_queues_behind_the_senders_rate_instead_of_going_out(
    slow_sender: Any, sandbox: SandboxServer
) -> None:
    first, second = slow_sender(1), slow_sender(2)
    assert message_send(message_id=first.pk).status == Status.SENT
    queued = message_send(message_id=second.pk)
    assert queued.status == Status.PENDING
    assert queued.slot_at is not None and queued.next_attempt_at == queued.slot_at
    assert 0.5 < (queued.slot_at - timezone.now()).total_seconds() <= 1.0
    assert [m["body"] for m in sandbox.messages()] == ["message 1"]
    assert message_send(message_id=second.pk).status == Status.PENDING  # not before its slot
    OutboundMessage.objects.filter(pk=second.pk).update(
        slot_at=timezone.now(), next_attempt_at=timezone.now()
    )
    assert message_send(message_id=second.pk).status == Status.SENT
    assert sandbox.stats()["errors"] == 0


def test_unreachable_throttle_means_wait_not_send_unshaped(
    slow_sender: Any, sandbox: SandboxServer, settings: Any
) -> None:
    settings.CAREFLOW_THROTTLE_REDIS_URL = "redis://127.0.0.1:9/0"
    message = message_send(message_id=slow_sender(1).pk)
    assert message.status == Status.PENDING
    assert message.next_attempt_at is not None and message.slot_at is None
    assert sandbox.messages() == []


def test_an_unreachable_throttle_is_logged_with_the_message_or_as_a_new_one(
    slow_sender: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.CAREFLOW_THROTTLE_REDIS_URL = "redis://127.0.0.1:9/0"
    existing = slow_sender(1)
    message_send(message_id=existing.pk)
    # A batch's first attempt decides before the row exists: no id to name yet.
    new = message_prepare_and_deliver(
        idempotency_key=f"thr:{uuid.uuid4()}",
        first_attempt=True,
        organization=existing.organization,
        integration=existing.integration,
        to=existing.to,
        from_number=existing.from_number,
        body="message 2",
        purpose="transactional",
        patient=existing.patient,
    )
    assert new.status == Status.PENDING
    warnings = [r.getMessage() for r in caplog.records if "throttle unreachable" in r.getMessage()]
    assert warnings == [
        f"throttle unreachable; message {existing.pk} waits 5 s",
        "throttle unreachable; a new message waits 5 s",
    ]
