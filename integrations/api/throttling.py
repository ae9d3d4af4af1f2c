"""Rate limits per API key, reads and writes counted apart, in the shared cache (Redis in
production, so every web process counts together): CAREFLOW_API_RATE_READ / _WRITE."""

from typing import Any

from django.conf import settings
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from integrations.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """DRF's sliding window (request times per key in the cache). Its read-then-write of the
    window is not atomic, so a burst across processes may pass a few requests over the
    rate; the limit protects the service, it is no billing meter."""

    def __init__(self) -> None:
        # The rate is chosen per request (read or write) in allow_request.
        pass

    def allow_request(self, request: Request, view: Any) -> bool:
        self.kind = "read" if request.method in SAFE_METHODS else "write"
        rate = (
            settings.CAREFLOW_API_RATE_READ
            if self.kind == "read"
            else settings.CAREFLOW_API_RATE_WRITE
        )
        self.rate = rate
        self.num_requests, self.duration = self.parse_rate(rate)
        return super().allow_request(request, view)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None  # refused by authentication anyway
        # The key's hash, not its id: ids restart with a new database, the cache does not.
        return f"api-rate:{request.auth.key_hash[:32]}:{self.kind}"
