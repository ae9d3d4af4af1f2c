"""Receivers of the trigger records: each real change recorded exactly once, nothing else."""

from datetime import date, timedelta
from typing import Any

import pytest
from django.db import transaction
from django.db.models.signals import post_save
from django.utils import timezone

from patients.models import (
    Cart,
    Lead,
    Patient,
    Prescription,
    Requisition,
    Subscription,
    Task,
)
from tests.factories import (
    AppointmentFactory,
    CartFactory,
    LeadFactory,
    OrderFactory,
    PatientFactory,
    PrescriptionFactory,
    QuestionnaireSubmissionFactory,
    RequisitionFactory,
    SubscriptionFactory,
    TaskFactory,
)
from workflows.models import Event

pytestmark = pytest.mark.django_db


def _types(**filters: Any) -> list[str]:
    return list(Event.objects.filter(**filters).order_by("id").values_list("type", flat=True))


def _new_types(before: int) -> list[str]:
    return list(Event.objects.filter(id__gt=before).order_by("id").values_list("type", flat=True))


def _last_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


# --- customer.updated ------------------------------------------------------------------------


def test_profile_change_records_customer_updated_with_the_changed_paths() -> None:
    patient = PatientFactory(phone="+14155550100")
    patient.phone = "+14155550101"
    patient.city = "Tampa"
    patient.save()
    event = Event.objects.get(type="customer.updated")
    assert event.payload["changedFields"] == ["defaultAddress.city", "phone"]
    assert event.payload["customer"]["phone"] == "+14155550101"
    assert event.subject_type == "customer" and event.subject_id == str(patient.pk)


def test_saving_an_unchanged_profile_records_nothing() -> None:
    patient = PatientFactory()
    before = _last_id()
    patient.save()
    Patient.objects.get(pk=patient.pk).save()
    assert _new_types(before) == []


def test_changing_a_non_profile_field_records_nothing() -> None:
    patient = PatientFactory()
    before = _last_id()
    patient.is_test = True
    patient.save()
    assert _new_types(before) == []


def test_setting_a_field_to_the_value_it_has_is_no_change() -> None:
    patient = PatientFactory(dob=date(1990, 1, 2))
    loaded = Patient.objects.get(pk=patient.pk)
    before = _last_id()
    loaded.dob = date(1990, 1, 2)
    loaded.first_name = patient.first_name
    loaded.save()
    assert _new_types(before) == []


def test_each_profile_change_back_and_forth_is_recorded() -> None:
    patient = PatientFactory(city="Tampa")
    for city in ("Miami", "Tampa", "Miami"):
        patient.city = city
        patient.save()
    assert _types(type="customer.updated").count("customer.updated") == 3


def test_two_stale_copies_saving_the_same_change_record_one_event() -> None:
    patient = PatientFactory()
    first, second = Patient.objects.get(pk=patient.pk), Patient.objects.get(pk=patient.pk)
    first.email = second.email = "new@example.com"
    first.save()
    second.save()
    assert _types().count("customer.updated") == 1


def test_two_stale_copies_making_different_changes_both_record() -> None:
    patient = PatientFactory()
    first, second = Patient.objects.get(pk=patient.pk), Patient.objects.get(pk=patient.pk)
    first.email = "one@example.com"
    second.email = "two@example.com"
    first.save()
    second.save()
    assert _types().count("customer.updated") == 2


def test_update_fields_limit_what_counts_as_changed() -> None:
    patient = PatientFactory()
    before = _last_id()
    patient.first_name = "Unsaved"
    patient.save(update_fields=["is_test"])
    assert _new_types(before) == []
    patient.save(update_fields=["first_name"])
    assert _new_types(before) == ["customer.updated"]
    assert Patient.objects.get(pk=patient.pk).profile_version == 1


def test_refresh_from_db_takes_the_database_values_as_loaded() -> None:
    patient = PatientFactory(city="Tampa")
    Patient.objects.filter(pk=patient.pk).update(city="Miami")
    patient.refresh_from_db()
    before = _last_id()
    patient.save()
    assert _new_types(before) == []


def test_deferred_profile_fields_are_not_claimed_as_changed() -> None:
    patient = PatientFactory()
    partial = Patient.objects.only("id", "organization_id", "is_test").get(pk=patient.pk)
    before = _last_id()
    partial.is_test = True
    partial.save()
    assert _new_types(before) == []


def test_rolled_back_profile_change_leaves_no_event() -> None:
    patient = PatientFactory()
    with pytest.raises(RuntimeError), transaction.atomic():
        patient.first_name = "Gone"
        patient.save()
        raise RuntimeError("boom")
    assert "customer.updated" not in _types()


# --- lifecycles ------------------------------------------------------------------------------


def test_subscription_lifecycle_records_each_status_once() -> None:
    subscription = SubscriptionFactory(status=Subscription.Status.CREATED)
    for status in ("active", "active", "paused", "active", "cancelled"):
        subscription.status = status
        subscription.save()
    subscription.product_name = "Renamed"
    subscription.save()
    assert _types(subject_type="subscription") == [
        "subscription.created",
        "subscription.active",
        "subscription.paused",
        "subscription.active",
        "subscription.cancelled",
    ]
    event = Event.objects.filter(type="subscription.paused").get()
    assert event.payload["subscription"]["status"] == "paused"
    assert event.payload["customer"]["id"] == str(subscription.patient.uuid)
    assert event.subject_id == str(subscription.pk)


def test_record_created_in_a_status_records_creation_and_that_status() -> None:
    SubscriptionFactory(status=Subscription.Status.ACTIVE)
    PrescriptionFactory(status=Prescription.Status.FULFILLED)
    assert _types(subject_type="subscription") == ["subscription.created", "subscription.active"]
    assert _types(subject_type="prescription") == [
        "prescription.created",
        "prescription.fulfilled",
    ]


def test_status_without_an_event_records_nothing() -> None:
    subscription = SubscriptionFactory(status=Subscription.Status.ACTIVE)
    before = _last_id()
    subscription.status = Subscription.Status.CREATED
    subscription.save()
    assert _new_types(before) == []


def test_appointment_booked_once_then_each_status() -> None:
    appointment = AppointmentFactory()
    for status in ("confirmed", "cancelled", "booked", "completed", "no_show"):
        appointment.status = status
        appointment.save()
    assert _types(subject_type="appointment") == [
        "appointment.booked",
        "appointment.confirmed",
        "appointment.cancelled",
        "appointment.booked",
        "appointment.completed",
        "appointment.no_show",
    ]


def test_stale_copies_of_a_status_change_record_one_event() -> None:
    requisition = RequisitionFactory()
    first = Requisition.objects.get(pk=requisition.pk)
    second = Requisition.objects.get(pk=requisition.pk)
    first.status = second.status = Requisition.Status.SUBMITTED
    first.save()
    second.save()
    assert _types(subject_type="requisition") == ["requisition.created", "requisition.submitted"]


def test_requisition_lifecycle() -> None:
    requisition = RequisitionFactory()
    for status in ("submitted", "collected", "resulted"):
        requisition.status = status
        requisition.save(update_fields=["status"])
    assert _types(subject_type="requisition") == [
        "requisition.created",
        "requisition.submitted",
        "requisition.collected",
        "requisition.resulted",
    ]
    assert Requisition.objects.get(pk=requisition.pk).status_version == 3


def test_lead_converted_carries_the_patient_it_became() -> None:
    lead = LeadFactory()
    patient = PatientFactory(organization=lead.organization)
    lead.status, lead.converted_patient = Lead.Status.CONVERTED, patient
    lead.save()
    created, converted = Event.objects.filter(subject_type="lead").order_by("id")
    assert created.type == "lead.created" and created.payload["customer"] is None
    assert converted.type == "lead.converted"
    assert converted.payload["customer"]["id"] == str(patient.uuid)
    assert converted.payload["lead"]["status"] == "converted"


def test_lead_lost() -> None:
    lead = LeadFactory()
    lead.status = Lead.Status.LOST
    lead.save()
    assert _types(subject_type="lead") == ["lead.created", "lead.lost"]


def test_tasks_with_and_without_a_patient() -> None:
    patient = PatientFactory()
    with_patient = TaskFactory(organization=patient.organization, patient=patient)
    without = TaskFactory(organization=patient.organization)
    with_patient.status = Task.Status.COMPLETED
    with_patient.save()
    without.status = Task.Status.CANCELLED
    without.save()
    assert _types(subject_type="task") == [
        "task.created",
        "task.created",
        "task.completed",
        "task.cancelled",
    ]
    completed = Event.objects.get(type="task.completed")
    assert completed.payload["customer"]["phone"] == patient.phone
    assert Event.objects.get(type="task.cancelled").payload["customer"] is None


def test_questionnaire_submitted_once_without_answers() -> None:
    submission = QuestionnaireSubmissionFactory(answers={"diagnosis": "hypertension"})
    submission.questionnaire_name = "Renamed"
    submission.save()
    event = Event.objects.get(subject_type="questionnaire")
    assert event.type == "questionnaire.submitted"
    assert event.payload["questionnaire"] == {
        "id": str(submission.uuid),
        "name": "Intake questionnaire",
        "submittedAt": submission.submitted_at.isoformat(),
    }
    assert "hypertension" not in str(event.payload)


def test_record_organization_defaults_to_the_patients() -> None:
    patient = PatientFactory()
    prescription = Prescription.objects.create(patient=patient, medication_name="X")
    assert prescription.organization_id == patient.organization_id
    assert Event.objects.get(type="prescription.created").organization_id == (
        patient.organization_id
    )


# --- cart.checkout ---------------------------------------------------------------------------


def test_cart_checkout_recorded_when_checkout_starts() -> None:
    cart = CartFactory()
    url_at_checkout = cart.checkout_url
    assert _types(subject_type="cart") == []
    cart.checked_out_at = timezone.now()
    cart.save()
    cart.save()
    cart.checkout_url = "https://shop.example.com/other"
    cart.save()
    event = Event.objects.get(subject_type="cart")
    assert event.type == "cart.checkout"
    assert event.payload["cart"]["checkoutUrl"] == url_at_checkout
    assert event.payload["cart"]["lineItems"][0]["name"] == "Vitamin D"


def test_cart_created_at_checkout_and_restarted_checkout() -> None:
    cart = CartFactory(checked_out_at=timezone.now())
    cart.checked_out_at = None
    cart.save()
    cart.checked_out_at = timezone.now() + timedelta(minutes=5)
    cart.save()
    assert _types(subject_type="cart") == ["cart.checkout", "cart.checkout"]
    assert Cart.objects.count() == 1


# --- order.subscription_cycle ----------------------------------------------------------------


def test_order_with_a_subscription_records_created_and_subscription_cycle() -> None:
    subscription = SubscriptionFactory()
    order = OrderFactory(patient=subscription.patient, subscription=subscription)
    order.save()
    assert _types(subject_type="order") == ["order.created", "order.subscription_cycle"]
    cycle = Event.objects.get(type="order.subscription_cycle")
    assert cycle.payload["subscription"]["id"] == str(subscription.uuid)
    assert cycle.payload["order"]["number"] == order.number


def test_one_off_order_has_no_subscription() -> None:
    OrderFactory()
    event = Event.objects.get(type="order.created")
    assert event.payload["subscription"] is None
    assert "order.subscription_cycle" not in _types()


def test_order_payload_normalises_free_json_line_items_and_address() -> None:
    OrderFactory(
        line_items=[{"name": "A", "price": 5, "quantity": "2", "extra": "x"}, "junk"],
        shipping_address={"city": "Tampa", "secret": "x"},
    )
    order = Event.objects.get(type="order.created").payload["order"]
    assert order["lineItems"] == [
        {"name": "A", "productId": "", "price": 5.0, "quantity": 2, "isSubscription": False}
    ]
    assert order["shippingAddress"]["city"] == "Tampa"
    assert "secret" not in order["shippingAddress"]


def test_odd_line_item_values_never_break_a_save() -> None:
    OrderFactory(line_items=[{"price": "free", "quantity": None}])
    item = Event.objects.get(type="order.created").payload["order"]["lineItems"][0]
    assert item["price"] == 0.0 and item["quantity"] == 1


# --- raw saves -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory",
    [
        SubscriptionFactory,
        AppointmentFactory,
        CartFactory,
        QuestionnaireSubmissionFactory,
        PrescriptionFactory,
        RequisitionFactory,
        LeadFactory,
        TaskFactory,
    ],
)
def test_fixture_loading_records_nothing(factory: Any) -> None:
    record = factory()
    if isinstance(record, Cart):
        record.checked_out_at = timezone.now()
    before = _last_id()
    post_save.send(sender=type(record), instance=record, created=True, raw=True)
    assert _new_types(before) == []
