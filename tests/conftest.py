"""Shared fixtures: the Twilio sandbox over real HTTP, a loopback webhook receiver, and a real
Celery worker process.

Integration tests run against PostgreSQL and Redis (see config/settings_test.py) with a
worker started as a separate `celery worker -B` process pointed at the test database, so
tasks really cross the broker and the process boundary; nothing runs eagerly. The broker may
be RabbitMQ instead (CELERY_BROKER_URL=amqp://…, with CAREFLOW_THROTTLE_REDIS_URL naming the
Redis; .ci/rabbitmq): nothing here depends on which.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.core.management.base import CommandError
from django.db import connection
from django.test import TransactionTestCase
from kombu import Connection

from common.coordination import coordination_redis
from integrations.models import Integration
from integrations.policy import messaging_policy_forget
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")

_fixture_teardown = TransactionTestCase._fixture_teardown


def _fixture_teardown_retried(self: TransactionTestCase) -> None:
    """A transactional test's teardown truncates every table in one statement, taking their
    locks one by one, while the session's Celery worker may be in a beat task reading two of
    them: PostgreSQL breaks that deadlock by cancelling one side, sometimes the TRUNCATE (seen
    in CI). The flush is atomic, so it is simply tried again."""
    for attempt in range(3):
        try:
            _fixture_teardown(self)
            return
        except CommandError as exc:
            if attempt == 2 or "deadlock detected" not in str(exc.__cause__):
                raise
            time.sleep(0.5)


TransactionTestCase._fixture_teardown = _fixture_teardown_retried  # type: ignore[method-assign]

# pytest may run more than once in one process: mutmut (`make mutation`) runs it in-process
# for its statistics and a clean run, then forks a child per mutant that runs it again.
# The databases' names as configured, before a run renames them to their test names.
_DATABASE_NAMES = {alias: config["NAME"] for alias, config in settings.DATABASES.items()}


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> None:
    """With --reuse-db a run leaves each database renamed to its test name, and the next run
    in the same process would name it again (test_test_…): start from the names as
    configured."""
    from django.db import connections

    for alias, name in _DATABASE_NAMES.items():
        settings.DATABASES[alias]["NAME"] = connections[alias].settings_dict["NAME"] = name


def pytest_sessionfinish() -> None:
    """Close this process's database sessions when the run ends, its connection pool's too
    (Django's close() hands a session back to the pool), so a process forked after it
    (mutmut's children) does not inherit a live one: two processes on one socket corrupt
    each other's session (psycopg's prepared statements went missing). Celery's prefork
    workers do the same in their children."""
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        conn.close()
        if conn.settings_dict.get("OPTIONS", {}).get("pool"):
            conn.close_pool()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the fault-injection suite last: it stops the session's worker, swaps the Celery
    publisher's broker and terminates database sessions, and the worker tests that ran right
    after it were seen to time out waiting for their first run (2 of 3 CI runs)."""
    items.sort(key=lambda item: item.get_closest_marker("faults") is not None)


def at_once(count: int, work: Callable[[int], T]) -> list[T]:
    """Run `work(0)` … `work(count - 1)` in threads released together (each with its own
    database connection, closed after), for races; their results in the order they ended."""
    barrier = threading.Barrier(count)
    results: list[T] = []

    def one(n: int) -> None:
        try:
            barrier.wait()
            results.append(work(n))
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


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


@pytest.fixture(autouse=True)
def _fresh_policy_cache() -> None:
    """Tests change messaging policies with queryset updates; never serve a cached one."""
    messaging_policy_forget()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    # A local run: careflow's status callbacks come to this machine.
    server = SandboxServer(callback_delay=0.05, local_callbacks=True)
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
    account = twilio_account(integration)
    sandbox.add_account(
        account.account_sid,
        account.auth_token,
        numbers=integration.senders,
        messaging_service_sids=[account.messaging_service_sid]
        if account.messaging_service_sid
        else [],
    )
    return integration


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: str = '{"ok": true}'
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class WebhookReceiver:
    """A loopback HTTP server standing in for a clinic's webhook endpoint: it records every
    POST and answers as told (`answer` for every request, or `answers` queued one by one)."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self.queued: list[Answer] = []
        self.default = Answer()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append(ReceivedRequest(self.path, dict(self.headers), body))
                    answer = receiver.queued.pop(0) if receiver.queued else receiver.default
                time.sleep(answer.delay)
                payload = answer.body.encode()
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, status: int = 200, body: str = '{"ok": true}', **extra: Any) -> None:
        self.default = Answer(status, body, **extra)

    def reset(self) -> None:
        with self._lock:
            self.requests, self.queued, self.default = [], [], Answer()

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def webhook_receiver_server() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def webhook_receiver(webhook_receiver_server: WebhookReceiver, settings: Any) -> WebhookReceiver:
    """The receiver, emptied and answering 200; this process may post to it (loopback, plain
    http), with a short timeout."""
    webhook_receiver_server.reset()
    settings.CAREFLOW_WEBHOOK_ALLOW_PRIVATE = True
    settings.CAREFLOW_WEBHOOK_TIMEOUT = 2.0
    return webhook_receiver_server


RUNNING_WORKERS: list["WorkerProcess"] = []

# The queues careflow's tasks are routed to, the default one included.
TASK_QUEUES = sorted(
    {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    | {settings.CELERY_TASK_DEFAULT_QUEUE}
)


def broker_is_redis(url: str) -> bool:
    """Whether this Celery broker URL is a Redis (else RabbitMQ, for the tests)."""
    return url.startswith(("redis://", "rediss://"))


def broker_queues_purge(url: str) -> int:
    """Empty careflow's task queues at this broker, Redis or RabbitMQ alike; how many tasks
    were dropped. Tasks an earlier run left behind (a killed worker's unacknowledged ones go
    back to their queue) would otherwise run against this run's database, whose ids start
    again from 1."""
    purged = 0
    with Connection(url, connect_timeout=5) as broker:
        for name in TASK_QUEUES:
            try:
                # A channel per queue: RabbitMQ closes the channel of a purge that fails.
                with broker.channel() as channel:
                    purged += int(channel.queue_purge(name) or 0)
            except broker.channel_errors:  # never declared at this broker: nothing queued
                continue
    return purged


def coordination_flush() -> None:
    """Empty the test run's coordinating Redis (CAREFLOW_THROTTLE_REDIS_URL: throttle buckets,
    the events' waiting list and wake-up flag; with a Redis broker and no throttle URL of its
    own, the broker's database, unacknowledged tasks included): an earlier run's waiting
    event ids and buckets are not this run's."""
    client = coordination_redis()
    if client is not None:
        client.flushdb()


# The session worker's PostgreSQL sessions carry this name, so a test can end theirs only.
WORKER_APPLICATION_NAME = "careflow-test-worker"


def sessions_terminate(application_name: str) -> int:
    """End the test database's sessions of this application (a worker's); how many there were."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [application_name],
        )
        return int(cursor.fetchone()[0])


def celery_worker_argv(*, name: str = "", beat_schedule: Path | None = None) -> list[str]:
    """`celery worker` as the tests run it: all three queues, 2 prefork children, beat
    embedded when given a schedule file."""
    argv = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "events,runs,sends"]
    argv += ["-c", "2", "-l", "INFO", "--without-gossip", "--without-mingle"]
    argv += ["--without-heartbeat"]
    if name:
        argv += ["-n", f"{name}@%h"]
    if beat_schedule is not None:
        argv += ["-B", "-s", str(beat_schedule)]
    return argv


class WorkerProcess:
    """A real `celery worker -B` process; can be killed and started again mid-test."""

    def __init__(self, env: dict[str, str], workdir: Path) -> None:
        self.env, self.workdir = env, workdir
        RUNNING_WORKERS.append(self)
        self.log_path = workdir / "worker.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 — our own interpreter and arguments
                celery_worker_argv(beat_schedule=self.workdir / "beat-schedule"),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so kill() takes the children
            )

        def started() -> bool:
            return b"ready." in self.log_path.read_bytes()[offset:] or not self.alive()

        wait_for(started, timeout=60, what="the Celery worker to start")
        if not self.alive():
            pytest.fail("Celery worker exited:\n" + self.log_path.read_text()[-3000:])

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            # The whole process group: the prefork children die with their parent, as they
            # would when a machine loses power.
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: Any,
    django_db_blocker: Any,
    sandbox_server: SandboxServer,
    live_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    """A real `celery worker -B` process on the test database, the broker (Redis or RabbitMQ)
    and the sandbox."""
    broker_url = settings.CELERY_BROKER_URL
    broker_queues_purge(broker_url)
    coordination_flush()
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
            f"?application_name={WORKER_APPLICATION_NAME}"
        ),
        "CELERY_BROKER_URL": broker_url,
        "TWILIO_API_BASE_URL": sandbox_server.url,
        "TWILIO_HTTP_TIMEOUT": "2",
        "CAREFLOW_PUBLIC_URL": live_server.url,
        "CAREFLOW_RELAY_AFTER_SECONDS": "1",
        "CAREFLOW_RELAY_INTERVAL": "0.5",
        "CAREFLOW_SWEEP_INTERVAL": "0.5",
        "CAREFLOW_SCAN_INTERVAL": "0.5",
        "CAREFLOW_BROADCAST_SWEEP_INTERVAL": "0.5",
        # A broadcast message a killed worker lost comes back after this (300 s in production).
        "CAREFLOW_BROADCAST_LOST_AFTER_SECONDS": "20",
        "CAREFLOW_SEND_MAX_RETRIES": "4",
        # The webhook receiver is a loopback http:// server.
        "CAREFLOW_WEBHOOK_ALLOW_PRIVATE": "1",
        "CAREFLOW_WEBHOOK_TIMEOUT": "2",
    }
    worker = WorkerProcess(env, tmp_path_factory.mktemp("worker"))
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()
        # Connections a killed worker left behind would block dropping the test database.
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        if os.environ.get("CAREFLOW_SHOW_WORKER_LOG"):
            print(worker.log_path.read_text())


@pytest.fixture
def worker(
    celery_worker_process: WorkerProcess, transactional_db: Any, sandbox: SandboxServer
) -> WorkerProcess:
    """Use in integration tests: committed data, a live worker, an empty sandbox."""
    if not celery_worker_process.alive():  # a previous test stopped it
        celery_worker_process.start()
    return celery_worker_process


@pytest.fixture
def no_worker() -> None:
    """For tests that commit events and must process them alone: stop the session's worker
    (and its beat relay) if an earlier test started it; the next `worker` user restarts it."""
    for process in RUNNING_WORKERS:
        if process.alive():
            process.stop()
