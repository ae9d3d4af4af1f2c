"""Signal receivers: turn a model change into an outbox Event, in the same transaction, and
nothing else (no network, no matching, no sending)."""

from typing import Any

from patients.models import Order, Patient
from patients.payloads import customer_event_payload, order_event_payload
from workflows.events import event_record


def patient_saved(sender: type[Patient], instance: Patient, created: bool, **kwargs: Any) -> None:
    if kwargs.get("raw") or not created:
        return
    event_record(
        organization=instance.organization,
        type="customer.signup",
        payload=customer_event_payload(instance),
        dedupe_key=f"customer.signup:{instance.pk}",
        subject_type="customer",
        subject_id=str(instance.pk),
    )


def order_saved(sender: type[Order], instance: Order, created: bool, **kwargs: Any) -> None:
    if kwargs.get("raw"):
        return
    if created:
        event_type, key = "order.created", f"order.created:{instance.pk}"
    elif instance.status_transition is not None:
        # The history length makes A→B→A→B two events, while two racing saves of the same
        # transition collapse into one through the unique dedupe key.
        event_type = f"order.{instance.status}"
        key = f"order:{instance.pk}:status:{len(instance.status_history)}:{instance.status}"
    else:
        return
    event_record(
        organization=instance.organization,
        type=event_type,
        payload=order_event_payload(instance),
        dedupe_key=key,
        subject_type="order",
        subject_id=str(instance.pk),
    )
