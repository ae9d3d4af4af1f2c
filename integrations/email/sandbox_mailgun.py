"""Mailgun's API in the loopback email sandbox (`integrations.email.sandbox`, which holds
the messages, faults, scenarios and webhook queue both ESPs' APIs share). anymail's real
Mailgun backend calls it, with only its `api_url` swapped. No Django imports.

Mailgun API (HTTP basic auth "api" : the domain's API key; base URL `<sandbox>/v3`):

    POST /v3/<domain>/messages    send one message (form fields from, to, subject, text,
                                  html, v:<name> user-variables, o:tag, o:tracking-…);
                                  200 {"id": "<…@domain>", "message": "Queued. Thank you."}
    GET  /v3/<domain>/events      the domain's events (accepted, delivered, failed,
                                  complained): recipient, event, begin (epoch seconds),
                                  ascending (yes|no), limit (1-300) filters;
                                  {"items": [...], "paging": {"next", "previous", "first",
                                  "last"}}; the next page's URL carries the query (`page`)
    GET  /v3/domains/<domain>     the domain ({"domain": {"name", "state": "active", …}})

Errors are Mailgun's: 401 "Forbidden" (plain text) for a missing or wrong key, 404
{"message": "Domain not found: …"} for a domain the key does not own, 400 {"message": …}
for a missing or invalid from / to, no body, an unreadable request, a From outside the
domain's senders; 429 and the rest only through the sandbox's fault rules, which match the
send's fields as "To", "From" and "Subject" (as for Postmark) and the search's parameters.

Webhooks: each scenario step is posted as JSON {"signature": {"timestamp", "token",
"signature"}, "event-data": {...}}, signed with the domain's webhook signing key
(HMAC-SHA256 of timestamp + token) at posting time. HardBounce is a permanent failure
(reason "bounce"), SoftBounce a temporary one, SpamComplaint a complaint after a delivery;
a recipient that bounced or complained before is accepted and then fails permanently with
reason "suppress-bounce", as Mailgun's suppression lists do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

MAILGUN_EVENT_KINDS = ("accepted", "delivered", "failed", "complained")
PAGE_LIMIT = 300


class MailgunApiError(Exception):
    """A Mailgun API error answer: HTTP status and Mailgun's message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def mailgun_signed(event_data: dict[str, Any], signing_key: str) -> dict[str, Any]:
    """A webhook body: `event_data` with a fresh signature under `signing_key`."""
    timestamp, token = str(int(time.time())), secrets.token_hex(25)
    signature = hmac.new(
        signing_key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256
    ).hexdigest()
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature},
        "event-data": event_data,
    }


def mailgun_event(message: Any, kind: str, recipient: str, when: float) -> dict[str, Any]:
    """An event as Mailgun's webhooks and Events API give it; `kind` is a scenario step
    ("Delivery", "HardBounce", …) or "accepted"."""
    data: dict[str, Any] = {
        "id": secrets.token_urlsafe(16),
        "timestamp": when,
        "recipient": recipient,
        "recipient-domain": recipient.rsplit("@", 1)[-1],
        "tags": [message.tag] if message.tag else [],
        "user-variables": dict(message.metadata),
        "envelope": {"sender": message.from_, "targets": recipient},
        "message": {
            "headers": {
                "message-id": message.id.strip("<>"),
                "to": ", ".join(message.to),
                "from": message.from_,
                "subject": message.subject,
            }
        },
    }
    if kind == "accepted":
        return {**data, "event": "accepted", "method": "HTTP"}
    if kind == "Delivery":
        return {
            **data,
            "event": "delivered",
            "delivery-status": {"code": 250, "message": "OK", "description": ""},
        }
    if kind == "SpamComplaint":
        return {**data, "event": "complained"}
    permanent = kind != "SoftBounce"
    reason = "suppress-bounce" if kind == "Suppressed" else ("bounce" if permanent else "generic")
    return {
        **data,
        "event": "failed",
        "severity": "permanent" if permanent else "temporary",
        "reason": reason,
        "delivery-status": {
            "code": 550 if permanent else 452,
            "message": "5.1.1 The email account that you tried to reach does not exist"
            if permanent
            else "4.2.2 Mailbox full",
            "description": "",
        },
    }


def _auth_key(handler: Any) -> str:
    header = handler.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return ""
    try:
        user, _, key = base64.b64decode(encoded).decode().partition(":")
    except (ValueError, binascii.Error):
        return ""
    return key if user == "api" else ""


def _form(body: bytes, handler: Any) -> dict[str, list[str]]:
    content_type = handler.headers.get("Content-Type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        raise MailgunApiError(400, "the sandbox reads form-encoded requests only")
    try:
        return parse_qs(body.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise MailgunApiError(400, "request is not valid UTF-8") from None


def _addresses(values: list[str], name: str) -> list[str]:
    found = [address for _, address in getaddresses(values) if address]
    if not found:
        raise MailgunApiError(400, f"'{name}' parameter is missing")
    for address in found:
        if not _valid(address):
            raise MailgunApiError(
                400, f"'{name}' parameter is not a valid address. please check documentation"
            )
    return found


def _valid(address: str) -> bool:
    local, _, domain = address.rpartition("@")
    return bool(local) and "." in domain and " " not in address and "<" not in address


def mailgun_api(handler: Any, method: str, path: str, query: str, body: bytes) -> None:
    """Answer one request under /v3/ (`handler` is the sandbox's request handler)."""
    sandbox = handler.server.sandbox
    parts = path.strip("/").split("/")
    sending = method == "POST" and len(parts) == 3 and parts[2] == "messages"
    if sending:
        sandbox._count("sends")
    try:
        if len(parts) == 3 and parts[1] == "domains" and method == "GET":
            server = _server(sandbox, handler, parts[2])
            handler._json(200, {"domain": {"name": server.domain, "state": "active"}})
        elif sending:
            _send(handler, sandbox, _server(sandbox, handler, parts[1]), body)
        elif method == "GET" and len(parts) == 3 and parts[2] == "events":
            _events(handler, sandbox, _server(sandbox, handler, parts[1]), path, query)
        else:
            raise MailgunApiError(404, "Not Found")
    except MailgunApiError as error:
        if sending:
            sandbox._count("errors")
        if error.status == 401:
            handler._respond(401, b"Forbidden", "text/plain")
        else:
            handler._json(error.status, {"message": error.message})
    except Exception:
        if sending:  # the Postmark-shaped error of a fault rule, answered by the handler
            sandbox._count("errors")
        raise


def _server(sandbox: Any, handler: Any, domain: str) -> Any:
    key = _auth_key(handler)
    server = sandbox._mailgun_domain(domain, key)
    if server is None:
        if not key or not sandbox._mailgun_key_known(key):
            raise MailgunApiError(401, "Forbidden")
        raise MailgunApiError(404, f"Domain not found: {domain}")
    return server


def _send(handler: Any, sandbox: Any, server: Any, body: bytes) -> None:
    form = _form(body, handler)
    first = {name: values[0] for name, values in form.items() if values}
    to_values = form.get("to", [])
    match = {
        **first,
        "To": ", ".join(to_values),
        "From": first.get("from", ""),
        "Subject": first.get("subject", ""),
    }
    rule = sandbox._take_fault("email", match)
    if handler._apply_fault(rule, before=True):
        return
    from_ = _addresses(form.get("from", []), "from")[0]
    to = _addresses(to_values, "to")
    text, html = first.get("text"), first.get("html")
    if not text and not html:
        raise MailgunApiError(400, "Need at least one of 'text', 'html' or 'template' parameters")
    if not server.sender_allowed(from_):
        raise MailgunApiError(400, f"'from' parameter: {from_} is not allowed on this domain")
    metadata = {name[2:]: value for name, value in first.items() if name.startswith("v:")}
    moment = datetime.now(UTC)
    message_id = f"<{moment:%Y%m%d%H%M%S}.{secrets.token_hex(8)}@{server.domain}>"
    sandbox._store(
        server,
        to=to,
        from_=from_,
        subject=first.get("subject", ""),
        text=text,
        html=html,
        metadata=metadata,
        tag=first.get("o:tag", ""),
        message_id=message_id,
    )
    if handler._apply_fault(rule, before=False):
        return
    handler._json(200, {"id": message_id, "message": "Queued. Thank you."})


def _events(handler: Any, sandbox: Any, server: Any, path: str, query: str) -> None:
    sandbox._count("searches")
    params = {name: values[0] for name, values in parse_qs(query, keep_blank_values=True).items()}
    rule = sandbox._take_fault("search", params)
    if handler._apply_fault(rule, before=True):
        return
    try:
        limit = int(params.get("limit") or PAGE_LIMIT)
        begin = float(params["begin"]) if params.get("begin") else None
        offset = int(params.get("page") or 0)
    except ValueError:
        raise MailgunApiError(400, "Invalid limit, begin or page") from None
    if not 1 <= limit <= PAGE_LIMIT or offset < 0:
        raise MailgunApiError(400, f"limit must be 1-{PAGE_LIMIT}")
    kinds = params.get("event", "")
    recipient = params.get("recipient", "").lower()
    events = [
        event
        for event in sandbox._mailgun_events(server)
        if (not recipient or event["recipient"].lower() == recipient)
        and (not kinds or event["event"] in kinds.split(" OR "))
        and (begin is None or event["timestamp"] >= begin)
    ]
    events.sort(key=lambda event: event["timestamp"], reverse=params.get("ascending") != "yes")
    page = events[offset : offset + limit]
    base = f"{sandbox.url}{quote(path)}"

    def at(position: int) -> str:
        return base + "?" + urlencode({**params, "page": str(position)})

    answer = {
        "items": page,
        "paging": {
            "next": at(offset + len(page)),
            "previous": at(max(offset - limit, 0)),
            "first": at(0),
            "last": at(max(len(events) - limit, 0)),
        },
    }
    if handler._apply_fault(rule, before=False):
        return
    handler._json(200, answer)
