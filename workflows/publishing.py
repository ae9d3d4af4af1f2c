"""Publishing committed events to the workers: into the waiting list with one wake-up task
for however many arrive (workflows.waiting), or, without the shared Redis, a dispatch task
per batch; from beat's listener (PostgreSQL) or a background thread of the saving process.
Whatever is not handed over is left to the periodic relay: nothing is lost."""

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis

from common.coordination import coordination_redis
from workflows.waiting import WAITING_KEY, WAKE_EXPIRES_SECONDS, WAKE_KEY

logger = logging.getLogger(__name__)

# Events a worker takes at a time when it dispatches whatever waits: one claim, one read of
# workflows and one INSERT of runs for all of them, and their runs advanced together
# (engine.RunBatch). Bigger batches save little more and make one worker's share lumpier.
DISPATCH_BATCH = 20

# The dispatch task (workflows.tasks.events_dispatch), registered by WorkflowsConfig.ready():
# the tasks module sits above this one (it wakes workers through it), so this one cannot
# import it.
_dispatch: list[Any] = []


def dispatch_task_register(task: Any) -> None:
    """Name the task that dispatches events (called once, at app loading)."""
    _dispatch[:] = [task]


def _dispatch_task() -> Any:
    if not _dispatch:
        raise RuntimeError("no dispatch task registered (WorkflowsConfig.ready() registers it)")
    return _dispatch[0]


class _BackgroundPublisher:
    """Hands committed events to the broker from a background thread, so saving a record
    never waits for a broker round trip. Whatever it cannot hand over (the broker is down,
    the process exits first) the periodic relay dispatches later: nothing is lost."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._pid = 0
        self._lock = threading.Lock()

    def submit(self, event_id: int) -> None:
        if self._pid != os.getpid():  # first use in this process (or after a fork)
            with self._lock:
                if self._pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                    threading.Thread(
                        target=self._run, name="careflow-publisher", daemon=True
                    ).start()
                    self._pid = os.getpid()
        self._queue.put(event_id)

    def _run(self) -> None:
        while True:
            event_ids = [self._queue.get()]
            events_publish(event_ids=event_ids + self._taken())

    def _taken(self) -> list[int]:
        """Whatever else is queued by now (published with the first: one task for them)."""
        event_ids = []
        while True:
            try:
                event_ids.append(self._queue.get_nowait())
            except queue.Empty:
                return event_ids

    def flush(self, timeout: float = 2.0) -> None:
        """Publish what is still queued (at exit), for at most `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self._pid == os.getpid() and time.monotonic() < deadline:
            event_ids = self._taken()
            if not event_ids:
                return
            events_publish(event_ids=event_ids)


publisher = _BackgroundPublisher()
atexit.register(publisher.flush)


def events_publish(*, event_ids: Sequence[int]) -> None:
    """Hand committed events to the workers (beat's listener does, for those notified
    together). With the shared Redis they join the events waiting and a worker is woken
    unless a wake-up is queued already: in a burst the broker then holds one task, not one
    per event. Without it (or should it fail) they get tasks of their own, a batch each.
    On failure the events are left to the relay instead of failing."""
    if not event_ids:
        return
    client = coordination_redis()
    if client is not None:
        try:
            pipe = client.pipeline(transaction=False)
            pipe.rpush(WAITING_KEY, *event_ids)
            pipe.set(WAKE_KEY, 1, nx=True, ex=WAKE_EXPIRES_SECONDS)
            _, woken = pipe.execute()
        except redis.RedisError:
            pass
        else:
            if woken:
                _wake_up_publish(client, _events_named(event_ids))
            return
    for start in range(0, len(event_ids), DISPATCH_BATCH):
        batch = list(event_ids[start : start + DISPATCH_BATCH])
        try:
            _dispatch_task().apply_async((batch,), retry=False)
        except Exception:
            logger.warning(
                "broker unavailable; %s left for the relay", _events_named(batch), exc_info=True
            )


def _events_named(event_ids: Sequence[int]) -> str:
    shown = ", ".join(str(event_id) for event_id in event_ids[:5])
    if len(event_ids) == 1:
        return f"event {shown}"
    return f"events {shown}{', …' if len(event_ids) > 5 else ''} ({len(event_ids)})"


def events_wake() -> None:
    """Wake a worker for the events waiting, unless a wake-up is queued already."""
    client = coordination_redis()
    try:
        if client is not None and not client.set(WAKE_KEY, 1, nx=True, ex=WAKE_EXPIRES_SECONDS):
            return
    except redis.RedisError:
        pass
    _wake_up_publish(client, "the events waiting")


def _wake_up_publish(client: Any, what: str) -> None:
    try:
        _dispatch_task().apply_async(retry=False)
    except Exception:
        logger.warning("broker unavailable; %s left for the relay", what, exc_info=True)
        try:  # no wake-up is queued: the next event tries again
            if client is not None:
                client.delete(WAKE_KEY)
        except redis.RedisError:
            pass
