"""The loopback Twilio sandbox, driven by the real twilio-python library over HTTP.

No database: every test gets its own sandbox on an ephemeral port, and callbacks land on a
tiny HTTP receiver in the test process.
"""

import datetime as dt
import http.client
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from integrations.twilio.client import BaseUrlHttpClient
from integrations.twilio.sandbox import SandboxServer

ACCOUNT_SID = "AC" + "1" * 32
TOKEN = "sandbox-token-1"
OWNED = "+15551230000"
SERVICE_SID = "MG" + "2" * 32
TO = "+15557654321"
OTHER_TO = "+15557650000"
MAGIC_FROM = "+15005550006"
T = TypeVar("T")
Control = Callable[..., requests.Response]


def wait_for(
    predicate: Callable[[], T | None], *, timeout: float = 5.0, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
    return value


@dataclass
class Received:
    url: str
    headers: dict[str, str]
    params: dict[str, str]


class Receiver:
    """A webhook endpoint: records every POST; paths under /fail answer 500."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                params = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                receiver.received.append(
                    Received(f"{receiver.url}{self.path}", dict(self.headers), params)
                )
                status = 500 if self.path.startswith("/fail") else 200
                body = b"<Response/>"
                self.send_response(status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}"

    def wait_for(self, count: int) -> list[Received]:
        wait_for(lambda: len(self.received) >= count, what=f"{count} webhook(s)")
        return list(self.received)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def server() -> Iterator[SandboxServer]:
    accounts = {
        ACCOUNT_SID: {"token": TOKEN, "numbers": [OWNED], "messaging_service_sids": [SERVICE_SID]}
    }
    # A local run: the tests' callback receivers are on loopback.
    with SandboxServer(accounts=accounts, callback_delay=0.02, local_callbacks=True) as sandbox:
        yield sandbox


def make_client(
    sandbox: SandboxServer, *, sid: str = ACCOUNT_SID, token: str = TOKEN, timeout: float = 5
) -> Client:
    return Client(sid, token, http_client=BaseUrlHttpClient(base_url=sandbox.url, timeout=timeout))


@pytest.fixture
def twilio(server: SandboxServer) -> Client:
    return make_client(server)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.stop()


@pytest.fixture
def control(server: SandboxServer) -> Iterator[Control]:
    """Call the sandbox's control API: control("POST", "/_sandbox/faults", json={...})."""
    session = requests.Session()
    session.trust_env = False

    def call(method: str, path: str, **kwargs: Any) -> requests.Response:
        return session.request(method, server.url + path, timeout=5, **kwargs)

    yield call
    session.close()


def raw_create(sandbox: SandboxServer, data: dict[str, str]) -> requests.Response:
    """A create without twilio-python, for parameters the library insists on."""
    return requests.post(
        f"{sandbox.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        data=data,
        auth=(ACCOUNT_SID, TOKEN),
        timeout=5,
    )


def send(twilio: Client, body: str = "Your appointment is tomorrow", **kwargs: Any) -> Any:
    kwargs.setdefault("to", TO)
    kwargs.setdefault("from_", OWNED)
    return twilio.messages.create(body=body, **kwargs)


# --- create, fetch, list, account ---------------------------------------------------------


def test_create_returns_a_twilio_message_resource(server: SandboxServer, twilio: Client) -> None:
    message = send(twilio, body="Hello")

    assert re.fullmatch(r"SM[0-9a-f]{32}", message.sid)
    assert (message.to, message.from_, message.body) == (TO, OWNED, "Hello")
    assert message.status == "queued"
    assert message.account_sid == ACCOUNT_SID
    assert message.direction == "outbound-api"
    assert message.api_version == "2010-04-01"
    assert message.num_media == "0"
    assert message.error_code is None
    assert message.date_created.tzinfo is not None
    assert message.uri == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message.sid}.json"
    [stored] = server.messages()
    assert stored["sid"] == message.sid
    assert abs(stored["received_at"] - time.time()) < 5


@pytest.mark.parametrize(
    ("body", "segments"),
    [
        ("a" * 160, "1"),
        ("a" * 161, "2"),  # GSM-7: 153 per part
        ("a" * 306, "2"),
        ("a" * 307, "3"),
        ("a" * 68 + "😀", "1"),  # UCS-2: the emoji is two UTF-16 units, 70 in all
        ("a" * 69 + "😀", "2"),
        ("’" * 71, "2"),  # a curly quote alone switches to UCS-2
        ("a" * 152 + "€" + "a" * 152, "3"),  # a part never ends inside an escape pair
        ("😀" * 67, "3"),  # nor inside a surrogate pair: 33 emoji a part
        ("\x1b" + "a" * 70, "2"),  # a bare ESC makes the body UCS-2: 71 units
    ],
)
def test_create_counts_segments_like_twilio(twilio: Client, body: str, segments: str) -> None:
    assert send(twilio, body=body).num_segments == segments


def test_create_with_messaging_service_is_accepted_without_a_from(twilio: Client) -> None:
    message = twilio.messages.create(to=TO, messaging_service_sid=SERVICE_SID, body="hi")

    assert message.status == "accepted"
    assert message.messaging_service_sid == SERVICE_SID
    assert message.from_ is None


def test_magic_from_is_owned_by_every_account(twilio: Client) -> None:
    assert send(twilio, from_=MAGIC_FROM).from_ == MAGIC_FROM


def test_fetch_returns_the_stored_message(twilio: Client) -> None:
    sent = send(twilio, body="fetch me")

    fetched = twilio.messages(sent.sid).fetch()

    assert (fetched.sid, fetched.body, fetched.to) == (sent.sid, "fetch me", TO)


def test_fetch_of_an_unknown_message_is_404_20404(twilio: Client) -> None:
    with pytest.raises(TwilioRestException) as excinfo:
        twilio.messages("SM" + "0" * 32).fetch()

    assert (excinfo.value.status, excinfo.value.code) == (404, 20404)


def test_list_filters_by_to_and_from_newest_first(twilio: Client) -> None:
    to_first = [send(twilio, body=f"to {i}").sid for i in range(3)]
    to_other = send(twilio, to=OTHER_TO).sid
    from_magic = send(twilio, from_=MAGIC_FROM, to=OTHER_TO).sid

    assert [m.sid for m in twilio.messages.list(to=TO)] == to_first[::-1]
    assert [m.sid for m in twilio.messages.list(from_=MAGIC_FROM)] == [from_magic]
    assert [m.sid for m in twilio.messages.list(to=OTHER_TO, from_=OWNED)] == [to_other]
    assert len(twilio.messages.list()) == 5


def test_list_and_stream_page_through_multiple_pages(server: SandboxServer) -> None:
    twilio = make_client(server)
    sids = [send(twilio, body=f"n{i}").sid for i in range(7)]
    newest_first = sids[::-1]
    requested: list[str] = []
    http_client = twilio.http_client
    original = http_client.request

    def spy(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        requested.append(url)
        return original(method, url, *args, **kwargs)

    http_client.request = spy

    listed = [m.sid for m in twilio.messages.list(to=TO, page_size=3)]
    streamed = [m.sid for m in twilio.messages.stream(to=TO, page_size=3)]

    assert listed == newest_first
    assert streamed == newest_first
    assert len(requested) == 6  # 3 pages each
    assert "PageToken=PA" in requested[1]


def test_paging_is_stable_while_new_messages_arrive(twilio: Client) -> None:
    sids = [send(twilio, body=f"n{i}").sid for i in range(4)]
    first = twilio.messages.page(to=TO, page_size=2)
    first_sids = [m.sid for m in first]

    send(twilio, body="arrived between pages")
    second = first.next_page()

    assert first_sids == [sids[3], sids[2]]
    assert [m.sid for m in second] == [sids[1], sids[0]]
    assert second.next_page() is None


def test_list_filters_by_date_sent(server: SandboxServer, twilio: Client) -> None:
    sent = send(twilio)
    unsent_server = SandboxServer(accounts={ACCOUNT_SID: TOKEN}, callback_delay=None)
    with unsent_server:
        send(make_client(unsent_server), from_=MAGIC_FROM)
        assert make_client(unsent_server).messages.list(date_sent=dt.date.today()) == []
    wait_for(lambda: server.messages()[0]["date_sent"], what="date_sent to be set")
    day = twilio.messages(sent.sid).fetch().date_sent.date()
    one = dt.timedelta(days=1)

    def listed(**filters: Any) -> list[str]:
        return [m.sid for m in twilio.messages.list(**filters)]

    assert listed(date_sent=day) == [sent.sid]
    assert listed(date_sent=day + one) == []
    assert listed(date_sent_after=day - one) == [sent.sid]
    assert listed(date_sent_after=day + one) == []
    assert listed(date_sent_before=day + one) == [sent.sid]
    assert listed(date_sent_before=day - one) == []
    # twilio-python sends these as the literal parameter names DateSent< and DateSent>.
    raw = requests.get(
        f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        params={"DateSent>": (day + one).isoformat()},
        auth=(ACCOUNT_SID, TOKEN),
        timeout=5,
    )
    assert raw.json()["messages"] == []


def test_account_fetch(server: SandboxServer, twilio: Client) -> None:
    account = twilio.api.v2010.accounts(ACCOUNT_SID).fetch()

    assert account.sid == ACCOUNT_SID
    assert (account.status, account.type) == ("active", "Full")
    raw = requests.get(
        f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}.json", auth=(ACCOUNT_SID, TOKEN), timeout=5
    )
    # As Twilio's Account resource does (its OpenAPI document lists it; test_contract holds
    # the sandbox to that): careflow reads only the status from it.
    assert raw.json()["auth_token"] == TOKEN


# --- authentication and validation ---------------------------------------------------------


@pytest.mark.parametrize(
    ("sid", "token"),
    [(ACCOUNT_SID, "wrong-token"), ("AC" + "9" * 32, TOKEN), (ACCOUNT_SID, "")],
)
def test_bad_credentials_are_401_20003(server: SandboxServer, sid: str, token: str) -> None:
    with pytest.raises(TwilioRestException) as excinfo:
        send(make_client(server, sid=sid, token=token))

    assert (excinfo.value.status, excinfo.value.code) == (401, 20003)
    assert server.messages() == []


def test_error_body_has_twilios_shape(server: SandboxServer) -> None:
    response = requests.post(
        f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        data={"To": TO, "From": OWNED, "Body": "x"},
        timeout=5,
    )

    assert response.status_code == 401
    assert response.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }


def test_credentials_of_one_account_do_not_open_another(server: SandboxServer) -> None:
    other = "AC" + "3" * 32
    server.add_account(other, "other-token")

    response = requests.get(
        f"{server.url}/2010-04-01/Accounts/{other}/Messages.json",
        auth=(ACCOUNT_SID, TOKEN),
        timeout=5,
    )

    assert response.status_code == 401


@pytest.mark.parametrize(
    ("to", "code"),
    [
        ("+15005550001", 21211),
        ("+15005550004", 21610),
        ("+15005550009", 21614),
        ("5557654321", 21211),
        ("+05557654321", 21211),
    ],
)
def test_magic_and_invalid_to_numbers_are_rejected(
    server: SandboxServer, twilio: Client, to: str, code: int
) -> None:
    with pytest.raises(TwilioRestException) as excinfo:
        send(twilio, to=to)

    assert (excinfo.value.status, excinfo.value.code) == (400, code)
    assert server.messages() == []


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ({"From": OWNED, "Body": "x"}, 21604),
        ({"Body": "x"}, 21604),  # To is checked before From
        ({"To": TO, "Body": "x"}, 21603),
        ({"To": TO, "From": "+15550000000"}, 21606),  # From is checked before Body
        ({"To": TO, "MessagingServiceSid": "MG" + "0" * 32, "Body": "x"}, 21701),
        ({"To": TO, "From": OWNED}, 21602),
        ({"To": TO, "From": OWNED, "Body": ""}, 21602),
        ({"To": TO, "From": OWNED, "Body": "x" * 1601}, 21617),
    ],
)
def test_create_validation_codes_in_twilios_order(
    server: SandboxServer, data: dict[str, str], code: int
) -> None:
    response = raw_create(server, data)

    assert response.status_code == 400
    assert response.json()["code"] == code
    assert response.json()["more_info"] == f"https://www.twilio.com/docs/errors/{code}"
    assert server.messages() == []


def test_unowned_from_is_21606_through_the_library(twilio: Client) -> None:
    with pytest.raises(TwilioRestException) as excinfo:
        send(twilio, from_="+15550000000")

    assert excinfo.value.code == 21606


def test_body_of_exactly_1600_characters_is_accepted_and_1601_is_21617(twilio: Client) -> None:
    assert send(twilio, body="x" * 1600).num_segments == "11"
    with pytest.raises(TwilioRestException) as excinfo:
        send(twilio, body="x" * 1601)
    assert excinfo.value.code == 21617


# --- fault injection -----------------------------------------------------------------------


def test_error_fault_is_consumed_once(
    server: SandboxServer, twilio: Client, control: Control
) -> None:
    control("POST", "/_sandbox/faults", json={"kind": "error", "status": 429, "code": 20429})

    with pytest.raises(TwilioRestException) as excinfo:
        send(twilio)
    assert (excinfo.value.status, excinfo.value.code) == (429, 20429)
    assert server.messages() == []

    assert send(twilio).status == "queued"
    assert len(server.messages()) == 1
    assert control("GET", "/_sandbox/faults").json() == {"faults": []}


def test_slow_fault_times_the_client_out_but_stores_the_message(server: SandboxServer) -> None:
    server.add_fault({"kind": "slow", "delay": 1.0})
    impatient = make_client(server, timeout=0.3)

    with pytest.raises(requests.exceptions.Timeout):
        send(impatient, body="ambiguous")

    [stored] = wait_for(server.messages, what="the slow create to be stored")
    assert stored["body"] == "ambiguous"


def test_drop_fault_closes_without_response_and_stores_nothing(
    server: SandboxServer, twilio: Client
) -> None:
    server.add_fault({"kind": "drop"})

    with pytest.raises(requests.exceptions.ConnectionError):
        send(twilio)

    assert server.messages() == []
    assert server.stats()["dropped"] == 1
    assert send(twilio).status == "queued"  # the client recovers on a new connection


def test_accept_then_error_fault_stores_the_message_but_answers_500(
    server: SandboxServer, twilio: Client
) -> None:
    server.add_fault({"kind": "accept_then_error", "status": 500, "code": 20500})

    with pytest.raises(TwilioRestException) as excinfo:
        send(twilio, body="double-send risk")

    assert (excinfo.value.status, excinfo.value.code) == (500, 20500)
    assert [m["body"] for m in server.messages()] == ["double-send risk"]
    assert server.stats() == {"creates": 1, "accepted": 1, "errors": 1, "dropped": 0}


def test_accept_then_drop_fault_stores_the_message_without_answering(
    server: SandboxServer, twilio: Client
) -> None:
    server.add_fault({"kind": "accept_then_drop"})

    with pytest.raises(requests.exceptions.ConnectionError):
        send(twilio, body="did it go?")

    assert [m["body"] for m in server.messages()] == ["did it go?"]


def test_fault_with_match_applies_only_to_matching_creates(
    server: SandboxServer, twilio: Client, control: Control
) -> None:
    response = control(
        "POST",
        "/_sandbox/faults",
        json={
            "kind": "error",
            "count": -1,
            "match": {"To": OTHER_TO},
            "status": 503,
            "code": 20503,
            "message": "Service unavailable",
        },
    )
    assert response.status_code == 201

    assert send(twilio, to=TO).status == "queued"
    for _ in range(2):
        with pytest.raises(TwilioRestException) as excinfo:
            send(twilio, to=OTHER_TO)
        assert (excinfo.value.status, excinfo.value.code) == (503, 20503)
    assert [m["to"] for m in server.messages()] == [TO]
    [rule] = control("GET", "/_sandbox/faults").json()["faults"]
    assert (rule["count"], rule["match"]) == (-1, {"To": OTHER_TO})


def test_faults_touch_only_message_creates(server: SandboxServer, twilio: Client) -> None:
    server.add_fault({"kind": "error"})

    twilio.messages.list()
    twilio.api.v2010.accounts(ACCOUNT_SID).fetch()

    assert len(server.faults()) == 1


def test_fault_rules_can_be_cleared_and_bad_ones_are_refused(control: Control) -> None:
    assert control("POST", "/_sandbox/faults", json=[{"kind": "drop"}, {"kind": "slow"}]).ok
    assert control("POST", "/_sandbox/faults", json={"kind": "explode"}).status_code == 400
    assert control("POST", "/_sandbox/faults", json={"kind": "drop", "count": 0}).status_code == 400

    assert control("DELETE", "/_sandbox/faults").json() == {"cleared": 2}
    assert control("GET", "/_sandbox/faults").json() == {"faults": []}


# --- status callbacks and inbound webhooks -------------------------------------------------


def test_status_callbacks_are_signed_and_move_the_message(
    server: SandboxServer, twilio: Client, receiver: Receiver
) -> None:
    callback_url = f"{receiver.url}/twilio/status/abc?attempt=1"
    message = send(twilio, status_callback=callback_url)

    sent, delivered = receiver.wait_for(2)

    assert [sent.params["MessageStatus"], delivered.params["MessageStatus"]] == [
        "sent",
        "delivered",
    ]
    for callback in (sent, delivered):
        assert callback.url == callback_url
        assert callback.params["MessageSid"] == callback.params["SmsSid"] == message.sid
        assert callback.params["SmsStatus"] == callback.params["MessageStatus"]
        assert callback.params["AccountSid"] == ACCOUNT_SID
        assert (callback.params["From"], callback.params["To"]) == (OWNED, TO)
        assert callback.params["ApiVersion"] == "2010-04-01"
        assert "ErrorCode" not in callback.params
        assert callback.headers["Content-Type"] == "application/x-www-form-urlencoded"
        signature = callback.headers["X-Twilio-Signature"]
        assert RequestValidator(TOKEN).validate(callback.url, callback.params, signature)
        assert not RequestValidator("another-token").validate(
            callback.url, callback.params, signature
        )
    fetched = twilio.messages(message.sid).fetch()
    assert fetched.status == "delivered"
    assert fetched.date_sent is not None
    wait_for(lambda: len(server.messages()[0]["callbacks"]) == 2, what="outcomes recorded")
    outcomes = server.messages()[0]["callbacks"]
    assert [(o["status"], o["http_status"]) for o in outcomes] == [
        ("sent", 200),
        ("delivered", 200),
    ]


@pytest.mark.parametrize(
    ("to", "statuses", "error_code"),
    [
        ("+15005550301", ["sent", "undelivered"], 30003),
        ("+15005550305", ["failed"], 30005),
        ("+15005550306", ["sent", "undelivered"], 30006),
        ("+15005550334", ["sent", "undelivered"], 30034),
    ],
)
def test_delivery_failure_numbers_send_failing_callbacks(
    twilio: Client, receiver: Receiver, to: str, statuses: list[str], error_code: int
) -> None:
    message = send(twilio, to=to, status_callback=f"{receiver.url}/status")
    assert message.status == "queued"

    callbacks = receiver.wait_for(len(statuses))
    time.sleep(0.1)  # nothing further may arrive

    assert [c.params["MessageStatus"] for c in receiver.received] == statuses
    assert callbacks[-1].params["ErrorCode"] == str(error_code)
    assert all("ErrorCode" not in c.params for c in callbacks[:-1])
    fetched = twilio.messages(message.sid).fetch()
    assert (fetched.status, fetched.error_code) == (statuses[-1], error_code)


def test_failed_callbacks_are_recorded_and_the_dispatcher_survives(
    server: SandboxServer, twilio: Client, receiver: Receiver
) -> None:
    closed = Receiver()
    dead_url = f"{closed.url}/status"
    closed.stop()

    send(twilio, body="to a dead endpoint", status_callback=dead_url)
    send(twilio, body="to a failing endpoint", status_callback=f"{receiver.url}/fail")

    def outcomes() -> dict[str, list[dict[str, Any]]] | None:
        snapshot = {m["body"]: m["callbacks"] for m in server.messages()}
        return snapshot if all(len(c) == 2 for c in snapshot.values()) else None

    recorded = wait_for(outcomes, what="both messages' callback outcomes")
    assert all("error" in o for o in recorded["to a dead endpoint"])
    assert [o["http_status"] for o in recorded["to a failing endpoint"]] == [500, 500]
    later = send(twilio, body="later", status_callback=f"{receiver.url}/ok")
    wait_for(
        lambda: twilio.messages(later.sid).fetch().status == "delivered",
        what="the dispatcher to keep working",
    )


def test_no_callbacks_when_callback_delay_is_none(receiver: Receiver) -> None:
    with SandboxServer(
        accounts={ACCOUNT_SID: TOKEN}, callback_delay=None, local_callbacks=True
    ) as frozen:
        message = send(make_client(frozen), from_=MAGIC_FROM, status_callback=receiver.url)
        time.sleep(0.2)

        assert make_client(frozen).messages(message.sid).fetch().status == "queued"
        assert receiver.received == []


def test_inbound_endpoint_posts_a_signed_webhook(
    server: SandboxServer, receiver: Receiver, control: Control
) -> None:
    url = f"{receiver.url}/twilio/inbound"

    response = control(
        "POST",
        "/_sandbox/inbound",
        json={"account_sid": ACCOUNT_SID, "from": TO, "to": OWNED, "body": "STOP", "url": url},
    )

    assert response.status_code == 200
    assert response.json()["http_status"] == 200
    [inbound] = receiver.received
    assert inbound.url == url
    assert (inbound.params["From"], inbound.params["To"]) == (TO, OWNED)
    assert inbound.params["Body"] == "STOP"
    assert inbound.params["AccountSid"] == ACCOUNT_SID
    assert inbound.params["MessageSid"] == response.json()["message_sid"]
    assert (inbound.params["NumMedia"], inbound.params["NumSegments"]) == ("0", "1")
    signature = inbound.headers["X-Twilio-Signature"]
    assert RequestValidator(TOKEN).validate(url, inbound.params, signature)
    assert not RequestValidator("another-token").validate(url, inbound.params, signature)


def test_inbound_for_an_unknown_account_is_refused(control: Control, receiver: Receiver) -> None:
    response = control(
        "POST",
        "/_sandbox/inbound",
        json={
            "account_sid": "AC" + "0" * 32,
            "from": TO,
            "to": OWNED,
            "body": "hi",
            "url": receiver.url,
        },
    )

    assert response.status_code == 400
    assert receiver.received == []


# --- control API and HTML page --------------------------------------------------------------


def test_reset_forgets_messages_faults_and_stats_but_keeps_accounts(
    server: SandboxServer, twilio: Client, control: Control
) -> None:
    send(twilio)
    server.add_fault({"kind": "drop"})

    assert control("POST", "/_sandbox/reset").status_code == 200

    assert control("GET", "/_sandbox/messages.json").json() == {"messages": []}
    assert server.faults() == []
    assert control("GET", "/_sandbox/stats.json").json()["creates"] == 0
    assert send(twilio).status == "queued"


def test_messages_and_stats_endpoints(twilio: Client, control: Control) -> None:
    sent = send(twilio, body="tracked", status_callback="http://127.0.0.1:9/none")
    with pytest.raises(TwilioRestException):
        send(twilio, to="+15005550004")

    [message] = control("GET", "/_sandbox/messages.json").json()["messages"]
    stats = control("GET", "/_sandbox/stats.json").json()

    assert message["sid"] == sent.sid
    assert message["status_callback"] == "http://127.0.0.1:9/none"
    assert (message["num_segments"], message["account_sid"]) == (1, ACCOUNT_SID)
    assert isinstance(message["received_at"], float)
    assert isinstance(message["callbacks"], list)
    assert stats == {"creates": 2, "accepted": 1, "errors": 1, "dropped": 0}


def test_accounts_endpoint_registers_a_usable_account(
    server: SandboxServer, control: Control
) -> None:
    sid = "AC" + "4" * 32
    response = control(
        "POST", "/_sandbox/accounts", json={"sid": sid, "token": "t4", "numbers": ["+15550004444"]}
    )
    assert response.status_code == 201
    assert "token" not in response.json()

    message = make_client(server, sid=sid, token="t4").messages.create(
        to=TO, from_="+15550004444", body="from a new account"
    )

    assert message.account_sid == sid
    with pytest.raises(TwilioRestException):
        make_client(server, sid=sid, token="t4").messages.create(to=TO, from_=OWNED, body="x")


def test_html_page_escapes_bodies_and_lists_newest_first(
    server: SandboxServer, twilio: Client
) -> None:
    send(twilio, body="first message")
    send(twilio, body="<script>alert('x')</script>")

    response = requests.get(server.url + "/", timeout=5)

    assert response.headers["Content-Type"].startswith("text/html")
    # the one script is the page's own refresh, which its CSP allows by hash alone
    assert response.text.count("<script>") == 1
    assert "alert" not in response.text.split("<script>")[1]
    [scripts] = [d for d in response.headers["Content-Security-Policy"].split(";") if "script" in d]
    assert scripts.strip().startswith("script-src 'sha256-") and "unsafe" not in scripts
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in response.text
    assert response.text.index("&lt;script&gt;") < response.text.index("first message")


# --- replies as the patient ----------------------------------------------------------------


def reply_form(page: str, sid: str) -> dict[str, str]:
    """The fields of the page's "Reply as patient" form on the row of message `sid`."""
    row = re.search(rf'<tr class=outbound data-sid="{sid}">(.*?)</tr>', page, re.S)
    assert row, f"no row for {sid}"
    fields = dict(re.findall(r'<input type=hidden name=(\w+) value="([^"]*)">', row.group(1)))
    assert set(fields) == {"token", "message_sid"}
    return fields


@pytest.fixture
def repliable(server: SandboxServer, receiver: Receiver) -> str:
    """The account's inbound SMS go to the receiver; returns that URL."""
    url = f"{receiver.url}/webhooks/inbound"
    server.add_account(ACCOUNT_SID, TOKEN, numbers=[OWNED], inbound_url=url)
    return url


def test_reply_posts_a_signed_sms_from_the_recipient_to_the_sender(
    twilio: Client, receiver: Receiver, control: Control, repliable: str
) -> None:
    question = send(twilio, body="Reply C to confirm")

    response = control(
        "POST", "/_sandbox/reply", json={"message_sid": question.sid, "body": "C 👍"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["http_status"] == 200
    [inbound] = receiver.received
    assert inbound.url == repliable
    assert (inbound.params["From"], inbound.params["To"]) == (TO, OWNED)
    assert inbound.params["Body"] == "C 👍"
    assert inbound.params["MessageSid"] == response.json()["message_sid"]
    assert RequestValidator(TOKEN).validate(
        repliable, inbound.params, inbound.headers["X-Twilio-Signature"]
    )
    [kept] = control("GET", "/_sandbox/inbound.json").json()["messages"]
    assert kept["in_reply_to"] == question.sid
    assert (kept["from"], kept["to"], kept["body"], kept["http_status"]) == (
        TO,
        OWNED,
        "C 👍",
        200,
    )


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        ({"message_sid": "SM" + "0" * 32, "body": "C"}, "no message SM0000"),
        ({"body": "C"}, "message_sid must be a non-empty string"),
        ({"message_sid": "{sid}", "body": ""}, "body must be a non-empty string"),
        ({"message_sid": "{sid}", "body": 7}, "body must be a non-empty string"),
        ({"message_sid": "{sid}", "body": "x" * 1601}, "body must be at most 1600 characters"),
        (["not", "an", "object"], "expected a JSON object"),
    ],
)
def test_bad_replies_are_400_with_the_reason_and_post_nothing(
    twilio: Client,
    receiver: Receiver,
    control: Control,
    repliable: str,
    payload: Any,
    error: str,
) -> None:
    sid = send(twilio).sid
    if isinstance(payload, dict) and payload.get("message_sid") == "{sid}":
        payload = {**payload, "message_sid": sid}

    response = control("POST", "/_sandbox/reply", json=payload)

    assert response.status_code == 400
    assert response.json()["error"].startswith(error)
    assert receiver.received == []
    assert control("GET", "/_sandbox/inbound.json").json() == {"messages": []}


def test_a_reply_for_an_account_without_inbound_url_says_how_to_set_one(
    twilio: Client, control: Control
) -> None:
    sid = send(twilio).sid

    response = control("POST", "/_sandbox/reply", json={"message_sid": sid, "body": "C"})

    assert response.status_code == 400
    assert response.json()["error"] == (
        f"account {ACCOUNT_SID} has no inbound_url: register one with POST /_sandbox/accounts"
    )


def test_a_reply_whose_webhook_is_down_is_502_and_shown(
    server: SandboxServer, twilio: Client, control: Control
) -> None:
    server.add_account(ACCOUNT_SID, TOKEN, numbers=[OWNED], inbound_url="http://127.0.0.1:9/in")
    sid = send(twilio).sid

    response = control("POST", "/_sandbox/reply", json={"message_sid": sid, "body": "C"})

    assert response.status_code == 502
    assert "ConnectionError" in response.json()["error"]
    assert "webhook not reached" in requests.get(server.url + "/", timeout=5).text


@pytest.mark.parametrize(
    ("inbound_url", "error"),
    [
        ("http://example.com/in", "inbound_url must be an http(s) URL on a loopback host"),
        ("ftp://127.0.0.1/in", "inbound_url must be an http(s) URL on a loopback host"),
        (["http://127.0.0.1/in"], "inbound_url must be a string"),
    ],
)
def test_accounts_endpoint_refuses_an_inbound_url_off_this_machine(
    control: Control, inbound_url: Any, error: str
) -> None:
    response = control(
        "POST",
        "/_sandbox/accounts",
        json={"sid": "AC" + "5" * 32, "token": "t5", "inbound_url": inbound_url},
    )

    assert (response.status_code, response.json()) == (400, {"error": error})


def test_the_page_replies_as_the_patient_and_shows_both_directions(
    server: SandboxServer, twilio: Client, receiver: Receiver, repliable: str
) -> None:
    question = send(twilio, body="Reply C to confirm, R to reschedule")
    session = requests.Session()
    session.trust_env = False
    page = session.get(server.url + "/", timeout=5).text
    fields = reply_form(page, question.sid)

    response = session.post(
        server.url + "/_sandbox/reply",
        data={**fields, "body": "<b>R</b> please"},
        headers={"Origin": server.url},
        allow_redirects=False,
        timeout=5,
    )

    assert (response.status_code, response.headers["Location"]) == (303, "/")
    [inbound] = receiver.received
    assert (inbound.params["From"], inbound.params["To"]) == (TO, OWNED)
    assert inbound.params["Body"] == "<b>R</b> please"
    page = session.get(server.url + "/", timeout=5).text
    rows = re.findall(r"<tr class=(inbound|outbound)", page)
    assert rows == ["inbound", "outbound"]  # newest first: the answer above its question
    assert "&lt;b&gt;R&lt;/b&gt; please" in page and "<b>R</b>" not in page
    assert "webhook answered 200" in page


def test_the_page_offers_no_reply_form_without_an_inbound_url(
    server: SandboxServer, twilio: Client
) -> None:
    send(twilio)

    page = requests.get(server.url + "/", timeout=5).text

    assert "<form" not in page
    assert "no inbound_url for this account" in page


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"token": "forged"}, 403, "token is not this page"),
        ({"body": ""}, 400, "body must be a non-empty string"),
        ({"message_sid": "SM" + "0" * 32}, 400, "no message SM0000"),
    ],
)
def test_a_bad_reply_form_posts_nothing_and_says_why(
    server: SandboxServer,
    twilio: Client,
    receiver: Receiver,
    repliable: str,
    change: dict[str, str],
    status: int,
    says: str,
) -> None:
    sid = send(twilio).sid
    fields = reply_form(requests.get(server.url + "/", timeout=5).text, sid)

    response = requests.post(
        server.url + "/_sandbox/reply",
        data={**fields, "body": "C", **change},
        allow_redirects=False,
        timeout=5,
    )

    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("text/html")
    assert says in response.text
    assert receiver.received == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port of 127.0.0.1, e.g. a dev server
        {"Host": "evil.example"},  # a DNS-rebound name
    ],
)
def test_another_site_in_the_users_browser_cannot_drive_the_control_api(
    server: SandboxServer,
    twilio: Client,
    receiver: Receiver,
    repliable: str,
    headers: dict[str, str],
) -> None:
    sid = send(twilio).sid
    fields = reply_form(requests.get(server.url + "/", timeout=5).text, sid)

    replied = requests.post(
        server.url + "/_sandbox/reply",
        data={**fields, "body": "STOP"},
        headers=headers,
        allow_redirects=False,
        timeout=5,
    )
    reset = requests.post(server.url + "/_sandbox/reset", headers=headers, timeout=5)

    assert (replied.status_code, reset.status_code) == (403, 403)
    assert "refused" in reset.json()["error"] or "loopback" in reset.json()["error"]
    assert receiver.received == []
    assert len(server.messages()) == 1


def test_the_page_may_be_opened_from_a_link_but_not_framed(server: SandboxServer) -> None:
    response = requests.get(server.url + "/", headers={"Sec-Fetch-Site": "cross-site"}, timeout=5)

    assert response.status_code == 200
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert (
        requests.get(server.url + "/", headers={"Host": "evil.example"}, timeout=5).status_code
        == 403
    )


def test_keep_alive_with_content_length_on_every_response(server: SandboxServer) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    statuses = []
    sockets = set()
    for path in (
        "/",
        "/_sandbox/stats.json",
        "/nowhere",
        f"/2010-04-01/Accounts/{ACCOUNT_SID}.json",
    ):
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        assert response.version == 11
        assert response.getheader("Content-Length") is not None
        sockets.add(id(connection.sock))
    connection.close()

    assert statuses == [200, 200, 404, 401]
    assert len(sockets) == 1  # one connection served all four


def test_sequential_keep_alive_creates_are_not_delayed_by_nagle(twilio: Client) -> None:
    # Without TCP_NODELAY each keep-alive request waits ~40 ms for a delayed ACK: 50 creates
    # would take 2 s. Unimpeded they take a few milliseconds each.
    send(twilio)
    started = time.monotonic()
    for _ in range(50):
        send(twilio)

    assert time.monotonic() - started < 1.0


def test_stop_closes_the_port() -> None:
    sandbox = SandboxServer(accounts={ACCOUNT_SID: TOKEN})
    url = sandbox.start()
    assert requests.get(url + "/_sandbox/stats.json", timeout=5).ok

    sandbox.stop()

    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(url + "/_sandbox/stats.json", timeout=5)


# --- the sandbox takes MediaUrl as Twilio does ----------------------------------------------


def test_the_sandbox_records_media_and_answers_as_an_mms(
    server: SandboxServer, twilio: Any
) -> None:
    message = send(twilio, body="See attached", media_url=["https://cdn.example.com/a.pdf"])
    assert message.sid.startswith("MM")
    assert (message.num_media, message.num_segments) == ("1", "1")
    [stored] = server.messages()
    assert stored["media_urls"] == ["https://cdn.example.com/a.pdf"]


def test_the_sandbox_takes_media_without_a_body(server: SandboxServer) -> None:
    response = raw_create(
        server, {"To": TO, "From": OWNED, "MediaUrl": "https://cdn.example.com/a.png"}
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("media", "code"),
    [(["https://cdn.example.com/a.png"] * 11, 21623), (["not a url"], 21620)],
)
def test_the_sandbox_refuses_media_twilio_refuses(
    server: SandboxServer,
    media: list[str],
    code: int,
) -> None:
    response = requests.post(
        f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        data=[("To", TO), ("From", OWNED), ("Body", "x"), *(("MediaUrl", m) for m in media)],
        auth=(ACCOUNT_SID, TOKEN),
        timeout=5,
    )
    assert (response.status_code, response.json()["code"]) == (400, code)
    assert server.messages() == []
