"""Signal receivers: turn a model change into an outbox Event, in the same transaction, and
nothing else (no network, no matching, no sending).

The save's audit entry (patients.audit), when it records an event, goes with the event: in the
outbox's one statement, where an INSERT of its own cost a round trip on the request path.

Every event has a dedupe key naming the change it records, so that each real change is
recorded exactly once: two stale copies saving the same change collapse into one event
through the unique key, while A→B→A→B records each change (the keys carry a version).
"""

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from patients.audit import audit_entries_take
from patients.models import (
    Appointment,
    Cart,
    Lead,
    Order,
    Patient,
    Prescription,
    QuestionnaireSubmission,
    Requisition,
    Subscription,
    Task,
)
from patients.payloads import (
    CUSTOMER_FIELD_PATHS,
    appointment_event_payload,
    cart_event_payload,
    customer_event_payload,
    customer_updated_payload,
    lead_event_payload,
    order_event_payload,
    prescription_event_payload,
    questionnaire_event_payload,
    requisition_event_payload,
    subscription_event_payload,
    task_event_payload,
)
from patients.recording import event_record


def signup_dedupe_key(patient_id: int) -> str:
    """The dedupe key of a patient's customer.signup event."""
    return f"customer.signup:{patient_id}"


def patient_saved(sender: type[Patient], instance: Patient, created: bool, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    if created:
        event_record(
            organization_id=instance.organization_id,
            type="customer.signup",
            payload=customer_event_payload(instance),
            dedupe_key=signup_dedupe_key(instance.pk),
            subject_type="customer",
            subject_id=str(instance.pk),
            rows=audit_entries_take(instance, created=True),
        )
        return
    if not instance.saved_changes:
        return
    changed = sorted(instance.saved_changes)
    # The new values are in the key, so two stale copies making different changes at the
    # same version both record theirs; the same change twice records one event.
    values = json.dumps({name: getattr(instance, name) for name in changed}, default=str)
    digest = hashlib.sha256(values.encode()).hexdigest()[:16]
    event_record(
        organization_id=instance.organization_id,
        type="customer.updated",
        payload=customer_updated_payload(
            instance, [CUSTOMER_FIELD_PATHS[name] for name in changed]
        ),
        dedupe_key=f"customer.updated:{instance.pk}:{instance.profile_version}:{digest}",
        subject_type="customer",
        subject_id=str(instance.pk),
        rows=audit_entries_take(instance, created=False),
    )


def order_saved(sender: type[Order], instance: Order, created: bool, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    recorded: list[tuple[str, str]] = []
    if created:
        recorded.append(("order.created", f"order.created:{instance.pk}"))
        if instance.subscription_id:
            recorded.append(("order.subscription_cycle", f"order.subscription_cycle:{instance.pk}"))
    elif instance.status_transition is not None:
        # The history length makes A→B→A→B two events, while two racing saves of the same
        # transition collapse into one through the unique dedupe key.
        recorded.append(
            (
                f"order.{instance.status}",
                f"order:{instance.pk}:status:{len(instance.status_history)}:{instance.status}",
            )
        )
    if not recorded:
        return
    payload = order_event_payload(instance)
    for i, (event_type, key) in enumerate(recorded):
        event_record(
            organization_id=instance.organization_id,
            type=event_type,
            payload=payload,
            dedupe_key=key,
            subject_type="order",
            subject_id=str(instance.pk),
            rows=audit_entries_take(instance, created=created) if i == 0 else (),
        )


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """The events of a record with a status: one when it is created, one per status."""

    subject: str
    created_event: str
    status_events: Mapping[str, str]
    payload: Callable[[Any], dict[str, Any]]


LIFECYCLES: dict[type[Any], Lifecycle] = {
    Subscription: Lifecycle(
        "subscription",
        "subscription.created",
        {
            Subscription.Status.ACTIVE: "subscription.active",
            Subscription.Status.PAUSED: "subscription.paused",
            Subscription.Status.CANCELLED: "subscription.cancelled",
        },
        subscription_event_payload,
    ),
    Appointment: Lifecycle(
        "appointment",
        "appointment.booked",
        {
            Appointment.Status.BOOKED: "appointment.booked",
            Appointment.Status.CONFIRMED: "appointment.confirmed",
            Appointment.Status.CANCELLED: "appointment.cancelled",
            Appointment.Status.COMPLETED: "appointment.completed",
            Appointment.Status.NO_SHOW: "appointment.no_show",
            Appointment.Status.RESCHEDULE_REQUESTED: "appointment.reschedule_requested",
        },
        appointment_event_payload,
    ),
    Prescription: Lifecycle(
        "prescription",
        "prescription.created",
        {Prescription.Status.FULFILLED: "prescription.fulfilled"},
        prescription_event_payload,
    ),
    Requisition: Lifecycle(
        "requisition",
        "requisition.created",
        {
            Requisition.Status.SUBMITTED: "requisition.submitted",
            Requisition.Status.COLLECTED: "requisition.collected",
            Requisition.Status.RESULTED: "requisition.resulted",
            Requisition.Status.CANCELLED: "requisition.cancelled",
        },
        requisition_event_payload,
    ),
    Lead: Lifecycle(
        "lead",
        "lead.created",
        {Lead.Status.CONVERTED: "lead.converted", Lead.Status.LOST: "lead.lost"},
        lead_event_payload,
    ),
    Task: Lifecycle(
        "task",
        "task.created",
        {Task.Status.COMPLETED: "task.completed", Task.Status.CANCELLED: "task.cancelled"},
        task_event_payload,
    ),
    QuestionnaireSubmission: Lifecycle(
        "questionnaire", "questionnaire.submitted", {}, questionnaire_event_payload
    ),
}


def lifecycle_saved(sender: type[Any], instance: Any, created: bool, **kwargs: Any) -> None:
    """Creation records `<entity>.created` (appointments: `appointment.booked`); entering a
    status records `<entity>.<status>`, also when a record is created in that status (a
    subscription created active is both created and active)."""
    if kwargs.get("raw"):
        return
    lifecycle = LIFECYCLES[sender]
    recorded: list[tuple[str, str]] = []
    if created:
        recorded.append((lifecycle.created_event, f"{lifecycle.created_event}:{instance.pk}"))
    status = getattr(instance, "status", None)
    status_event = lifecycle.status_events.get(status) if status else None
    if status_event and (
        (created and status_event != lifecycle.created_event)
        or (not created and "status" in instance.saved_changes)
    ):
        recorded.append(
            (
                status_event,
                f"{lifecycle.subject}:{instance.pk}:status:{instance.status_version}:{status}",
            )
        )
    if not recorded:
        return
    payload = lifecycle.payload(instance)
    for i, (event_type, key) in enumerate(recorded):
        event_record(
            organization_id=instance.organization_id,
            type=event_type,
            payload=payload,
            dedupe_key=key,
            subject_type=lifecycle.subject,
            subject_id=str(instance.pk),
            rows=audit_entries_take(instance, created=created) if i == 0 else (),
        )


def cart_saved(sender: type[Cart], instance: Cart, created: bool, **kwargs: Any) -> None:
    """cart.checkout when checkout starts (checked_out_at set); a restarted checkout (a new
    time) records again."""
    if kwargs.get("raw") or instance.checked_out_at is None:
        return
    if not created and "checked_out_at" not in instance.saved_changes:
        return
    event_record(
        organization_id=instance.organization_id,
        type="cart.checkout",
        payload=cart_event_payload(instance),
        dedupe_key=f"cart.checkout:{instance.pk}:{instance.checked_out_at.isoformat()}",
        subject_type="cart",
        subject_id=str(instance.pk),
        rows=audit_entries_take(instance, created=created),
    )
