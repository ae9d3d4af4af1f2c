"""Imported into bench/scale.py's shaping-phase workers (`celery -A config worker --include
bench.scale_probe`): records every slot the throttle reserves, so the benchmark can check
the throttle's own promise (reserved starts per sender) apart from the sandbox's receipts,
which also carry each send's lag. It observes only: the reservation made and the wait
returned are the throttle's own.

Each record, pushed onto the coordinating Redis list SLOTS_KEY: [bucket key, reserved start
(Unix seconds), segments]. The start is the throttle's own `now` plus the wait it returned
(the `now` is caught by wrapping the clock the throttle module reads).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from common.coordination import coordination_redis
from integrations import sending, throttle

SLOTS_KEY = "careflow:bench:slots"

_seen = threading.local()


class _Clock:
    """The `time` module as integrations.throttle sees it, remembering its last time()."""

    def time(self) -> float:
        _seen.now = time.time()
        return _seen.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


_reserve = sending.throttle_reserve


def _recorded(*, key: str, rate: float, segments: int, burst: int = 1) -> float:
    wait = _reserve(key=key, rate=rate, segments=segments, burst=burst)
    client = coordination_redis()
    if client is not None:
        client.rpush(SLOTS_KEY, json.dumps([key, _seen.now + wait, segments]))
    return wait


throttle.time = _Clock()  # type: ignore[assignment]
sending.throttle_reserve = _recorded
