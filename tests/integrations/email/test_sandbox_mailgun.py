"""The email sandbox's Mailgun API over plain HTTP: auth and domain errors as Mailgun gives
them, validation, the Events API's filters and paging, suppression after a bounce, fault
rules in Mailgun's error shape, and webhook bodies anymail's parser reads."""

import hashlib
import hmac
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from anymail.signals import EventType
from anymail.webhooks.mailgun import MailgunTrackingWebhookView

from integrations.email.sandbox import SandboxServer
from integrations.email.sandbox_mailgun import mailgun_event, mailgun_signed

DOMAIN = "mg.clinic.example"
KEY = "0123456789abcdef0123456789abcdef-0a1b2c3d-4e5f6a7b"
SIGNING_KEY = "signing-key-0123456789"
SENDER = f"care@{DOMAIN}"


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    with SandboxServer(webhook_delay=0.01) as server:
        server.add_mailgun_domain(DOMAIN, api_key=KEY, signing_key=SIGNING_KEY, senders=[SENDER])
        yield server


def send(sandbox: SandboxServer, key: str = KEY, domain: str = DOMAIN, **form: Any) -> Any:
    fields = {"from": SENDER, "to": "pat@example.org", "subject": "Hi", "text": "Hello", **form}
    return requests.post(
        f"{sandbox.url}/v3/{domain}/messages",
        data={k: v for k, v in fields.items() if v is not None},
        auth=("api", key),
        timeout=5,
    )


def events(sandbox: SandboxServer, **params: str) -> Any:
    return requests.get(
        f"{sandbox.url}/v3/{DOMAIN}/events", params=params, auth=("api", KEY), timeout=5
    )


def test_a_send_is_queued_with_its_user_variables(sandbox: SandboxServer) -> None:
    answer = send(sandbox, **{"v:careflow_message": "m-1", "html": "<p>Hello</p>"})
    assert answer.status_code == 200
    assert answer.json()["message"] == "Queued. Thank you."
    [stored] = sandbox.messages()
    assert stored["id"] == answer.json()["id"]
    assert stored["metadata"] == {"careflow_message": "m-1"}
    assert (stored["to"], stored["html_body"]) == (["pat@example.org"], "<p>Hello</p>")


@pytest.mark.parametrize(
    ("kwargs", "status", "said"),
    [
        ({"key": "key-" + "0" * 32}, 401, "Forbidden"),
        ({"key": ""}, 401, "Forbidden"),
        ({"domain": "other.example"}, 404, "Domain not found: other.example"),
        ({"to": None}, 400, "'to' parameter is missing"),
        ({"to": "not-an-address"}, 400, "'to' parameter is not a valid address"),
        ({"text": None}, 400, "Need at least one of 'text', 'html'"),
        ({"from": "someone@else.example"}, 400, "not allowed on this domain"),
    ],
)
def test_refusals_are_mailguns(
    sandbox: SandboxServer, kwargs: dict[str, Any], status: int, said: str
) -> None:
    answer = send(sandbox, **kwargs)
    assert answer.status_code == status
    assert said in answer.text
    assert sandbox.messages() == []
    assert sandbox.stats()["errors"] == 1


def test_fault_rules_answer_in_mailguns_shape(sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "error", "status": 429, "match": {"To": "pat@example.org"}})
    answer = send(sandbox)
    assert (answer.status_code, answer.json()) == (429, {"message": "Rate limit exceeded."})
    assert send(sandbox, to="other@example.org").status_code == 200
    sandbox.add_fault({"kind": "accept_then_error", "status": 500})
    assert send(sandbox).status_code == 500
    assert len(sandbox.messages()) == 2  # accepted, then the error


def test_events_filter_page_and_follow_the_scenario(sandbox: SandboxServer) -> None:
    before = time.time()
    for index in range(3):
        send(sandbox, to=f"pat{index}@example.org", **{"v:careflow_message": f"m-{index}"})
    send(sandbox, to="bounce@example.org")
    deadline = time.monotonic() + 5
    while len([m for m in sandbox.messages() if m["events"]]) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    page = events(sandbox, recipient="pat1@example.org").json()
    assert [item["event"] for item in page["items"]] == ["delivered", "accepted"]  # newest first
    assert page["items"][0]["user-variables"] == {"careflow_message": "m-1"}
    ascending = events(sandbox, ascending="yes", limit="3", event="accepted").json()
    assert [item["recipient"] for item in ascending["items"]] == [
        "pat0@example.org",
        "pat1@example.org",
        "pat2@example.org",
    ]
    following = requests.get(ascending["paging"]["next"], auth=("api", KEY), timeout=5).json()
    assert [item["recipient"] for item in following["items"]] == ["bounce@example.org"]
    last = requests.get(following["paging"]["next"], auth=("api", KEY), timeout=5).json()
    assert last["items"] == []
    assert events(sandbox, begin=str(time.time() + 60)).json()["items"] == []
    assert len(events(sandbox, begin=str(before - 1)).json()["items"]) == 8
    [failed] = events(sandbox, event="failed").json()["items"]
    assert (failed["severity"], failed["reason"]) == ("permanent", "bounce")
    assert events(sandbox, limit="0").status_code == 400


def test_a_bounced_address_is_accepted_then_suppressed(sandbox: SandboxServer) -> None:
    send(sandbox, to="bounce@example.org")
    deadline = time.monotonic() + 5
    while not sandbox.messages()[0]["events"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert send(sandbox, to="bounce@example.org").status_code == 200
    while len(events(sandbox, event="failed").json()["items"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    newest = events(sandbox, event="failed").json()["items"][0]
    assert (newest["severity"], newest["reason"]) == ("permanent", "suppress-bounce")


def test_the_domain_answers_only_to_its_key(sandbox: SandboxServer) -> None:
    url = f"{sandbox.url}/v3/domains/{DOMAIN}"
    assert requests.get(url, auth=("api", KEY), timeout=5).json()["domain"]["state"] == "active"
    assert requests.get(url, auth=("api", "wrong"), timeout=5).status_code == 401
    assert requests.get(url, timeout=5).status_code == 401


def test_webhook_bodies_are_signed_and_read_by_anymail() -> None:
    class Message:
        id = f"<20261206.abc@{DOMAIN}>"
        to = ["pat@example.org"]
        from_ = SENDER
        subject = "Hi"
        tag = ""
        metadata = {"careflow_message": "m-1"}

    body = mailgun_signed(
        mailgun_event(Message, "HardBounce", "pat@example.org", time.time()), SIGNING_KEY
    )
    block = body["signature"]
    expected = hmac.new(
        SIGNING_KEY.encode(), f"{block['timestamp']}{block['token']}".encode(), hashlib.sha256
    ).hexdigest()
    assert block["signature"] == expected and len(block["token"]) == 50
    event = MailgunTrackingWebhookView(webhook_signing_key=SIGNING_KEY).esp_to_anymail_event(body)
    assert event.event_type == EventType.BOUNCED
    assert event.message_id == Message.id
    assert event.metadata == {"careflow_message": "m-1"}
    assert event.recipient == "pat@example.org"


def test_domains_are_registered_through_the_control_api() -> None:
    with SandboxServer(webhook_delay=None) as server:
        control = f"{server.url}/_sandbox/mailgun-domains"
        spec = {"domain": DOMAIN, "api_key": KEY, "signing_key": SIGNING_KEY, "senders": [SENDER]}
        assert requests.post(control, json=spec, timeout=5).status_code == 201
        assert send(server).status_code == 200
        bad = {**spec, "signing_key": ""}
        assert requests.post(control, json=bad, timeout=5).status_code == 400
        off_loopback = {**spec, "webhook_url": "http://example.com/e/"}
        assert requests.post(control, json=off_loopback, timeout=5).status_code == 400
