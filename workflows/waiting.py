"""The waiting list in the shared Redis: the events committed that no worker has taken yet,
and the wake-up flag (workflows.publishing sets it, a worker woken takes the list)."""

import redis

from common.coordination import coordination_redis

# The events committed that no worker has taken yet, in order, and a flag set while a
# wake-up task is queued that no worker has started: the events recorded meanwhile need no
# task of their own, since the worker that starts it takes whatever waits by then, a batch
# at a time. The flag expires in case that task is lost (the relay covers its events).
WAITING_KEY = "careflow:events:waiting"
WAKE_KEY = "careflow:events:wake"
WAKE_EXPIRES_SECONDS = 5


def events_waiting_take(count: int) -> list[int]:
    """For a worker woken: up to `count` of the events waiting, oldest first, taken off the
    list (one the worker dies holding is left to the relay). It clears the flag: an event
    after that wakes a worker again (the other one, while this one is busy)."""
    client = coordination_redis()
    if client is None:
        return []
    try:
        pipe = client.pipeline(transaction=False)
        pipe.delete(WAKE_KEY)
        pipe.lpop(WAITING_KEY, count)
        _, taken = pipe.execute()
    except redis.RedisError:
        return []  # the flag expires; the relay dispatches the events
    return [int(event_id) for event_id in taken or []]


def events_waiting_count() -> int:
    """How many events wait for a worker in the list (0 if it cannot be read)."""
    client = coordination_redis()
    try:
        return int(client.llen(WAITING_KEY)) if client is not None else 0
    except redis.RedisError:
        return 0
