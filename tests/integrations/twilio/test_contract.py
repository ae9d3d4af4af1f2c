"""Contract test: every JSON body the Twilio sandbox answers, and every status callback it
posts, checked against Twilio's own description of the API, so the sandbox (the
specification careflow is tested against) cannot drift from Twilio.

The schemas are Twilio's OpenAPI description of the 2010-04-01 API, vendored as the subset
this test needs in openapi/ (source URL and twilio-oai commit in openapi/README.md). Twilio
renders every property its document lists (null when unset) and no other, so each resource
is checked strictly: all properties present, none added.
"""

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from jsonschema import Draft202012Validator, FormatChecker

from integrations.twilio.sandbox import (
    DELIVERY_FAILURES,
    MAGIC_FROM_ERRORS,
    MAGIC_TO_ERRORS,
    SandboxServer,
)
from tests.integrations.twilio.test_sandbox import (
    ACCOUNT_SID,
    OWNED,
    SERVICE_SID,
    TO,
    TOKEN,
    Receiver,
    server,
)

__all__ = ["server"]  # the sandbox fixture, shared with test_sandbox

SUBSET = json.loads(
    (Path(__file__).parent / "openapi" / "twilio_api_v2010.subset.json").read_text("utf-8")
)
SCHEMAS: dict[str, Any] = SUBSET["schemas"]
# Resources Twilio renders whole: every listed property, none other.
WHOLE = ("api.v2010.account", "api.v2010.account.message", "ListMessageResponse", "error")

# Twilio's documented status callback parameters for an outbound SMS/MMS. Sources:
# https://www.twilio.com/docs/messaging/guides/track-outbound-message-status (status
# callback requests: a subset of the standard request properties, plus MessageStatus and
# ErrorCode) and https://www.twilio.com/docs/usage/webhooks/messaging-webhooks (the standard
# request properties), and for RawDlrDoneDate Twilio's changelog
# (https://twilio.com/en-us/changelog/addition-of-rawdlrdonedate-to-delivered-and-undelivered-status-webhooks).
# Twilio "occasionally adds new properties": a receiver must accept more, but the sandbox
# must post none that Twilio does not document.
CALLBACK_ALWAYS = {
    "AccountSid",
    "ApiVersion",
    "From",
    "MessageSid",
    "MessageStatus",
    "SmsSid",
    "SmsStatus",
    "To",
}
CALLBACK_DOCUMENTED = CALLBACK_ALWAYS | {
    "Body",
    "ErrorCode",  # only when the status is failed or undelivered
    "MessagingServiceSid",  # only for a message sent through a Messaging Service
    "NumMedia",
    "NumSegments",
    "RawDlrDoneDate",  # delivered or undelivered SMS/MMS, when the carrier reports it
    "SmsMessageSid",
}
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
RFC2822 = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} \+0000$"
)
API_PATH = re.compile(r"^/2010-04-01/Accounts/AC[0-9a-f]{32}[/.]\S*$")


def _json_schema(node: Any) -> Any:
    """The OpenAPI 3.0 dialect as JSON Schema: `nullable` as a null type, references to
    components as $defs."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if "$ref" in schema:
        schema["$ref"] = schema["$ref"].replace("#/components/schemas/", "#/$defs/")
    if node.get("nullable") and "type" in schema:
        schema["type"] = [schema["type"], "null"]
        if "enum" in schema:
            schema["enum"] = [*schema["enum"], None]
    return schema


def _whole(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    if name in WHOLE:
        return {**schema, "required": sorted(schema["properties"]), "additionalProperties": False}
    return schema


DEFS = {name: _whole(name, _json_schema(schema)) for name, schema in SCHEMAS.items()}
FORMATS = FormatChecker()
FORMATS.checks("date-time-rfc-2822")(lambda v: not isinstance(v, str) or bool(RFC2822.match(v)))
FORMATS.checks("phone-number")(lambda v: not isinstance(v, str) or bool(E164.match(v)))
FORMATS.checks("currency")(lambda v: not isinstance(v, str) or bool(re.fullmatch("[A-Z]{3}", v)))
# Twilio's URIs are relative to https://api.twilio.com.
FORMATS.checks("uri")(lambda v: not isinstance(v, str) or bool(API_PATH.match(v)))
FORMATS.checks("uri-map")(
    lambda v: not isinstance(v, dict) or all(API_PATH.match(str(u)) for u in v.values())
)


def violations(name: str, body: Any) -> list[str]:
    validator = Draft202012Validator(
        {"$ref": f"#/$defs/{name}", "$defs": DEFS}, format_checker=FORMATS
    )
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(body)'}: {error.message}"
        for error in validator.iter_errors(body)
    ]


def test_the_vendored_document_names_its_source() -> None:
    source = SUBSET["x-source"]
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"])
    assert source["url"].startswith("https://github.com/twilio/twilio-oai/blob/")
    assert source["commit"] in (Path(__file__).parent / "openapi" / "README.md").read_text()
    assert set(SCHEMAS) >= set(WHOLE)


def test_the_checker_catches_a_deviation() -> None:
    """The checks bite: a body with a missing, an extra or a mistyped property fails."""
    assert violations("error", {"code": 20404, "message": "x", "more_info": "u"})
    assert violations("error", {"code": 1, "message": "x", "more_info": "u", "status": 4, "x": 1})
    assert violations("error", {"code": "20404", "message": "x", "more_info": "u", "status": 4})


@pytest.fixture
def api(server: SandboxServer) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False
    session.auth = (ACCOUNT_SID, TOKEN)
    yield session
    session.close()


def _url(server: SandboxServer, rest: str) -> str:
    return f"{server.url}/2010-04-01/Accounts/{ACCOUNT_SID}{rest}"


def _create(api: requests.Session, server: SandboxServer, **params: Any) -> requests.Response:
    data = {"To": TO, "From": OWNED, "Body": "Your appointment is tomorrow", **params}
    return api.post(_url(server, "/Messages.json"), data={k: v for k, v in data.items() if v})


def _ok(response: requests.Response, name: str, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert violations(name, body) == []
    return body


def test_message_bodies_match_twilios_message_schema(
    server: SandboxServer, api: requests.Session
) -> None:
    created = [
        _ok(_create(api, server), "api.v2010.account.message", 201),
        _ok(_create(api, server, Body="😀" * 40), "api.v2010.account.message", 201),
        _ok(
            _create(api, server, MediaUrl="https://example.com/a.png"),
            "api.v2010.account.message",
            201,
        ),
        _ok(
            _create(api, server, From="", MessagingServiceSid=SERVICE_SID),
            "api.v2010.account.message",
            201,
        ),
        *(
            _ok(_create(api, server, To=to), "api.v2010.account.message", 201)
            for to in DELIVERY_FAILURES
        ),
    ]
    # Fetched once the lifecycle is over: date_sent, the sender and error codes are set.
    for message in created:
        final = _wait_final(api, server, message["sid"])
        assert final["status"] in ("delivered", "undelivered", "failed")
        if final["status"] != "delivered":
            assert isinstance(final["error_code"], int) and final["error_message"]


def _wait_final(api: requests.Session, server: SandboxServer, sid: str) -> dict[str, Any]:
    for _ in range(250):
        body = _ok(api.get(_url(server, f"/Messages/{sid}.json")), "api.v2010.account.message")
        if body["status"] in ("delivered", "undelivered", "failed"):
            return body
        time.sleep(0.02)
    pytest.fail(f"message {sid} never reached a final status")


def test_list_pages_match_twilios_list_schema(server: SandboxServer, api: requests.Session) -> None:
    for _ in range(3):
        _ok(_create(api, server), "api.v2010.account.message", 201)
    first = _ok(
        api.get(_url(server, "/Messages.json"), params={"PageSize": 2}), "ListMessageResponse"
    )
    assert len(first["messages"]) == 2 and first["next_page_uri"]
    second = _ok(api.get(server.url + first["next_page_uri"]), "ListMessageResponse")
    assert len(second["messages"]) == 1 and second["next_page_uri"] is None
    assert second["previous_page_uri"]
    empty = _ok(
        api.get(_url(server, "/Messages.json"), params={"To": "+15550000000"}),
        "ListMessageResponse",
    )
    assert empty["messages"] == []


def test_account_body_matches_twilios_account_schema(
    server: SandboxServer, api: requests.Session
) -> None:
    account = _ok(api.get(_url(server, ".json")), "api.v2010.account")
    assert account["sid"] == ACCOUNT_SID and account["status"] == "active"


def _error_requests(server: SandboxServer, api: requests.Session) -> Iterator[tuple[str, Any]]:
    """(what, response) for every kind of error the sandbox answers."""
    yield "wrong token", requests.get(_url(server, ".json"), auth=(ACCOUNT_SID, "nope"), timeout=5)
    yield "no credentials", requests.get(_url(server, ".json"), timeout=5)
    yield "unknown message", api.get(_url(server, f"/Messages/SM{'0' * 32}.json"))
    yield "unknown resource", api.get(_url(server, "/Calls.json"))
    yield "method not allowed", api.delete(_url(server, ".json"))
    yield "bad PageSize", api.get(_url(server, "/Messages.json"), params={"PageSize": "x"})
    yield "bad DateSent", api.get(_url(server, "/Messages.json"), params={"DateSent": "soon"})
    yield "no To", _create(api, server, To="")
    yield "To not E.164", _create(api, server, To="555")
    yield "no From", _create(api, server, From="")
    yield "From not owned", _create(api, server, From="+15550009999")
    yield "unknown service", _create(api, server, From="", MessagingServiceSid="MG" + "9" * 32)
    yield "no Body", _create(api, server, Body="")
    yield "Body too long", _create(api, server, Body="a" * 1601)
    yield "bad media URL", _create(api, server, MediaUrl="ftp://example.com/a.png")
    yield "too many media", _create(api, server, MediaUrl=[f"https://e.com/{i}" for i in range(11)])
    for to in MAGIC_TO_ERRORS:
        yield f"magic To {to}", _create(api, server, To=to)
    for sender in MAGIC_FROM_ERRORS:
        yield f"magic From {sender}", _create(api, server, From=sender)
    yield "callback Twilio cannot reach", _unreachable_callback(api)
    test_sid = "AC" + "7" * 32
    server.add_account(test_sid, TOKEN, numbers=[OWNED], test_credentials=True)
    test_url = f"{server.url}/2010-04-01/Accounts/{test_sid}/Messages.json"
    yield "list with test credentials", requests.get(test_url, auth=(test_sid, TOKEN), timeout=5)
    server.add_fault({"kind": "error", "count": 1})
    yield "injected 429", _create(api, server)
    server.add_fault({"kind": "accept_then_error", "count": 1})
    yield "injected 500 after accepting", _create(api, server)


def test_error_bodies_match_twilios_error_schema(
    server: SandboxServer, api: requests.Session
) -> None:
    seen = []
    for what, response in _error_requests(server, api):
        assert response.status_code >= 400, what
        body = response.json()
        assert violations("error", body) == [], what
        assert body["status"] == response.status_code, what
        assert body["more_info"] == f"https://www.twilio.com/docs/errors/{body['code']}", what
        seen.append(body["code"])
    assert set(MAGIC_TO_ERRORS.values()) | set(MAGIC_FROM_ERRORS.values()) <= set(seen)
    assert {21609, 20008} <= set(seen)


def _unreachable_callback(api: requests.Session) -> requests.Response:
    """A create whose StatusCallback is on loopback, at a sandbox that is not a local run."""
    accounts = {ACCOUNT_SID: {"token": TOKEN, "numbers": [OWNED]}}
    with SandboxServer(accounts=accounts, callback_delay=None) as strict:
        return _create(api, strict, StatusCallback="http://127.0.0.1:8000/twilio/status")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    yield endpoint
    endpoint.stop()


def test_status_callbacks_post_only_documented_parameters(
    server: SandboxServer, api: requests.Session, receiver: Receiver
) -> None:
    callback = f"{receiver.url}/status"
    sends = [
        {},
        {"From": "", "MessagingServiceSid": SERVICE_SID},
        {"MediaUrl": "https://example.com/a.png"},
        *({"To": to} for to in DELIVERY_FAILURES),
    ]
    for params in sends:
        _ok(
            _create(api, server, StatusCallback=callback, **params),
            "api.v2010.account.message",
            201,
        )
    # Each send: sent then final, except the one that fails outright.
    expected = sum(1 if status == "failed" else 2 for status, _ in DELIVERY_FAILURES.values())
    received = receiver.wait_for(expected + 2 * 3)
    statuses = set(SCHEMAS["message_enum_status"]["enum"])
    for post in received:
        params = post.params
        names = set(params)
        assert names <= CALLBACK_DOCUMENTED, names - CALLBACK_DOCUMENTED
        assert names >= CALLBACK_ALWAYS, CALLBACK_ALWAYS - names
        assert params["MessageStatus"] in statuses
        assert params["SmsStatus"] == params["MessageStatus"]
        assert params["SmsSid"] == params["MessageSid"]
        assert re.fullmatch(r"(SM|MM)[0-9a-f]{32}", params["MessageSid"])
        assert params["AccountSid"] == ACCOUNT_SID and params["ApiVersion"] == "2010-04-01"
        assert E164.match(params["From"]) and E164.match(params["To"])
        failed = params["MessageStatus"] in ("failed", "undelivered")
        assert ("ErrorCode" in params) == failed
        if failed:
            assert params["ErrorCode"].isdigit()
        if params["MessageStatus"] in ("delivered", "undelivered"):
            # Carriers mostly report it, so careflow must take a callback that carries it.
            assert re.fullmatch(r"\d{10}", params["RawDlrDoneDate"])
        else:
            assert "RawDlrDoneDate" not in params
        if "MessagingServiceSid" in params:
            assert params["MessagingServiceSid"] == SERVICE_SID
    assert any("MessagingServiceSid" in post.params for post in received)
