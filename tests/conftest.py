"""Shared fixtures: the Twilio sandbox over real HTTP, and a real Celery worker process.

Integration tests run against PostgreSQL and Redis (see config/settings_test.py) with a
worker started as a separate `celery worker -B` process pointed at the test database, so
tasks really cross the broker and the process boundary; nothing runs eagerly.
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis
from django.conf import settings

from integrations.models import Integration
from integrations.twilio.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll until `predicate()` is truthy and return it; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    server = SandboxServer(callback_delay=0.05)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: SandboxServer, settings: Any) -> SandboxServer:
    """The sandbox, emptied, with this process's Twilio client pointed at it."""
    sandbox_server.reset()
    settings.TWILIO_API_BASE_URL = sandbox_server.url
    settings.TWILIO_HTTP_TIMEOUT = 2.0
    return sandbox_server


def sandbox_account(sandbox: SandboxServer, integration: Integration) -> Integration:
    """Register the integration's credentials and numbers as an account at the sandbox."""
    sandbox.add_account(
        integration.account_sid,
        integration.auth_token,
        numbers=integration.sending_numbers,
        messaging_service_sids=[integration.messaging_service_sid]
        if integration.messaging_service_sid
        else [],
    )
    return integration


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: Any,
    django_db_blocker: Any,
    sandbox_server: SandboxServer,
    live_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker -B` process on the test database, Redis and the sandbox."""
    broker_url = settings.CELERY_BROKER_URL
    redis.Redis.from_url(broker_url).flushdb()
    db = settings.DATABASES["default"]
    workdir = tmp_path_factory.mktemp("worker")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "CELERY_BROKER_URL": broker_url,
        "TWILIO_API_BASE_URL": sandbox_server.url,
        "TWILIO_HTTP_TIMEOUT": "2",
        "CAREFLOW_PUBLIC_URL": live_server.url,
        "CAREFLOW_RELAY_AFTER_SECONDS": "1",
        "CAREFLOW_RELAY_INTERVAL": "0.5",
        "CAREFLOW_SWEEP_INTERVAL": "0.5",
        "CAREFLOW_SEND_MAX_RETRIES": "4",
    }
    log_path = workdir / "worker.log"
    log = log_path.open("wb")
    process = subprocess.Popen(  # noqa: S603 — our own interpreter and arguments
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-B",
            "-s",
            str(workdir / "beat-schedule"),
            "-Q",
            "events,runs,sends",
            "-c",
            "2",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(
            lambda: b"ready." in log_path.read_bytes() or process.poll() is not None,
            timeout=60,
            what="the Celery worker to start",
        )
        if process.poll() is not None:
            pytest.fail("Celery worker exited:\n" + log_path.read_text()[-3000:])
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        if os.environ.get("CAREFLOW_SHOW_WORKER_LOG"):
            print(log_path.read_text())


@pytest.fixture
def worker(
    celery_worker_process: subprocess.Popen[bytes], transactional_db: Any, sandbox: SandboxServer
) -> subprocess.Popen[bytes]:
    """Use in integration tests: committed data, a live worker, an empty sandbox."""
    assert celery_worker_process.poll() is None, "the Celery worker died"
    return celery_worker_process
