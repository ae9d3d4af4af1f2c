"""The event catalogue, and `event_record`, the one way an event enters the outbox."""

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

from django.db import IntegrityError, transaction

if TYPE_CHECKING:
    from patients.models import Organization
    from workflows.models import Event

logger = logging.getLogger(__name__)


FieldType = Literal["string", "number", "boolean", "date", "datetime", "object", "array"]


@dataclass(frozen=True, slots=True)
class Field:
    """One variable of a payload schema (the "data reference").

    Objects list their `fields`; arrays describe one element as `items`. Templates may only
    use scalar leaves; `{{order.lineItems.0.name}}` indexes into an array.
    """

    type: FieldType
    description: str = ""
    example: Any = None
    fields: Mapping[str, "Field"] | None = None
    items: "Field | None" = None


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    category: str
    description: str
    # Top-level payload keys (e.g. "customer", "order") and what they hold.
    schema: Mapping[str, Field] = field(default_factory=dict)
    # What the event is about, for re-reading current data after a delay ("order", …).
    subject: str = ""


_ORDER_STATUS_DESCRIPTIONS = {
    "subscription_cycle": "A subscription renewal created a new order.",
    "awaiting_payment": "The order is waiting for payment.",
    "processing": "Payment received; the order is being processed.",
    "awaiting_requirements": "The order waits for information from the patient.",
    "awaiting_requisition": "The order waits for a lab requisition.",
    "awaiting_script": "The order waits for a prescription.",
    "awaiting_fulfillment": "The order waits for the pharmacy to fulfil it.",
    "awaiting_shipment": "The order is packed and waits for the carrier.",
    "shipped": "The order was handed to the carrier (tracking number available).",
}

CATALOGUE: tuple[EventType, ...] = (
    EventType("customer.signup", "Customer", "A patient account was created."),
    EventType("order.created", "Order", "A new order was placed."),
    *(
        EventType(f"order.{status}", "Order", description)
        for status, description in _ORDER_STATUS_DESCRIPTIONS.items()
    ),
)

EVENT_TYPES: dict[str, EventType] = {event.name: event for event in CATALOGUE}


def event_choices() -> list[tuple[str, list[tuple[str, str]]]]:
    """Model/form choices grouped by category, in catalogue order."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for event in CATALOGUE:
        groups.setdefault(event.category, []).append((event.name, event.name))
    return list(groups.items())


def event_record(
    *,
    organization: "Organization",
    type: str,
    payload: dict[str, Any],
    dedupe_key: str,
    subject_type: str = "",
    subject_id: str = "",
    occurred_at: datetime | None = None,
) -> "Event | None":
    """Write an event into the outbox inside the caller's transaction.

    Returns None when an event with this dedupe key already exists (the change was already
    recorded). After commit the event is handed to Celery; if the broker is unreachable then,
    the periodic relay dispatches it later, so nothing is lost either way.
    """
    from workflows.models import Event

    if type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type!r}")
    fields: dict[str, Any] = {
        "organization": organization,
        "type": type,
        "payload": payload,
        "dedupe_key": dedupe_key,
        "subject_type": subject_type,
        "subject_id": subject_id,
    }
    if occurred_at is not None:
        fields["occurred_at"] = occurred_at
    try:
        # A savepoint, so a duplicate does not poison the caller's transaction on PostgreSQL.
        with transaction.atomic():
            event = Event.objects.create(**fields)
    except IntegrityError:
        if Event.objects.filter(dedupe_key=dedupe_key).exists():
            return None
        raise
    transaction.on_commit(partial(event_publish, event_id=event.pk))
    return event


def event_publish(*, event_id: int) -> None:
    """Hand an event to the broker; on failure leave it to the relay instead of failing."""
    from workflows.tasks import dispatch_event

    try:
        dispatch_event.apply_async((event_id,), retry=False)
    except Exception:
        logger.warning("broker unavailable; event %s left for the relay", event_id, exc_info=True)
