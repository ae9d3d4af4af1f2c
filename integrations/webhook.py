"""Outbound webhook → postJSON: POST a JSON document to an HTTPS endpoint the clinic names.

The body is a JSON template (`Parameter.kind == "json"`): the engine renders its string values
one by one and hands over the JSON text, which is posted byte for byte as recorded in the step
run's inputs.

Delivery is at least once. A timeout after the request went out, or a worker that dies between
the receiver's answer and the engine recording it, means the same step is posted again; every
attempt of a step carries the same `Idempotency-Key` (a new one only when an admin retries a
failed run), so the receiver can drop repeats.

Server-side request forgery: the URL is written by a clinic admin, and the worker sits inside
our network. So only https:// is allowed, the host is resolved once, every address it resolves
to must be public (not loopback, private, link-local such as a cloud metadata service,
multicast or reserved), and the connection goes to an address that was checked, never to a
second lookup that could answer differently (DNS rebinding). TLS still verifies the certificate
against the host name as written. Redirects are not followed: a redirect could point anywhere.
CAREFLOW_WEBHOOK_ALLOW_PRIVATE lifts the address rule and allows http://, for tests and local
development only.

The body is never logged (it carries patient data); neither is the URL's path or query.
"""

import json
import logging
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import urllib3
from django.conf import settings
from django.utils import timezone
from urllib3.exceptions import ConnectTimeoutError, HTTPError, NewConnectionError, SSLError

from common.addresses import address_forbidden
from common.retry import retry_delay
from workflows.adapters import Adapter, Function, Outcome, Parameter, StepContext

logger = logging.getLogger(__name__)

# How much of the receiver's answer is kept in the step's result, and read at most.
RESPONSE_CHARS = 2000
_RESPONSE_READ_BYTES = 64 * 1024
# A Retry-After longer than this is not waited for; the usual backoff applies instead.
MAX_RETRY_AFTER = timedelta(hours=1)
# Request Timeout and Too Many Requests say "later", unlike the other 4xx answers.
RETRY_STATUSES = frozenset({HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS})


def _version() -> str:
    try:
        return metadata.version("careflow")
    except metadata.PackageNotFoundError:
        return "dev"


USER_AGENT = f"careflow/{_version()}"


class WebhookRefused(ValueError):
    """A URL careflow will not post to; the message is meant for a clinic admin."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a webhook goes: the URL's parts, and (once resolved) the addresses checked."""

    scheme: str
    host: str  # as written: for the Host header, SNI and the certificate check
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...] = ()

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def _allow_private() -> bool:
    return bool(settings.CAREFLOW_WEBHOOK_ALLOW_PRIVATE)


def webhook_target(url: str) -> Target:
    """The parts of a webhook URL, or WebhookRefused: https only (http too when private
    addresses are allowed), a host, no credentials in the URL. Resolves nothing."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise WebhookRefused(f"not a valid URL: {exc}") from None
    allowed = ("https", "http") if _allow_private() else ("https",)
    if parts.scheme.lower() not in allowed:
        raise WebhookRefused(
            "the URL must start with https:// (webhooks are only sent encrypted)"
            if parts.scheme
            else "write the whole URL, starting with https://"
        )
    if not parts.hostname:
        raise WebhookRefused("the URL has no host name")
    if parts.username is not None or parts.password is not None:
        # It would be stored and shown in plain text with the workflow and every run.
        raise WebhookRefused("put no user name or password in the URL")
    scheme = parts.scheme.lower()
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80), path)


def webhook_resolve(target: Target) -> Target:
    """The target with every address its host resolves to, all checked. Raise
    WebhookRefused if any is not public (unless allowed); socket.gaierror if the name does
    not resolve (which may pass: the caller decides)."""
    infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = tuple(dict.fromkeys(str(info[4][0]) for info in infos))
    if not _allow_private():
        forbidden = [address for address in addresses if address_forbidden(address)]
        if forbidden:
            where = (
                target.host if target.host == forbidden[0] else f"{target.host} ({forbidden[0]})"
            )
            raise WebhookRefused(
                f"{where} is not a public address; webhooks only go to public addresses, "
                "not loopback, private, link-local or reserved ones"
            )
    return Target(target.scheme, target.host, target.port, target.path, addresses)


def webhook_url_problem(url: str) -> str:
    """Save-time check of a URL written without {{variables}}: what is wrong with it, or "".
    A name that does not resolve now is not refused here (it may by the time it is used);
    the send-time check decides then."""
    try:
        webhook_resolve(webhook_target(url))
    except WebhookRefused as exc:
        return str(exc)
    except (OSError, UnicodeError):
        return ""
    return ""


POST_JSON = Function(
    name="postJSON",
    label="Post JSON",
    parameters=(
        Parameter(
            "url",
            "URL",
            "The receiver's https:// address; it must be a public address. Redirects are "
            "not followed.",
            example="https://hooks.example.com/careflow",
            check=webhook_url_problem,
        ),
        Parameter(
            "body",
            "Body (JSON)",
            "A JSON object. Text values may use {{variables}}: each is filled in as a JSON "
            "string, so quotes in patient data cannot break the JSON. Keys, numbers, "
            "true/false and null are sent as written.",
            example='{"event": "order.shipped", "order": "{{order.number}}", '
            '"firstName": "{{customer.firstName}}"}',
            kind="json",
        ),
    ),
    # The receiver is whatever system a clinic admin points this at (a CRM, an automation
    # service, a chat channel): a third party careflow cannot vouch for, with its own logs
    # and retention. So clinical details stay out, as for SMS; ids it can look up are fine.
    clinical_data_allowed=False,
    clinical_data_note=(
        "keep it out of webhook bodies: the receiver is a third party (send an id it can look "
        "up instead)"
    ),
    # Not a message to the patient: SMS consent and quiet hours do not apply.
    messages_patient=False,
)


def _reason_phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _retry_after(value: str | None, now: datetime) -> datetime | None:
    """The moment a Retry-After header (seconds or an HTTP date) names, if reasonable."""
    if not value:
        return None
    try:
        moment = now + timedelta(seconds=int(value.strip()))
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
    return moment if now < moment <= now + MAX_RETRY_AFTER else None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    text: str
    retry_after: str | None
    location: str | None


def webhook_post(target: Target, body: bytes, headers: dict[str, str]) -> _Answer:
    """POST to the first checked address that accepts a connection. Raises urllib3's errors."""
    timeout = urllib3.Timeout(
        connect=settings.CAREFLOW_WEBHOOK_TIMEOUT, read=settings.CAREFLOW_WEBHOOK_TIMEOUT
    )
    last: Exception | None = None
    for address in target.addresses:
        pool: urllib3.HTTPConnectionPool
        if target.scheme == "https":
            # Connect to the address we checked; SNI and the certificate use the name.
            pool = urllib3.HTTPSConnectionPool(
                address,
                target.port,
                timeout=timeout,
                retries=False,
                cert_reqs="CERT_REQUIRED",
                server_hostname=target.host,
                assert_hostname=target.host,
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, retries=False)
        with pool:
            try:
                response = pool.urlopen(
                    "POST",
                    target.path,
                    body=body,
                    headers={**headers, "Host": target.host_header},
                    redirect=False,
                    retries=False,
                    preload_content=False,
                    assert_same_host=False,
                )
            except (NewConnectionError, ConnectTimeoutError) as exc:
                last = exc  # nothing was sent: the next address may answer
                continue
            try:
                raw = response.read(_RESPONSE_READ_BYTES)
            finally:
                response.release_conn()
            return _Answer(
                response.status,
                raw.decode("utf-8", errors="replace")[:RESPONSE_CHARS],
                response.headers.get("Retry-After"),
                response.headers.get("Location"),
            )
    assert last is not None  # noqa: S101 — addresses is never empty (getaddrinfo says so)
    raise last


class WebhookAdapter(Adapter):
    name = "webhook"
    label = "Outbound webhook"
    functions = {POST_JSON.name: POST_JSON}

    def execute(self, *, function: str, context: StepContext) -> Outcome:
        """POST the step's body to its URL once; see the module docstring for the rules."""
        if function != POST_JSON.name:
            return Outcome("failed", reason=f"the outbound webhook has no function {function!r}")
        try:
            target = webhook_target(context.inputs["url"])
        except WebhookRefused as exc:
            return Outcome("failed", reason=f"webhook URL refused: {exc}")
        text = context.inputs["body"]
        try:
            document = json.loads(text)
        except ValueError:
            return Outcome("failed", reason="the body is not JSON")
        if context.is_test:
            # A clinic's endpoint is a real system (a CRM, a ticket queue): a live test or a
            # test patient must not create records in it. Twilio's test runs text only test
            # patients; here there is no test recipient to limit ourselves to.
            return Outcome(
                "skipped",
                reason="test run: webhook not called",
                result={"would_post": {"url": context.inputs["url"].strip(), "body": document}},
            )
        try:
            target = webhook_resolve(target)
        except WebhookRefused as exc:
            return Outcome("failed", reason=f"webhook URL refused: {exc}")
        except (OSError, UnicodeError) as exc:
            return self._again(context, f"could not look up {target.host} ({exc})")
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": context.idempotency_key,
            "User-Agent": USER_AGENT,
        }
        try:
            answer = webhook_post(target, text.encode("utf-8"), headers)
        except SSLError:
            logger.warning("webhook step %s: TLS failed with %s", context.step_run_id, target.host)
            return Outcome(
                "failed",
                reason=f"the TLS connection to {target.host} failed (is its certificate valid?)",
            )
        except HTTPError as exc:
            kind = type(exc).__name__
            logger.warning("webhook step %s: %s from %s", context.step_run_id, kind, target.host)
            return self._again(context, f"no answer from {target.host} ({kind})")
        logger.info(
            "webhook step %s: %s answered %s", context.step_run_id, target.host, answer.status
        )
        return self._outcome(context, answer)

    def _outcome(self, context: StepContext, answer: _Answer) -> Outcome:
        result = {"status": answer.status, "body": answer.text}
        said = f"the webhook answered {_reason_phrase(answer.status)}"
        if 200 <= answer.status < 300:
            return Outcome("succeeded", result=result)
        if answer.status >= 500 or answer.status in RETRY_STATUSES:
            later = _retry_after(answer.retry_after, timezone.now())
            return self._again(context, said, result=result, not_before=later)
        if 300 <= answer.status < 400:
            where = f" to {answer.location}" if answer.location else ""
            said += f"{where}; redirects are not followed: use the final URL"
        return Outcome("failed", result=result, reason=said)

    def _again(
        self,
        context: StepContext,
        reason: str,
        *,
        result: dict[str, Any] | None = None,
        not_before: datetime | None = None,
    ) -> Outcome:
        """Retry later with backoff and jitter, or fail once the attempts are used up."""
        if context.attempt >= settings.CAREFLOW_SEND_MAX_RETRIES:
            return Outcome(
                "failed",
                result=result or {},
                reason=f"gave up after {context.attempt} attempts: {reason}",
            )
        retry_at = timezone.now() + retry_delay(context.attempt)
        if not_before is not None:
            retry_at = max(retry_at, not_before)
        return Outcome("retry", result=result or {}, reason=reason, retry_at=retry_at)
