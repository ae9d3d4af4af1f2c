"""Shared plumbing for the benchmarks: machine report, databases, processes, the sandbox.

Nothing here imports Django at module level: the orchestrating scripts stay unconfigured and
start one child process per system (careflow, baseline), each with its own settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PG = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379"
# Ours alone: other engineers use test_careflow, careflow_h*, careflow_ci and Redis 12-15.
# BENCH_DB_SUFFIX="_<name>" keeps concurrent runs from two checkouts on one machine apart
# (every script's databases and the workers' var directory); BENCH_REDIS_DBS moves Redis.
DB_SUFFIX = os.environ.get("BENCH_DB_SUFFIX", "")


def bench_db(name: str) -> str:
    """A benchmark database's name, with this run's suffix."""
    return f"{name}{DB_SUFFIX}"


CAREFLOW_DB, BASELINE_DB = bench_db("careflow_bench"), bench_db("careflow_bench_base")
# BENCH_REDIS_DBS="15,14" moves both when those two are taken by another run on the machine.
CAREFLOW_REDIS_DB, BASELINE_REDIS_DB = os.environ.get("BENCH_REDIS_DBS", "10,11").split(",")
CAREFLOW_REDIS, BASELINE_REDIS = f"{REDIS}/{CAREFLOW_REDIS_DB}", f"{REDIS}/{BASELINE_REDIS_DB}"
# Worker processes per system (the same for both); BENCH_WORKER_CONCURRENCY=4 to see how
# each scales when its processes spend part of each task waiting on PostgreSQL and Twilio.
WORKER_CONCURRENCY = int(os.environ.get("BENCH_WORKER_CONCURRENCY", "2"))
# What both systems' workers run with, as the scripts print it in their headers.
WORKER_SETTINGS = {
    "broker": (
        f"Redis 127.0.0.1:6379 (careflow db {CAREFLOW_REDIS_DB}, baseline db {BASELINE_REDIS_DB})"
    ),
    "worker": f"prefork -c {WORKER_CONCURRENCY}, prefetch 1, acks_late",
    "CELERY_DB_REUSE_MAX": 1000,
    # careflow's processes keep a psycopg pool (CAREFLOW_DB_POOL_MAX_SIZE, default 4), which
    # replaces CONN_MAX_AGE; the baseline keeps one persistent connection per process.
    "database sessions": "careflow psycopg pool (max 4 per process), baseline CONN_MAX_AGE=60",
}
SANDBOX_ACCOUNT = ("AC" + "b" * 32, "bench-auth-token")
SANDBOX_FROM = "+15005550006"


class SetupError(RuntimeError):
    """Raised when the benchmark cannot be set up; scripts exit 2 with the reason."""


def fail(reason: str) -> None:
    print(f"\nSETUP FAILED: {reason}", file=sys.stderr, flush=True)
    sys.exit(2)


def guarded(main: Callable[[], int]) -> None:
    try:
        code = main()
    except SetupError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted")
    sys.exit(code or 0)


# --- report ---------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _os_release() -> str:
    try:
        info = dict(
            line.split("=", 1)
            for line in Path("/etc/os-release").read_text().splitlines()
            if "=" in line
        )
        return info.get("PRETTY_NAME", "").strip('"')
    except OSError:
        return platform.system()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _server_versions() -> dict[str, str]:
    out = {}
    try:
        out["postgresql"] = subprocess.run(
            ["psql", f"{PG}/postgres", "-Atc", "show server_version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except Exception as exc:  # noqa: BLE001
        out["postgresql"] = f"unknown ({type(exc).__name__})"
    try:
        import redis

        out["redis"] = redis.Redis.from_url(CAREFLOW_REDIS).info()["redis_version"]
    except Exception as exc:  # noqa: BLE001
        out["redis"] = f"unknown ({type(exc).__name__})"
    return out


def print_header(title: str, settings: dict[str, Any]) -> dict[str, Any]:
    machine = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory": _mem_total(),
        "os": _os_release(),
        "kernel": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "loadavg at start": Path("/proc/loadavg").read_text().split(" ")[0],
    }
    versions = {
        "python": platform.python_version(),
        **{d: _version(d) for d in ("django", "celery", "kombu", "psycopg", "twilio", "redis")},
        **{f"{k}-server": v for k, v in _server_versions().items()},
    }
    print(f"=== {title} ===")
    print("machine:  " + ", ".join(f"{k}={v}" for k, v in machine.items()))
    print("versions: " + ", ".join(f"{k}={v}" for k, v in versions.items()))
    print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))
    print(flush=True)
    return {"machine": machine, "versions": versions, "settings": settings}


def summary(values: Sequence[float]) -> dict[str, float]:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def fmt(stat: dict[str, float], unit: str, digits: int = 1) -> str:
    return (
        f"{stat['median']:.{digits}f} {unit} (min {stat['min']:.{digits}f}, "
        f"max {stat['max']:.{digits}f}, n={stat['n']})"
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


# --- databases and Redis --------------------------------------------------------------------


def psql(sql: str, db: str = "postgres") -> str:
    proc = subprocess.run(
        ["psql", f"{PG}/{db}", "-v", "ON_ERROR_STOP=1", "-Atc", sql],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise SetupError(f"psql failed on {db}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def recreate_db(name: str) -> None:
    assert name.startswith("careflow_bench"), name  # never anyone else's database
    psql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    )
    psql(f'DROP DATABASE IF EXISTS "{name}"')
    psql(f'CREATE DATABASE "{name}"')


def drop_db(name: str) -> None:
    assert name.startswith("careflow_bench"), name
    try:
        psql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        )
        psql(f'DROP DATABASE IF EXISTS "{name}"')
    except SetupError as exc:
        print(f"warning: {exc}", file=sys.stderr)


def flush_redis(url: str) -> None:
    assert url.rsplit("/", 1)[1] in (CAREFLOW_REDIS_DB, BASELINE_REDIS_DB), url
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=5).flushdb()
    except Exception as exc:
        raise SetupError(f"Redis at {url} unreachable: {exc}") from exc


def check_services() -> None:
    psql("SELECT 1")
    flush_redis(CAREFLOW_REDIS)


# --- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """A child process in its own process group, logged to a file, stopped by its pid."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], logdir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = logdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready: bytes | None = None, timeout: float = 60) -> Proc:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if ready is not None:
            deadline = time.monotonic() + timeout
            while ready not in self.log_path.read_bytes():
                if self.process.poll() is not None:
                    raise SetupError(f"{self.name} exited:\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise SetupError(f"{self.name} not ready after {timeout}s:\n{self.tail()}")
                time.sleep(0.1)
        return self

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        self.terminate()
        self.wait_stopped()

    def terminate(self) -> None:
        """Ask the process group to stop (SIGTERM), without waiting."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

    def wait_stopped(self) -> None:
        """Wait for a terminated process; SIGKILL its group after 20 s."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


# Process groups for CPU accounting, by a piece of the command line (first match wins).
CPU_GROUPS = (
    ("postgres", "postgres"),
    ("redis", "redis-server"),
    ("sandbox", "twilio_sandbox"),
    ("beat", " beat "),
    ("worker", " worker "),
    ("web", "gunicorn"),
)


class CpuMeter:
    """CPU time of this machine's processes by group (PostgreSQL, Redis, sandbox, beat,
    worker, and the driver: this process) between start() and stop(), from /proc, as a
    percentage of one core. A process that starts in between counts from its start; one
    that ends in between is not counted. Linux only; elsewhere it reports nothing."""

    def __init__(self) -> None:
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._start: dict[str, tuple[str, int]] = {}
        self._t0 = 0.0

    def _group(self, pid: str) -> str | None:
        if pid == str(os.getpid()):
            return "driver"
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, UnicodeDecodeError):
            return None
        return next((name for name, part in CPU_GROUPS if part in f"{cmd} "), None)

    def _snapshot(self) -> dict[str, tuple[str, int]]:
        out: dict[str, tuple[str, int]] = {}
        proc = Path("/proc")
        if not proc.is_dir():
            return out
        for entry in proc.iterdir():
            if not entry.name.isdigit():
                continue
            group = self._group(entry.name)
            if group is None:
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            out[entry.name] = (group, int(fields[11]) + int(fields[12]))  # utime + stime
        return out

    def start(self) -> None:
        self._start, self._t0 = self._snapshot(), time.monotonic()

    def stop(self) -> dict[str, float]:
        end, elapsed = self._snapshot(), time.monotonic() - self._t0
        used: dict[str, int] = {}
        for pid, (group, ticks) in end.items():
            used[group] = used.get(group, 0) + ticks - self._start.get(pid, (group, 0))[1]
        if elapsed <= 0:
            return {}
        shares = {g: round(100 * t / self._ticks / elapsed, 1) for g, t in used.items()}
        return dict(sorted(shares.items(), key=lambda item: -item[1]))


def cpu_text(shares: dict[str, float]) -> str:
    if not shares:
        return "cpu: not measured"
    total = sum(shares.values())
    parts = ", ".join(f"{group} {share:.0f}%" for group, share in shares.items())
    return f"cpu: {parts} (total {total:.0f}% of {100 * (os.cpu_count() or 1)}%)"


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
        CONN_MAX_AGE="60",
        CELERY_DB_REUSE_MAX="1000",
        TWILIO_HTTP_TIMEOUT="10",
    )
    env.update(extra)
    return env


def careflow_env(sandbox_url: str = "http://127.0.0.1:9", **extra: str) -> dict[str, str]:
    return base_env(
        **{
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": f"{PG}/{CAREFLOW_DB}",
            "CELERY_BROKER_URL": CAREFLOW_REDIS,
            "TWILIO_API_BASE_URL": sandbox_url,
            "CAREFLOW_VAR_DIR": str(Path(tempfile.gettempdir()) / "careflow-bench-var"),
            # The bench's client speaks plain http: the production defaults would redirect
            # every admin request to https (a 301) and keep its cookies off plain http.
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            **extra,
        }
    )


def baseline_env(sandbox_url: str = "http://127.0.0.1:9", **extra: str) -> dict[str, str]:
    return base_env(
        **{
            "DJANGO_SETTINGS_MODULE": "bench.baseline.settings",
            "DATABASE_URL": f"{PG}/{BASELINE_DB}",
            "CELERY_BROKER_URL": BASELINE_REDIS,
            "TWILIO_API_BASE_URL": sandbox_url,
            "BENCH_TWILIO_ACCOUNT_SID": SANDBOX_ACCOUNT[0],
            "BENCH_TWILIO_AUTH_TOKEN": SANDBOX_ACCOUNT[1],
            **extra,
        }
    )


def migrate(env: dict[str, str], *, static: bool = False) -> None:
    """Migrate, and with `static` collect the static files the pages name (hashed, as in
    production)."""
    commands = [["migrate", "--run-syncdb"]] + ([["collectstatic", "--noinput"]] if static else [])
    for command in commands:
        proc = subprocess.run(
            [PY, "manage.py", *command, "-v", "0"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            raise SetupError(f"{command[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")


class Sandbox:
    """The Twilio-compatible sandbox as its own process (`manage.py twilio_sandbox`).

    Status callbacks are disabled (`--callback-delay -1`): neither side runs a web server to
    receive them, the baseline sets no StatusCallback, and the figure is "accepted by Twilio".
    """

    def __init__(self, logdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        sid, token = SANDBOX_ACCOUNT
        self.proc = Proc(
            "sandbox",
            [
                PY,
                "manage.py",
                "twilio_sandbox",
                "--port",
                str(self.port),
                "--callback-delay",
                "-1",
                "--local-callbacks",
                "--account",
                f"{sid}:{token}:{SANDBOX_FROM}",
            ],
            careflow_env(),
            logdir,
        )

    def start(self) -> Sandbox:
        self.proc.start(ready=self.url.encode(), timeout=60)
        return self

    def stop(self) -> None:
        self.proc.stop()

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        response = requests.request(method, self.url + path, timeout=60, **kw)
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self._call("POST", "/_sandbox/reset")

    def stats(self) -> dict[str, int]:
        return self._call("GET", "/_sandbox/stats.json")

    def messages(self) -> list[dict[str, Any]]:
        return self._call("GET", "/_sandbox/messages.json")["messages"]

    def wait_accepted(self, count: int, timeout: float, stall: float = 60) -> dict[str, int]:
        """Poll until `count` messages were accepted; stop early if nothing moves for `stall` s."""
        deadline = time.monotonic() + timeout
        last, last_change = -1, time.monotonic()
        while True:
            stats = self.stats()
            if stats["accepted"] >= count:
                return stats
            if stats["accepted"] != last:
                last, last_change = stats["accepted"], time.monotonic()
            now = time.monotonic()
            if now > deadline or now - last_change > stall:
                return stats
            time.sleep(0.2)


def _worker_argv(app: str, queues: str, name: str) -> list[str]:
    """One `celery worker` command line for both systems: only the app, queues and name
    differ, never the pool, concurrency or the features turned off."""
    return [
        PY,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-Q",
        queues,
        "-c",
        str(WORKER_CONCURRENCY),
        "-P",
        "prefork",
        "-l",
        "INFO",
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def careflow_worker(
    env: dict[str, str], logdir: Path, groups: int = 1, include: Sequence[str] = ()
) -> list[Proc]:
    """`celery -A config worker -Q events,runs,sends -c 2` plus a separate beat (the relay and
    the event listener). `groups` > 1 starts that many worker processes, each with its own
    name and the same concurrency, as separate machines would run them (bench/scale.py);
    `include`: modules the workers also import (celery --include)."""
    extra = ["--include", ",".join(include)] if include else []
    workers = [
        Proc(
            f"careflow-worker{suffix}",
            [*_worker_argv("config", "events,runs,sends", f"cfbench{suffix}"), *extra],
            env,
            logdir,
        )
        for suffix in ["", *(f"-{i}" for i in range(2, groups + 1))]
    ]
    beat = Proc(
        "careflow-beat",
        [
            PY,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "-l",
            "INFO",
            "-s",
            str(logdir / "beat-schedule"),
        ],
        env,
        logdir,
    )
    for worker in workers:
        worker.start(ready=b"ready.")
    beat.start(ready=b"beat: Starting")
    return [*workers, beat]


def baseline_worker(env: dict[str, str], logdir: Path) -> list[Proc]:
    worker = Proc(
        "baseline-worker",
        _worker_argv("bench.baseline.celery_app", "sends", "basebench"),
        env,
        logdir,
    )
    worker.start(ready=b"ready.")
    return [worker]


def stop_all(procs: Iterable[Proc]) -> None:
    """Stop them all at once (each shutdown waits on its own, so not one after another)."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait_stopped()


def broker_drain(broker_url: str, timeout: float = 600) -> float:
    """Wait until careflow's broker queues are empty (leftover duplicate tasks, e.g. the
    relay's re-dispatches after a flood) so each measurement starts from an idle system;
    returns the seconds waited."""
    import redis

    broker = redis.Redis.from_url(broker_url)
    queues = ("events", "runs", "sends")
    t0 = time.monotonic()
    while sum(broker.llen(q) for q in queues) and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
    time.sleep(1.0)
    return time.monotonic() - t0


def run_child(argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a child (a driver in one system's settings); its last stdout line is JSON."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.communicate(timeout=30)
        raise SetupError(f"child {argv[1:4]} timed out after {timeout}s") from None
    lines = [line for line in out.splitlines() if line.strip()]
    for line in lines[:-1]:
        print("  " + line, flush=True)
    if proc.returncode != 0 or not lines:
        raise SetupError(f"child {argv[1:4]} failed (exit {proc.returncode}); see output above")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise SetupError(f"child {argv[1:4]} printed no JSON result: {lines[-1][:300]}") from None


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def system_start(system: str, db: str, env: dict[str, str], logdir: Any) -> Any:
    """A fresh database and broker for `system` ("careflow" or "baseline"), and its workers."""
    recreate_db(db)
    migrate(env)
    flush_redis(env["CELERY_BROKER_URL"])
    start = careflow_worker if system == "careflow" else baseline_worker
    return start(env, logdir)


# --- per-process accounting (bench/scale.py) -------------------------------------------------
# CpuMeter above groups every process on the machine by its command line, so on a machine
# shared with other checkouts' workers and sandboxes it counts theirs too. These count only
# the sessions this run started (each Proc is a session leader: start_new_session) and the
# PostgreSQL backends of this run's database.


def _proc_stat(pid: str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pg_backends(db: str) -> list[tuple[int, int | None, str]]:
    """(backend pid, client port, backend type) of every backend on database `db` (port
    None: a Unix socket or no client, e.g. an autovacuum worker)."""
    rows = psql(
        f"SELECT pid, client_port, backend_type FROM pg_stat_activity WHERE datname = '{db}'"
    )
    out = []
    for line in rows.splitlines():
        pid, port, kind = line.split("|", 2)
        out.append((int(pid), int(port) if port and int(port) > 0 else None, kind))
    return out


class SessionCpu:
    """CPU seconds used between start() and stop() by the processes of some sessions (by
    role: {"worker-1": session id, …}; a session's processes are its leader and everything
    it forked, e.g. a Celery consumer and its prefork children) and by database `db`'s
    PostgreSQL backends ("postgres"). A process that starts in between counts from its
    start; one that ends in between is not counted. Linux only."""

    def __init__(self, sessions: dict[str, int], db: str) -> None:
        self.roles = {str(sid): role for role, sid in sessions.items()}
        self.db = db
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._start: dict[str, tuple[str, int]] = {}
        self._t0 = 0.0

    def _snapshot(self) -> dict[str, tuple[str, int]]:
        backends = {str(pid) for pid, _, _ in pg_backends(self.db)}
        out: dict[str, tuple[str, int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            fields = _proc_stat(entry.name)
            if fields is None:
                continue
            role = "postgres" if entry.name in backends else self.roles.get(fields[3])
            if role is not None:
                out[entry.name] = (role, int(fields[11]) + int(fields[12]))  # utime + stime
        return out

    def start(self) -> None:
        self._start, self._t0 = self._snapshot(), time.monotonic()

    def stop(self) -> tuple[dict[str, float], float]:
        """({role: CPU seconds}, elapsed wall seconds)."""
        end, elapsed = self._snapshot(), time.monotonic() - self._t0
        used: dict[str, float] = {}
        for pid, (role, ticks) in end.items():
            before = self._start.get(pid, (role, 0))[1]
            used[role] = used.get(role, 0.0) + (ticks - before) / self._ticks
        return used, elapsed


def _tcp_inodes_to_pg(port: int = 5432) -> dict[int, str]:
    """{local port: socket inode} of this machine's TCP connections to PostgreSQL."""
    out: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(remote.rsplit(":", 1)[1], 16) == port and inode != "0":  # 0: TIME_WAIT
                out[int(local.rsplit(":", 1)[1], 16)] = inode
    return out


def pg_sessions_by_process(db: str, sessions: dict[str, int]) -> dict[str, int]:
    """How many of database `db`'s PostgreSQL sessions each process of `sessions` (role →
    session id, as SessionCpu) holds, from pg_stat_activity's client ports matched to the
    processes' sockets. Keys: "<role>" for a session leader (a Celery consumer, beat, the
    driver), "<role> child <pid>" for a process it forked (a prefork child); a backend with no
    client (autovacuum) by its backend type; a client that is none of ours as "other"."""
    roles = {str(sid): role for role, sid in sessions.items()}
    inode_owner: dict[str, str] = {}
    for entry in Path("/proc").iterdir():
        fields = _proc_stat(entry.name) if entry.name.isdigit() else None
        if fields is None or fields[3] not in roles:
            continue
        role = roles[fields[3]]
        label = role if entry.name == fields[3] else f"{role} child {entry.name}"
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):  # closed meanwhile
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inode_owner[link[8:-1]] = label
    by_port = _tcp_inodes_to_pg()
    counts: dict[str, int] = {}
    for _, port, kind in pg_backends(db):
        if kind != "client backend":
            owner = kind
        else:
            owner = inode_owner.get(by_port.get(port, ""), "other") if port else "other"
        counts[owner] = counts.get(owner, 0) + 1
    return dict(sorted(counts.items()))
