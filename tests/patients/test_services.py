import hashlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.utils import timezone

from patients.models import Order, Organization, Subscription
from patients.services import (
    CustomerNotFound,
    customer_resolve,
    inbound_message_record,
    organization_webhook_token_issue,
    organization_webhook_token_valid,
    subscription_renew,
    webhook_event_record,
)
from tests.factories import OrderFactory, OrganizationFactory, PatientFactory, SubscriptionFactory
from workflows.models import Event

pytestmark = pytest.mark.django_db


# --- subscription_renew ----------------------------------------------------------------------


def test_renewal_creates_the_cycle_order_and_advances_the_subscription() -> None:
    renews_on = timezone.localdate() + timedelta(days=2)
    subscription = SubscriptionFactory(
        price=Decimal("39.50"), interval_days=28, current_cycle=2, next_cycle_date=renews_on
    )
    order = subscription_renew(subscription=subscription)
    assert order.subscription_id == subscription.pk
    assert order.patient_id == subscription.patient_id
    assert order.organization_id == subscription.organization_id
    assert order.number == f"S{subscription.pk}-3"
    assert order.total_amount == Decimal("39.50")
    assert order.line_items == [
        {
            "name": subscription.product_name,
            "productId": subscription.product_id,
            "price": "39.50",
            "quantity": 1,
            "isSubscription": True,
        }
    ]
    stored = Subscription.objects.get(pk=subscription.pk)
    assert stored.current_cycle == 3
    assert stored.next_cycle_date == renews_on + timedelta(days=28)
    # The caller's copy follows, so it can renew again.
    assert subscription.current_cycle == 3
    cycle_event = Event.objects.get(type="order.subscription_cycle")
    assert cycle_event.subject_id == str(order.pk)
    assert cycle_event.payload["subscription"]["currentCycle"] == 2  # snapshot at creation
    assert Event.objects.filter(type="order.created", subject_id=str(order.pk)).count() == 1


def test_renewing_twice_makes_two_cycles() -> None:
    subscription = SubscriptionFactory()
    first = subscription_renew(subscription=subscription)
    second = subscription_renew(subscription=subscription)
    assert (first.number, second.number) == (f"S{subscription.pk}-2", f"S{subscription.pk}-3")
    assert Event.objects.filter(type="order.subscription_cycle").count() == 2


def test_a_stale_copy_cannot_renew_the_same_cycle_again() -> None:
    subscription = SubscriptionFactory()
    stale = Subscription.objects.get(pk=subscription.pk)
    subscription_renew(subscription=subscription)
    with pytest.raises(ValidationError, match="renewed meanwhile"):
        subscription_renew(subscription=stale)
    assert Order.objects.filter(subscription=subscription).count() == 1


@pytest.mark.parametrize("status", ["created", "paused", "cancelled"])
def test_only_active_subscriptions_renew(status: str) -> None:
    subscription = SubscriptionFactory(status=status)
    with pytest.raises(ValidationError, match="Only active"):
        subscription_renew(subscription=subscription)
    assert not Order.objects.exists()
    assert Subscription.objects.get(pk=subscription.pk).current_cycle == 1


def test_renewal_without_a_date_counts_from_today() -> None:
    subscription = SubscriptionFactory(next_cycle_date=None, interval_days=30)
    subscription_renew(subscription=subscription)
    assert Subscription.objects.get(pk=subscription.pk).next_cycle_date == (
        timezone.localdate() + timedelta(days=30)
    )


def test_renewal_order_number_collision_rolls_everything_back() -> None:
    subscription = SubscriptionFactory()
    OrderFactory(patient=subscription.patient, number=f"S{subscription.pk}-2")
    with pytest.raises(IntegrityError):
        subscription_renew(subscription=subscription)
    assert Subscription.objects.get(pk=subscription.pk).current_cycle == 1


# --- inbound_message_record ------------------------------------------------------------------


def test_inbound_message_resolves_the_sender_within_the_organization() -> None:
    patient = PatientFactory(phone="+14155550123")
    PatientFactory(phone="+14155550123")  # same number at another clinic
    event = inbound_message_record(
        organization=patient.organization,
        from_="(415) 555-0123",
        to="+15005550006",
        body="Running late",
        provider_sid="SM" + "1" * 32,
    )
    assert event is not None and event.type == "message.inbound"
    assert event.organization_id == patient.organization_id
    message = event.payload["message"]
    assert message["from"] == "+14155550123"
    assert message["body"] == "Running late" and message["channel"] == "SMS"
    assert message["customer"]["id"] == str(patient.uuid)
    assert event.payload["customer"]["phone"] == "+14155550123"
    assert (event.subject_type, event.subject_id) == ("customer", str(patient.pk))


def test_inbound_message_from_an_unknown_number_has_no_customer() -> None:
    organization = OrganizationFactory()
    event = inbound_message_record(
        organization=organization, from_="+14155550199", to="+15005550006", body="Hi"
    )
    assert event is not None
    assert event.payload["customer"] is None
    assert event.payload["message"]["customer"] is None
    assert event.subject_type == ""


def test_inbound_message_shared_phone_resolves_to_the_oldest_patient() -> None:
    first = PatientFactory(phone="+14155550123")
    PatientFactory(organization=first.organization, phone="+14155550123")
    event = inbound_message_record(
        organization=first.organization, from_="+14155550123", to="+1", body="x"
    )
    assert event.payload["customer"]["id"] == str(first.uuid)


def test_a_redelivered_inbound_message_records_once() -> None:
    organization = OrganizationFactory()
    sid = "SM" + "2" * 32
    for _ in range(2):
        inbound_message_record(
            organization=organization, from_="+14155550199", to="+1", body="x", provider_sid=sid
        )
    assert Event.objects.filter(type="message.inbound").count() == 1


def test_messages_without_a_provider_id_each_record() -> None:
    organization = OrganizationFactory()
    for _ in range(2):
        inbound_message_record(
            organization=organization, from_="+14155550199", to="+1", body="x", channel="WEB"
        )
    assert Event.objects.filter(type="message.inbound").count() == 2


def test_inbound_message_refuses_an_unknown_channel() -> None:
    with pytest.raises(ValueError, match="channel"):
        inbound_message_record(
            organization=OrganizationFactory(), from_="+1", to="+1", body="x", channel="FAX"
        )


def test_inbound_message_keeps_a_sender_that_is_not_a_phone_number() -> None:
    event = inbound_message_record(
        organization=OrganizationFactory(), from_=" web:visitor-7 ", to="", body="x", channel="WEB"
    )
    assert event.payload["message"]["from"] == "web:visitor-7"
    assert event.payload["customer"] is None


# --- customer_resolve ------------------------------------------------------------------------


def test_customer_resolved_by_id_email_or_phone() -> None:
    patient = PatientFactory(email="Ann@Example.com", phone="+14155550123")
    organization = patient.organization
    assert customer_resolve(organization=organization, id=str(patient.uuid)) == patient
    assert customer_resolve(organization=organization, email="ann@example.COM") == patient
    assert customer_resolve(organization=organization, phone="415-555-0123") == patient


def test_customer_of_another_organization_is_not_found() -> None:
    patient = PatientFactory()
    with pytest.raises(CustomerNotFound, match="no customer with this id"):
        customer_resolve(organization=OrganizationFactory(), id=str(patient.uuid))


def test_ambiguous_customer_is_refused() -> None:
    patient = PatientFactory(email="shared@example.com")
    PatientFactory(organization=patient.organization, email="shared@example.com")
    with pytest.raises(CustomerNotFound, match="several customers"):
        customer_resolve(organization=patient.organization, email="shared@example.com")


@pytest.mark.parametrize(
    ("lookup", "message"),
    [
        ({"id": "not-a-uuid"}, "customer.id"),
        ({"phone": "12"}, "customer.phone"),
        ({}, "needs an id, email or phone"),
    ],
)
def test_malformed_customer_lookups(lookup: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        customer_resolve(organization=OrganizationFactory(), **lookup)


# --- webhook events and tokens ---------------------------------------------------------------


def test_webhook_event_once_per_idempotency_key_and_organization() -> None:
    patient = PatientFactory()
    other = PatientFactory()
    first, created = webhook_event_record(
        organization=patient.organization,
        name="kit_shipped",
        data={"kitId": "K1"},
        patient=patient,
        idempotency_key="k-1",
    )
    again, created_again = webhook_event_record(
        organization=patient.organization,
        name="changed",
        data={},
        patient=patient,
        idempotency_key="k-1",
    )
    elsewhere, created_elsewhere = webhook_event_record(
        organization=other.organization,
        name="kit_shipped",
        data={},
        patient=other,
        idempotency_key="k-1",
    )
    assert (created, created_again, created_elsewhere) == (True, False, True)
    assert again.pk == first.pk and elsewhere.pk != first.pk
    assert first.payload["webhook"] == {"name": "kit_shipped", "data": {"kitId": "K1"}}
    assert first.payload["customer"]["id"] == str(patient.uuid)


def test_token_is_stored_only_as_its_hash() -> None:
    organization = OrganizationFactory()
    token = organization_webhook_token_issue(organization=organization)
    stored = Organization.objects.get(pk=organization.pk)
    assert token.startswith("cfwh_") and len(token) > 40
    assert stored.webhook_token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(Organization.objects.filter(pk=organization.pk).values().get())
    assert stored.webhook_token_issued_at is not None
    assert organization_webhook_token_valid(organization=stored, token=token)


def test_rotating_the_token_revokes_the_old_one() -> None:
    organization = OrganizationFactory()
    old = organization_webhook_token_issue(organization=organization)
    new = organization_webhook_token_issue(organization=organization)
    assert old != new
    assert not organization_webhook_token_valid(organization=organization, token=old)
    assert organization_webhook_token_valid(organization=organization, token=new)


@pytest.mark.parametrize("token", ["", "cfwh_wrong"])
def test_wrong_or_empty_tokens_are_invalid(token: str) -> None:
    organization = OrganizationFactory()
    organization_webhook_token_issue(organization=organization)
    assert not organization_webhook_token_valid(organization=organization, token=token)


def test_no_token_issued_accepts_nothing() -> None:
    organization = OrganizationFactory()
    assert not organization_webhook_token_valid(organization=organization, token="")
    empty_hash = hashlib.sha256(b"").hexdigest()
    assert organization.webhook_token_hash != empty_hash
