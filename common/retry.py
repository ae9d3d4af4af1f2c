"""How long to wait before trying a failed call again."""

import random
from datetime import timedelta


def retry_delay(attempt: int) -> timedelta:
    """Exponential backoff with jitter: about 2 s, 4 s, 8 s … capped at 5 minutes."""
    base = min(300.0, 2.0 * 2 ** max(0, attempt - 1))
    return timedelta(seconds=base * random.uniform(0.5, 1.0))  # noqa: S311 — jitter, not crypto
