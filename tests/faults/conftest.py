"""Fixtures of the fault-injection suite: a private Redis, worker processes on it, faults.

Isolation: this suite never touches the shared Redis on 6379. It starts its own
`redis-server` on a free loopback port (no persistence, its own --dir), points this test
process's Celery publisher and its own worker processes at it, and stops it by its own pid
at the end of the package. Everything else (the database name, the sandbox URL, the live
server URL) is read from settings and fixtures at run time, so the suite runs the same inside
`make test` as on its own database:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/careflow_faults .venv/bin/pytest -m faults

With RabbitMQ as the session's broker (CELERY_BROKER_URL=amqp://…, a virtual host of the test
run's own, as .ci/run's second pass makes) the workers take their tasks from it, its queues
purged before each test, and the private Redis is only their throttle's:

    CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672/careflow_faults \
    CAREFLOW_THROTTLE_REDIS_URL=redis://127.0.0.1:6379/9 \
        .venv/bin/pytest tests/faults/test_worker_kill.py

If the shared `celery_worker_process` (tests/conftest.py) was started by an earlier test of
the session, it is stopped while this package runs: its beat would otherwise relay and sweep
this suite's events and runs through the shared Redis, and hide the faults injected here.
The shared `worker` fixture starts it again when a later test needs it.
"""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection

from config.celery import app as celery_app
from integrations.email.sandbox import SandboxServer as EmailSandbox
from integrations.twilio.sandbox import SandboxServer
from tests.conftest import (
    broker_is_redis,
    broker_queues_purge,
    celery_worker_argv,
    sessions_terminate,
)
from tests.faults.harness import REPORTS

ROOT = Path(__file__).resolve().parents[2]
TASK_RECEIVED = re.compile(r"Task ([\w.]+)\[[0-9a-f-]+\] received")
NOTABLE_LOG_LINE = re.compile(
    r": (WARNING|ERROR|CRITICAL)/|Unrecoverable|Error: |beat: |Connected to"
)

# Recovery timings for the workers, overridden for test speed (see each value's reason).
WORKER_TIMINGS = {
    # Slow sandbox answers (delay 2 s) must time out on the client side.
    "TWILIO_HTTP_TIMEOUT": "1",
    "CAREFLOW_EMAIL_HTTP_TIMEOUT": "1",
    # A run held by a SIGKILLed worker is taken over after this (default 120 s). Still far
    # above the longest legitimate hold (one Twilio call, 1 s timeout).
    "CAREFLOW_RUN_LEASE_SECONDS": "10",
    # The production defaults. Shorter ones make recovery no faster here: a burst's backlog
    # is older than the relay's 5 s anyway, and beat re-publishes the undispatched part of it
    # (up to 500 events) on every tick until the workers reach it.
    "CAREFLOW_RELAY_AFTER_SECONDS": "5",
    "CAREFLOW_RELAY_INTERVAL": "5",
    "CAREFLOW_SWEEP_INTERVAL": "5",
    "CAREFLOW_SCAN_INTERVAL": "60",
}


# Our workers' PostgreSQL sessions carry this name, so teardown ends theirs and no other.
WORKER_APPLICATION_NAME = "careflow-faults-worker"


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


class PrivateRedis:
    """A `redis-server` process of our own on a loopback port; stopped and started by pid."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_loopback_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ours(self) -> bool:
        """True when the server answering on our port is our own process (never flush or
        rely on a server someone else started on a port we thought was free)."""
        if self.process is None:
            return False
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        try:
            return int(client.info("server")["process_id"]) == self.process.pid
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("the fault suite needs redis-server on PATH")
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 — a fixed binary and our arguments
                [
                    binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.workdir),
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait(
            lambda: self.ours() or not self.alive(), timeout=20, what=f"redis on port {self.port}"
        )
        if not self.alive():
            raise RuntimeError("redis-server exited:\n" + (self.workdir / "redis.log").read_text())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop our server (SIGTERM to its own pid). Without persistence, every queued and
        unacknowledged task it held is gone: recovery has to come from the database."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def flush(self) -> None:
        if not self.ours():
            raise RuntimeError(f"the redis on port {self.port} is not this suite's own")
        client = redis.Redis(host="127.0.0.1", port=self.port)
        try:
            client.flushall()
        finally:
            client.close()


class FaultWorker:
    """A real `celery worker` process (2 prefork children, beat embedded if asked) that can
    be SIGKILLed with its whole process group and started again."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path, *, beat: bool) -> None:
        self.name, self.env, self.workdir, self.beat = name, env, workdir, beat
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self, *, timeout: float = 60.0) -> None:
        self.starts += 1
        # A fresh schedule file per start: a SIGKILL can leave the old one half-written.
        schedule = self.workdir / f"{self.name}-beat-{self.starts}" if self.beat else None
        argv = celery_worker_argv(name=self.name, beat_schedule=schedule)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 — our own interpreter and arguments
                argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: kill() takes the children
            )

        def ready() -> bool:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return b" ready." in log.read() or not self.alive()

        _wait(ready, timeout=timeout, what=f"worker {self.name} to start")
        if not self.alive():
            raise RuntimeError(f"worker {self.name} exited:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the parent and its prefork children (and beat), as a power cut would."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None
        self.kills += 1

    def stop(self) -> None:
        """Warm shutdown; whatever of the group is left after 30 s is killed."""
        if self.process is None:
            return
        pgid = self.process.pid
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)  # our own group only; children a stop left behind
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.process = None

    def tasks_received(self) -> Counter[str]:
        """Tasks this worker's processes received, by name (from the worker's own log)."""
        if not self.log_path.exists():
            return Counter()
        return Counter(TASK_RECEIVED.findall(self.log_path.read_text(errors="replace")))

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def state(self) -> str:
        """Whether the process is running, or how it ended (a worker that exits by itself is
        a finding)."""
        if self.process is None:
            return "stopped by the test"
        code = self.process.poll()
        return "running" if code is None else f"exited by itself with code {code}"

    def log_notable(self, lines: int = 40) -> str:
        """The last warnings and errors of its log, one line each (tracebacks left out, a
        line repeated in a row counted instead)."""
        if not self.log_path.exists():
            return ""
        notable: list[list[Any]] = []  # [line, how many times its text came in a row]
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not NOTABLE_LOG_LINE.search(line):
                continue
            if notable and notable[-1][0].partition("] ")[2] == line.partition("] ")[2]:
                notable[-1][1] += 1
            else:
                notable.append([line[:300], 1])
        return "\n".join(
            line if count == 1 else f"{line} (and {count - 1} more like it)"
            for line, count in notable[-lines:]
        )


def tasks_received(workers: list[FaultWorker]) -> str:
    """e.g. "events_dispatch 41, run_advance 2": what beat's relay and sweeper added shows
    as more tasks than events."""
    total: Counter[str] = Counter()
    for worker in workers:
        total += worker.tasks_received()
    return ", ".join(f"{name.rsplit('.', 1)[-1]} {count}" for name, count in total.most_common())


def _shared_worker(request: pytest.FixtureRequest) -> Any:
    """The session's shared `celery_worker_process`, if an earlier test started it."""
    try:
        definitions = request._fixturemanager.getfixturedefs("celery_worker_process", request.node)
    except (AttributeError, TypeError):  # a pytest without this internal: nothing to pause
        return None
    for definition in definitions or ():
        cached = getattr(definition, "cached_result", None)
        if cached and cached[0] is not None:
            return cached[0]
    return None


@pytest.fixture(scope="package")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path_factory.mktemp("faults-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def faults_broker(private_redis: PrivateRedis, request: pytest.FixtureRequest) -> Iterator[str]:
    """The broker of this suite's workers, with the shared worker paused (see the module
    docstring). On a Redis session broker, our own Redis: this process's Celery publisher
    (the on_commit event publish) is pointed at it. On RabbitMQ (CELERY_BROKER_URL=amqp://…),
    the session's broker itself, as the workers of a RabbitMQ deployment would share it; its
    queues are purged before each test instead (`worker_env`)."""
    shared = _shared_worker(request)
    if shared is not None and shared.alive():
        shared.stop()
    if not broker_is_redis(django_settings.CELERY_BROKER_URL):
        yield django_settings.CELERY_BROKER_URL
        return
    conf = celery_app.conf
    # Celery prefers a CELERY_BROKER_URL environment variable (settings_test sets one) to
    # conf.broker_url, but not to the explicit read/write URLs: set those. The app's pools
    # are kombu's process-wide pools for the old URL: set aside, never closed, and put back.
    names = ("broker_read_url", "broker_write_url")
    saved = {name: conf.get(name) for name in names}
    saved_pools = (celery_app._pool, celery_app.amqp._producer_pool)
    celery_app._pool = celery_app.amqp._producer_pool = None
    for name in names:
        conf[name] = private_redis.url
    with celery_app.connection_for_write() as publisher:
        assert f":{private_redis.port}/" in publisher.as_uri(), "publisher not isolated"
    try:
        yield private_redis.url
    finally:
        ours = celery_app._pool
        celery_app._pool, celery_app.amqp._producer_pool = saved_pools
        for name, value in saved.items():
            conf[name] = value
        if ours is not None and ours is not saved_pools[0]:
            with contextlib.suppress(Exception):
                ours.force_close_all()  # the pool of our own URL only


@pytest.fixture(scope="package")
def email_sandbox_server() -> Iterator[EmailSandbox]:
    """The Postmark sandbox of this suite's email bursts (each registers its own server)."""
    server = EmailSandbox(webhook_delay=0.1)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def email_sandbox(email_sandbox_server: EmailSandbox) -> EmailSandbox:
    """The email sandbox, emptied (the workers send to it: see `worker_env`)."""
    email_sandbox_server.reset()
    return email_sandbox_server


@pytest.fixture
def worker_env(
    faults_broker: str,
    private_redis: PrivateRedis,
    sandbox_server: SandboxServer,
    email_sandbox_server: EmailSandbox,
    live_server: Any,
    transactional_db: Any,
    settings: Any,
) -> dict[str, str]:
    """The environment of this suite's worker processes, all derived at run time."""
    # Should this process ever reach the per-sender throttle, it must use our Redis too.
    settings.CAREFLOW_THROTTLE_REDIS_URL = private_redis.url
    if not private_redis.alive():  # a failed test may have left it stopped
        private_redis.start()
    private_redis.flush()
    # Tasks of the previous test (a killed worker's go back to their queue) are not this one's.
    broker_queues_purge(faults_broker)
    db = django_settings.DATABASES["default"]
    credentials = quote(db["USER"], safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or "5432"
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("CELERY_", "CAREFLOW_", "TWILIO_", "DATABASE_"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": (
                f"postgres://{credentials}@{host}:{port}/{db['NAME']}"
                f"?application_name={WORKER_APPLICATION_NAME}"
            ),
            "CELERY_BROKER_URL": faults_broker,
            # The per-sender throttle's Redis: ours too, never the shared one.
            "CAREFLOW_THROTTLE_REDIS_URL": private_redis.url,
            "TWILIO_API_BASE_URL": sandbox_server.url,
            "CAREFLOW_EMAIL_DELIVERY": "esp",
            "CAREFLOW_POSTMARK_API_URL": email_sandbox_server.url + "/",
            "CAREFLOW_MAILGUN_API_URL": email_sandbox_server.url + "/v3",
            "CAREFLOW_PUBLIC_URL": live_server.url,
            **WORKER_TIMINGS,
        }
    )
    return env


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, for the `start_worker` fixture's teardown."""
    report = yield
    setattr(item, f"careflow_report_{report.when}", report)
    return report


@pytest.fixture
def start_worker(
    worker_env: dict[str, str],
    tmp_path: Path,
    transactional_db: Any,
    sandbox_server: SandboxServer,
    email_sandbox_server: EmailSandbox,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., FaultWorker]]:
    """`start_worker(name, beat=False, **env)`: a worker process of 2 prefork children,
    started on this suite's environment (`env` overrides part of it); every one is stopped at
    the end of the test. When the test fails, each one's state and the last warnings of its
    log are printed."""
    started: list[FaultWorker] = []

    def start(name: str, *, beat: bool = False, **env: str) -> FaultWorker:
        worker = FaultWorker(name, {**worker_env, **env}, tmp_path, beat=beat)
        started.append(worker)
        worker.start()
        return worker

    try:
        yield start
    finally:
        call = getattr(request.node, "careflow_report_call", None)
        if call is not None and call.failed:
            for worker in started:
                print(f"--- {worker.name}: {worker.state()}; its log's last warnings ---")
                print(worker.log_notable())
        for worker in started:
            worker.stop()
        # Sessions left on the test database would block its flush, or its drop at the end
        # of the session: a SIGKILLed worker's lingers until PostgreSQL notices, and the live
        # server's threads keep theirs while the sandbox's keep-alive connections post the
        # status callbacks still pending (dropped here: the test is over).
        sandbox_server.reset()
        email_sandbox_server.reset()
        with contextlib.suppress(Exception):
            _wait(
                lambda: sessions_terminate(WORKER_APPLICATION_NAME) == 0,
                timeout=15,
                what="the workers' database sessions",
            )
        with contextlib.suppress(Exception), connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        if os.environ.get("CAREFLOW_SHOW_WORKER_LOG"):
            for worker in started:
                print(f"--- {worker.name} ---\n{worker.log_tail(20000)}")


@pytest.fixture
def workers(start_worker: Callable[..., FaultWorker]) -> list[FaultWorker]:
    """Two worker processes, started; beat runs in the first."""
    return [start_worker("faults-a", beat=True), start_worker("faults-b")]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORTS:
        terminalreporter.section("fault-injection results")
        for line in REPORTS:
            terminalreporter.write_line(line)
