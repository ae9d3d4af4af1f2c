"""A loopback Twilio-compatible HTTP server for development and tests.

The project talks to it with the real twilio-python library (only the origin is swapped, see
`integrations.twilio.client.BaseUrlHttpClient`), so request building, auth and error parsing
are exercised exactly as in production. It implements the slice of the 2010-04-01 REST API
careflow uses, Twilio-style signed status callbacks and inbound webhooks, and a control API
for fault injection. No Django imports: it runs in a thread inside pytest or as
`manage.py twilio_sandbox`.

Twilio API (HTTP basic auth with the Account SID and auth token):

    GET  /2010-04-01/Accounts/{AccountSid}.json                      account
    POST /2010-04-01/Accounts/{AccountSid}/Messages.json             create (201)
    GET  /2010-04-01/Accounts/{AccountSid}/Messages.json             list: To, From, DateSent,
                                                                     DateSent<, DateSent>,
                                                                     PageSize, Page, PageToken
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{MessageSid}.json fetch

Create validation runs in Twilio's order, each failure a 400 with Twilio's code:
21604 To missing, 21211 To not E.164, 21603 neither From nor MessagingServiceSid,
21212/21611 a magic From (below), 21606 From not owned by the account, 21701
MessagingServiceSid not registered, 21609 a StatusCallback Twilio could not reach (not an
http(s) URL, or a loopback, private, link-local or single-label host; allowed only when the
sandbox is told it is a local run, `local_callbacks=True`),
21602 Body missing or empty (without MediaUrl), 21617 Body over 1600 characters,
21623 more than 10 MediaUrl, 21620 a MediaUrl that is not an http(s) URL (Twilio fetches
media later; the sandbox does not: it records the URLs, and a message with media is an MMS,
SID "MM…", num_media, one segment). The test number
+15005550006 is an owned From for every account.

A message sent through a Messaging Service is answered as Twilio answers it: status
"accepted", "from" null and num_segments "0"; its first status callback is "queued", carrying
the From the service chose (the account's lowest owned number, or +15005550006), then "sent"
and its final status.

List filters (Twilio's YYYY-MM-DD, UTC): DateSent matches the day; DateSent< is "on or
before midnight" of the day and DateSent> "on or after midnight"; the ISO datetimes
twilio-python sends for datetime filters compare by instant. Pages are newest first, PageSize
1 to 1000 (default 50); next_page_uri carries a PageToken, so messages created while a
client pages do not shift later pages.

Test credentials (an account registered with "test_credentials": true) behave as Twilio's:
a create is validated and answered ("queued") but nothing is sent and no status callback is
posted, and fetching or listing messages is 403, error 20008.

Magic numbers (Twilio's test numbers):

    From           on create
    +15005550001   400, 21212 invalid From
    +15005550007   400, 21606 not owned
    +15005550008   400, 21611 queue full

    To             on create                 later, on the status callback
    +15005550001   400, 21211 invalid To     -
    +15005550002   400, 21612 cannot route   -
    +15005550003   400, 21408 no permission  -
    +15005550004   400, 21610 unsubscribed   -
    +15005550009   400, 21614 not mobile     -
    +15005550301   201                       sent, then undelivered, ErrorCode 30003
    +15005550305   201                       failed, ErrorCode 30005 (no "sent" before it)
    +15005550306   201                       sent, then undelivered, ErrorCode 30006
    +15005550334   201                       sent, then undelivered, ErrorCode 30034
    anything else  201                       sent, then delivered

Where it still differs from Twilio, knowingly: the magic numbers above apply to every
account, and +15005550006 is an owned From for every account (at Twilio both work only with
test credentials); the delivery-failure To numbers +15005550301, +15005550305, +15005550306
and +15005550334 are the sandbox's own (Twilio has no such test numbers); MediaUrl is never
fetched, so none of the errors a failed media fetch brings at Twilio (such as 12300, invalid
Content-Type) occur; a Messaging Service always picks the account's lowest owned number
(Twilio's sender pool has its own rules: sticky sender, geographic match and others).

Lifecycle: `callback_delay` seconds after a message is accepted it moves to "sent" (date_sent
is set), and `callback_delay` seconds after that callback was posted, to its final status.
A message with a StatusCallback gets one signed POST per transition; every attempt's outcome
is recorded on the message. `callback_delay=None` (or negative) freezes messages at
"queued"/"accepted" and posts nothing. `status_callbacks = False` (or the control API) lets
messages move on as usual but posts no status callback, as when every callback was lost.

Control API (no auth; loopback clients only, and never on behalf of another site: a request
with a foreign Origin, a cross-site Sec-Fetch-Site or a non-loopback Host is 403):

    POST   /_sandbox/faults         add rule(s): a JSON object or a list of them
    GET    /_sandbox/faults         rules with their remaining counts
    DELETE /_sandbox/faults         clear rules
    GET    /_sandbox/messages.json  {"messages": [...]} in arrival order
    GET    /_sandbox/stats.json     counts of create requests: "creates" (all, even refused
                                    ones), "accepted" (stored), "errors" (answered with an
                                    error status), "dropped" (closed without a response)
    POST   /_sandbox/reset          forget messages, faults, stats, pending callbacks; status
                                    callbacks on again
    POST   /_sandbox/callbacks      {"enabled": false}: messages still move on, but no status
                                    callback is posted (recorded as "not posted"); true: again
    POST   /_sandbox/accounts       {"sid", "token", "numbers", "messaging_service_sids",
                                    "inbound_url", "test_credentials"}: inbound_url (optional, a loopback http(s)
                                    URL) is where the account's inbound SMS go, as the number's
                                    "A message comes in" webhook at Twilio
    POST   /_sandbox/inbound        {"account_sid", "from", "to", "body", "url"}: post a signed
                                    inbound-SMS webhook to url; 200 {"message_sid",
                                    "http_status", "response_body"}, or 502 {"error"} if the
                                    webhook could not be reached
    POST   /_sandbox/reply          {"message_sid", "body"}: the patient answers a message the
                                    sandbox received: a signed inbound SMS from its To to its
                                    From, posted to its account's inbound_url; answers as
                                    /_sandbox/inbound. Also the page's "Reply as patient" form
                                    (form-encoded, with the page's token): 303 back to the page
    GET    /_sandbox/inbound.json   {"messages": [...]}: inbound SMS posted, in order
    GET    /                        HTML page of the conversation: messages received and
                                    inbound SMS posted, newest first, each received message
                                    with a "Reply as patient" form when its account has an
                                    inbound_url

A fault rule: {"kind": "error" | "slow" | "drop" | "accept_then_error" | "accept_then_drop",
"count": 1 (-1 = forever), "match": {"To": "+1..."} (every given create param must be
equal), "status", "code", "message" (for the two error kinds; defaults 429/20429 for
"error" and 500/20500 for "accept_then_error"), "delay" (seconds, for "slow"; default 3)}.
Rules apply to authenticated Message-create requests only; the first matching rule with
count left is consumed and decides the request:

    error              answer status + Twilio error JSON, store nothing
    slow               sleep delay, then process normally (stored even if the client gave up)
    drop               close the connection without a response, store nothing
    accept_then_error  process normally (validation errors still win), then answer the error
    accept_then_drop   process normally, then close the connection without a response
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import ipaddress
import itertools
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import requests
from twilio.request_validator import RequestValidator

from integrations.loopback import (
    FaultRule,
    LoopbackHandler,
    LoopbackHTTPServer,
    LoopbackSandbox,
    RequestBodyError,
    WebhookDispatcher,
    is_loopback,
)

# The sandbox models Twilio's counting itself (not careflow's integrations.sms), so that it
# can catch a counting bug in careflow rather than share it.
from integrations.twilio.sandbox_segments import MAX_BODY_CHARS, twilio_num_segments

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
MAGIC_FROM = "+15005550006"
E164 = re.compile(r"^\+[1-9]\d{1,14}$")
# Twilio takes at most 10 media per message, each a URL it can fetch.
MAX_MEDIA = 10
MEDIA_URL = re.compile(r"^https?://[^\s/]+\S*$", re.IGNORECASE)

# To numbers rejected on create, with Twilio's error code.
MAGIC_TO_ERRORS: dict[str, int] = {
    "+15005550001": 21211,
    "+15005550002": 21612,
    "+15005550003": 21408,
    "+15005550004": 21610,
    "+15005550009": 21614,
}
# From numbers rejected on create, with Twilio's error code (+15005550008: the sender's
# queue is full, the one refusal worth retrying).
MAGIC_FROM_ERRORS: dict[str, int] = {
    "+15005550001": 21212,
    "+15005550007": 21606,
    "+15005550008": 21611,
}
# To numbers accepted on create whose delivery later fails: final status, ErrorCode.
DELIVERY_FAILURES: dict[str, tuple[str, int]] = {
    "+15005550301": ("undelivered", 30003),
    "+15005550305": ("failed", 30005),
    "+15005550306": ("undelivered", 30006),
    "+15005550334": ("undelivered", 30034),
}
DELIVERY_ERROR_MESSAGES = {
    30003: "Unreachable destination handset",
    30005: "Unknown destination handset",
    30006: "Landline or unreachable carrier",
    30034: "Message from an unregistered number",
}

_FAULT_DEFAULTS: dict[str, tuple[int, int, str]] = {
    "error": (429, 20429, "Too Many Requests"),
    "accept_then_error": (500, 20500, "Internal Server Error"),
}

# The page reloads itself every 5 s, except while a reply is being typed (a reload would
# lose it). This script is the only one the page may run: its CSP allows it by hash.
_REFRESH_SCRIPT = (
    "setTimeout(function again(){var typing=document.activeElement&&"
    "document.activeElement.name==='body';var kept=[].some.call("
    "document.querySelectorAll('input[name=body]'),function(i){return i.value});"
    "if(typing||kept){setTimeout(again,5000)}else{location.reload()}},5000);"
)
# Message bodies are attacker-controllable text: escape them, and forbid other scripts anyway.
# Forms post only here, and no other site may frame the page (a framed "Reply as patient"
# button could be clicked by a lured user).
_HTML_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-"
        + base64.b64encode(hashlib.sha256(_REFRESH_SCRIPT.encode()).digest()).decode()
        + "'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Frame-Options", "DENY"),
    # Not "no-referrer": with it a browser sends "Origin: null" even with the page's own
    # form, which the control API must refuse as it refuses any other site.
    ("Referrer-Policy", "same-origin"),
    ("Cache-Control", "no-store"),
)
_FORM = "application/x-www-form-urlencoded"
# A <Message> of a TwiML answer, as twilio-python's MessagingResponse writes it (no nesting).
_TWIML_MESSAGE = re.compile(r"<Message(?:\s[^>]*)?>(.*?)</Message>", re.S)
_ACCOUNT_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account>[^/]+?)(?P<rest>/.*|\.json)$")
_MESSAGE_PATH = re.compile(r"^/Messages/(?P<sid>[^/]+)\.json$")
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class SandboxError(Exception):
    """A Twilio API error response: HTTP status plus Twilio's error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def payload(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }


def _auth_error() -> SandboxError:
    return SandboxError(401, 20003, "Authenticate")


def _refuse_test_credentials(account: _Account) -> None:
    if account.test_credentials:
        raise SandboxError(403, 20008, "Resource not accessible with Test Account Credentials")


def _from_error(from_: str, code: int) -> SandboxError:
    if code == 21611:
        return SandboxError(
            400, 21611, "This 'From' number has exceeded the maximum number of queued messages"
        )
    if code == 21606:
        return SandboxError(
            400,
            21606,
            f"The From phone number {from_} is not a valid, SMS-capable inbound phone number "
            "or short code for your account.",
        )
    return SandboxError(
        400,
        21212,
        f"The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric "
        "sender ID.",
    )


def _to_error(to: str, from_: str | None, code: int) -> SandboxError:
    messages = {
        21211: f"The 'To' number {to} is not a valid phone number.",
        21408: "Permission to send an SMS has not been enabled for the region indicated by "
        f"the 'To' number: {to}.",
        21610: "Attempt to send to unsubscribed recipient",
        21612: f"The 'To' phone number: {to}, is not currently reachable using the 'From' "
        f"phone number: {from_ or 'chosen by the Messaging Service'} via SMS.",
        21614: f"'To' number {to} is not a valid mobile number",
    }
    return SandboxError(400, code, messages[code])


def _rfc2822(moment: datetime | None) -> str | None:
    return None if moment is None else format_datetime(moment)


@dataclass
class _Account:
    sid: str
    token: str
    numbers: set[str]
    messaging_service_sids: set[str]
    # Where the account's inbound SMS go (the number's "A message comes in" webhook).
    inbound_url: str | None = None
    # Twilio's test credentials: creates are answered, nothing is sent or called back, and
    # messages cannot be fetched or listed (403, 20008).
    test_credentials: bool = False
    created: datetime = field(default_factory=lambda: datetime.now(UTC))

    def sender_number(self) -> str:
        """The number a Messaging Service picks for this account (the first owned one)."""
        return min(self.numbers) if self.numbers else MAGIC_FROM


@dataclass
class _Message:
    sid: str
    account_sid: str
    to: str
    from_: str | None
    body: str
    status: str
    num_segments: int
    messaging_service_sid: str | None
    status_callback: str | None
    received_at: float
    date_created: datetime
    date_updated: datetime
    # Statuses (with ErrorCode) the message will still move through, in order.
    plan: list[tuple[str, int | None]]
    media_urls: list[str] = field(default_factory=list)
    date_sent: datetime | None = None
    error_code: int | None = None
    error_message: str | None = None
    callbacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{self.sid}.json"

    def resource(self) -> dict[str, Any]:
        """The Message resource as the 2010-04-01 API renders it."""
        base = self.uri[: -len(".json")]
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": self.body,
            "date_created": _rfc2822(self.date_created),
            "date_sent": _rfc2822(self.date_sent),
            "date_updated": _rfc2822(self.date_updated),
            "direction": "outbound-api",
            "error_code": self.error_code,
            "error_message": self.error_message,
            "from": self.from_,
            "messaging_service_sid": self.messaging_service_sid,
            "num_media": str(len(self.media_urls)),
            # A Messaging Service's send is counted once the service has taken it (Twilio
            # answers the create with "0").
            "num_segments": "0" if self.status == "accepted" else str(self.num_segments),
            "price": None,
            "price_unit": "USD",
            "sid": self.sid,
            "status": self.status,
            "subresource_uris": {
                "media": f"{base}/Media.json",
                "feedback": f"{base}/Feedback.json",
            },
            "to": self.to,
            "uri": self.uri,
        }

    def snapshot(self) -> dict[str, Any]:
        """What the sandbox saw and did, for tests and the control API."""
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.from_,
            "body": self.body,
            "status": self.status,
            "num_segments": self.num_segments,
            "media_urls": list(self.media_urls),
            "messaging_service_sid": self.messaging_service_sid,
            "status_callback": self.status_callback,
            "received_at": self.received_at,
            "date_sent": _rfc2822(self.date_sent),
            "error_code": self.error_code,
            "callbacks": [dict(attempt) for attempt in self.callbacks],
        }


@dataclass
class _Inbound:
    """An inbound SMS the sandbox posted to a webhook, and what the webhook answered."""

    sid: str
    account_sid: str
    from_: str
    to: str
    body: str
    url: str
    sent_at: float
    # The received message it answers ("Reply as patient"), if any.
    in_reply_to: str | None
    outcome: dict[str, Any]

    @property
    def twiml_replies(self) -> list[str]:
        """The texts the webhook's TwiML answer asks Twilio to send back (a HELP answer, an
        opt-out confirmation): part of the conversation, so the page shows them."""
        if not 200 <= self.outcome.get("http_status", 0) < 300:
            return []
        return [
            html.unescape(text)
            for text in _TWIML_MESSAGE.findall(self.outcome.get("response_body", ""))
        ]

    def snapshot(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "from": self.from_,
            "to": self.to,
            "body": self.body,
            "url": self.url,
            "sent_at": self.sent_at,
            "in_reply_to": self.in_reply_to,
            "twiml_replies": self.twiml_replies,
            **{k: v for k, v in self.outcome.items() if k != "at"},
        }


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def inbound_sms_params(*, account_sid: str, from_: str, to: str, body: str) -> dict[str, str]:
    """The form parameters of an inbound-SMS webhook as Twilio posts them, with a new sid."""
    sid = _new_sid("SM")
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": account_sid,
        "From": from_,
        "To": to,
        "Body": body,
        "NumMedia": "0",
        "NumSegments": str(twilio_num_segments(body)),
        "SmsStatus": "received",
        "ApiVersion": API_VERSION,
    }


def signed_webhook_headers(url: str, params: Mapping[str, str], token: str) -> dict[str, str]:
    """The headers of a webhook Twilio posts to `url`, signed with the account's token."""
    return {
        "X-Twilio-Signature": RequestValidator(token).compute_signature(url, dict(params)),
        "Content-Type": "application/x-www-form-urlencoded",
        "User-Agent": "TwilioProxy/1.1",
        "I-Twilio-Idempotency-Token": secrets.token_hex(16),
    }


def _checked_inbound_url(url: str | None) -> str | None:
    """An account's inbound URL: http(s) on a loopback host, so the sandbox can never be
    made to post signed requests elsewhere; None or "" for none."""
    if not url:
        return None
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not is_loopback(
        split.hostname or "", allow_localhost=True
    ):
        raise ValueError("inbound_url must be an http(s) URL on a loopback host")
    return url


def _parse_date_filter(name: str, value: str) -> datetime:
    """A DateSent filter value as a UTC moment (a day: its midnight)."""
    try:
        if _DATE_ONLY.match(value):
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise SandboxError(400, 20001, f"Invalid {name}: {value}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _date_filter(name: str, value: str) -> Callable[[datetime], bool]:
    """A predicate on date_sent for DateSent (that UTC day), DateSent< (on or before) or
    DateSent> (on or after). A day bound is the day's midnight, as Twilio
    documents it: DateSent<2026-12-07 leaves out what was sent during the 7th."""
    moment = _parse_date_filter(name, value)
    if name == "DateSent":
        return lambda sent: sent.date() == moment.date()
    if name == "DateSent<":
        return lambda sent: sent <= moment
    return lambda sent: sent >= moment


# Host names Twilio cannot reach from the internet (RFC 6761 and mDNS names). The sandbox's
# own rule, not careflow's (common.addresses): a model of Twilio must not share the code it
# is there to check.
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa")


def _unreachable_callback(url: str) -> bool:
    """Whether Twilio would refuse `url` as a StatusCallback (21609): not an http(s) URL, or
    a host it cannot reach (an IP address that is not global, a single-label or local name)."""
    split = urlsplit(url)
    host = (split.hostname or "").rstrip(".").lower()
    if split.scheme not in ("http", "https") or not host:
        return True
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return "." not in host or host == "localhost" or host.endswith(_LOCAL_SUFFIXES)


class _Handler(LoopbackHandler):
    server: LoopbackHTTPServer[SandboxServer]
    server_version = "TwilioSandbox/1.0"

    def _error(self, error: SandboxError) -> None:
        headers = [("Twilio-Request-Id", _new_sid("RQ"))]
        if error.status == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="Twilio API"'))
        self._json(error.status, error.payload(), headers)

    def _drop(self) -> None:
        """Close the connection without writing a byte of response."""
        self.close_connection = True

    def _dispatch(self, method: str) -> None:
        sandbox = self.server.sandbox
        split = urlsplit(self.path)
        path = split.path
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        try:
            body = self._read_body()
        except RequestBodyError as error:
            self.close_connection = True
            self._error(SandboxError(error.status, 20001, error.message))
            return
        try:
            if path == "/" and method == "GET":
                if refused := self._foreign_request(navigation=True):
                    self._json(403, {"error": refused})
                    return
                self._respond(200, sandbox._html_page(), "text/html; charset=utf-8", _HTML_HEADERS)
            elif path.startswith("/_sandbox/"):
                self._control(method, path, body)
            elif match := _ACCOUNT_PATH.match(path):
                self._api(method, match["account"], match["rest"], query, body)
            else:
                raise SandboxError(404, 20404, f"The requested resource {path} was not found")
        except SandboxError as error:
            self._error(error)

    # --- Twilio API ---------------------------------------------------------------------

    def _authenticate(self, account_sid: str) -> _Account:
        scheme, _, encoded = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            raise _auth_error()
        try:
            username, sep, password = (
                base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise _auth_error() from None
        account = self.server.sandbox._account(username)
        if (
            not sep
            or account is None
            or username != account_sid
            or not hmac.compare_digest(account.token.encode(), password.encode())
        ):
            raise _auth_error()
        return account

    def _api(
        self, method: str, account_sid: str, rest: str, query: dict[str, str], body: bytes
    ) -> None:
        sandbox = self.server.sandbox
        received_at = time.time()
        is_create = method == "POST" and rest == "/Messages.json"
        if is_create:
            sandbox._count("creates")
        try:
            account = self._authenticate(account_sid)
            if rest == ".json":
                if method != "GET":
                    raise SandboxError(405, 20004, "Method not allowed")
                self._json(200, sandbox._account_resource(account))
            elif rest == "/Messages.json":
                if method == "GET":
                    self._json(200, sandbox._list_messages(account, query))
                elif method == "POST":
                    self._create(account, body, received_at)
                else:
                    raise SandboxError(405, 20004, "Method not allowed")
            elif match := _MESSAGE_PATH.match(rest):
                if method != "GET":
                    raise SandboxError(405, 20004, "Method not allowed")
                self._json(200, sandbox._fetch_message(account, match["sid"], self.path))
            else:
                raise SandboxError(404, 20404, f"The requested resource {self.path} was not found")
        except SandboxError:
            if is_create:
                sandbox._count("errors")
            raise

    def _create(self, account: _Account, body: bytes, received_at: float) -> None:
        sandbox = self.server.sandbox
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise SandboxError(400, 20001, "Request body is not UTF-8") from None
        params = {name: values[0] for name, values in form.items()}
        rule = sandbox._take_fault(params)
        kind = rule.kind if rule else None
        if rule is not None and kind == "error":
            raise SandboxError(rule.status, rule.code, rule.message)
        if kind == "drop":
            sandbox._count("dropped")
            self._drop()
            return
        if rule is not None and kind == "slow":
            time.sleep(rule.delay)
        message = sandbox._create_message(
            account, params, received_at, media_urls=form.get("MediaUrl", [])
        )
        if rule is not None and kind == "accept_then_error":
            raise SandboxError(rule.status, rule.code, rule.message)
        if kind == "accept_then_drop":
            sandbox._count("dropped")
            self._drop()
            return
        self._json(201, message, [("Twilio-Request-Id", _new_sid("RQ"))])

    # --- control API --------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> None:
        sandbox = self.server.sandbox
        if refused := self._foreign_request():
            self._json(403, {"error": refused})
            return
        route = (method, path)
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if route == ("POST", "/_sandbox/reply") and content_type == _FORM:
            self._reply_form(body)
            return
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError:
            self._json(400, {"error": "body is not valid JSON"})
            return
        try:
            if route == ("GET", "/_sandbox/messages.json"):
                self._json(200, {"messages": sandbox.messages()})
            elif route == ("GET", "/_sandbox/stats.json"):
                self._json(200, sandbox.stats())
            elif route == ("GET", "/_sandbox/inbound.json"):
                self._json(200, {"messages": sandbox.inbound_messages()})
            elif route == ("GET", "/_sandbox/faults"):
                self._json(200, {"faults": sandbox.faults()})
            elif route == ("POST", "/_sandbox/faults"):
                rules = payload if isinstance(payload, list) else [payload]
                self._json(201, {"faults": [sandbox.add_fault(rule) for rule in rules]})
            elif route == ("DELETE", "/_sandbox/faults"):
                self._json(200, {"cleared": sandbox.clear_faults()})
            elif route == ("POST", "/_sandbox/callbacks"):
                if not isinstance(payload, Mapping) or not isinstance(payload.get("enabled"), bool):
                    raise ValueError('expected {"enabled": true or false}')
                sandbox.status_callbacks = payload["enabled"]
                self._json(200, {"enabled": sandbox.status_callbacks})
            elif route == ("POST", "/_sandbox/reset"):
                sandbox.reset()
                self._json(200, {"reset": True})
            elif route == ("POST", "/_sandbox/accounts"):
                if not isinstance(payload, Mapping):
                    raise ValueError("expected a JSON object")
                inbound_url = payload.get("inbound_url")
                if inbound_url is not None and not isinstance(inbound_url, str):
                    raise ValueError("inbound_url must be a string")
                test_credentials = payload.get("test_credentials", False)
                if not isinstance(test_credentials, bool):
                    raise ValueError("test_credentials must be true or false")
                sandbox.add_account(
                    _required_str(payload, "sid"),
                    _required_str(payload, "token"),
                    numbers=_str_list(payload, "numbers"),
                    messaging_service_sids=_str_list(payload, "messaging_service_sids"),
                    inbound_url=inbound_url,
                    test_credentials=test_credentials,
                )
                self._json(201, sandbox._account_summary(payload["sid"]))
            elif route == ("POST", "/_sandbox/inbound"):
                if not isinstance(payload, Mapping):
                    raise ValueError("expected a JSON object")
                result = sandbox.send_inbound(
                    account_sid=_required_str(payload, "account_sid"),
                    from_=_required_str(payload, "from"),
                    to=_required_str(payload, "to"),
                    body=_required_str(payload, "body", allow_empty=True),
                    url=_required_str(payload, "url"),
                )
                self._json(200 if "http_status" in result else 502, result)
            elif route == ("POST", "/_sandbox/reply"):
                if not isinstance(payload, Mapping):
                    raise ValueError("expected a JSON object")
                result = sandbox.reply(
                    message_sid=_required_str(payload, "message_sid"),
                    body=_required_str(payload, "body"),
                )
                self._json(200 if "http_status" in result else 502, result)
            else:
                self._json(404, {"error": f"no control endpoint {method} {path}"})
        except (ValueError, TypeError, KeyError) as exc:
            self._json(400, {"error": str(exc)})

    def _reply_form(self, body: bytes) -> None:
        """The page's "Reply as patient" form: post the reply, then back to the page (or a
        page saying why nothing was sent). The form carries the page's token: another site
        cannot read the page, so cannot forge the form."""
        sandbox = self.server.sandbox
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            form = {}
        fields = {name: values[0] for name, values in form.items()}
        token = fields.get("token", "")
        if not hmac.compare_digest(token.encode(), sandbox._page_token.encode()):
            self._html_error(403, "The form's token is not this page's: reload the page.")
            return
        try:
            result = sandbox.reply(
                message_sid=_required_str(fields, "message_sid"),
                body=_required_str(fields, "body"),
            )
        except ValueError as exc:
            self._html_error(400, str(exc))
            return
        if "http_status" not in result:
            self._html_error(502, f"careflow's inbound webhook was not reached: {result['error']}")
            return
        self._respond(303, b"", "text/plain; charset=utf-8", [("Location", "/")])

    def _html_error(self, status: int, reason: str) -> None:
        page = (
            "<!doctype html><html><head><meta charset=utf-8><title>Reply not sent</title>"
            "</head><body><h1>Reply not sent</h1>"
            f"<p>{html.escape(reason)}</p><p><a href=/>Back to the sandbox</a></p></body></html>"
        )
        self._respond(status, page.encode(), "text/html; charset=utf-8", _HTML_HEADERS)


def _required_str(payload: Mapping[str, Any], name: str, *, allow_empty: bool = False) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _str_list(payload: Mapping[str, Any], name: str) -> list[str]:
    value = payload.get(name) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name} must be a list of strings")
    return value


class SandboxServer(LoopbackSandbox):
    """The sandbox: state behind one lock, an HTTP server, and a callback dispatcher.

    `accounts` maps an Account SID to its auth token, or to a dict with `token`, `numbers`,
    `messaging_service_sids`, `inbound_url` and `test_credentials`. The listening socket is
    bound on construction, so `url` is known (and port 0 resolved) before `start()`.
    `local_callbacks`: a local run (tests, `make run`), where careflow's status-callback URL
    is on this machine; otherwise such a URL is refused as Twilio refuses it (21609).
    """

    thread_name = "twilio-sandbox"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        accounts: Mapping[str, Any] | None = None,
        callback_delay: float | None = 0.2,
        *,
        callback_timeout: float = 5.0,
        callback_workers: int = 4,
        local_callbacks: bool = False,
    ) -> None:
        self._lock = threading.Lock()
        self._accounts: dict[str, _Account] = {}
        self._messages: dict[str, _Message] = {}
        self._inbound: list[_Inbound] = []
        # The page's forms carry it; another site cannot read the page, so cannot forge one.
        self._page_token = secrets.token_urlsafe(24)
        self._faults: list[FaultRule] = []
        self._fault_ids = itertools.count(1)
        self._stats = dict.fromkeys(("creates", "accepted", "errors", "dropped"), 0)
        self.callback_delay = (
            None if callback_delay is None or callback_delay < 0 else float(callback_delay)
        )
        self.callback_timeout = callback_timeout
        self.local_callbacks = local_callbacks
        # False: statuses still advance, but their callbacks are never posted (lost).
        self.status_callbacks = True
        for sid, spec in (accounts or {}).items():
            if isinstance(spec, str):
                self.add_account(sid, spec)
            else:
                self.add_account(
                    sid,
                    spec["token"],
                    numbers=spec.get("numbers", ()),
                    messaging_service_sids=spec.get("messaging_service_sids", ()),
                    inbound_url=spec.get("inbound_url"),
                    test_credentials=spec.get("test_credentials", False),
                )
        self._dispatcher = WebhookDispatcher(
            self._advance,
            name="twilio-sandbox-callbacks",
            failure="twilio sandbox: status transition failed",
            workers=callback_workers,
        )
        self._httpd = LoopbackHTTPServer((host, port), _Handler, self, label="twilio sandbox")
        self._init_lifecycle()

    # --- state --------------------------------------------------------------------------

    def add_account(
        self,
        sid: str,
        token: str,
        numbers: Iterable[str] = (),
        messaging_service_sids: Iterable[str] = (),
        inbound_url: str | None = None,
        test_credentials: bool = False,
    ) -> None:
        """Register (or replace) an account with its owned numbers, Messaging Services and
        the URL its inbound SMS go to (loopback only; ValueError otherwise);
        `test_credentials`: the SID and token are Twilio's test credentials."""
        account = _Account(
            sid,
            token,
            set(numbers),
            set(messaging_service_sids),
            inbound_url=_checked_inbound_url(inbound_url),
            test_credentials=test_credentials,
        )
        with self._lock:
            self._accounts[sid] = account

    def reset(self) -> None:
        """Forget messages, fault rules, stats and pending callbacks; accounts stay, and
        status callbacks are posted again."""
        with self._lock:
            self._messages.clear()
            self._inbound.clear()
            self._faults.clear()
            self._stats = dict.fromkeys(self._stats, 0)
            self.status_callbacks = True
        self._dispatcher.clear()

    def messages(self) -> list[dict[str, Any]]:
        """Snapshots of every stored message, in arrival order."""
        with self._lock:
            return [message.snapshot() for message in self._messages.values()]

    def inbound_messages(self) -> list[dict[str, Any]]:
        """Snapshots of every inbound SMS posted, in order."""
        with self._lock:
            return [inbound.snapshot() for inbound in self._inbound]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def add_fault(self, rule: Mapping[str, Any]) -> dict[str, Any]:
        """Append a fault rule (format in the module docstring); raises ValueError if bad."""
        with self._lock:
            parsed = FaultRule.parse(next(self._fault_ids), rule, errors=_FAULT_DEFAULTS)
            self._faults.append(parsed)
            return parsed.describe()

    def faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.describe() for rule in self._faults]

    def clear_faults(self) -> int:
        with self._lock:
            cleared = len(self._faults)
            self._faults.clear()
            return cleared

    def send_inbound(
        self, *, account_sid: str, from_: str, to: str, body: str, url: str
    ) -> dict[str, Any]:
        """POST a signed inbound-SMS webhook to `url` as Twilio would, synchronously."""
        with self._lock:
            account = self._accounts.get(account_sid)
        if account is None:
            raise ValueError(f"unknown account {account_sid}")
        return self._post_inbound(account, from_=from_, to=to, body=body, url=url)

    def reply(self, *, message_sid: str, body: str) -> dict[str, Any]:
        """The patient answers the received message `message_sid`: a signed inbound SMS from
        its To to its From, posted to its account's inbound_url, synchronously. ValueError
        (with what to do about it) when there is nothing to answer or nowhere to post."""
        if len(body) > MAX_BODY_CHARS:
            raise ValueError(f"body must be at most {MAX_BODY_CHARS} characters")
        with self._lock:
            message = self._messages.get(message_sid)
            account = self._accounts.get(message.account_sid) if message else None
            if message is None or account is None:
                raise ValueError(f"no message {message_sid} was received")
            sender = message.from_ or account.sender_number()
            to = message.to
        if account.inbound_url is None:
            raise ValueError(
                f"account {account.sid} has no inbound_url: register one with "
                "POST /_sandbox/accounts"
            )
        return self._post_inbound(
            account, from_=to, to=sender, body=body, url=account.inbound_url, reply_to=message_sid
        )

    # --- internals shared with the handler ----------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def _account(self, sid: str) -> _Account | None:
        with self._lock:
            return self._accounts.get(sid)

    def _account_summary(self, sid: str) -> dict[str, Any]:
        with self._lock:
            account = self._accounts[sid]
            return {
                "sid": account.sid,
                "numbers": sorted(account.numbers),
                "messaging_service_sids": sorted(account.messaging_service_sids),
                "test_credentials": account.test_credentials,
            }

    def _account_resource(self, account: _Account) -> dict[str, Any]:
        base = f"/{API_VERSION}/Accounts/{account.sid}"
        return {
            # Twilio's Account resource carries the auth token (to a caller who already
            # holds it): careflow must never show or keep what it reads here.
            "auth_token": account.token,
            "sid": account.sid,
            "owner_account_sid": account.sid,
            "friendly_name": f"Sandbox account {account.sid[-6:]}",
            "status": "active",
            "type": "Full",
            "date_created": _rfc2822(account.created),
            "date_updated": _rfc2822(account.created),
            "uri": f"{base}.json",
            "subresource_uris": {"messages": f"{base}/Messages.json"},
        }

    def _take_fault(self, params: Mapping[str, str]) -> FaultRule | None:
        with self._lock:
            for index, rule in enumerate(self._faults):
                if rule.matches(params):
                    if rule.count > 0:
                        rule.count -= 1
                        if rule.count == 0:
                            del self._faults[index]
                    return rule
        return None

    def _create_message(
        self,
        account: _Account,
        params: Mapping[str, str],
        received_at: float,
        media_urls: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Validate a create in Twilio's order, store the message, return its resource."""
        to = params.get("To", "")
        from_ = params.get("From") or None
        service_sid = params.get("MessagingServiceSid") or None
        body = params.get("Body", "")
        if not to:
            raise SandboxError(400, 21604, "A 'To' phone number is required.")
        if not E164.match(to) or MAGIC_TO_ERRORS.get(to) == 21211:
            raise _to_error(to, None, 21211)
        if from_ is None and service_sid is None:
            raise SandboxError(
                400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required."
            )
        if from_ is not None and from_ in MAGIC_FROM_ERRORS:
            raise _from_error(from_, MAGIC_FROM_ERRORS[from_])
        if from_ is not None and from_ != MAGIC_FROM and from_ not in account.numbers:
            raise _from_error(from_, 21606)
        if service_sid is not None and service_sid not in account.messaging_service_sids:
            raise SandboxError(400, 21701, f"The Messaging Service Sid {service_sid} is invalid.")
        status_callback = params.get("StatusCallback") or None
        if (
            status_callback is not None
            and not self.local_callbacks
            and _unreachable_callback(status_callback)
        ):
            raise SandboxError(400, 21609, "Invalid StatusCallback")
        if len(media_urls) > MAX_MEDIA:
            raise SandboxError(400, 21623, f"Too many media URLs: at most {MAX_MEDIA}.")
        if any(not MEDIA_URL.match(url) for url in media_urls):
            raise SandboxError(400, 21620, "Invalid media URL(s).")
        if not body and not media_urls:
            raise SandboxError(400, 21602, "Message body is required.")
        if len(body) > MAX_BODY_CHARS:
            raise SandboxError(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        if to in MAGIC_TO_ERRORS:
            raise _to_error(to, from_, MAGIC_TO_ERRORS[to])

        failure = DELIVERY_FAILURES.get(to)
        if account.test_credentials:
            plan: list[tuple[str, int | None]] = []  # nothing is sent with test credentials
        elif failure is None:
            plan = [("sent", None), ("delivered", None)]
        elif failure[0] == "failed":
            plan = [failure]
        else:
            plan = [("sent", None), failure]
        if plan and service_sid:
            # The service picks the sender, then Twilio queues it: said by a callback.
            plan.insert(0, ("queued", None))
        now = datetime.now(UTC)
        message = _Message(
            sid=_new_sid("MM" if media_urls else "SM"),
            account_sid=account.sid,
            to=to,
            from_=from_,
            body=body,
            status="accepted" if service_sid and not account.test_credentials else "queued",
            num_segments=1 if media_urls else twilio_num_segments(body),
            media_urls=list(media_urls),
            messaging_service_sid=service_sid,
            status_callback=status_callback,
            received_at=received_at,
            date_created=now,
            date_updated=now,
            plan=plan,
        )
        with self._lock:
            self._messages[message.sid] = message
            self._stats["accepted"] += 1
            resource = message.resource()
        if plan and self.callback_delay is not None:
            self._dispatcher.schedule(self.callback_delay, message.sid, 0)
        return resource

    def _fetch_message(self, account: _Account, sid: str, path: str) -> dict[str, Any]:
        _refuse_test_credentials(account)
        with self._lock:
            message = self._messages.get(sid)
            if message is not None and message.account_sid == account.sid:
                return message.resource()
        raise SandboxError(404, 20404, f"The requested resource {path} was not found")

    def _list_messages(self, account: _Account, query: Mapping[str, str]) -> dict[str, Any]:
        """One page of the account's messages, newest first, in the 2010-04-01 list format."""
        _refuse_test_credentials(account)
        try:
            page_size = int(query.get("PageSize") or 50)
            page = int(query.get("Page") or 0)
        except ValueError:
            raise SandboxError(400, 20001, "Invalid paging parameter") from None
        if not 1 <= page_size <= 1000 or page < 0:
            raise SandboxError(400, 20001, "Invalid paging parameter")
        filters = {name: query[name] for name in ("To", "From") if query.get(name)}
        date_names = [name for name in ("DateSent", "DateSent<", "DateSent>") if query.get(name)]
        date_checks = [_date_filter(name, query[name]) for name in date_names]
        with self._lock:
            matching = [
                message
                for message in reversed(self._messages.values())
                if message.account_sid == account.sid
                and all(
                    (message.to if name == "To" else message.from_) == value
                    for name, value in filters.items()
                )
                and (
                    not date_checks
                    or (
                        message.date_sent is not None
                        and all(check(message.date_sent) for check in date_checks)
                    )
                )
            ]
            start = page * page_size
            # A PageToken pins the page to the record after the previous page's last one, so
            # messages created while a client pages do not shift later pages.
            token = query.get("PageToken", "")
            if token.startswith("PA"):
                after = next(
                    (i for i, message in enumerate(matching) if message.sid == token[2:]), None
                )
                if after is not None:
                    start = after + 1
            records = matching[start : start + page_size]
            resources = [message.resource() for message in records]

        base_query = {**filters, **{name: query[name] for name in date_names}}
        base = f"/{API_VERSION}/Accounts/{account.sid}/Messages.json"

        def page_uri(number: int, token: str | None = None) -> str:
            params = {**base_query, "PageSize": page_size, "Page": number}
            if token:
                params["PageToken"] = token
            return f"{base}?{urlencode(params)}"

        has_next = start + page_size < len(matching)
        return {
            "messages": resources,
            "page": page,
            "page_size": page_size,
            "start": start,
            "end": start + len(resources) - 1 if resources else start,
            "uri": page_uri(page, token or None),
            "first_page_uri": page_uri(0),
            "next_page_uri": page_uri(page + 1, "PA" + records[-1].sid) if has_next else None,
            "previous_page_uri": page_uri(page - 1) if page > 0 else None,
        }

    def _advance(self, sid: str, step: int, session: requests.Session) -> None:
        """Move a message to its next planned status and post the status callback."""
        with self._lock:
            message = self._messages.get(sid)
            account = self._accounts.get(message.account_sid) if message else None
            if message is None or account is None or step >= len(message.plan):
                return
            status, error_code = message.plan[step]
            now = datetime.now(UTC)
            message.status = status
            message.date_updated = now
            if message.from_ is None:
                message.from_ = account.sender_number()
            if status == "sent":
                message.date_sent = now
            if error_code is not None:
                message.error_code = error_code
                message.error_message = DELIVERY_ERROR_MESSAGES.get(error_code)
            url = message.status_callback
            params = {
                "MessageSid": sid,
                "SmsSid": sid,
                "AccountSid": message.account_sid,
                "From": message.from_,
                "To": message.to,
                "MessageStatus": status,
                "SmsStatus": status,
                "ApiVersion": API_VERSION,
            }
            if message.messaging_service_sid:
                params["MessagingServiceSid"] = message.messaging_service_sid
            if error_code is not None:
                params["ErrorCode"] = str(error_code)
            if status in ("delivered", "undelivered"):
                # The carrier's delivery receipt "done date", YYMMDDhhmm without a zone, which
                # Twilio passes through on these two statuses (changelog, 2023-02-14).
                params["RawDlrDoneDate"] = now.strftime("%y%m%d%H%M")
            token = account.token
            has_next = step + 1 < len(message.plan)
        if url and not self.status_callbacks:
            with self._lock:
                message.callbacks.append({"status": status, "not_posted": True, "at": time.time()})
        elif url:
            outcome = self._post_signed(session, url, params, token)
            with self._lock:
                message.callbacks.append({"status": status, **outcome})
        if has_next and self.callback_delay is not None:
            self._dispatcher.schedule(self.callback_delay, sid, step + 1)

    def _post_inbound(
        self,
        account: _Account,
        *,
        from_: str,
        to: str,
        body: str,
        url: str,
        reply_to: str | None = None,
    ) -> dict[str, Any]:
        """Post one inbound SMS and keep it, with the webhook's answer, for the page."""
        params = inbound_sms_params(account_sid=account.sid, from_=from_, to=to, body=body)
        sent_at = time.time()
        with requests.Session() as session:
            session.trust_env = False
            outcome = self._post_signed(session, url, params, account.token, keep_body=True)
        inbound = _Inbound(
            params["MessageSid"], account.sid, from_, to, body, url, sent_at, reply_to, outcome
        )
        with self._lock:
            self._inbound.append(inbound)
        return {"message_sid": inbound.sid, **outcome}

    def _post_signed(
        self,
        session: requests.Session,
        url: str,
        params: dict[str, str],
        token: str,
        *,
        keep_body: bool = False,
    ) -> dict[str, Any]:
        try:
            response = session.post(
                url,
                data=params,
                headers=signed_webhook_headers(url, params, token),
                timeout=self.callback_timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return {"error": f"{type(exc).__name__}: {exc}"[:300], "at": time.time()}
        outcome: dict[str, Any] = {"http_status": response.status_code, "at": time.time()}
        if keep_body:
            outcome["response_body"] = response.text[:65536]
        return outcome

    def _html_page(self) -> bytes:
        """The conversation: messages received and inbound SMS posted, newest first."""
        with self._lock:
            repliable = {sid for sid, a in self._accounts.items() if a.inbound_url}
            rows: list[tuple[float, str]] = [
                (message.received_at, self._outbound_row(message.snapshot(), repliable))
                for message in self._messages.values()
            ]
            rows += [(inbound.sent_at, self._inbound_row(inbound)) for inbound in self._inbound]
            stats = dict(self._stats)
        rows.sort(key=lambda row: row[0], reverse=True)
        page = (
            "<!doctype html><html><head><meta charset=utf-8>"
            "<title>Twilio sandbox</title><style>"
            "body{font:14px system-ui,sans-serif;margin:1.5em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;"
            "vertical-align:top;text-align:left}.body{white-space:pre-wrap;max-width:40em}"
            "tr.inbound{background:#eef6ee}form.reply{display:flex;gap:.3em}"
            "</style></head><body><h1>Twilio sandbox</h1>"
            f"<p>{stats['accepted']} accepted of {stats['creates']} create requests, "
            f"{stats['errors']} errors, {stats['dropped']} dropped. Newest first; "
            "outbound: sent to the patient, inbound: the patient's texts, posted to careflow "
            "signed as Twilio signs them. Refreshes every 5 s unless you are typing.</p>"
            "<table><thead><tr><th>Time (UTC)</th><th>Direction</th><th>From</th><th>To</th>"
            "<th>Body</th><th>Status</th><th>Segments</th><th>Reply as the patient</th>"
            f"</tr></thead><tbody>{''.join(row for _, row in rows)}</tbody></table>"
            f"<script>{_REFRESH_SCRIPT}</script></body></html>"
        )
        return page.encode()

    def _outbound_row(self, row: dict[str, Any], repliable: set[str]) -> str:
        esc = html.escape
        if row["account_sid"] in repliable:
            reply = (
                '<form class=reply method=post action="/_sandbox/reply">'
                f'<input type=hidden name=token value="{esc(self._page_token)}">'
                f'<input type=hidden name=message_sid value="{esc(row["sid"])}">'
                f"<input name=body required maxlength={MAX_BODY_CHARS} size=24 "
                f'aria-label="Reply to {esc(str(row["from"] or "the clinic"))} as '
                f'{esc(row["to"])}"><button>Reply as patient</button></form>'
            )
        else:
            reply = "no inbound_url for this account"
        return (
            f'<tr class=outbound data-sid="{esc(row["sid"])}">'
            f"<td>{_clock(row['received_at'])}</td><td>outbound</td>"
            f"<td>{esc(str(row['from'] or row['messaging_service_sid'] or ''))}</td>"
            f"<td>{esc(row['to'])}</td>"
            f"<td class=body>{esc(row['body'])}</td>"
            f"<td>{esc(row['status'])}</td>"
            f"<td>{row['num_segments']}</td><td>{reply}</td></tr>"
        )

    @staticmethod
    def _inbound_row(inbound: _Inbound) -> str:
        esc = html.escape
        outcome = inbound.outcome
        status = (
            f"webhook answered {outcome['http_status']}"
            if "http_status" in outcome
            else "webhook not reached"
        )
        # Newest first: the TwiML answers came after the text they answer.
        answers = "".join(
            "<tr class=outbound>"
            f"<td>{_clock(inbound.sent_at)}</td><td>outbound (TwiML answer)</td>"
            f"<td>{esc(inbound.to)}</td><td>{esc(inbound.from_)}</td>"
            f"<td class=body>{esc(text)}</td><td>answered in the webhook</td>"
            f"<td>{twilio_num_segments(text)}</td><td></td></tr>"
            for text in reversed(inbound.twiml_replies)
        )
        return answers + (
            f'<tr class=inbound data-sid="{esc(inbound.sid)}">'
            f"<td>{_clock(inbound.sent_at)}</td><td>inbound</td>"
            f"<td>{esc(inbound.from_)}</td><td>{esc(inbound.to)}</td>"
            f"<td class=body>{esc(inbound.body)}</td><td>{esc(status)}</td>"
            f"<td>{twilio_num_segments(inbound.body)}</td><td></td></tr>"
        )


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S")
