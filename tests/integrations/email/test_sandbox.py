"""The loopback Postmark sandbox, driven by django-anymail's real Postmark backend over HTTP.

No database: every test gets its own sandbox on an ephemeral port, and webhooks land on a tiny
HTTP receiver in the test process.
"""

import base64
import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import pytest
import requests
from anymail.exceptions import AnymailAPIError, AnymailRecipientsRefused
from django.core.mail import EmailMultiAlternatives, get_connection

from integrations.email.sandbox import SandboxServer

TOKEN = "server-token-1"
SENDER = "clinic@example.com"
T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], *, timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s")
        time.sleep(0.02)
    return value


class Receiver:
    """A webhook endpoint recording every POST's JSON body and Authorization header."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, Any], str]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length))
                receiver.received.append((body, self.headers.get("Authorization", "")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://hook:s3cret@127.0.0.1:{self.httpd.server_port}/events/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def events(self) -> list[str]:
        return [body.get("Type") or body["RecordType"] for body, _ in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.httpd.shutdown()
    found.httpd.server_close()


@pytest.fixture
def sandbox(receiver: Receiver) -> Iterator[SandboxServer]:
    server = SandboxServer(
        servers={TOKEN: {"senders": [SENDER], "webhook_url": receiver.url}}, webhook_delay=0.02
    )
    server.start()
    yield server
    server.stop()


def connection(sandbox: SandboxServer, token: str = TOKEN, timeout: float = 5.0) -> Any:
    return get_connection(
        "anymail.backends.postmark.EmailBackend",
        server_token=token,
        api_url=sandbox.url + "/",
        timeout=timeout,
    )


def send(sandbox: SandboxServer, to: str = "pat@example.org", **kwargs: Any) -> Any:
    token = kwargs.pop("token", TOKEN)
    timeout = kwargs.pop("timeout", 5.0)
    message = EmailMultiAlternatives(
        subject=kwargs.pop("subject", "Your appointment"),
        body=kwargs.pop("body", "See you tomorrow."),
        from_email=kwargs.pop("from_email", SENDER),
        to=[to],
        connection=connection(sandbox, token, timeout),
    )
    if "html" in kwargs:
        message.attach_alternative(kwargs.pop("html"), "text/html")
    message.metadata = kwargs.pop("metadata", {"careflow_message": "m-1"})  # type: ignore[attr-defined]
    message.send()
    return message


def control(sandbox: SandboxServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, sandbox.url + path, timeout=5, **kwargs)


def test_send_is_stored_and_answered_as_postmark_does(sandbox: SandboxServer) -> None:
    message = send(sandbox, html="<p>See you</p>")
    status = message.anymail_status
    assert status.status == {"sent"}
    [stored] = sandbox.messages()
    assert status.message_id == stored["id"]
    assert stored["to"] == ["pat@example.org"]
    assert stored["from"] == SENDER
    assert stored["subject"] == "Your appointment"
    assert stored["text_body"] == "See you tomorrow."
    assert stored["html_body"] == "<p>See you</p>"
    assert stored["metadata"] == {"careflow_message": "m-1"}
    assert sandbox.stats() == {"sends": 1, "accepted": 1, "errors": 0, "dropped": 0, "searches": 0}


def test_bad_token_is_a_401_with_error_code_10(sandbox: SandboxServer) -> None:
    with pytest.raises(AnymailAPIError) as caught:
        send(sandbox, token="wrong")
    assert caught.value.status_code == 401
    assert caught.value.response.json()["ErrorCode"] == 10
    assert sandbox.messages() == []


def test_invalid_recipient_is_refused_with_error_code_300(sandbox: SandboxServer) -> None:
    response = control(
        sandbox,
        "POST",
        "/email",
        headers={"X-Postmark-Server-Token": TOKEN},
        json={"From": SENDER, "To": "not-an-address", "TextBody": "x"},
    )
    assert response.status_code == 422
    assert response.json() == {
        "ErrorCode": 300,
        "Message": "Invalid 'To' address: 'not-an-address'.",
    }


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"From": SENDER, "TextBody": "x"}, 300),  # no To
        ({"From": SENDER, "To": "a@example.org"}, 300),  # no body
        ({"From": SENDER, "To": "a@example.org", "TextBody": "x", "Metadata": {"k": 1}}, 300),
        ({"From": "other@example.com", "To": "a@example.org", "TextBody": "x"}, 400),
        ({"To": "a@example.org", "TextBody": "x"}, 300),  # no From
        ([1, 2], 402),
    ],
)
def test_invalid_requests_are_422s_never_500s(
    sandbox: SandboxServer, payload: Any, code: int
) -> None:
    response = control(
        sandbox, "POST", "/email", headers={"X-Postmark-Server-Token": TOKEN}, json=payload
    )
    assert (response.status_code, response.json()["ErrorCode"]) == (422, code)
    garbage = control(
        sandbox, "POST", "/email", headers={"X-Postmark-Server-Token": TOKEN}, data=b"\xff{"
    )
    assert (garbage.status_code, garbage.json()["ErrorCode"]) == (422, 402)
    assert sandbox.messages() == []


def test_unknown_sender_through_anymail_is_an_api_error(sandbox: SandboxServer) -> None:
    with pytest.raises(AnymailAPIError) as caught:
        send(sandbox, from_email="someone@else.example")
    assert caught.value.response.json()["ErrorCode"] == 400


def test_delivery_webhook_with_basic_auth_and_metadata(
    sandbox: SandboxServer, receiver: Receiver
) -> None:
    message = send(sandbox)
    wait_for(lambda: receiver.received)
    body, authorization = receiver.received[0]
    assert body["RecordType"] == "Delivery"
    assert body["MessageID"] == message.anymail_status.message_id
    assert body["Metadata"] == {"careflow_message": "m-1"}
    assert body["Recipient"] == "pat@example.org"
    assert authorization == "Basic " + base64.b64encode(b"hook:s3cret").decode()
    wait_for(lambda: sandbox.messages()[0]["webhooks"])
    assert sandbox.messages()[0]["webhooks"][0]["http_status"] == 200


def test_hard_bounce_makes_the_recipient_inactive(
    sandbox: SandboxServer, receiver: Receiver
) -> None:
    send(sandbox, to="bounce@example.org")
    wait_for(lambda: receiver.received)
    body, _ = receiver.received[0]
    assert (body["RecordType"], body["Type"], body["TypeCode"]) == ("Bounce", "HardBounce", 1)
    assert body["Email"] == "bounce@example.org"
    # Postmark refuses later sends to an inactive recipient: anymail reports them refused.
    with pytest.raises(AnymailRecipientsRefused):
        send(sandbox, to="bounce@example.org")


def test_complaint_comes_after_delivery(sandbox: SandboxServer, receiver: Receiver) -> None:
    send(sandbox, to="complaint+1@example.org")
    wait_for(lambda: len(receiver.received) == 2)
    assert receiver.events() == ["Delivery", "SpamComplaint"]
    assert receiver.received[1][0]["TypeCode"] == 512


def test_soft_bounce_and_configured_scenario(sandbox: SandboxServer, receiver: Receiver) -> None:
    send(sandbox, to="softbounce@example.org")
    control(
        sandbox,
        "POST",
        "/_sandbox/scenarios",
        json={"recipient": "x@example.org", "events": ["SoftBounce", "Delivery"]},
    ).raise_for_status()
    send(sandbox, to="x@example.org")
    wait_for(lambda: len(receiver.received) == 3)
    assert sorted(receiver.events()) == ["Delivery", "SoftBounce", "SoftBounce"]
    # Neither went inactive: a soft bounce is temporary.
    send(sandbox, to="softbounce@example.org")


def test_a_scenario_without_events_posts_no_webhook(
    sandbox: SandboxServer, receiver: Receiver
) -> None:
    """Webhooks that never come: only the outbound search can tell what became of it."""
    control(
        sandbox,
        "POST",
        "/_sandbox/scenarios",
        json={"recipient": "quiet@example.org", "events": []},
    ).raise_for_status()
    send(sandbox, to="quiet@example.org")
    send(sandbox, to="heard@example.org")
    wait_for(lambda: len(receiver.received) == 1)
    time.sleep(0.2)  # ten webhook delays: the quiet one had its chance
    assert [body["Recipient"] for body, _ in receiver.received] == ["heard@example.org"]
    assert [message["events"] for message in sandbox.messages()] == [[], ["Delivery"]]


def test_inactive_magic_address_is_refused_with_406(sandbox: SandboxServer) -> None:
    with pytest.raises(AnymailRecipientsRefused):
        send(sandbox, to="inactive@example.org")
    response = control(
        sandbox,
        "POST",
        "/email",
        headers={"X-Postmark-Server-Token": TOKEN},
        json={"From": SENDER, "To": "inactive@example.org", "TextBody": "x"},
    )
    assert (response.status_code, response.json()["ErrorCode"]) == (422, 406)


def test_outbound_search_by_metadata(sandbox: SandboxServer) -> None:
    first = send(sandbox, metadata={"careflow_message": "a"})
    send(sandbox, to="other@example.org", metadata={"careflow_message": "b"})
    headers = {"X-Postmark-Server-Token": TOKEN, "Accept": "application/json"}
    found = control(
        sandbox,
        "GET",
        "/messages/outbound",
        headers=headers,
        params={"count": 50, "offset": 0, "metadata_careflow_message": "a"},
    ).json()
    assert found["TotalCount"] == 1
    [item] = found["Messages"]
    assert item["MessageID"] == first.anymail_status.message_id
    assert item["To"] == [{"Email": "pat@example.org", "Name": None}]
    assert item["Status"] == "Sent"
    by_recipient = control(
        sandbox,
        "GET",
        "/messages/outbound",
        headers=headers,
        params={"count": 1, "offset": 0, "recipient": "OTHER@example.org"},
    ).json()
    assert by_recipient["TotalCount"] == 1
    missing = control(sandbox, "GET", "/messages/outbound", headers=headers, params={"count": "x"})
    assert (missing.status_code, missing.json()["ErrorCode"]) == (422, 300)
    other = control(
        sandbox,
        "GET",
        "/messages/outbound",
        headers={"X-Postmark-Server-Token": "nope"},
        params={"count": 1, "offset": 0},
    )
    assert other.status_code == 401


def test_error_fault_is_a_rate_limit(sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "error"})
    with pytest.raises(AnymailAPIError) as caught:
        send(sandbox)
    assert caught.value.status_code == 429
    assert sandbox.messages() == []
    send(sandbox)  # the rule was used up
    assert len(sandbox.messages()) == 1


def test_drop_fault_closes_without_storing(sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "drop", "match": {"To": "pat@example.org"}})
    with pytest.raises(AnymailAPIError) as caught:
        send(sandbox)
    assert isinstance(caught.value, requests.ConnectionError)
    assert sandbox.messages() == []
    assert sandbox.stats()["dropped"] == 1


def test_accept_then_drop_stores_but_never_answers(sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "accept_then_drop"})
    with pytest.raises(AnymailAPIError):
        send(sandbox)
    assert len(sandbox.messages()) == 1


def test_accept_then_error_stores_and_answers_500(sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "accept_then_error"})
    with pytest.raises(AnymailAPIError) as caught:
        send(sandbox)
    assert caught.value.status_code == 500
    assert len(sandbox.messages()) == 1


def test_slow_fault_times_the_client_out_but_stores(sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "slow", "delay": 0.6})
    with pytest.raises(AnymailAPIError) as caught:
        send(sandbox, timeout=0.2)
    assert isinstance(caught.value, requests.ReadTimeout)
    wait_for(lambda: sandbox.messages())


def test_search_faults(sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "error", "on": "search", "status": 503, "code": 500})
    response = control(
        sandbox,
        "GET",
        "/messages/outbound",
        headers={"X-Postmark-Server-Token": TOKEN},
        params={"count": 1, "offset": 0},
    )
    assert response.status_code == 503
    send(sandbox)  # a search rule leaves sends alone


def test_control_api_rejects_bad_rules_and_resets(sandbox: SandboxServer) -> None:
    for bad in (
        {"kind": "explode"},
        {"kind": "error", "count": 0},
        [1],
        {"kind": "slow", "delay": -1},
    ):
        assert control(sandbox, "POST", "/_sandbox/faults", json=bad).status_code == 400
    assert control(sandbox, "POST", "/_sandbox/faults", data=b"{").status_code == 400
    assert control(sandbox, "POST", "/_sandbox/servers", json={"token": ""}).status_code == 400
    assert (
        control(
            sandbox,
            "POST",
            "/_sandbox/servers",
            json={"token": "t2", "webhook_url": "http://example.com/hook"},
        ).status_code
        == 400
    )
    assert (
        control(
            sandbox, "POST", "/_sandbox/scenarios", json={"recipient": "a@b.c", "events": ["Boom"]}
        ).status_code
        == 400
    )
    assert control(sandbox, "GET", "/_sandbox/nothing").status_code == 404
    assert control(sandbox, "GET", "/email").status_code == 405
    assert control(sandbox, "GET", "/nowhere").status_code == 404
    control(sandbox, "POST", "/_sandbox/faults", json={"kind": "error", "count": -1})
    assert len(control(sandbox, "GET", "/_sandbox/faults").json()["faults"]) == 1
    assert control(sandbox, "POST", "/_sandbox/reset").json() == {"reset": True}
    assert control(sandbox, "GET", "/_sandbox/faults").json() == {"faults": []}
    send(sandbox)
    assert control(sandbox, "GET", "/_sandbox/stats.json").json()["accepted"] == 1


def test_webhooks_can_be_switched_off(sandbox: SandboxServer, receiver: Receiver) -> None:
    control(sandbox, "POST", "/_sandbox/webhooks", json={"enabled": False}).raise_for_status()
    send(sandbox)
    wait_for(lambda: sandbox.messages()[0]["webhooks"])
    assert sandbox.messages()[0]["webhooks"][0]["not_posted"] is True
    assert receiver.received == []


def test_bad_content_length_is_answered(sandbox: SandboxServer) -> None:
    host, port = sandbox.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.putrequest("POST", "/email")
    conn.putheader("Content-Length", "abc")
    conn.endheaders()
    assert conn.getresponse().status == 400
    conn.close()


def test_server_endpoint_proves_a_token(sandbox: SandboxServer) -> None:
    good = control(sandbox, "GET", "/server", headers={"X-Postmark-Server-Token": TOKEN})
    assert good.status_code == 200
    assert good.json()["SenderSignatures"] == [SENDER] and TOKEN not in good.text
    bad = control(sandbox, "GET", "/server", headers={"X-Postmark-Server-Token": "wrong"})
    assert (bad.status_code, bad.json()["ErrorCode"]) == (401, 10)
    assert control(sandbox, "POST", "/server").status_code == 405


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Host": "evil.example"}],
)
def test_another_site_in_the_users_browser_cannot_drive_the_control_api(
    sandbox: SandboxServer, headers: dict[str, str]
) -> None:
    send(sandbox)

    response = control(sandbox, "POST", "/_sandbox/reset", headers=headers)

    assert response.status_code == 403
    assert len(sandbox.messages()) == 1
    own = {"Origin": sandbox.url, "Sec-Fetch-Site": "same-origin"}
    assert control(sandbox, "POST", "/_sandbox/reset", headers=own).status_code == 200
