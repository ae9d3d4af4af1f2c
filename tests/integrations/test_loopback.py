"""The provider-neutral plumbing of the loopback sandboxes."""

import argparse
import http.client
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django.core.management.base import BaseCommand, CommandError

from integrations.loopback import (
    MAX_REQUEST_BYTES,
    FaultRule,
    LoopbackHandler,
    LoopbackHTTPServer,
    LoopbackSandbox,
    RequestBodyError,
    WebhookDispatcher,
    is_loopback,
    serve_in_foreground,
    specs_from_environment,
)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("10.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("example.com", False),
        ("", False),
        ("localhost", False),
    ],
)
def test_is_loopback_accepts_only_loopback_addresses(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_localhost_is_loopback_only_when_allowed() -> None:
    assert is_loopback("localhost", allow_localhost=True)


class _EchoHandler(LoopbackHandler):
    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
        except RequestBodyError as error:
            self.close_connection = True
            self._json(error.status, {"error": error.message})
            return
        self._json(200, {"method": method, "length": len(body)}, [("X-Echo", "1")])


class _EchoSandbox(LoopbackSandbox):
    thread_name = "echo-sandbox"

    def __init__(self, port: int = 0) -> None:
        self._lock = threading.Lock()
        self.advanced: list[tuple[str, int]] = []
        self._dispatcher = WebhookDispatcher(self._advance, name="echo", failure="echo failed")
        self._httpd = LoopbackHTTPServer(("127.0.0.1", port), _EchoHandler, self, label="echo")
        self._init_lifecycle()

    def _advance(self, message_id: str, step: int, session: requests.Session) -> None:
        self.advanced.append((message_id, step))


@pytest.fixture
def echo() -> Iterator[_EchoSandbox]:
    with _EchoSandbox() as sandbox:
        yield sandbox


def test_the_handler_answers_json_for_every_method(echo: _EchoSandbox) -> None:
    for method in ("GET", "POST", "PUT", "DELETE"):
        response = requests.request(method, echo.url + "/x", data=b"abc", timeout=5)
        assert response.status_code == 200
        assert response.headers["X-Echo"] == "1"
        assert response.json() == {"method": method, "length": 3}


def _raw(url: str, headers: dict[str, str]) -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        connection.putrequest("POST", "/x")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Transfer-Encoding": "chunked"}, 411),
        ({"Content-Length": "many"}, 400),
        ({"Content-Length": "-1"}, 413),
        ({"Content-Length": str(MAX_REQUEST_BYTES + 1)}, 413),
    ],
)
def test_bodies_it_will_not_read_are_refused(
    echo: _EchoSandbox, headers: dict[str, str], status: int
) -> None:
    assert _raw(echo.url, headers)[0] == status


def test_stop_is_idempotent_and_frees_the_port() -> None:
    sandbox = _EchoSandbox()
    url = sandbox.start()
    assert requests.get(url, timeout=5).status_code == 200
    sandbox.stop()
    sandbox.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=5)


def test_a_sandbox_stopped_right_after_start_leaves_no_thread_failing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """stop() may come before the serving thread has begun (seen in CI: the thread then
    served a closed socket, "Invalid file descriptor: -1"); either order ends cleanly."""
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    for _ in range(30):
        sandbox = _EchoSandbox()
        sandbox.start()
        sandbox.stop()
        assert sandbox._thread is not None
        sandbox._thread.join(timeout=5)
        assert not sandbox._thread.is_alive()
    assert failures == []


def test_the_dispatcher_runs_jobs_in_time_order_and_survives_a_failing_one() -> None:
    done = threading.Event()
    seen: list[tuple[str, int]] = []

    def advance(message_id: str, step: int, session: requests.Session) -> None:
        seen.append((message_id, step))
        if message_id == "bad":
            raise RuntimeError("boom")
        if message_id == "last":
            done.set()

    dispatcher = WebhookDispatcher(advance, name="test", failure="test failed", workers=1)
    dispatcher.schedule(0.2, "last", 2)
    dispatcher.schedule(0.0, "bad", 0)
    dispatcher.schedule(0.1, "second", 1)
    dispatcher.start()
    try:
        assert done.wait(5)
    finally:
        dispatcher.stop()
    assert seen == [("bad", 0), ("second", 1), ("last", 2)]


def test_a_cleared_dispatcher_runs_nothing() -> None:
    seen: list[str] = []
    dispatcher = WebhookDispatcher(
        lambda message_id, step, session: seen.append(message_id),
        name="test",
        failure="test failed",
        workers=2,
    )
    dispatcher.start()
    dispatcher.schedule(0.2, "never", 0)
    dispatcher.clear()
    threading.Event().wait(0.4)
    dispatcher.stop()
    assert seen == []


def _parse(value: str) -> str:
    if value == "bad":
        raise argparse.ArgumentTypeError("expected good")
    return value


def test_specs_come_from_the_environment_one_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOOPBACK_TEST_SPECS", "one\n\n  two  \n")
    assert specs_from_environment("LOOPBACK_TEST_SPECS", _parse) == ["one", "two"]
    monkeypatch.delenv("LOOPBACK_TEST_SPECS")
    assert specs_from_environment("LOOPBACK_TEST_SPECS", _parse) == []


def test_a_bad_spec_in_the_environment_is_a_command_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOOPBACK_TEST_SPECS", "one\nbad")
    with pytest.raises(CommandError, match="LOOPBACK_TEST_SPECS: expected good"):
        specs_from_environment("LOOPBACK_TEST_SPECS", _parse)


def test_a_port_in_use_is_a_command_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve_in_foreground(
                BaseCommand(),
                lambda: _EchoSandbox(port),
                host="127.0.0.1",
                port=port,
                summary=[],
                stopped="stopped",
            )


def test_an_invalid_setting_is_a_command_error_only_when_declared() -> None:
    def factory() -> LoopbackSandbox:
        raise ValueError("no such thing")

    kwargs: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "summary": [], "stopped": "x"}
    with pytest.raises(CommandError, match="no such thing"):
        serve_in_foreground(BaseCommand(), factory, invalid=(ValueError,), **kwargs)
    with pytest.raises(ValueError, match="no such thing"):
        serve_in_foreground(BaseCommand(), factory, **kwargs)


_ERRORS = {"error": (429, 1, "slow down"), "accept_then_error": (500, 2, "broken")}


def test_a_fault_rule_takes_its_defaults_from_the_provider() -> None:
    rule = FaultRule.parse(7, {"kind": "error"}, errors=_ERRORS)
    assert rule.describe() == {
        "id": 7,
        "kind": "error",
        "count": 1,
        "match": {},
        "status": 429,
        "code": 1,
        "message": "slow down",
        "delay": 3.0,
    }
    drop = FaultRule.parse(8, {"kind": "drop", "count": -1}, errors=_ERRORS)
    assert (drop.status, drop.code, drop.message, drop.count) == (500, 2, "broken", -1)


def test_a_fault_rule_with_targets_matches_only_its_target() -> None:
    targets = ("send", "search")
    rule = FaultRule.parse(
        1, {"kind": "slow", "match": {"To": "a"}}, errors=_ERRORS, targets=targets
    )
    assert rule.describe()["on"] == "send"
    assert rule.matches({"To": "a", "Other": "b"}, "send")
    assert not rule.matches({"To": "a"}, "search")
    assert not rule.matches({"To": "b"}, "send")
    search = FaultRule.parse(2, {"kind": "drop", "on": "search"}, errors=_ERRORS, targets=targets)
    assert search.matches({}, "search")


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"kind": "explode"},
        {"kind": "error", "on": "elsewhere"},
        {"kind": "error", "count": 0},
        {"kind": "error", "count": True},
        {"kind": "error", "match": {"To": 1}},
        {"kind": "error", "status": 200},
        {"kind": "error", "status": True},
        {"kind": "error", "code": "x"},
        {"kind": "error", "message": 3},
        {"kind": "slow", "delay": -1},
        {"kind": "slow", "delay": True},
    ],
)
def test_a_bad_fault_rule_is_refused(raw: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        FaultRule.parse(1, raw, errors=_ERRORS, targets=("send",))
