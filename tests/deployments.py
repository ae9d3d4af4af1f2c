"""Helpers for tests that start careflow as its users do, in processes of their own: the
environment of a fresh shell (none of the test suite's settings), free ports, and waiting for
a server to answer."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# What the test run sets for itself (config/settings_test.py, pytest-django) and a user's
# shell does not have.
# A login careflow_up prints: "  Clinic admin:   clinic / PASSWORD   (…)".
LOGIN = re.compile(r"^\s+(?P<role>[A-Za-z ]+):\s+(?P<user>\w+) / (?P<password>\S+)")

_TEST_ONLY = {
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CAREFLOW_THROTTLE_REDIS_URL",
}


def fresh_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user's shell: the real settings module, every runtime file
    under var_dir, nothing of the test suite's."""
    env = {key: value for key, value in os.environ.items() if key not in _TEST_ONLY}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.update(CAREFLOW_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def sqlite_shell(var_dir: Path, script: str) -> str:
    """Run `script` in `manage.py shell` as a user's shell would (`make run`'s SQLite, under
    var_dir), after migrating that fresh database; return its output. A failing script
    fails the test with the end of its traceback."""
    env = fresh_env(var_dir)
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run(  # noqa: S603 — our own interpreter and arguments
        [*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=300
    )
    done = subprocess.run(  # noqa: S603 — our own interpreter and arguments
        [*manage, "shell", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (var_dir / "careflow.sqlite3").exists()  # it was SQLite indeed
    return done.stdout


def sqlite_shell_result(var_dir: Path, script: str) -> Any:
    """`sqlite_shell`, returning what the script printed after "RESULT ", as JSON."""
    lines = [
        line for line in sqlite_shell(var_dir, script).splitlines() if line.startswith("RESULT ")
    ]
    assert lines, "the script printed no result"
    return json.loads(lines[0].removeprefix("RESULT "))


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


def child_processes(pid: int) -> dict[int, str]:
    """The running children of a process, by pid, with their command lines (from /proc:
    no psutil here)."""
    children: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # The command name in parentheses may itself hold spaces or parentheses.
            fields = stat[stat.rindex(")") + 2 :].split()
            state, parent = fields[0], int(fields[1])
            if parent == pid and state != "Z":
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                children[int(entry.name)] = " ".join(a.decode(errors="replace") for a in argv)
        except (OSError, ValueError, IndexError):
            continue  # it exited while we looked
    return children


@dataclass
class CareflowUp:
    """A `manage.py careflow_up` stack (what `make run` starts) in processes of its own."""

    url: str
    sandbox_url: str
    env: dict[str, str]
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)
    # The logins it printed, user → password.
    logins: dict[str, str] = field(default_factory=dict)

    def tail(self, lines: int = 40) -> str:
        return "".join(self.output[-lines:])

    def manage(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run a manage.py command against this stack's database and broker."""
        return subprocess.run(  # noqa: S603 — this interpreter and this checkout's manage.py
            [sys.executable, str(ROOT / "manage.py"), *args],
            env={**self.env, **extra_env},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def sandbox_messages(self) -> list[dict[str, Any]]:
        with http_opener().open(f"{self.sandbox_url}/_sandbox/messages.json", timeout=5) as r:
            messages: list[dict[str, Any]] = json.load(r)["messages"]
            return messages


@contextmanager
def careflow_up(var_dir: Path, *, startup_timeout: float = 180) -> Iterator[CareflowUp]:
    """Start `manage.py careflow_up` on fresh embedded defaults under var_dir; stop it as
    the README says (Ctrl-C) on leaving, and whatever it failed to stop after it."""
    port, sandbox_port = free_port(), free_port()
    env = fresh_env(var_dir)
    ports = ["--port", str(port), "--sandbox-port", str(sandbox_port)]
    process = subprocess.Popen(  # noqa: S603 — this checkout's manage.py, as `make run` runs it
        [sys.executable, "manage.py", "careflow_up", *ports],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    stack = CareflowUp(
        url=f"http://127.0.0.1:{port}",
        sandbox_url=f"http://127.0.0.1:{sandbox_port}",
        env=env,
        process=process,
    )
    ready = threading.Event()

    def read_output() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            stack.output.append(line)
            if match := LOGIN.match(line):
                stack.logins[match["user"]] = match["password"]
            if "Press Ctrl-C to stop" in line:
                ready.set()
        ready.set()  # the process ended: stop waiting

    threading.Thread(target=read_output, daemon=True).start()
    try:
        if not ready.wait(startup_timeout) or process.poll() is not None:
            raise AssertionError(f"careflow_up did not start:\n{stack.tail()}")
        wait_until_serving(
            f"{stack.url}/admin/login/", timeout=60, alive=lambda: process.poll() is None
        )
        yield stack
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
