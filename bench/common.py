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
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    """(Kept for scripts that use it; the two-sided ones use SideMeter, which counts one
    system's processes only, with reaped children, per event.)

    CPU time of this machine's processes by group (PostgreSQL, Redis, sandbox, beat,
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
            fields = _stat_fields(int(entry.name))
            if fields is None:
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


# --- measurement that survives a shared machine ---------------------------------------------
# On a machine shared with other work, wall-clock throughput moves with the neighbours; the
# CPU each side spends per event, and the statements and WAL it makes PostgreSQL write, move
# much less. So every two-sided script alternates its systems repetition by repetition (the
# first pair a discarded warm-up) and reports, next to throughput, those per-event costs,
# each from the same repetition, and flags repetitions run on an overloaded machine.

CORES = os.cpu_count() or 1
RESULT_MARK = "@@bench-result "


def loadavg() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


class LoadWatch:
    """Load average samples of one stretch of time (start, mid-run, end), and whether any
    exceeded the core count: such a run is flagged, not hidden or dropped."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    def sample(self) -> float:
        value = loadavg()
        self.samples.append(value)
        return value

    @property
    def over(self) -> bool:
        return any(s > CORES for s in self.samples)

    def as_dict(self) -> dict[str, Any]:
        s = self.samples or [float("nan")]
        return {"before": s[0], "after": s[-1], "max": max(s), "over_cores": self.over}


def load_text(load: dict[str, Any]) -> str:
    text = (
        f"load average before {load['before']:.2f}, after {load['after']:.2f}, "
        f"max {load['max']:.2f} ({CORES} cores)"
    )
    return text + (" — LOAD ABOVE CORES" if load["over_cores"] else "")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_ticks(pid: int) -> int | None:
    """utime + stime of the process and of its children it has reaped (cutime + cstime), in
    clock ticks; None when it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return sum(int(f) for f in fields[11:15])


def process_tree(roots: Iterable[int]) -> set[int]:
    """The roots and all their live descendants (a Celery worker's pool children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, ()))
    return out


def redis_server_pids() -> list[int]:
    """The Redis server the benchmarks use (port 6379), shared by everyone on the machine."""
    port = REDIS.rsplit(":", 1)[1]
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, UnicodeDecodeError):
                continue
            if cmd.startswith("redis-server") and f":{port}" in cmd:
                found.append(int(entry.name))
    return found


STATEMENTS_HOWTO = (
    "pg_stat_statements is not loaded, so statements and WAL per event fall back to "
    "pg_stat_database and machine-wide WAL. To enable it (superuser, then restart):\n"
    "    psql postgres://postgres@127.0.0.1:5432/postgres -c "
    "\"ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'\"\n"
    "    sudo systemctl restart postgresql   # or: pg_ctlcluster 15 main restart"
)
# Utility statements that only delimit transactions: counted, and also shown apart.
_TXN = r"^\s*(begin|commit|rollback|start transaction|savepoint|release)"
# The meter's own statements in the bench database.
_OWN = "%pg_stat_statements%"


# PostgreSQL (15+) backends flush their pending statistics at most once a second while busy and
# PGSTAT_IDLE_INTERVAL (10 s) after going idle: how long pg_stat_database may lag a side.
PG_STATS_IDLE_FLUSH_S = 10.5


class SideMeter:
    """What one system spends between start() and stop(): CPU time by group from
    /proc/<pid>/stat, PostgreSQL statements and WAL bytes of its database, and the load.

    Groups: `pids` maps a name (worker, beat, driver, sandbox, web) to root pids, counted
    with their descendants, including children they reaped in between (a prefork pool's
    replaced child); "postgres" is the backends serving `db` (pg_stat_activity), sampled at
    start, every `interval` seconds and at stop, so a backend that exits in between keeps
    the CPU of its last sample (how many exited is reported: the pools are persistent, so
    normally none); "redis" is the whole Redis server, shared by the machine (reported, not
    in the side's total). Statements and WAL come from pg_stat_statements filtered by the
    database's oid, reset for that database alone at start, so other databases' load does not
    count; without the extension, pg_stat_database deltas and the machine-wide WAL position.
    """

    def __init__(self, db: str, pids: dict[str, Sequence[int]], interval: float = 0.5) -> None:
        import psycopg

        self.db, self.pids, self.interval = db, dict(pids), interval
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._bench = psycopg.connect(f"{PG}/{db}", autocommit=True)
        self._own_pid = self._bench.info.backend_pid
        self._activity = psycopg.connect(f"{PG}/postgres", autocommit=True)
        self.statements = bool(
            self._bench.execute(
                "SELECT current_setting('shared_preload_libraries') LIKE '%pg_stat_statements%'"
            ).fetchone()[0]  # type: ignore[index]
        )
        if self.statements:
            self._bench.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        # A server with autovacuum keeps the planner's statistics as the tables grow. With it
        # off (this machine kind's setting) they stay as the last ANALYZE left them — none, or
        # empty tables — and the plans read every row: the clinic's 5,000 patients for each
        # batch's few, a sequential scan of the orders for each save. Each window then starts
        # from fresh statistics, as autovacuum would give, taken before it starts.
        self.analyze = self._bench.execute("SHOW autovacuum").fetchone() == ("off",)
        self.dbid = self._bench.execute(
            "SELECT oid FROM pg_database WHERE datname = current_database()"
        ).fetchone()[0]  # type: ignore[index]
        self._thread: Any = None

    # sampling
    def _backends(self) -> dict[int, int]:
        rows = self._activity.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
            (self.db, self._own_pid),
        ).fetchall()
        out = {}
        for (pid,) in rows:
            ticks = process_ticks(pid)
            if ticks is not None:
                out[pid] = ticks
        return out

    def _groups(self) -> dict[str, int]:
        out = {}
        for name, roots in self.pids.items():
            out[name] = sum(process_ticks(p) or 0 for p in process_tree(roots))
        return out

    def _pg_counters(self) -> dict[str, float]:
        if self.statements:
            row = self._bench.execute(
                "SELECT coalesce(sum(calls), 0), coalesce(sum(calls) FILTER (WHERE query ~* %s), 0),"
                " coalesce(sum(wal_bytes), 0), coalesce(sum(wal_fpi), 0),"
                " (SELECT dealloc FROM pg_stat_statements_info)"
                " FROM pg_stat_statements WHERE dbid = %s AND query NOT LIKE %s",
                (_TXN, self.dbid, _OWN),
            ).fetchone()
            assert row is not None
            return dict(
                zip(
                    ("statements", "txn_statements", "wal_bytes", "wal_fpi", "dealloc"),
                    map(float, row),
                    strict=True,
                )
            )
        row = self._activity.execute(
            "SELECT xact_commit + xact_rollback, tup_returned + tup_fetched, tup_inserted,"
            " tup_updated, tup_deleted, pg_current_wal_lsn() - '0/0'::pg_lsn"
            " FROM pg_stat_database WHERE datid = %s",
            (self.dbid,),
        ).fetchone()
        assert row is not None
        keys = (
            "transactions",
            "tuples_read",
            "tuples_inserted",
            "tuples_updated",
            "tuples_deleted",
            "machine_wal_bytes",
        )
        return dict(zip(keys, map(float, row), strict=True))

    def _sample_loop(self) -> None:
        while not self._stopping.wait(self.interval):
            self.load.sample()
            self._pg_last.update(self._backends())

    def start(self) -> None:
        import threading

        if self.analyze:
            self._bench.execute("ANALYZE")
            # Its own counts reach pg_stat_database now, before the window's first reading.
            self._bench.execute("SELECT pg_stat_force_next_flush()")
        if self.statements:
            self._bench.execute("SELECT pg_stat_statements_reset(0, %s, 0)", (self.dbid,))
        self.load = LoadWatch()
        self.load.sample()
        self._pg_start = self._backends()
        self._pg_last = dict(self._pg_start)
        self._pg0 = self._pg_counters()
        self._redis = redis_server_pids()
        self._redis0 = sum(process_ticks(p) or 0 for p in self._redis)
        self._wal0 = self._wal_lsn()
        self._groups0 = self._groups()
        self._t0 = time.monotonic()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._sample_loop, daemon=True)
        self._thread.start()

    def _wal_lsn(self) -> float:
        # Cluster-wide, so asked in the postgres database: not one of this side's statements.
        row = self._activity.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        return float(row[0]) if row else 0.0

    def stop(self) -> dict[str, Any]:
        """The side's figures since start(): wall seconds, CPU ms by group (and total), the
        PostgreSQL counters' deltas, the load; per event with `per_event`."""
        groups = self._groups()
        elapsed = time.monotonic() - self._t0
        self._stopping.set()
        self._thread.join()
        end = self._backends()
        self.load.sample()
        seen = {**self._pg_last, **end}
        exited = [pid for pid in self._pg_last if pid not in end]
        ms = 1000 / self._ticks
        cpu = {name: (groups[name] - self._groups0.get(name, 0)) * ms for name in groups}
        cpu["postgres"] = sum(t - self._pg_start.get(pid, 0) for pid, t in seen.items()) * ms
        if not self.statements:
            # pg_stat_database hears from an idle backend up to PostgreSQL's idle flush
            # interval (10 s) after its last transaction; pg_stat_statements counts at once.
            time.sleep(PG_STATS_IDLE_FLUSH_S)
        pg1 = self._pg_counters()
        out: dict[str, Any] = {
            "elapsed_s": elapsed,
            "cpu_ms": cpu,
            "cpu_total_ms": sum(cpu.values()),
            "redis_machine_cpu_ms": (sum(process_ticks(p) or 0 for p in self._redis) - self._redis0)
            * ms,
            "postgres_backends": len(seen),
            "postgres_backends_exited": len(exited),
            "machine_wal_bytes": self._wal_lsn() - self._wal0,
            "load": self.load.as_dict(),
            "statements_source": "pg_stat_statements" if self.statements else "pg_stat_database",
        }
        out["pg"] = {k: pg1[k] - self._pg0[k] for k in pg1}
        if self.statements:
            out["top_statements"] = self._top_statements()
        return out

    def _top_statements(self, limit: int = 15) -> list[dict[str, Any]]:
        """This database's statements since start(), the costliest first (planning and
        execution time): where PostgreSQL's share goes, statement by statement."""
        rows = self._bench.execute(
            "SELECT calls, total_plan_time, total_exec_time, wal_bytes, query"
            " FROM pg_stat_statements WHERE dbid = %s AND query NOT LIKE %s"
            " ORDER BY total_plan_time + total_exec_time DESC LIMIT %s",
            (self.dbid, _OWN, limit),
        ).fetchall()
        keys = ("calls", "plan_ms", "exec_ms", "wal_bytes", "query")
        return [dict(zip(keys, (*map(float, row[:4]), row[4]), strict=True)) for row in rows]

    def close(self) -> None:
        self._bench.close()
        self._activity.close()


def per_event(measured: dict[str, Any], events: int) -> dict[str, Any]:
    """A SideMeter result divided by the events it served: CPU ms per group and in total,
    statements and WAL bytes (pg_stat_statements), or the fallback's counters."""
    n = max(events, 1)
    out: dict[str, Any] = {
        "events": events,
        "cpu_ms": {k: v / n for k, v in measured["cpu_ms"].items()},
        "cpu_total_ms": measured["cpu_total_ms"] / n,
        "redis_machine_cpu_ms": measured["redis_machine_cpu_ms"] / n,
        "machine_wal_bytes": measured["machine_wal_bytes"] / n,
        **{k: v / n for k, v in measured["pg"].items() if k != "dealloc"},
    }
    return out


def statements_text(measured: dict[str, Any], events: int, width: int = 110) -> str:
    """The costliest statements of a window (SideMeter's `top_statements`) per event: calls,
    planning + execution ms, WAL bytes and the statement's start; and how much of the
    backends' CPU they account for (the rest is parsing, the protocol, commits)."""
    top = measured.get("top_statements")
    if not top:
        return "    (no per-statement figures: pg_stat_statements is not loaded)"
    n = max(events, 1)
    lines = [f"    {'calls':>6} {'plan ms':>8} {'exec ms':>8} {'WAL B':>7}  statement (per event)"]
    for row in top:
        query = " ".join(row["query"].split())
        lines.append(
            f"    {row['calls'] / n:6.2f} {row['plan_ms'] / n:8.3f} {row['exec_ms'] / n:8.3f} "
            f"{row['wal_bytes'] / n:7.0f}  {query[:width]}"
        )
    shown = sum(row["plan_ms"] + row["exec_ms"] for row in top) / n
    backends = measured["cpu_ms"].get("postgres", 0.0) / n
    lines.append(
        f"    these statements' planning + execution: {shown:.2f} ms per event, of the backends' "
        f"{backends:.2f} ms CPU per event"
    )
    return "\n".join(lines)


def cost_text(measured: dict[str, Any], events: int) -> str:
    """One line: CPU per event by group and in total, statements and WAL per event, load."""
    e = per_event(measured, events)
    cpu = ", ".join(
        f"{k} {v:.2f}" for k, v in sorted(e["cpu_ms"].items(), key=lambda item: -item[1])
    )
    text = (
        f"per event: cpu {cpu} = {e['cpu_total_ms']:.2f} ms (+ redis {e['redis_machine_cpu_ms']:.2f}, "
        "machine-wide)"
    )
    if measured["statements_source"] == "pg_stat_statements":
        text += (
            f"; {e['statements']:.1f} statements ({e['txn_statements']:.1f} BEGIN/COMMIT), "
            f"WAL {e['wal_bytes']:.0f} B ({e['wal_fpi']:.2f} full-page images)"
        )
        if measured["pg"]["dealloc"]:
            text += " (pg_stat_statements evicted entries meanwhile, least used first: may be undercounted)"
    else:
        text += (
            f"; {e['transactions']:.1f} transactions, rows read {e['tuples_read']:.1f} / "
            f"ins {e['tuples_inserted']:.1f} / upd {e['tuples_updated']:.1f} "
            "(pg_stat_database, this db)"
        )
    text += f"; WAL machine-wide {e['machine_wal_bytes']:.0f} B"
    if measured["postgres_backends_exited"]:
        text += (
            f"; {measured['postgres_backends_exited']} PostgreSQL backends exited mid-run "
            "(counted to their last sample)"
        )
    return f"{text}; {load_text(measured['load'])}"


def serve(handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> int:
    """A persistent child driver's loop (the other end of `Driver`): one JSON command per
    stdin line, {"op": <handler>, ...}; each answer is one line, RESULT_MARK + JSON; what else
    the handlers print passes through to the orchestrator. Ends at end of input. The first
    answer says the set-up is done (`Driver` waits for it)."""
    print(RESULT_MARK + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        result = handlers[command["op"]](command)
        print(RESULT_MARK + json.dumps(result), flush=True)
    return 0


class Driver:
    """A driver child kept running in one system's settings, so that repetitions of two
    systems can alternate without restarting anything; `call` sends it one command."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.process = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        # Its set-up (fixtures, a check that messages get through) uses the shared sandbox:
        # nothing else may run until it is done.
        try:
            self._answer("set-up", timeout=1800)
        except BaseException:
            self._kill()
            raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def call(self, op: str, timeout: float = 3600, **params: Any) -> dict[str, Any]:

        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            self.process.stdin.write(json.dumps({"op": op, **params}) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise SetupError(f"{self.name} driver is gone (exit {self.process.poll()})") from None
        return self._answer(op, timeout)

    def _answer(self, op: str, timeout: float) -> dict[str, Any]:
        import threading

        assert self.process.stdout is not None
        watchdog = threading.Timer(timeout, self._kill)
        watchdog.start()
        try:
            for line in self.process.stdout:
                if line.startswith(RESULT_MARK):
                    return json.loads(line[len(RESULT_MARK) :])
                if line.strip():
                    print("  " + line.rstrip(), flush=True)
        finally:
            watchdog.cancel()
        code = self.process.wait()
        raise SetupError(f"{self.name} driver ended (exit {code}) during {op!r}; see output above")

    def close(self) -> None:
        if self.process.stdin:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self._kill()
            self.process.wait(timeout=10)


def interleave(
    runs: int,
    systems: Sequence[str],
    measure: Callable[[str, str], dict[str, Any]],
    describe: Callable[[str, dict[str, Any]], str],
) -> dict[str, list[dict[str, Any]]]:
    """Repetitions alternating A B A B …: a warm-up pair first (printed, marked, discarded),
    then `runs` pairs. `measure(system, tag)` runs one repetition of one system; `describe`
    makes its printed line. Returns the kept repetitions per system, pair by pair."""
    kept: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for pair in range(runs + 1):
        label = "warm-up pair, discarded" if pair == 0 else f"pair {pair}/{runs}"
        for system in systems:
            result = measure(system, "W" if pair == 0 else str(pair))
            print(f"[{label}] {system}: {describe(system, result)}", flush=True)
            if pair:
                kept[system].append(result)
    return kept


def paired_line(
    label: str,
    kept: dict[str, list[dict[str, Any]]],
    value: Callable[[dict[str, Any]], float],
    unit: str,
    digits: int = 1,
) -> str:
    """One figure for both systems: each side's median (min/max) over its repetitions, and
    careflow ÷ baseline as the median (min/max) of the ratios pair by pair (the two
    repetitions of one pair ran back to back on the same machine)."""
    c = [value(r) for r in kept["careflow"]]
    b = [value(r) for r in kept["baseline"]]
    ratios = [x / y for x, y in zip(c, b, strict=False) if y]
    r = summary(ratios)
    text = (
        f"{label}\n    careflow {fmt(summary(c), unit, digits)}\n"
        f"    baseline {fmt(summary(b), unit, digits)}\n"
    )
    if len(ratios) < min(len(c), len(b)) or not ratios:
        return text + "    careflow ÷ baseline n/a (the baseline has none)"
    return text + (
        f"    careflow ÷ baseline {r['median']:.2f}x (min {r['min']:.2f}, max {r['max']:.2f}, "
        "pair by pair)"
    )


def load_flags(kept: dict[str, list[dict[str, Any]]], key: str = "measured") -> list[str]:
    """The repetitions whose load exceeded the cores at start, end or a mid-run sample."""
    return [
        f"{system} repetition {i}: {load_text(r[key]['load'])}"
        for system, runs in kept.items()
        for i, r in enumerate(runs, start=1)
        if r.get(key) and r[key]["load"]["over_cores"]
    ]


def load_summary(before: float, flags: list[str]) -> str:
    """The closing lines every script prints: the load before and after, and the flags."""
    lines = [f"load average: before {before:.2f}, after {loadavg():.2f} ({CORES} cores)"]
    if flags or before > CORES or loadavg() > CORES:
        lines.append(f"LOAD ABOVE CORES ({CORES}) during this run:")
        lines += [f"  {flag}" for flag in flags] or ["  at start or end of the script"]
        lines.append(
            "  wall-clock figures of flagged repetitions are not comparable across runs; CPU "
            "and statements per event are the figures to read"
        )
    return "\n".join(lines)


def statements_check() -> bool:
    """Whether pg_stat_statements is loaded; prints how to enable it when it is not."""
    loaded = "pg_stat_statements" in psql("SHOW shared_preload_libraries")
    if not loaded:
        print(STATEMENTS_HOWTO, flush=True)
    return loaded


def side_pids(procs: Iterable[Proc], sandbox: Sandbox | None = None) -> dict[str, list[int]]:
    """The CPU groups of one system's processes for a SideMeter (the driver adds itself)."""
    out: dict[str, list[int]] = {}
    for proc in procs:
        if proc.process is not None:
            group = next((g for g in ("worker", "beat", "web") if g in proc.name), proc.name)
            out.setdefault(group, []).append(proc.process.pid)
    if sandbox is not None and sandbox.proc.process is not None:
        out["sandbox"] = [sandbox.proc.process.pid]
    return out


COSTS_HEADER = (
    "CPU per event from /proc/<pid>/stat (utime+stime, with reaped children): worker = "
    "consumer + pool children, beat, driver (the saving process), sandbox, postgres = the "
    "backends of this side's database (pg_stat_activity, sampled every 0.5 s: one that exits "
    "keeps its last sample; pools are persistent); redis is the machine's shared server, "
    "shown apart. Statements and WAL per event: pg_stat_statements of this side's database "
    "only (dbid), reset per repetition. Planner statistics: where the server runs without "
    "autovacuum, each side's database is ANALYZEd before each repetition, as autovacuum "
    "would keep it"
)


Started = tuple[list[Proc], Driver, dict[str, str]]


def system_db(system: str) -> str:
    return CAREFLOW_DB if system == "careflow" else BASELINE_DB


@contextlib.contextmanager
def systems_started(
    systems: Sequence[str],
    logdir: Path,
    env_of: Callable[[str], dict[str, str]],
    argv_of: Callable[[str], list[str]],
    *,
    keep_db: bool = False,
) -> Iterator[dict[str, Started]]:
    """Each system's fresh database, broker, workers and a kept driver child (`argv_of`),
    all up at once for alternating repetitions; stopped, flushed and dropped afterwards."""
    started: dict[str, Started] = {}
    # What to stop, as soon as it exists: an interrupt during a driver's set-up must not
    # leave the workers running.
    drivers: list[Driver] = []
    running: list[tuple[list[Proc], dict[str, str], str]] = []
    try:
        for system in systems:
            env = env_of(system)
            running.append(([], env, system))
            running[-1][0].extend(system_start(system, system_db(system), env, logdir))
            drivers.append(Driver(system, argv_of(system), env))
            started[system] = (running[-1][0], drivers[-1], env)
        yield started
    finally:
        for driver in drivers:
            driver.close()
        for procs, env, system in running:
            stop_all(reversed(procs))
            flush_redis(env["CELERY_BROKER_URL"])
            if not keep_db:
                drop_db(system_db(system))


def alternation(systems: Sequence[str]) -> str:
    """How the repetitions alternate, for the headers: "C B C B …"."""
    return " ".join(s[0].upper() for s in list(systems) * 2) + " …"


def measured_start(fairness: str, name: str) -> tuple[float, Path]:
    """A two-sided script's start after its header: how it keeps the comparison fair, what
    the per-event costs count, the load before, the checks; returns (load, log directory)."""
    print(f"fairness: {fairness}")
    print(COSTS_HEADER, flush=True)
    load_before = loadavg()
    statements_check()
    check_services()
    logdir = Path(tempfile.mkdtemp(prefix=f"careflow-bench-{name}-"))
    print(f"logs: {logdir}", flush=True)
    return load_before, logdir


def child_argv(script: str, system: str, **options: Any) -> list[str]:
    """The command line of `script`'s driver child for `system`: options as --long-names."""
    argv = [PY, script, "--child", system]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


# --- per-process accounting (bench/scale.py) -------------------------------------------------
# CpuMeter above groups every process on the machine by its command line, so on a machine
# shared with other checkouts' workers and sandboxes it counts theirs too. These count only
# the sessions this run started (each Proc is a session leader: start_new_session) and the
# PostgreSQL backends of this run's database.


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
            fields = _stat_fields(int(entry.name))
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
        fields = _stat_fields(int(entry.name)) if entry.name.isdigit() else None
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
