"""Services over the CRM records: renewals, inbound messages, custom webhook events, and the
webhook token. Views, admin actions and tasks call these; they hold the rules."""

import hashlib
import hmac
import secrets
import uuid
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from patients.models import Order, Organization, Patient, Subscription
from patients.payloads import message_event_payload, webhook_event_payload
from patients.phones import phone_or_raw, phone_to_e164
from patients.recording import RecordedEvent, event_record, event_record_once

MESSAGE_CHANNELS = ("SMS", "WEB")
# Prefix so a leaked token is recognisable (secret scanners, logs) as a careflow token.
WEBHOOK_TOKEN_PREFIX = "cfwh_"  # noqa: S105 — a public prefix, not a secret


def subscription_renew(*, subscription: Subscription) -> Order:
    """Start the subscription's next cycle: create its renewal order (which records
    order.created and order.subscription_cycle) and move the renewal date one interval on.

    Raises ValidationError when the subscription is not active, or when it was renewed
    since the caller loaded it (a double click must not charge a cycle twice).
    """
    with transaction.atomic():
        locked = (
            Subscription.objects.select_for_update()
            .select_related("patient", "organization")
            .get(pk=subscription.pk)
        )
        if locked.status != Subscription.Status.ACTIVE:
            raise ValidationError(
                f"Only active subscriptions renew; this one is {locked.get_status_display()}."
            )
        if locked.current_cycle != subscription.current_cycle:
            raise ValidationError(
                f"This subscription was renewed meanwhile (it is on cycle {locked.current_cycle})."
            )
        cycle = locked.current_cycle + 1
        order = Order.objects.create(
            organization=locked.organization,
            patient=locked.patient,
            subscription=locked,
            # Deterministic: the database's unique order number per clinic refuses a
            # second order for the same cycle whatever path it comes from.
            number=f"S{locked.pk}-{cycle}",
            line_items=[
                {
                    "name": locked.product_name,
                    "productId": locked.product_id,
                    "price": f"{locked.price:.2f}",
                    "quantity": 1,
                    "isSubscription": True,
                }
            ],
            total_amount=locked.price,
        )
        locked.current_cycle = cycle
        renews_on = locked.next_cycle_date or timezone.localdate()
        locked.next_cycle_date = renews_on + timedelta(days=locked.interval_days)
        locked.save(update_fields=["current_cycle", "next_cycle_date", "updated_at"])
    subscription.current_cycle = locked.current_cycle
    subscription.next_cycle_date = locked.next_cycle_date
    return order


def inbound_message_record(
    *,
    organization: Organization,
    from_: str,
    to: str,
    body: str,
    channel: str = "SMS",
    provider_sid: str = "",
) -> RecordedEvent | None:
    """Record message.inbound with the sender resolved to this clinic's patient by phone.

    Several patients may share a phone (a family); the oldest record wins, deterministically.
    An unknown sender still records the event, with customer null. The provider's message
    id makes a redelivered webhook record nothing; None is returned then.
    """
    if channel not in MESSAGE_CHANNELS:
        raise ValueError(f"channel must be one of {', '.join(MESSAGE_CHANNELS)}")
    sender = phone_or_raw(from_)
    patient = (
        Patient.objects.filter(organization=organization, phone=sender).order_by("id").first()
        if sender
        else None
    )
    key = provider_sid or uuid.uuid4().hex
    return event_record(
        organization_id=organization.pk,
        type="message.inbound",
        payload=message_event_payload(
            channel=channel,
            body=body,
            from_=sender,
            to=phone_or_raw(to),
            sid=provider_sid,
            received_at=timezone.now(),
            patient=patient,
        ),
        dedupe_key=f"message.inbound:{organization.pk}:{key}",
        subject_type="customer" if patient else "",
        subject_id=str(patient.pk) if patient else "",
    )


class CustomerNotFound(LookupError):
    """No patient, or more than one, matches; the message says which, for the caller."""


def customer_resolve(
    *, organization: Organization, id: str = "", email: str = "", phone: str = ""
) -> Patient:
    """The clinic's one patient with this id (the payload's customer.id), else email, else
    phone. Raises CustomerNotFound (or ValidationError for a malformed id or phone)."""
    patients = Patient.objects.filter(organization=organization)
    if id:
        try:
            patient_uuid = uuid.UUID(id)
        except ValueError:
            raise ValidationError("customer.id is not a customer id (a UUID).") from None
        matches = list(patients.filter(uuid=patient_uuid)[:2])
        what = "id"
    elif email:
        matches = list(patients.filter(email__iexact=email.strip()).order_by("id")[:2])
        what = "email"
    elif phone:
        try:
            number = phone_to_e164(phone)
        except ValidationError:
            raise ValidationError("customer.phone is not a valid phone number.") from None
        matches = list(patients.filter(phone=number).order_by("id")[:2])
        what = "phone"
    else:
        raise ValidationError("customer needs an id, email or phone.")
    if not matches:
        raise CustomerNotFound(f"no customer with this {what} in this organization")
    if len(matches) > 1:
        raise CustomerNotFound(f"several customers have this {what}; identify them by id")
    return matches[0]


def webhook_event_record(
    *,
    organization: Organization,
    name: str,
    data: dict[str, Any],
    patient: Patient,
    idempotency_key: str,
) -> tuple[RecordedEvent, bool]:
    """Record webhook.event; the same idempotency key within a clinic records it once.

    Returns the event and whether it was recorded now (False: the key was seen before, and
    the event returned is the one recorded then).
    """
    return event_record_once(
        scope="webhook.event",
        idempotency_key=idempotency_key,
        organization_id=organization.pk,
        type="webhook.event",
        payload=webhook_event_payload(name=name, data=data, patient=patient),
        subject_type="customer",
        subject_id=str(patient.pk),
    )


def token_hash(token: str) -> str:
    """The fingerprint kept of a bearer token (webhook token, API key): SHA-256. The tokens
    are 256 random bits, so no salt or slow hash is needed: there is nothing to guess."""
    return hashlib.sha256(token.encode()).hexdigest()


def organization_languages_set(
    *, organization: Organization, languages: list[str], fallback: str
) -> None:
    """Set the languages a clinic sends variants and reads keywords in, and its fallback (the
    language its messages' own texts are written in). Raise ValidationError for a code not
    in patients.languages; the fallback is kept out of the list (it is always enabled)."""
    organization.languages = [code for code in dict.fromkeys(languages) if code != fallback]
    organization.fallback_language = fallback
    organization.full_clean(exclude=["slug", "name", "timezone"], validate_unique=False)
    organization.save(update_fields=["languages", "fallback_language", "updated_at"])


def organization_webhook_token_issue(*, organization: Organization) -> str:
    """Issue (or rotate) the clinic's webhook bearer token; return it, to be shown once.

    Only its SHA-256 is stored; the previous token stops working at once.
    """
    token = WEBHOOK_TOKEN_PREFIX + secrets.token_urlsafe(32)
    organization.webhook_token_hash = token_hash(token)
    organization.webhook_token_issued_at = timezone.now()
    organization.save(update_fields=["webhook_token_hash", "webhook_token_issued_at", "updated_at"])
    return token


def organization_webhook_token_valid(*, organization: Organization, token: str) -> bool:
    """Whether `token` is the clinic's current webhook token (constant-time comparison)."""
    if not token or not organization.webhook_token_hash:
        return False
    return hmac.compare_digest(token_hash(token), organization.webhook_token_hash)
