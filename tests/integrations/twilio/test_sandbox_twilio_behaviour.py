"""The sandbox behaves as real Twilio does where careflow could otherwise pass its tests and
fail on its first day in production (issue 21): status-callback URLs Twilio cannot reach
(21609), a Messaging Service's answers and callbacks, the test credentials and magic numbers,
and the list's DateSent filters. Each behaviour is cited from Twilio's documentation.

No database: every test gets its own sandbox, driven by the real twilio-python library.
"""

import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from integrations.twilio.sandbox import SandboxServer
from tests.integrations.twilio.test_sandbox import (
    ACCOUNT_SID,
    OWNED,
    SERVICE_SID,
    TO,
    TOKEN,
    Receiver,
    make_client,
    send,
    wait_for,
)

TEST_SID = "AC" + "3" * 32
TEST_TOKEN = "test-credentials-token"


def _sandbox(*, local_callbacks: bool) -> SandboxServer:
    return SandboxServer(
        accounts={
            ACCOUNT_SID: {
                "token": TOKEN,
                "numbers": [OWNED, "+15551230009"],
                "messaging_service_sids": [SERVICE_SID],
            },
            TEST_SID: {"token": TEST_TOKEN, "test_credentials": True},
        },
        callback_delay=0.02,
        local_callbacks=local_callbacks,
    )


@pytest.fixture
def local() -> Iterator[SandboxServer]:
    """A local run: callbacks to this machine are accepted (as `make run` and the tests)."""
    with _sandbox(local_callbacks=True) as sandbox:
        yield sandbox


@pytest.fixture
def strict() -> Iterator[SandboxServer]:
    """Twilio's own behaviour: the sandbox is not told it is a local run."""
    with _sandbox(local_callbacks=False) as sandbox:
        yield sandbox


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.stop()


def _error(call: Any) -> TwilioRestException:
    with pytest.raises(TwilioRestException) as excinfo:
        call()
    return excinfo.value


# --- item 1: a StatusCallback Twilio cannot reach is 21609 ---------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/webhooks/twilio/x/status/y/",
        "http://localhost:8000/status",
        "https://10.1.2.3/status",
        "https://192.168.0.10/status",
        "https://169.254.169.254/status",
        "https://[::1]/status",
        "https://[fe80::1]/status",
        "https://careflow.local/status",
        "https://careflow.internal/status",
        "https://intranet/status",
        "ftp://careflow.example.com/status",
        "not a url",
    ],
)
def test_a_status_callback_twilio_cannot_reach_is_21609(strict: SandboxServer, url: str) -> None:
    error = _error(lambda: send(make_client(strict), status_callback=url))

    assert (error.status, error.code) == (400, 21609)
    assert strict.messages() == []  # refused before acceptance: nothing was sent
    assert strict.stats() == {"creates": 1, "accepted": 0, "errors": 1, "dropped": 0}


def test_a_public_status_callback_is_accepted(strict: SandboxServer) -> None:
    message = send(make_client(strict), status_callback="https://careflow.example.com/status")

    assert message.status == "queued"
    assert strict.messages()[0]["status_callback"] == "https://careflow.example.com/status"


def test_a_local_run_accepts_callbacks_to_this_machine(
    local: SandboxServer, receiver: Receiver
) -> None:
    send(make_client(local), status_callback=f"{receiver.url}/status")

    assert [r.params["MessageStatus"] for r in receiver.wait_for(2)] == ["sent", "delivered"]


def test_without_a_status_callback_nothing_is_checked(strict: SandboxServer) -> None:
    assert send(make_client(strict)).status == "queued"


# --- item 2: a Messaging Service's send as Twilio answers it -------------------------------


def test_a_messaging_service_send_is_accepted_then_queued_with_the_chosen_sender(
    local: SandboxServer, receiver: Receiver
) -> None:
    """Twilio answers a Messaging Service send before the service has chosen a sender:
    status "accepted", from null, num_segments "0"; the queued callback names the sender."""
    twilio = make_client(local)
    body = "x" * 200  # two segments once counted
    raw = requests.post(
        f"{local.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        data={
            "To": TO,
            "MessagingServiceSid": SERVICE_SID,
            "Body": body,
            "StatusCallback": f"{receiver.url}/status",
        },
        auth=(ACCOUNT_SID, TOKEN),
        timeout=5,
    )

    assert raw.status_code == 201
    created = raw.json()
    assert (created["status"], created["from"], created["num_segments"]) == ("accepted", None, "0")
    assert created["messaging_service_sid"] == SERVICE_SID
    callbacks = receiver.wait_for(3)
    assert [c.params["MessageStatus"] for c in callbacks] == ["queued", "sent", "delivered"]
    # The service picks among the account's numbers; every callback names the one it chose.
    assert {c.params["From"] for c in callbacks} == {OWNED}
    assert all(c.params["MessagingServiceSid"] == SERVICE_SID for c in callbacks)
    fetched = twilio.messages(created["sid"]).fetch()
    assert (fetched.from_, fetched.num_segments) == (OWNED, "2")


# --- item 3: magic numbers and test credentials --------------------------------------------


@pytest.mark.parametrize(
    ("from_", "code"),
    [("+15005550001", 21212), ("+15005550007", 21606), ("+15005550008", 21611)],
)
def test_magic_from_numbers(local: SandboxServer, from_: str, code: int) -> None:
    error = _error(lambda: send(make_client(local), from_=from_))

    assert (error.status, error.code) == (400, code)
    assert local.messages() == []


@pytest.mark.parametrize(
    ("to", "code"),
    [
        ("+15005550001", 21211),
        ("+15005550002", 21612),
        ("+15005550003", 21408),
        ("+15005550004", 21610),
        ("+15005550009", 21614),
    ],
)
def test_magic_to_numbers(local: SandboxServer, to: str, code: int) -> None:
    error = _error(lambda: send(make_client(local), to=to))

    assert (error.status, error.code) == (400, code)
    assert local.messages() == []


def test_test_credentials_answer_but_send_nothing_and_cannot_be_looked_up(
    local: SandboxServer, receiver: Receiver
) -> None:
    """Twilio's test credentials: the create is validated and answered, but no message is
    sent, no status callback is posted, and fetch/list are refused (403, 20008)."""
    twilio = make_client(local, sid=TEST_SID, token=TEST_TOKEN)
    message = send(twilio, from_="+15005550006", status_callback=f"{receiver.url}/test")
    # A live account's message alongside: its callbacks show the time for them has passed.
    send(make_client(local), status_callback=f"{receiver.url}/live")

    assert message.status == "queued"
    fetch = _error(lambda: twilio.messages(message.sid).fetch())
    # twilio-python reports a list page's error as a TwilioException carrying the response.
    with pytest.raises(TwilioException) as listing:
        twilio.messages.list(to=TO)
    assert (fetch.status, fetch.code) == (403, 20008)
    assert listing.value.args[1].status_code == 403
    assert json.loads(listing.value.args[1].text)["code"] == 20008
    # Magic numbers answer as they do with test credentials.
    assert _error(lambda: send(twilio, from_="+15005550008")).code == 21611
    receiver.wait_for(2)
    time.sleep(0.1)
    assert [r.url.rsplit("/", 1)[-1] for r in receiver.received] == ["live", "live"]
    kept = {m["sid"]: m for m in local.messages()}[message.sid]
    assert (kept["status"], kept["callbacks"], kept["date_sent"]) == ("queued", [], None)


def test_test_credentials_are_registered_through_the_control_api(local: SandboxServer) -> None:
    answer = requests.post(
        f"{local.url}/_sandbox/accounts",
        json={"sid": "AC" + "4" * 32, "token": "t", "test_credentials": True},
        timeout=5,
    )
    refused = requests.post(
        f"{local.url}/_sandbox/accounts",
        json={"sid": "AC" + "5" * 32, "token": "t", "test_credentials": "yes"},
        timeout=5,
    )

    assert answer.status_code == 201
    assert answer.json()["test_credentials"] is True
    assert refused.status_code == 400
    assert refused.json() == {"error": "test_credentials must be true or false"}


# --- item 7: DateSent filters as Twilio documents them -------------------------------------


def test_date_sent_bounds_are_the_days_midnight(local: SandboxServer) -> None:
    """Twilio's list filters: "DateSent<" is messages sent on or before midnight of the date,
    "DateSent>" on or after midnight, in YYYY-MM-DD (UTC): a message sent today is after
    today's midnight, so "DateSent<today" leaves it out."""
    twilio = make_client(local)
    sent = send(twilio)
    wait_for(lambda: local.messages()[0]["date_sent"], what="date_sent to be set")
    today = twilio.messages(sent.sid).fetch().date_sent.date()
    one = dt.timedelta(days=1)

    def listed(**params: str) -> list[str]:
        answer = requests.get(
            f"{local.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
            params=params,
            auth=(ACCOUNT_SID, TOKEN),
            timeout=5,
        )
        assert answer.status_code == 200, answer.text
        return [m["sid"] for m in answer.json()["messages"]]

    assert listed(**{"DateSent<": today.isoformat()}) == []
    assert listed(**{"DateSent<": (today + one).isoformat()}) == [sent.sid]
    assert listed(**{"DateSent>": today.isoformat()}) == [sent.sid]
    assert listed(**{"DateSent>": (today + one).isoformat()}) == []
    assert listed(DateSent=today.isoformat()) == [sent.sid]
    bad = requests.get(
        f"{local.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        params={"DateSent": "07/12/2026"},
        auth=(ACCOUNT_SID, TOKEN),
        timeout=5,
    )
    assert bad.status_code == 400


def test_pages_are_newest_first_with_twilios_paging_fields(local: SandboxServer) -> None:
    twilio = make_client(local)
    sids = [send(twilio, body=f"n{i}").sid for i in range(5)]

    first = requests.get(
        f"{local.url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
        params={"To": TO, "PageSize": "2"},
        auth=(ACCOUNT_SID, TOKEN),
        timeout=5,
    ).json()
    second = requests.get(
        local.url + first["next_page_uri"], auth=(ACCOUNT_SID, TOKEN), timeout=5
    ).json()

    assert [m["sid"] for m in first["messages"]] == [sids[4], sids[3]]
    assert [m["sid"] for m in second["messages"]] == [sids[2], sids[1]]
    assert (first["page"], first["page_size"], first["start"], first["end"]) == (0, 2, 0, 1)
    assert (second["page"], second["start"], second["end"]) == (1, 2, 3)
    assert "PageToken=PA" in first["next_page_uri"] and "PageSize=2" in first["next_page_uri"]
    assert first["previous_page_uri"] is None
    assert second["previous_page_uri"] is not None
    assert first["uri"].startswith(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?")
