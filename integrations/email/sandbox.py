"""A loopback email-provider HTTP server for development and tests: Postmark's API (here)
and Mailgun's (`integrations.email.sandbox_mailgun`, under /v3/), over one store of
messages, fault rules, recipient scenarios and webhook queue.

careflow talks to it through django-anymail's real Postmark and Mailgun backends (only
`api_url` is swapped), so payload building, auth headers and error parsing run exactly as in
production. It implements the slice of each API careflow uses, each ESP's delivery, bounce and
complaint webhooks, and a control API for fault injection. No Django imports: it runs in a
thread inside pytest or as `manage.py email_sandbox`.

Postmark API (header X-Postmark-Server-Token):

    POST /email                  send one message (JSON: From, To, Subject, TextBody,
                                 HtmlBody, Metadata, MessageStream, Headers, TrackOpens, …);
                                 200 {To, SubmittedAt, MessageID, ErrorCode: 0, Message: "OK"}
    GET  /messages/outbound      outbound message search: count (1-500) and offset required;
                                 recipient, fromemail, subject, tag, status, metadata_<key>
                                 filters; {TotalCount, Messages: [...]} newest first
    GET  /server                 the server the token belongs to: {ID, Name, Color,
                                 DeliveryType, InboundHookUrl, ...} (careflow's credentials
                                 check); 401 ErrorCode 10 for an unknown token

Errors are Postmark's: HTTP 401 with ErrorCode 10 for a missing or unknown server token;
HTTP 422 with ErrorCode 402 (body is not JSON), 300 (invalid email request: a missing or
invalid From / To, no body, bad Metadata), 400 (From is not one of the server's sender
signatures) or 406 (every recipient is inactive: it hard-bounced or complained before);
429 (ErrorCode 429) only through a fault rule. A server registered with no senders accepts
any From.

Recipient scenarios (by the To address's local part, before any "+tag"; or registered with
POST /_sandbox/scenarios):

    bounce@…      HardBounce (TypeCode 1): the recipient becomes inactive
    softbounce@…  SoftBounce (TypeCode 4096)
    complaint@…   Delivery, then SpamComplaint (TypeCode 512): the recipient becomes inactive
    inactive@…    refused on send with ErrorCode 406
    anything else Delivery

`webhook_delay` seconds after a message is accepted (and after each webhook) the next event of
its scenario is posted, as JSON, to the server's webhook URL; HTTP basic-auth credentials go in
that URL (`http://user:secret@127.0.0.1:8000/...`), as Postmark's webhook settings take them.
Webhooks go only to loopback hosts. `webhook_delay=None` posts nothing.

Control API (no auth, loopback clients only):

    POST   /_sandbox/faults          add rule(s): a JSON object or a list of them
    GET    /_sandbox/faults          rules with their remaining counts
    DELETE /_sandbox/faults          clear rules
    GET    /_sandbox/messages.json   {"messages": [...]} in arrival order
    GET    /_sandbox/stats.json      "sends" (all POST /email, even refused), "accepted",
                                     "errors", "dropped", "searches"
    POST   /_sandbox/reset           forget messages, faults, stats, inactive recipients,
                                     pending webhooks; webhooks on again
    POST   /_sandbox/webhooks        {"enabled": false}: events still happen, none is posted
    POST   /_sandbox/servers         {"token", "senders": [...], "webhook_url"}
    POST   /_sandbox/mailgun-domains {"domain", "api_key", "signing_key", "senders": [...],
                                     "webhook_url"}: Mailgun's API (sandbox_mailgun)
    POST   /_sandbox/scenarios       {"recipient": "a@b.c", "events": ["Delivery",
                                     "HardBounce" | "SoftBounce" | "SpamComplaint", ...]};
                                     "events": [] posts none (webhooks that never come)

A fault rule: {"kind": "error" | "slow" | "drop" | "accept_then_error" | "accept_then_drop",
"on": "email" (default) or "search", "count": 1 (-1 = forever), "match": {"To": "a@b.c"}
(every given JSON field of the send must be equal), "status", "code", "message" (the two
error kinds; defaults 429/429 for "error" and 500/500 for "accept_then_error"), "delay"
(seconds, for "slow"; default 3)}. Rules apply to authenticated requests only; the first
matching rule with count left is consumed:

    error              answer status + Postmark error JSON, store nothing
    slow               sleep delay, then process normally (stored even if the client gave up)
    drop               close the connection without a response, store nothing
    accept_then_error  process normally (validation errors still win), then answer the error
    accept_then_drop   process normally, then close the connection without a response
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

from integrations.email.sandbox_mailgun import mailgun_api, mailgun_event, mailgun_signed
from integrations.loopback import (
    FaultRule,
    LoopbackHandler,
    LoopbackHTTPServer,
    LoopbackSandbox,
    RequestBodyError,
    WebhookDispatcher,
    is_loopback,
)

logger = logging.getLogger(__name__)

_FAULT_DEFAULTS: dict[str, tuple[int, int, str]] = {
    "error": (429, 429, "Rate limit exceeded."),
    "accept_then_error": (500, 500, "Internal server error."),
}
EVENT_KINDS = frozenset({"Delivery", "HardBounce", "SoftBounce", "SpamComplaint"})
# The one event of a message to a recipient that bounced or complained before, where the
# ESP accepts it and then drops it (Mailgun's suppression lists).
SUPPRESSED = "Suppressed"
# Local parts (before any +tag) with a built-in scenario.
MAGIC_SCENARIOS: dict[str, tuple[str, ...]] = {
    "bounce": ("HardBounce",),
    "softbounce": ("SoftBounce",),
    "complaint": ("Delivery", "SpamComplaint"),
}
MAGIC_INACTIVE = "inactive"
_BOUNCES: dict[str, tuple[int, str, str]] = {
    "HardBounce": (
        1,
        "Hard bounce",
        "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
    ),
    "SoftBounce": (
        4096,
        "Soft bounce",
        "Unable to temporarily deliver this message.",
    ),
    "SpamComplaint": (
        512,
        "Spam complaint",
        "The subscriber explicitly marked this message as spam.",
    ),
}
# An addr-spec good enough for a stand-in (Postmark's own parser is stricter still).
_ADDRESS = re.compile(
    r"^[^@\s<>(),;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)


class SandboxError(Exception):
    """A Postmark API error response: HTTP status, Postmark's ErrorCode and Message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def payload(self) -> dict[str, Any]:
        return {"ErrorCode": self.code, "Message": self.message}


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _addresses(value: Any, field_name: str) -> list[str]:
    """The addr-specs of a To/From header value; SandboxError 300 when any is invalid."""
    if not isinstance(value, str) or not value.strip():
        raise SandboxError(422, 300, f"Invalid '{field_name}' address: ''.")
    found = [address for _, address in getaddresses([value])]
    for address in found:
        if not _ADDRESS.match(address):
            raise SandboxError(422, 300, f"Invalid '{field_name}' address: '{address}'.")
    if not found:
        raise SandboxError(422, 300, f"Invalid '{field_name}' address: '{value}'.")
    return found


def _local_part(address: str) -> str:
    return address.split("@", 1)[0].split("+", 1)[0].lower()


def _refuse_inactive(inactive: list[str]) -> None:
    raise SandboxError(
        422,
        406,
        "You tried to send to a recipient that has been marked as inactive.\n"
        f"Found inactive addresses: {', '.join(a.lower() for a in inactive)}.\n"
        "Inactive recipients are ones that have generated a hard bounce or a spam "
        "complaint. ",
    )


@dataclass
class _Server:
    token: str
    senders: set[str]
    webhook_url: str | None
    # A Mailgun domain (integrations.email.sandbox_mailgun): its name and webhook signing key.
    esp: str = "postmark"
    domain: str = ""
    api_key: str = field(default="", repr=False)
    signing_key: str = field(default="", repr=False)

    def sender_allowed(self, address: str) -> bool:
        if not self.senders:
            return True
        address = address.lower()
        domain = "@" + address.rsplit("@", 1)[-1]
        return address in self.senders or domain in self.senders


@dataclass
class _Message:
    id: str
    token: str
    to: list[str]
    from_: str
    subject: str
    text_body: str | None
    html_body: str | None
    metadata: dict[str, str]
    message_stream: str
    tag: str
    received_at: datetime
    plan: list[str]
    webhooks: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    # (when, kind) of each event, "accepted" first: what Mailgun's Events API lists.
    event_log: list[tuple[float, str]] = field(default_factory=list)
    server: _Server | None = None

    def search_item(self) -> dict[str, Any]:
        """The message as Postmark's outbound search lists it."""
        return {
            "Tag": self.tag,
            "MessageID": self.id,
            "MessageStream": self.message_stream,
            "To": [{"Email": address, "Name": None} for address in self.to],
            "Cc": [],
            "Bcc": [],
            "Recipients": list(self.to),
            "ReceivedAt": _iso(self.received_at),
            "From": self.from_,
            "Subject": self.subject,
            "Attachments": [],
            "Status": "Sent",
            "TrackOpens": False,
            "TrackLinks": "None",
            "Metadata": dict(self.metadata),
            "Sandboxed": False,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "to": list(self.to),
            "from": self.from_,
            "subject": self.subject,
            "text_body": self.text_body,
            "html_body": self.html_body,
            "metadata": dict(self.metadata),
            "message_stream": self.message_stream,
            "received_at": _iso(self.received_at),
            "events": list(self.events),
            "webhooks": [dict(attempt) for attempt in self.webhooks],
        }


class _Handler(LoopbackHandler):
    server: LoopbackHTTPServer[SandboxServer]
    server_version = "PostmarkSandbox/1.0"

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        try:
            body = self._read_body()
        except RequestBodyError as error:
            self.close_connection = True
            self._json(error.status, SandboxError(error.status, 0, f"{error.message}.").payload())
            return
        try:
            if split.path.startswith("/_sandbox/"):
                self._control(method, split.path, body)
            elif split.path.startswith("/v3/"):
                mailgun_api(self, method, split.path, split.query, body)
            elif split.path == "/email":
                if method != "POST":
                    raise SandboxError(405, 0, "Method not allowed.")
                self._send_email(body)
            elif split.path == "/messages/outbound":
                if method != "GET":
                    raise SandboxError(405, 0, "Method not allowed.")
                self._search(parse_qs(split.query, keep_blank_values=True))
            elif split.path == "/server":
                if method != "GET":
                    raise SandboxError(405, 0, "Method not allowed.")
                self._server_info()
            else:
                raise SandboxError(404, 0, f"The requested resource {split.path} was not found.")
        except SandboxError as error:
            if split.path.startswith("/v3/"):  # a fault rule's error, in Mailgun's shape
                self._json(error.status, {"message": error.message})
            else:
                self._json(error.status, error.payload())

    def _server(self) -> _Server:
        token = self.headers.get("X-Postmark-Server-Token", "")
        server = self.server.sandbox._server(token)
        if server is None:
            raise SandboxError(
                401, 10, "Request does not contain a valid Server token. Please check your token."
            )
        return server

    def _apply_fault(self, rule: FaultRule | None, *, before: bool) -> bool:
        """Act on a fault rule at this point of a request; True when the request is over."""
        if rule is None:
            return False
        sandbox = self.server.sandbox
        if before and rule.kind == "error":
            raise SandboxError(rule.status, rule.code, rule.message)
        if before and rule.kind == "drop":
            sandbox._count("dropped")
            self.close_connection = True
            return True
        if before and rule.kind == "slow":
            time.sleep(rule.delay)
        if not before and rule.kind == "accept_then_error":
            raise SandboxError(rule.status, rule.code, rule.message)
        if not before and rule.kind == "accept_then_drop":
            sandbox._count("dropped")
            self.close_connection = True
            return True
        return False

    def _send_email(self, body: bytes) -> None:
        sandbox = self.server.sandbox
        sandbox._count("sends")
        try:
            server = self._server()
            try:
                payload = json.loads(body)
            except ValueError:
                raise SandboxError(422, 402, "Received invalid JSON input.") from None
            if not isinstance(payload, dict):
                raise SandboxError(422, 402, "Received invalid JSON input.")
            rule = sandbox._take_fault("email", payload)
            if self._apply_fault(rule, before=True):
                return
            answer = sandbox._accept(server, payload)
            if self._apply_fault(rule, before=False):
                return
        except SandboxError:
            sandbox._count("errors")
            raise
        self._json(200, answer)

    def _server_info(self) -> None:
        server = self._server()
        # Postmark answers with the server's settings; the sandbox has few, and never the
        # token itself.
        self._json(
            200,
            {
                "ID": 1,
                "Name": "Sandbox server",
                "Color": "blue",
                "DeliveryType": "Sandbox",
                "SenderSignatures": sorted(server.senders),
                "BounceHookUrl": "",
            },
        )

    def _search(self, query: dict[str, list[str]]) -> None:
        sandbox = self.server.sandbox
        sandbox._count("searches")
        server = self._server()
        params = {name: values[0] for name, values in query.items()}
        rule = sandbox._take_fault("search", params)
        if self._apply_fault(rule, before=True):
            return
        answer = sandbox._search(server, params)
        if self._apply_fault(rule, before=False):
            return
        self._json(200, answer)

    def _control(self, method: str, path: str, body: bytes) -> None:
        sandbox = self.server.sandbox
        if refused := self._foreign_request():
            self._json(403, {"error": refused})
            return
        route = (method, path)
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
            elif route == ("GET", "/_sandbox/faults"):
                self._json(200, {"faults": sandbox.faults()})
            elif route == ("POST", "/_sandbox/faults"):
                rules = payload if isinstance(payload, list) else [payload]
                self._json(201, {"faults": [sandbox.add_fault(rule) for rule in rules]})
            elif route == ("DELETE", "/_sandbox/faults"):
                self._json(200, {"cleared": sandbox.clear_faults()})
            elif route == ("POST", "/_sandbox/reset"):
                sandbox.reset()
                self._json(200, {"reset": True})
            elif route == ("POST", "/_sandbox/webhooks"):
                if not isinstance(payload, Mapping) or not isinstance(payload.get("enabled"), bool):
                    raise ValueError('expected {"enabled": true or false}')
                sandbox.webhooks_enabled = payload["enabled"]
                self._json(200, {"enabled": sandbox.webhooks_enabled})
            elif route == ("POST", "/_sandbox/servers"):
                if not isinstance(payload, Mapping):
                    raise ValueError("expected a JSON object")
                token = payload.get("token")
                senders = payload.get("senders") or []
                url = payload.get("webhook_url")
                if not isinstance(token, str) or not token:
                    raise ValueError("token must be a non-empty string")
                if not isinstance(senders, list) or not all(isinstance(s, str) for s in senders):
                    raise ValueError("senders must be a list of strings")
                if url is not None and not isinstance(url, str):
                    raise ValueError("webhook_url must be a string")
                sandbox.add_server(token, senders=senders, webhook_url=url)
                self._json(201, {"senders": sorted(senders), "webhook_url": bool(url)})
            elif route == ("POST", "/_sandbox/mailgun-domains"):
                if not isinstance(payload, Mapping):
                    raise ValueError("expected a JSON object")
                fields = [payload.get(name) for name in ("domain", "api_key", "signing_key")]
                senders = payload.get("senders") or []
                url = payload.get("webhook_url")
                if not all(isinstance(value, str) and value for value in fields):
                    raise ValueError("domain, api_key and signing_key must be non-empty strings")
                if not isinstance(senders, list) or not all(isinstance(s, str) for s in senders):
                    raise ValueError("senders must be a list of strings")
                if url is not None and not isinstance(url, str):
                    raise ValueError("webhook_url must be a string")
                domain, api_key, signing_key = (str(value) for value in fields)
                sandbox.add_mailgun_domain(
                    domain,
                    api_key=api_key,
                    signing_key=signing_key,
                    senders=senders,
                    webhook_url=url,
                )
                self._json(201, {"domain": domain, "webhook_url": bool(url)})
            elif route == ("POST", "/_sandbox/scenarios"):
                if not isinstance(payload, Mapping):
                    raise ValueError("expected a JSON object")
                recipient = payload.get("recipient")
                events = payload.get("events")
                if not isinstance(recipient, str) or not isinstance(events, list):
                    raise ValueError('expected {"recipient": "...", "events": [...]}')
                sandbox.set_scenario(recipient, events)
                self._json(201, {"recipient": recipient, "events": events})
            else:
                self._json(404, {"error": f"no control endpoint {method} {path}"})
        except (ValueError, TypeError, KeyError) as exc:
            self._json(400, {"error": str(exc)})


class SandboxServer(LoopbackSandbox):
    """The sandbox: state behind one lock, an HTTP server, and a webhook dispatcher.

    `servers` maps a server token to a dict with `senders` and `webhook_url` (or to None: any
    From, no webhooks). The listening socket is bound on construction, so `url` is known
    (and port 0 resolved) before `start()`.
    """

    thread_name = "email-sandbox"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        servers: Mapping[str, Mapping[str, Any] | None] | None = None,
        webhook_delay: float | None = 0.1,
        *,
        webhook_timeout: float = 5.0,
        mailgun_domains: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        self._lock = threading.Lock()
        self._servers: dict[str, _Server] = {}
        self._mailgun_domains: dict[str, _Server] = {}
        self._messages: dict[str, _Message] = {}
        self._faults: list[FaultRule] = []
        self._fault_ids = itertools.count(1)
        self._scenarios: dict[str, list[str]] = {}
        # (server token, address): recipients that hard-bounced or complained.
        self._inactive: set[tuple[str, str]] = set()
        self._stats = dict.fromkeys(("sends", "accepted", "errors", "dropped", "searches"), 0)
        self.webhook_delay = None if webhook_delay is None or webhook_delay < 0 else webhook_delay
        self.webhook_timeout = webhook_timeout
        self.webhooks_enabled = True
        for token, spec in (servers or {}).items():
            spec = spec or {}
            self.add_server(
                token, senders=spec.get("senders", ()), webhook_url=spec.get("webhook_url")
            )
        for spec in mailgun_domains:
            self.add_mailgun_domain(
                spec["domain"],
                api_key=spec["api_key"],
                signing_key=spec["signing_key"],
                senders=spec.get("senders", ()),
                webhook_url=spec.get("webhook_url"),
            )
        self._dispatcher = WebhookDispatcher(
            self._advance,
            name="email-sandbox-webhooks",
            failure="email sandbox: posting a webhook failed",
        )
        self._httpd = LoopbackHTTPServer((host, port), _Handler, self, label="email sandbox")
        self._init_lifecycle()

    # --- state --------------------------------------------------------------------------

    def add_server(
        self, token: str, *, senders: Iterable[str] = (), webhook_url: str | None = None
    ) -> None:
        """Register (or replace) a Postmark server: its token, sender signatures (addresses,
        or "@domain" for a whole domain) and where its webhooks go."""
        if webhook_url:
            host = urlsplit(webhook_url).hostname or ""
            if not is_loopback(host, allow_localhost=True):
                raise ValueError("webhook_url must point at a loopback host")
        server = _Server(token, {s.lower() for s in senders}, webhook_url or None)
        with self._lock:
            self._servers[token] = server

    def add_mailgun_domain(
        self,
        domain: str,
        *,
        api_key: str,
        signing_key: str,
        senders: Iterable[str] = (),
        webhook_url: str | None = None,
    ) -> None:
        """Register (or replace) a Mailgun sending domain: the API key that owns it, the
        key its webhooks are signed with, its senders (none: any From) and where its
        webhooks go (no credentials in the URL: the signature authenticates)."""
        if not domain or not api_key or not signing_key:
            raise ValueError("a Mailgun domain needs its name, API key and signing key")
        if webhook_url:
            host = urlsplit(webhook_url).hostname or ""
            if not is_loopback(host, allow_localhost=True):
                raise ValueError("webhook_url must point at a loopback host")
        server = _Server(
            f"mailgun:{domain.lower()}",
            {s.lower() for s in senders},
            webhook_url or None,
            esp="mailgun",
            domain=domain.lower(),
            api_key=api_key,
            signing_key=signing_key,
        )
        with self._lock:
            self._mailgun_domains[domain.lower()] = server

    def set_scenario(self, recipient: str, events: Iterable[str]) -> None:
        """The webhooks a message to `recipient` will produce, in order (none: a message
        whose webhooks never come, so only a look-up can tell what became of it)."""
        planned = list(events)
        unknown = [event for event in planned if event not in EVENT_KINDS]
        if unknown or not all(isinstance(event, str) for event in planned):
            raise ValueError(f"events must be among {sorted(EVENT_KINDS)}")
        with self._lock:
            self._scenarios[recipient.lower()] = planned

    def reset(self) -> None:
        """Forget messages, faults, stats, scenarios, inactive recipients and pending
        webhooks; servers stay, and webhooks are posted again."""
        with self._lock:
            self._messages.clear()
            self._faults.clear()
            self._scenarios.clear()
            self._inactive.clear()
            self._stats = dict.fromkeys(self._stats, 0)
            self.webhooks_enabled = True
        self._dispatcher.clear()

    def messages(self) -> list[dict[str, Any]]:
        """Snapshots of every stored message, in arrival order."""
        with self._lock:
            return [message.snapshot() for message in self._messages.values()]

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    def add_fault(self, rule: Mapping[str, Any]) -> dict[str, Any]:
        """Append a fault rule (format in the module docstring); raises ValueError if bad."""
        with self._lock:
            parsed = FaultRule.parse(
                next(self._fault_ids), rule, errors=_FAULT_DEFAULTS, targets=("email", "search")
            )
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

    # --- the API's work -----------------------------------------------------------------

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def _server(self, token: str) -> _Server | None:
        with self._lock:
            for known, server in self._servers.items():
                if token and hmac.compare_digest(known.encode(), token.encode()):
                    return server
        return None

    def _mailgun_domain(self, domain: str, api_key: str) -> _Server | None:
        """The domain, if `api_key` owns it."""
        with self._lock:
            server = self._mailgun_domains.get(domain.lower())
        if server is None or not api_key:
            return None
        return server if hmac.compare_digest(server.api_key.encode(), api_key.encode()) else None

    def _mailgun_key_known(self, api_key: str) -> bool:
        with self._lock:
            keys = [server.api_key for server in self._mailgun_domains.values()]
        return any(hmac.compare_digest(key.encode(), api_key.encode()) for key in keys)

    def _mailgun_events(self, server: _Server) -> list[dict[str, Any]]:
        """Every event of the domain's messages, as Mailgun's Events API lists them."""
        with self._lock:
            return [
                mailgun_event(message, kind, message.to[0], when)
                for message in self._messages.values()
                if message.token == server.token
                for when, kind in message.event_log
            ]

    def _take_fault(self, on: str, params: Mapping[str, Any]) -> FaultRule | None:
        with self._lock:
            for rule in self._faults:
                if rule.count != 0 and rule.matches(params, on):
                    if rule.count > 0:
                        rule.count -= 1
                    return rule
        return None

    def _accept(self, server: _Server, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a POST /email payload as Postmark does and store the message."""
        from_ = _addresses(payload.get("From"), "From")[0]
        if not payload.get("To"):
            raise SandboxError(422, 300, "Zero recipients specified.")
        to = _addresses(payload.get("To"), "To")
        text, html = payload.get("TextBody"), payload.get("HtmlBody")
        if not (isinstance(text, str) and text) and not (isinstance(html, str) and html):
            raise SandboxError(422, 300, "Provide either email TextBody or HtmlBody or both.")
        subject = payload.get("Subject") or ""
        metadata = payload.get("Metadata") or {}
        if (
            not isinstance(subject, str)
            or not isinstance(metadata, dict)
            or len(metadata) > 10
            or not all(
                isinstance(k, str) and len(k) <= 20 and isinstance(v, str) and len(v) <= 80
                for k, v in metadata.items()
            )
        ):
            raise SandboxError(422, 300, "Invalid metadata content.")
        if not server.sender_allowed(from_):
            raise SandboxError(
                422,
                400,
                f"The 'From' address you supplied ({from_}) is not a Sender Signature on your "
                "account. Please add and confirm this address in order to be able to use it in "
                "the 'From' field of your messages.",
            )
        message = self._store(
            server,
            to=to,
            from_=from_,
            subject=subject,
            text=text if isinstance(text, str) else None,
            html=html if isinstance(html, str) else None,
            metadata=dict(metadata),
            message_stream=str(payload.get("MessageStream") or "outbound"),
            tag=str(payload.get("Tag") or ""),
            refuse_inactive=_refuse_inactive,
        )
        return {
            "To": payload["To"],
            "SubmittedAt": _iso(message.received_at),
            "MessageID": message.id,
            "ErrorCode": 0,
            "Message": "OK",
        }

    def _store(
        self,
        server: _Server,
        *,
        to: list[str],
        from_: str,
        subject: str,
        text: str | None,
        html: str | None,
        metadata: dict[str, str],
        message_stream: str = "outbound",
        tag: str = "",
        message_id: str | None = None,
        refuse_inactive: Callable[[list[str]], None] | None = None,
    ) -> _Message:
        """Store an accepted message and schedule its webhooks. Its recipients that
        bounced or complained before (or are "inactive@…") are passed to `refuse_inactive`
        when all are, under the lock (Postmark refuses them); without it the message is
        accepted and only suppressed (Mailgun's way)."""
        now = datetime.now(UTC)
        with self._lock:
            inactive = [
                address
                for address in to
                if _local_part(address) == MAGIC_INACTIVE
                or (server.token, address.lower()) in self._inactive
            ]
            suppressed = len(inactive) == len(to)
            if suppressed and refuse_inactive is not None:
                refuse_inactive(inactive)
            first = to[0].lower()
            plan = self._scenarios.get(first)
            if suppressed:
                plan = [SUPPRESSED]
            elif plan is None:
                plan = list(MAGIC_SCENARIOS.get(_local_part(first), ("Delivery",)))
            message = _Message(
                id=message_id or str(uuid.uuid4()),
                token=server.token,
                to=to,
                from_=from_,
                subject=subject,
                text_body=text,
                html_body=html,
                metadata=metadata,
                message_stream=message_stream,
                tag=tag,
                received_at=now,
                plan=plan,
                event_log=[(now.timestamp(), "accepted")],
                server=server,
            )
            self._messages[message.id] = message
            self._stats["accepted"] += 1
        if self.webhook_delay is not None:
            self._dispatcher.schedule(self.webhook_delay, message.id, 0)
        return message

    def _search(self, server: _Server, params: Mapping[str, str]) -> dict[str, Any]:
        try:
            count = int(params.get("count", ""))
            offset = int(params.get("offset", ""))
        except ValueError:
            raise SandboxError(
                422, 300, "The 'count' and 'offset' parameters are required."
            ) from None
        if not 1 <= count <= 500 or offset < 0 or count + offset > 10000:
            raise SandboxError(422, 300, "'count' must be 1-500 and 'offset' 0 or more.")
        metadata = {
            k[len("metadata_") :]: v for k, v in params.items() if k.startswith("metadata_")
        }
        recipient = params.get("recipient", "").lower()
        from_email = params.get("fromemail", "").lower()
        subject = params.get("subject", "")
        tag = params.get("tag", "")
        status = params.get("status", "").lower()
        with self._lock:
            found = [
                message.search_item()
                for message in reversed(self._messages.values())
                if message.token == server.token
                and (not recipient or recipient in (a.lower() for a in message.to))
                and (not from_email or message.from_.lower() == from_email)
                and (not subject or message.subject == subject)
                and (not tag or message.tag == tag)
                and (not status or status == "sent")
                and all(message.metadata.get(k) == v for k, v in metadata.items())
            ]
        return {"TotalCount": len(found), "Messages": found[offset : offset + count]}

    def _advance(self, message_id: str, step: int, session: requests.Session) -> None:
        """Post the message's next planned event to its server's webhook URL."""
        with self._lock:
            message = self._messages.get(message_id)
            if message is None or step >= len(message.plan):
                return
            mailgun = message.server is not None and message.server.esp == "mailgun"
            if mailgun:
                server = self._mailgun_domains.get(message.server.domain)  # type: ignore[union-attr]
            else:
                server = self._servers.get(message.token)
            kind = message.plan[step]
            message.events.append(kind)
            moment = datetime.now(UTC)
            message.event_log.append((moment.timestamp(), kind))
            recipient = message.to[0]
            if kind in ("HardBounce", "SpamComplaint"):
                self._inactive.add((message.token, recipient.lower()))
            if mailgun:
                payload = mailgun_event(message, kind, recipient, moment.timestamp())
            else:
                payload = self._event_payload(message, kind, recipient, _iso(moment))
            url = server.webhook_url if server else None
            has_next = step + 1 < len(message.plan)
        if url and self.webhooks_enabled and server is not None and mailgun:
            # Signed when posted, as Mailgun does: a delayed webhook is not stale.
            outcome = self._post(
                session, url, mailgun_signed(payload, server.signing_key), "mailgun"
            )
        elif url and self.webhooks_enabled:
            outcome = self._post(session, url, payload)
        else:
            outcome = {"not_posted": True, "at": time.time()}
        with self._lock:
            message.webhooks.append({"event": kind, **outcome})
        if has_next and self.webhook_delay is not None:
            self._dispatcher.schedule(self.webhook_delay, message_id, step + 1)

    @staticmethod
    def _event_payload(message: _Message, kind: str, recipient: str, now: str) -> dict[str, Any]:
        common = {
            "MessageStream": message.message_stream,
            "MessageID": message.id,
            "Metadata": dict(message.metadata),
            "Tag": message.tag,
            "ServerID": 1,
        }
        if kind == "Delivery":
            return {
                "RecordType": "Delivery",
                **common,
                "Recipient": recipient,
                "DeliveredAt": now,
                "Details": "smtp;250 2.0.0 OK",
            }
        type_code, name, description = _BOUNCES[kind]
        return {
            "RecordType": "SpamComplaint" if kind == "SpamComplaint" else "Bounce",
            **common,
            "ID": int(time.time() * 1000) % 10**12,
            "Type": kind,
            "TypeCode": type_code,
            "Name": name,
            "Description": description,
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
            "Email": recipient,
            "From": message.from_,
            "BouncedAt": now,
            "DumpAvailable": False,
            "Inactive": kind != "SoftBounce",
            "CanActivate": kind == "HardBounce",
            "Subject": message.subject,
        }

    def _post(
        self,
        session: requests.Session,
        url: str,
        payload: dict[str, Any],
        user_agent: str = "Postmark",
    ) -> dict[str, Any]:
        try:
            response = session.post(
                url,
                json=payload,
                headers={"User-Agent": user_agent},
                timeout=self.webhook_timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return {"error": type(exc).__name__, "at": time.time()}
        return {"http_status": response.status_code, "at": time.time()}
