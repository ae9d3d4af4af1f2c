"""The seam through which the records' receivers and services record events.

The outbox is the engine's (`workflows.outbox.event_record`, the Event table), and the engine
sits above the records it reads: it registers itself here (WorkflowsConfig.ready()), so the
records record their events without importing it. Recording stays what it was: the outbox
INSERT in the caller's transaction (DESIGN.md rule 2).
"""

import hashlib
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol


class RecordedEvent(Protocol):
    """What the records' callers read of an event recorded (a workflows.models.Event)."""

    pk: Any
    uuid: uuid.UUID


class EventRecorder(Protocol):
    def __call__(
        self,
        *,
        organization_id: int,
        type: str,
        payload: dict[str, Any],
        dedupe_key: str,
        subject_type: str = "",
        subject_id: str = "",
        occurred_at: datetime | None = None,
        rows: Sequence[Any] = (),
    ) -> RecordedEvent | None: ...


_recorder: list[EventRecorder] = []
_by_dedupe_key: list[Callable[[str], RecordedEvent]] = []


def event_recorder_register(
    *, record: EventRecorder, recorded: Callable[[str], RecordedEvent]
) -> None:
    """Install the outbox: `record` writes an event, `recorded` reads one by its dedupe key."""
    _recorder[:] = [record]
    _by_dedupe_key[:] = [recorded]


def event_record(
    *,
    organization_id: int,
    type: str,
    payload: dict[str, Any],
    dedupe_key: str,
    subject_type: str = "",
    subject_id: str = "",
    occurred_at: datetime | None = None,
    rows: Sequence[Any] = (),
) -> RecordedEvent | None:
    """Write an event into the outbox inside the caller's transaction; None when an event
    with this dedupe key exists already. `rows`: new rows (model instances) of the same
    change written with it, in the same statement where the outbox can (see
    workflows.outbox.event_record)."""
    return _recorder[0](
        organization_id=organization_id,
        type=type,
        payload=payload,
        dedupe_key=dedupe_key,
        subject_type=subject_type,
        subject_id=subject_id,
        occurred_at=occurred_at,
        rows=rows,
    )


def event_recorded(dedupe_key: str) -> RecordedEvent:
    """The event recorded with this dedupe key (it must exist)."""
    return _by_dedupe_key[0](dedupe_key)


def idempotency_dedupe_key(*, scope: str, organization_id: int, idempotency_key: str) -> str:
    """The outbox dedupe key of what a clinic's system sent under its idempotency key: one
    per clinic, `scope` (what was sent: "webhook.event", …) and key. The key is hashed: it is
    the caller's text, of any length."""
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"{scope}:{organization_id}:{digest}"


def event_record_once(
    *,
    scope: str,
    idempotency_key: str,
    organization_id: int,
    type: str,
    payload: dict[str, Any],
    subject_type: str = "",
    subject_id: str = "",
) -> tuple[RecordedEvent, bool]:
    """Record an event a clinic's system sent under its idempotency key, once: the event and
    True; or, the key seen before (in this clinic and `scope`), the event recorded then and
    False."""
    dedupe_key = idempotency_dedupe_key(
        scope=scope, organization_id=organization_id, idempotency_key=idempotency_key
    )
    event = event_record(
        organization_id=organization_id,
        type=type,
        payload=payload,
        dedupe_key=dedupe_key,
        subject_type=subject_type,
        subject_id=subject_id,
    )
    if event is not None:
        return event, True
    return event_recorded(dedupe_key), False
