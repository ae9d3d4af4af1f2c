"""Helpers for tests that start careflow as its users do, in processes of their own: the
environment of a fresh shell (none of the test suite's settings), free ports, and waiting for
a server to answer."""

import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# What the test run sets for itself (config/settings_test.py, pytest-django) and a user's
# shell does not have.
_TEST_ONLY = {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "CELERY_BROKER_URL"}


def fresh_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user's shell: the real settings module, every runtime file
    under var_dir, nothing of the test suite's."""
    env = {key: value for key, value in os.environ.items() if key not in _TEST_ONLY}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.update(CAREFLOW_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def http_opener() -> urllib.request.OpenerDirector:
    """An opener that reports redirects instead of following them."""
    return urllib.request.build_opener(_NoRedirect())


def wait_until_serving(url: str, *, timeout: float, alive: Callable[[], bool]) -> None:
    """Wait until url answers anything over HTTP (a redirect too); fail early when the
    process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise AssertionError(f"the server exited before {url} answered")
        try:
            http_opener().open(url, timeout=2)
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
        else:
            return
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s")
