"""Plumbing shared by the loopback provider sandboxes (`integrations.<provider>.sandbox`).

A sandbox is a provider's API served on a loopback port for development and tests: this
module holds what has nothing to do with any provider's paths, payloads, errors or auth: the
threaded HTTP server, the request handler's basics (body limits, JSON answers), the delay
queue that posts webhooks, the start/stop life cycle, and the foreground runner behind the
`manage.py <provider>_sandbox` commands. No Django imports at module level: a sandbox runs in
a thread inside pytest too.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import ipaddress
import itertools
import json
import logging
import os
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar
from urllib.parse import urlsplit

import requests

if TYPE_CHECKING:
    from django.core.management.base import BaseCommand

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1 << 20

SandboxT = TypeVar("SandboxT")
SpecT = TypeVar("SpecT")


def is_loopback(host: str, *, allow_localhost: bool = False) -> bool:
    """Whether `host` is a loopback IP address (IPv4-mapped IPv6 included); a sandbox posts
    webhooks only there, so it can never be turned into a proxy to the outside."""
    if allow_localhost and host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class RequestBodyError(Exception):
    """A request body the sandbox will not read; the provider turns it into its own error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


FAULT_KINDS = frozenset({"error", "slow", "drop", "accept_then_error", "accept_then_drop"})


@dataclass
class FaultRule:
    """A rule of a sandbox's control API that makes matching API requests fail: answer an
    error, stall, or drop the connection, before or after the request's work is done.

    `on` names the kind of request the rule applies to, for a sandbox with several (None for
    one with a single kind); `count` is the requests left to spoil (-1: all).
    """

    id: int
    kind: str
    on: str | None
    count: int
    match: dict[str, str]
    status: int
    code: int
    message: str
    delay: float

    @classmethod
    def parse(
        cls,
        rule_id: int,
        raw: Any,
        *,
        errors: Mapping[str, tuple[int, int, str]],
        targets: tuple[str, ...] = (),
    ) -> Self:
        """Validate a rule's JSON. `errors` maps "error" and "accept_then_error" to their
        default (HTTP status, provider error code, message); `targets` are the values "on"
        may take, the first the default (none: a rule has no "on")."""
        if not isinstance(raw, Mapping):
            raise TypeError("a fault rule is a JSON object")
        kind = raw.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
        on = None
        if targets:
            on = raw.get("on", targets[0])
            if on not in targets:
                raise ValueError(f"on must be one of {list(targets)}")
        count = raw.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or (count < 1 and count != -1):
            raise ValueError("count must be a positive integer or -1")
        match = raw.get("match") or {}
        if not isinstance(match, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in match.items()
        ):
            raise ValueError("match must map names to strings")
        status, code, message = errors.get(kind, errors["accept_then_error"])
        status = raw.get("status", status)
        code = raw.get("code", code)
        message = raw.get("message", message)
        delay = raw.get("delay", 3.0)
        if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        if not isinstance(code, int) or not isinstance(message, str):
            raise TypeError("code must be an integer and message a string")
        if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
            raise ValueError("delay must be a non-negative number of seconds")
        return cls(rule_id, kind, on, count, dict(match), status, code, message, float(delay))

    def matches(self, params: Mapping[str, Any], on: str | None = None) -> bool:
        return self.on == on and all(params.get(k) == v for k, v in self.match.items())

    def describe(self) -> dict[str, Any]:
        described = {
            "id": self.id,
            "kind": self.kind,
            "on": self.on,
            "count": self.count,
            "match": dict(self.match),
            "status": self.status,
            "code": self.code,
            "message": self.message,
            "delay": self.delay,
        }
        if self.on is None:
            del described["on"]
        return described


class LoopbackHTTPServer(ThreadingHTTPServer, Generic[SandboxT]):
    """A threaded HTTP server that binds without a DNS lookup and can unblock its handler
    threads on stop. `sandbox` is the provider's sandbox object, for its handlers."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        sandbox: SandboxT,
        *,
        label: str,
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.sandbox = sandbox
        self.label = label
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Unblock handler threads parked on idle keep-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out or went away mid-response is routine here (slow faults).
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        logger.exception("%s: error while handling a request", self.label)


class LoopbackHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 basics; a provider's handler implements `_dispatch(method)`."""

    protocol_version = "HTTP/1.1"
    sys_version = ""
    # Nagle + the client's delayed ACK cost ~40 ms per keep-alive request without this.
    disable_nagle_algorithm = True
    # Idle keep-alive connections are closed after this many seconds.
    timeout = 120
    server: LoopbackHTTPServer[Any]

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet on purpose: request lines carry phone numbers and addresses in filters.
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        raise NotImplementedError

    def _foreign_request(self, *, navigation: bool = False) -> str | None:
        """Why a request must not reach the control API or the page, if it must not.

        Loopback clients only; and, since the browser of the person running the sandbox is a
        loopback client too, not on behalf of another site: a page elsewhere could post a
        form or a no-CORS fetch here (browsers send Origin and Sec-Fetch-Site with it), or
        rebind its own host name to 127.0.0.1 to read the answers (its Host header gives it
        away). Scripts and tests send neither Origin nor a foreign Host. A `navigation` (a
        GET of the page, which changes nothing and which another site cannot read) may come
        from a link anywhere.
        """
        if not is_loopback(self.client_address[0]):
            return "the sandbox control API is loopback-only"
        host = self.headers.get("Host", "")
        hostname = urlsplit(f"//{host}").hostname or ""
        if host and not is_loopback(hostname, allow_localhost=True):
            return "the sandbox answers only to a loopback host name"
        if navigation:
            return None
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{host}":
            return "cross-origin requests to the sandbox are refused"
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            return "cross-site requests to the sandbox are refused"
        return None

    def _read_body(self) -> bytes:
        """The request body; RequestBodyError when chunked, unreadable or over 1 MiB."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise RequestBodyError(411, "Chunked request bodies are not supported")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise RequestBodyError(400, "Invalid Content-Length") from None
        if length < 0 or length > MAX_REQUEST_BYTES:
            raise RequestBodyError(413, "Request body too large")
        return self.rfile.read(length) if length else b""

    def _respond(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json; charset=utf-8",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._respond(status, json.dumps(payload).encode(), headers=headers)


class WebhookDispatcher:
    """A delay queue drained by worker threads, each with its own keep-alive Session.

    One job is one step of one message (`advance(message_id, step, session)`); the provider
    schedules the next step only after the previous webhook was posted, so a receiver sees a
    message's webhooks in order.
    """

    def __init__(
        self,
        advance: Callable[[str, int, requests.Session], None],
        *,
        name: str,
        failure: str,
        workers: int = 1,
    ) -> None:
        self._advance = advance
        self._name = name
        self._failure = failure
        self._workers = workers
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> None:
        with self._cond:
            if self._threads:
                return
            for index in range(self._workers):
                name = self._name if self._workers == 1 else f"{self._name}-{index}"
                thread = threading.Thread(target=self._run, name=name, daemon=True)
                self._threads.append(thread)
                thread.start()

    def schedule(self, delay: float, message_id: str, step: int) -> None:
        with self._cond:
            heapq.heappush(
                self._heap, (time.monotonic() + delay, next(self._seq), message_id, step)
            )
            self._cond.notify()

    def clear(self) -> None:
        with self._cond:
            self._heap.clear()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    def _next_job(self) -> tuple[str, int] | None:
        with self._cond:
            while not self._stopping:
                if not self._heap:
                    self._cond.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait <= 0:
                    _, _, message_id, step = heapq.heappop(self._heap)
                    return message_id, step
                self._cond.wait(wait)
            return None

    def _run(self) -> None:
        session = requests.Session()
        # Webhooks target loopback only: never route them via an environment's proxy.
        session.trust_env = False
        try:
            while (job := self._next_job()) is not None:
                try:
                    self._advance(job[0], job[1], session)
                except Exception:  # the dispatcher must outlive any single bad webhook
                    logger.exception("%s", self._failure)
        finally:
            session.close()


class LoopbackSandbox:
    """The life cycle of a sandbox: a bound server (`_httpd`) served in a thread named
    `thread_name`, a webhook dispatcher (`_dispatcher`), and `_lock` for its state.
    Subclasses set all four in `__init__` and then call `_init_lifecycle()`."""

    thread_name = "loopback-sandbox"
    _lock: threading.Lock
    _httpd: LoopbackHTTPServer[Any]
    _dispatcher: WebhookDispatcher

    def _init_lifecycle(self) -> None:
        self._thread: threading.Thread | None = None
        self._serving = False
        self._stopped = False

    @property
    def url(self) -> str:
        host = self._httpd.server_name
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self._httpd.server_port}"

    def start(self) -> str:
        """Serve in a daemon thread; return the base URL."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.serve_forever, name=self.thread_name, daemon=True
            )
            self._thread.start()
        return self.url

    def serve_forever(self) -> None:
        """Serve in the calling thread until `stop()` is called from another thread."""
        with self._lock:
            # stop() may have come first (a server stopped right after start()): its socket
            # is closed, there is nothing to serve.
            if self._stopped:
                return
            self._serving = True
        self._dispatcher.start()
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            serving = self._serving
        if serving:
            # Waits for serve_forever to start its loop if it has not yet, then to leave it.
            self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._dispatcher.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def specs_from_environment(variable: str, parse: Callable[[str], SpecT]) -> list[SpecT]:
    """The specs in environment variable `variable`, one a line (an environment, unlike a
    command line, is not readable by every user of the machine); CommandError if one is bad."""
    from django.core.management.base import CommandError

    try:
        return [
            parse(line.strip())
            for line in os.environ.get(variable, "").splitlines()
            if line.strip()
        ]
    except argparse.ArgumentTypeError as exc:
        raise CommandError(f"{variable}: {exc}") from exc


def serve_in_foreground(
    command: BaseCommand,
    factory: Callable[[], LoopbackSandbox],
    *,
    host: str,
    port: int,
    summary: Iterable[str],
    stopped: str,
    invalid: tuple[type[Exception], ...] = (),
) -> None:
    """Build a sandbox with `factory` and run it until SIGTERM or SIGINT, for a management
    command: print its URL alone on the first line (scripts read it), then the `summary`
    lines, and `stopped` at the end. A port that cannot be bound, or an exception of a type
    in `invalid` from `factory`, is a CommandError."""
    from django.core.management.base import CommandError

    try:
        sandbox = factory()
    except invalid as exc:
        raise CommandError(str(exc)) from exc
    except OSError as exc:
        raise CommandError(f"cannot listen on {host}:{port}: {exc}") from exc
    stopping = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        command.stdout.write(sandbox.start())
        for line in summary:
            command.stdout.write(line)
        command.stdout.flush()
        # A timed wait keeps the main thread responsive to signals on every platform.
        while not stopping.wait(0.5):
            pass
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    command.stdout.write(stopped)
