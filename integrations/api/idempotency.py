"""Idempotency keys on API writes, as Stripe has them: a POST or PATCH sent with
`Idempotency-Key: <any unique string>` does its work once; a retry with the same key and the
same request gets the first answer again (with `Idempotent-Replayed: true`), and the same key
with another request is refused (422 idempotency_key_reused).

The outcome row is written in the write's own transaction, so a crash leaves the write and its
row, or neither. Its unique (clinic, key) index serialises two concurrent requests with one
key: the second one's INSERT waits for the first's transaction, then fails, and it replays
the row the first one committed (or, if that one rolled back, does the work itself).
"""

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from http import HTTPStatus

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from integrations.api.keys import api_key_actor
from integrations.api.refusals import ApiError
from integrations.models import ApiKey, IdempotencyRecord
from patients.audit import audit_actor

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = IdempotencyRecord._meta.get_field("key").max_length or 255
# How long an outcome is kept for replay (idempotency_records_purge removes older ones).
RETENTION = timedelta(hours=24)


def request_fingerprint(request: Request) -> str:
    """SHA-256 of what makes two requests the same one: method, path and parsed body
    (canonical JSON, so key order and spacing do not matter)."""
    body = json.dumps(request.data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{request.method}\n{request.path}\n{body}".encode()).hexdigest()


def _key(request: Request) -> str:
    key = request.headers.get(HEADER, "")
    if not key:
        return ""
    if len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.strip():
        raise ApiError(
            HTTPStatus.BAD_REQUEST,
            "invalid_request",
            f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable characters "
            "(a UUID is a good choice).",
        )
    return key


def _replay(record: IdempotencyRecord, fingerprint: str) -> Response:
    if record.fingerprint != fingerprint:
        raise ApiError(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            f"This {HEADER} was used for another request ({record.method} {record.path} with "
            "another body); use a new key for a new request.",
        )
    return Response(
        record.response_body, status=record.response_status, headers={REPLAYED_HEADER: "true"}
    )


def _storable(response: Response) -> object:
    # What the client received, as JSON (Decimals, dates, UUIDs rendered as they were).
    return json.loads(JSONRenderer().render(response.data) or b"null")


def api_write(*, request: Request, api_key: ApiKey, write: Callable[[], Response]) -> Response:
    """Run `write` (which saves through the models) in one transaction, audited as the key's
    change, once per Idempotency-Key. A refused request (an exception: invalid input, a
    conflict) rolls back and keeps no outcome, so the caller may fix it and retry with the
    same key."""
    key = _key(request)
    with audit_actor(api_key_actor(api_key)):
        if not key:
            with transaction.atomic():
                return write()
        fingerprint = request_fingerprint(request)
        existing = IdempotencyRecord.objects.filter(
            organization_id=api_key.organization_id, key=key
        ).first()
        if existing is not None:
            return _replay(existing, fingerprint)
        with transaction.atomic():
            try:
                with transaction.atomic():
                    # Waits here while another request holds the key, then fails.
                    record = IdempotencyRecord.objects.create(
                        organization_id=api_key.organization_id,
                        key=key,
                        method=request.method or "",
                        path=request.path[:500],
                        fingerprint=fingerprint,
                        response_status=0,
                        api_key=api_key,
                    )
            except IntegrityError:
                winner = IdempotencyRecord.objects.get(
                    organization_id=api_key.organization_id, key=key
                )
                return _replay(winner, fingerprint)
            response = write()
            record.response_status = response.status_code
            record.response_body = _storable(response)
            record.save(update_fields=["response_status", "response_body"])
            return response


def idempotency_records_purge(*, older_than: timedelta = RETENTION) -> int:
    """Delete the outcomes older than the retention; how many were deleted."""
    deleted, _ = IdempotencyRecord.objects.filter(
        created_at__lt=timezone.now() - older_than
    ).delete()
    return deleted
