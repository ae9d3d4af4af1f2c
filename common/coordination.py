"""The Redis that coordinates workers on every machine (throttle buckets, the events'
waiting list and wake-up flag), or None in the embedded setup that has none."""

from functools import lru_cache
from typing import Any

import redis
from django.conf import settings


@lru_cache(maxsize=4)
def _client(url: str) -> Any:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def _redis_url() -> str | None:
    url: str = settings.CAREFLOW_THROTTLE_REDIS_URL
    return url if url.startswith(("redis://", "rediss://")) else None


def coordination_redis() -> Any | None:
    """The coordinating Redis client (one per URL and process), or None without Redis."""
    url = _redis_url()
    return _client(url) if url is not None else None
