import pytest
from django.db import transaction

from patients.models import Order, Patient
from tests.factories import OrderFactory, PatientFactory
from workflows.models import Event

pytestmark = pytest.mark.django_db


def _types() -> list[str]:
    return list(Event.objects.order_by("id").values_list("type", flat=True))


def test_new_patient_records_customer_signup_with_platform_field_names() -> None:
    patient = PatientFactory(first_name="Ann", phone="+14155550123")
    event = Event.objects.get(type="customer.signup")
    assert event.organization_id == patient.organization_id
    assert event.payload["customer"]["firstName"] == "Ann"
    assert event.payload["customer"]["phone"] == "+14155550123"
    assert event.payload["customer"]["id"] == str(patient.uuid)
    assert event.subject_type == "customer" and event.subject_id == str(patient.pk)


def test_saving_a_patient_unchanged_records_nothing_more() -> None:
    patient = PatientFactory()
    patient.save()
    Patient.objects.get(pk=patient.pk).save()
    assert _types() == ["customer.signup"]


def test_order_created_then_each_real_status_change_once() -> None:
    order = OrderFactory(status=Order.Status.PROCESSING)
    order.status = Order.Status.SHIPPED
    order.tracking_number = "1Z999"
    order.save()
    order.save()  # no change: no event
    order.tracking_number = "1Z998"
    order.save()  # a change, but not of status
    assert _types() == ["customer.signup", "order.created", "order.shipped"]
    shipped = Event.objects.get(type="order.shipped")
    assert shipped.payload["order"]["trackingNumber"] == "1Z999"
    assert shipped.payload["order"]["number"] == order.number
    assert shipped.payload["customer"]["phone"] == order.patient.phone
    assert shipped.payload["order"]["customer"]["firstName"] == order.patient.first_name


def test_status_change_detected_on_a_freshly_loaded_instance() -> None:
    order = OrderFactory(status=Order.Status.PROCESSING)
    loaded = Order.objects.get(pk=order.pk)
    loaded.status = Order.Status.PROCESSING
    loaded.save()
    assert "order.processing" not in _types()
    loaded.status = Order.Status.AWAITING_SHIPMENT
    loaded.save(update_fields=["status"])
    assert _types()[-1] == "order.awaiting_shipment"


def test_going_back_and_forth_records_each_transition() -> None:
    order = OrderFactory(status=Order.Status.PROCESSING)
    for status in ("shipped", "processing", "shipped"):
        order.status = status
        order.save()
    assert _types()[2:] == ["order.shipped", "order.processing", "order.shipped"]


def test_two_stale_copies_saving_the_same_transition_record_one_event() -> None:
    order = OrderFactory(status=Order.Status.PROCESSING)
    first, second = Order.objects.get(pk=order.pk), Order.objects.get(pk=order.pk)
    first.status = second.status = Order.Status.SHIPPED
    first.save()
    second.save()
    assert _types().count("order.shipped") == 1


def test_rolled_back_change_leaves_no_event() -> None:
    order = OrderFactory(status=Order.Status.PROCESSING)
    with pytest.raises(RuntimeError), transaction.atomic():
        order.status = Order.Status.SHIPPED
        order.save()
        raise RuntimeError("boom")
    assert "order.shipped" not in _types()


def test_fixture_loading_records_nothing() -> None:
    patient = PatientFactory()
    before = Event.objects.count()
    from django.db.models.signals import post_save

    post_save.send(sender=type(patient), instance=patient, created=True, raw=True)
    assert Event.objects.count() == before
