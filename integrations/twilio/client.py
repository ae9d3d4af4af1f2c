"""Twilio REST client factory.

The official twilio-python library builds every URL against https://api.twilio.com; we swap
only the origin at the HTTP layer, so the library's own request building, auth and error
parsing run unchanged whether they talk to Twilio or to the loopback sandbox.
"""

import threading
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.views.decorators.debug import sensitive_variables
from requests import Session
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.rest import Client

TWILIO_ORIGIN = "https://api.twilio.com"


class _Session(Session):
    """requests reads the environment's proxy and CA-bundle variables on every request
    (`merge_environment_settings`, about 1.3 ms of CPU per SMS here: it scans the whole
    environment). They do not change while a process runs, so the answer is kept per
    origin."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[str, str], Any] = {}

    def merge_environment_settings(  # type: ignore[no-untyped-def]
        self, url, proxies, stream, verify, cert
    ) -> Any:
        if proxies or stream is not None or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        origin = urlsplit(url)[:2]
        if origin not in self._environment:
            self._environment[origin] = super().merge_environment_settings(
                url, proxies, stream, verify, cert
            )
        found = self._environment[origin]
        return {**found, "proxies": dict(found["proxies"])}


class BaseUrlHttpClient(TwilioHttpClient):
    """A pooled, keep-alive HTTP client with an explicit timeout and a configurable origin.

    twilio-python's default client has no timeout at all: a hung TCP connection would hold
    a worker forever.
    """

    def __init__(self, *, base_url: str, timeout: float) -> None:
        super().__init__(pool_connections=True, timeout=timeout)
        self.session = _Session()
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args, **kwargs) -> Response:  # type: ignore[no-untyped-def, override]
        if url.startswith(TWILIO_ORIGIN) and self.base_url != TWILIO_ORIGIN:
            url = self.base_url + url[len(TWILIO_ORIGIN) :]
        return super().request(method, url, *args, **kwargs)


_lock = threading.Lock()


@lru_cache(maxsize=256)
@sensitive_variables("auth_token")
def _cached_client(account_sid: str, auth_token: str, base_url: str, timeout: float) -> Client:
    return Client(
        account_sid,
        auth_token,
        http_client=BaseUrlHttpClient(base_url=base_url, timeout=timeout),
    )


@sensitive_variables("auth_token")  # not on an error page's list of local variables
def twilio_client(*, account_sid: str, auth_token: str) -> Client:
    """A Client for these credentials, reused per process so connections stay warm."""
    with _lock:
        return _cached_client(
            account_sid, auth_token, settings.TWILIO_API_BASE_URL, settings.TWILIO_HTTP_TIMEOUT
        )
