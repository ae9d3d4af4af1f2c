"""Per-sender throughput shaping: one token bucket per sender (a number, a Messaging Service,
an email sender), in the provider's units per second (SMS segments, emails), shared by every
worker on every machine through Redis. Each transport names the bucket and its rate.

Providers meter senders (an SMS provider per segment, by the kind of number) and queue or
refuse the excess; sending faster only moves the queue to the provider and risks 429s. So
each send *reserves* its slot: the bucket (GCRA, a "theoretical arrival time" per sender)
says when this message's units fit, and the message waits until then instead of polling.
Reservations are atomic (one Lua script), so two workers can never take the same slot.

Without Redis (the embedded development setup's filesystem broker) the bucket lives in the
process, which shapes each worker process separately; production uses Redis.
"""

import threading
import time
from datetime import timedelta

from common.coordination import coordination_redis

# KEYS[1] = the sender's key; ARGV = now, seconds per segment, segments, burst (segments)
# Returns the seconds from now at which this send may go (0: now). A reservation is always
# made: the caller sends at that time, so the bucket never over-books.
_RESERVE = """
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
if tat < now then tat = now end
local start = tat - (burst - 1) * interval
if start < now then start = now end
local new_tat = tat + cost * interval
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 60000)
return tostring(start - now)
"""

# A message back later than this after its slot has missed it (a busy worker, a late task, a
# deferral by quiet hours): the slots after it are other messages', and sending it now would
# put two texts in one slot's place at the provider, so the sender reserves it a new slot
# (behind the queue, or at once when the sender is idle).
SLOT_MISSED_AFTER = timedelta(milliseconds=250)

_local_lock = threading.Lock()
_local_tat: dict[str, float] = {}


def throttle_key(*, scope: str, sender: str) -> str:
    """The bucket of one sender within `scope` (what the provider meters by: an account)."""
    return f"careflow:throttle:{scope}:{sender}"


def throttle_reserve(*, key: str, rate: float, segments: int, burst: int = 1) -> float:
    """Reserve `segments` at `rate` segments/s; return how many seconds to wait first.

    Raises redis.RedisError when Redis is unreachable: the caller must not send unshaped.
    """
    interval = 1.0 / rate
    now = time.time()
    client = coordination_redis()
    if client is None:
        with _local_lock:
            tat = max(_local_tat.get(key, 0.0), now)
            start = max(now, tat - (burst - 1) * interval)
            _local_tat[key] = tat + segments * interval
            return start - now
    script = client.register_script(_RESERVE)
    return max(0.0, float(script(keys=[key], args=[now, interval, segments, burst])))


def throttle_backlog(*, key: str) -> float:
    """Seconds of sending already reserved ahead for this sender (0 when idle)."""
    client = coordination_redis()
    if client is None:
        with _local_lock:
            tat = _local_tat.get(key, 0.0)
    else:
        raw = client.get(key)
        tat = float(raw) if raw else 0.0
    return max(0.0, tat - time.time())
