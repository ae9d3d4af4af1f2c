"""payload_for_subject: the current payload of an event's subject, for conditions after a delay."""

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from common.db import _by_pk_read, model_get
from patients.models import ConsentRecord, Order, Patient, Subscription
from patients.payloads import (
    CUSTOMER_FIELD_PATHS,
    SUBJECT_TYPES,
    StoredCustomer,
    customer_payload,
    customer_summary,
    order_event_payload,
    payload_for_subject,
    stored_customers,
)
from patients.services import subscription_renew
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
from workflows.catalogue import CATALOGUE
from workflows.models import Event
from workflows.outbox import event_record

pytestmark = pytest.mark.django_db

FACTORIES: dict[str, Any] = {
    "customer": PatientFactory,
    "order": OrderFactory,
    "subscription": SubscriptionFactory,
    "cart": lambda: CartFactory(checked_out_at=timezone.now()),
    "questionnaire": QuestionnaireSubmissionFactory,
    "prescription": PrescriptionFactory,
    "requisition": RequisitionFactory,
    "appointment": AppointmentFactory,
    "lead": LeadFactory,
    "task": TaskFactory,
}


def test_every_catalogue_subject_can_be_rebuilt() -> None:
    assert {event.subject for event in CATALOGUE} <= set(SUBJECT_TYPES)
    assert set(FACTORIES) == set(SUBJECT_TYPES)


def _shape(value: Any) -> Any:
    """The keys, recursively: values move on (updatedAt), the shape must not."""
    if isinstance(value, dict):
        return {key: _shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_shape(item) for item in value]
    return type(value).__name__


@pytest.mark.parametrize("subject_type", list(FACTORIES))
def test_current_payload_has_the_recorded_event_shape(subject_type: str) -> None:
    record = FACTORIES[subject_type]()
    event = (
        Event.objects.filter(subject_type=subject_type, subject_id=str(record.pk))
        .order_by("id")
        .first()
    )
    assert event is not None
    current = payload_for_subject(subject_type, str(record.pk))
    assert current is not None
    assert _shape(current) == _shape(event.payload)


def test_order_payload_reflects_the_current_state() -> None:
    order = OrderFactory(status=Order.Status.PROCESSING)
    order.status, order.tracking_number = Order.Status.SHIPPED, "1Z1"
    order.save()
    order.patient.first_name = "Renamed"
    order.patient.save()
    current = payload_for_subject("order", str(order.pk))
    assert current is not None
    assert current["order"]["status"] == "shipped"
    assert current["order"]["trackingNumber"] == "1Z1"
    assert current["customer"]["firstName"] == "Renamed"
    assert current["order"]["customer"]["firstName"] == "Renamed"
    assert current["subscription"] is None


def test_subscription_paused_after_the_event_is_seen_as_paused() -> None:
    subscription = SubscriptionFactory(status=Subscription.Status.ACTIVE)
    recorded = Event.objects.get(type="subscription.active").payload
    subscription.status = Subscription.Status.PAUSED
    subscription.save()
    current = payload_for_subject("subscription", str(subscription.pk))
    assert recorded["subscription"]["status"] == "active"
    assert current is not None and current["subscription"]["status"] == "paused"


def test_renewal_order_carries_the_current_subscription() -> None:
    subscription = SubscriptionFactory()
    order = subscription_renew(subscription=subscription)
    current = payload_for_subject("order", str(order.pk))
    assert current is not None
    assert current["subscription"]["currentCycle"] == 2
    assert current["subscription"]["id"] == str(subscription.uuid)


def test_appointment_local_time_uses_the_patients_zone_else_the_clinics() -> None:
    starts = datetime(2025, 7, 1, 15, 0, tzinfo=UTC)
    appointment = AppointmentFactory(starts_at=starts, patient__timezone="America/Los_Angeles")
    payload = payload_for_subject("appointment", str(appointment.pk))
    assert payload is not None
    assert payload["appointment"]["startsAt"] == "2025-07-01T15:00:00+00:00"
    assert payload["appointment"]["startsAtLocal"] == "2025-07-01T08:00:00-07:00"
    assert payload["appointment"]["timezone"] == "America/Los_Angeles"
    appointment.patient.timezone = ""
    appointment.patient.save()
    payload = payload_for_subject("appointment", str(appointment.pk))
    assert payload is not None
    assert payload["appointment"]["startsAtLocal"] == "2025-07-01T11:00:00-04:00"


def test_deleted_record_gives_none() -> None:
    task = TaskFactory()
    task_id = str(task.pk)
    task.delete()
    assert payload_for_subject("task", task_id) is None


@pytest.mark.parametrize(
    ("subject_type", "subject_id"),
    [
        ("order", "999999999"),
        ("order", ""),
        ("order", "12abc"),
        ("order", "-1"),
        ("order", "9" * 30),  # beyond bigint: must not reach SQL
        ("spaceship", "1"),
        ("", ""),
    ],
)
def test_unknown_subjects_give_none(subject_type: str, subject_id: str) -> None:
    assert payload_for_subject(subject_type, subject_id) is None


def test_rebuilding_does_not_record_events() -> None:
    cart = CartFactory(checked_out_at=timezone.now())
    before = Event.objects.count()
    payload_for_subject("cart", str(cart.pk))
    assert Event.objects.count() == before


def test_rebuilding_costs_a_constant_number_of_queries(django_assert_num_queries: Any) -> None:
    subscription = SubscriptionFactory()
    order = subscription_renew(subscription=subscription)
    with django_assert_num_queries(1):
        payload_for_subject("order", str(order.pk))
    appointment = AppointmentFactory()
    with django_assert_num_queries(1):
        payload_for_subject("appointment", str(appointment.pk))


def test_model_get_loads_what_the_orm_loads() -> None:
    patient = PatientFactory(dob=date(1980, 2, 29), is_test=True, province_code="FL")
    loaded = model_get(Patient, patient.pk)
    expected = Patient.objects.get(pk=patient.pk)
    assert type(loaded) is Patient and loaded._state.adding is False
    for field in Patient._meta.concrete_fields:
        assert getattr(loaded, field.attname) == getattr(expected, field.attname), field.name
    # What ChangeTracked compares a later save against is loaded too.
    assert loaded._loaded == expected._loaded and loaded._loaded
    compiled = _by_pk_read.cache_info().misses
    model_get(Patient, patient.pk)
    assert _by_pk_read.cache_info().misses == compiled  # the SQL is compiled once


def test_model_get_of_a_missing_row_raises_does_not_exist() -> None:
    with pytest.raises(Patient.DoesNotExist):
        model_get(Patient, 987654321)


def test_an_order_event_reads_its_patient_in_the_outbox_insert() -> None:
    order = Order.objects.get(pk=OrderFactory().pk)  # its patient not loaded, as in a request
    order.status = Order.Status.SHIPPED
    with CaptureQueriesContext(connection) as queries:
        order.save()
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    # The order's UPDATE (which also reads the row it replaces, for the audit trail), then the
    # event with its NOTIFY and the audit entry: no read of the patient of its own.
    assert statements == ["UPDATE", "WITH"]
    assert queries.captured_queries[0]["sql"].startswith('UPDATE "patients_order"')
    assert '"patients_patient"' not in queries.captured_queries[0]["sql"]
    assert '"patients_auditentry"' in queries.captured_queries[1]["sql"]
    event = Event.objects.get(type="order.shipped")
    patient = Patient.objects.get(pk=order.patient_id)
    assert event.payload["customer"] == customer_payload(patient)
    assert event.payload["order"]["customer"] == customer_summary(patient)
    assert event.payload["order"]["number"] == order.number


EDGES: list[dict[str, Any]] = [
    # Microseconds and none (isoformat leaves them out), a date of birth and none, quotes,
    # backslashes and non-ASCII text, both booleans, empty strings.
    {"created_at": datetime(2025, 3, 1, 14, 5, 9, 120000, tzinfo=UTC), "dob": None},
    {"created_at": datetime(2025, 3, 1, 14, 5, 9, tzinfo=UTC), "dob": date(1980, 2, 29)},
    {"created_at": datetime(2025, 3, 1, 14, 5, 9, 7, tzinfo=UTC), "dob": date(1901, 1, 1)},
    {"first_name": "Zoë 'Jo'", "last_name": 'O"Brien \\ 李', "email": "", "is_test": True},
    {"address2": "", "timezone": "", "gender": "", "source": ""},
]


@pytest.mark.parametrize("fields", EDGES)
def test_postgresql_builds_the_customer_as_python_does(fields: dict[str, Any]) -> None:
    created_at = fields.pop("created_at", None)
    patient = PatientFactory(**fields)
    if created_at is not None:
        Patient.objects.filter(pk=patient.pk).update(created_at=created_at)
    order = Order.objects.get(
        pk=OrderFactory(patient=patient, organization=patient.organization).pk
    )
    order.status = Order.Status.SHIPPED
    order.save()
    event = Event.objects.get(type="order.shipped", subject_id=str(order.pk))
    patient = Patient.objects.get(pk=patient.pk)
    assert event.payload["customer"] == customer_payload(patient)
    assert event.payload["order"]["customer"] == customer_summary(patient)


def test_the_recorded_event_loads_the_payload_postgresql_built() -> None:
    order = Order.objects.get(pk=OrderFactory().pk)
    event = event_record(
        organization_id=order.organization_id,
        type="order.shipped",
        payload=order_event_payload(order),
        dedupe_key=f"test:{order.pk}",
    )
    assert event is not None
    assert event.payload["customer"]["id"] == str(order.patient.uuid)  # read when first used


def test_elsewhere_the_outbox_reads_the_patient_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    # The embedded SQLite setup: the payload is built in Python, reading the patient once
    # (and its consent history, for customer.acceptMarketing).
    order = Order.objects.get(pk=OrderFactory().pk)
    payload = order_event_payload(order)
    assert isinstance(payload["customer"], StoredCustomer)
    monkeypatch.setattr(connection, "vendor", "sqlite")
    with CaptureQueriesContext(connection) as queries:
        event = event_record(
            organization_id=order.organization_id,
            type="order.shipped",
            payload=payload,
            dedupe_key=f"test:{order.pk}",
        )
    reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    assert len(reads) == 2 and '"patients_patient"' in reads[0]
    assert '"patients_consentrecord"' in reads[1]
    monkeypatch.undo()
    patient = Patient.objects.get(pk=order.patient_id)
    assert event is not None and event.payload == Event.objects.get(pk=event.pk).payload
    assert event.payload["customer"] == customer_payload(patient)
    assert event.payload["order"]["customer"] == customer_summary(patient)


def test_a_patient_in_hand_is_built_in_python() -> None:
    order = OrderFactory()  # the factory's order holds its patient
    payload = order_event_payload(order)
    assert payload["customer"] == customer_payload(order.patient)
    assert stored_customers(payload) == (payload, [])


def test_current_payloads_never_leave_customers_to_the_outbox() -> None:
    for subject_type, factory in FACTORIES.items():
        record = factory()
        payload = payload_for_subject(subject_type, str(record.pk))
        assert payload is not None and stored_customers(payload)[1] == [], subject_type


# --- customer.acceptMarketing: derived from the consent history, never a flag ---------------

MARKETING_TEXT = "Yes, text me offers. Reply STOP to opt out."
# Histories and what a marketing text may rely on: the same answer from Python and SQL.
MARKETING_HISTORIES: list[tuple[str, list[dict[str, Any]], bool]] = [
    ("none", [], False),
    ("written opt-in", [{"consent_text": MARKETING_TEXT}], True),
    ("opt-in without its text", [{"consent_text": "  "}], False),
    (
        "opt-in, then opted out",
        [
            {"consent_text": MARKETING_TEXT, "hours": -2},
            {"action": "opt_out", "source": "admin", "consent_text": ""},
        ],
        False,
    ),
    (
        "opt-in, then STOP under the other purpose",
        [
            {"consent_text": MARKETING_TEXT, "hours": -2},
            {"purpose": "transactional", "action": "opt_out", "source": "inbound_keyword"},
        ],
        False,
    ),
    (
        "back-dated opt-out entered later",
        [
            {"consent_text": MARKETING_TEXT},
            {"action": "opt_out", "source": "admin", "hours": -5},
        ],
        True,
    ),
    ("transactional only", [{"purpose": "transactional"}], False),
]


def _marketing_history(patient: Patient, decisions: list[dict[str, Any]]) -> None:
    for decision in decisions:
        decision = dict(decision)
        hours = decision.pop("hours", 0)
        ConsentRecord.objects.create(
            patient=patient,
            purpose=decision.pop("purpose", "marketing"),
            action=decision.pop("action", "opt_in"),
            source=decision.pop("source", "signup_form"),
            occurred_at=timezone.now() + timedelta(hours=hours),
            **decision,
        )


@pytest.mark.parametrize(
    ("decisions", "expected"),
    [pytest.param(d, e, id=name) for name, d, e in MARKETING_HISTORIES],
)
def test_accept_marketing_is_derived_from_the_history_on_every_path(
    decisions: list[dict[str, Any]], expected: bool
) -> None:
    patient = PatientFactory()
    _marketing_history(patient, decisions)
    # Python, from a patient in hand.
    assert customer_payload(Patient.objects.get(pk=patient.pk))["acceptMarketing"] is expected
    # PostgreSQL, in the outbox INSERT's single statement.
    order = Order.objects.get(pk=OrderFactory(patient=patient).pk)
    order.status = Order.Status.SHIPPED
    with CaptureQueriesContext(connection) as queries:
        order.save()
    # The order, then the event (with the audit trail's entry): one statement.
    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    assert statements == ["UPDATE", "WITH"]
    event = Event.objects.get(type="order.shipped", subject_id=str(order.pk))
    assert event.payload["customer"]["acceptMarketing"] is expected
    # Rebuilt after a delay, in the record's one query.
    current = payload_for_subject("order", str(order.pk))
    assert current is not None and current["customer"]["acceptMarketing"] is expected
    current = payload_for_subject("customer", str(patient.pk))
    assert current is not None and current["customer"]["acceptMarketing"] is expected


def test_a_stop_turns_accept_marketing_off_in_the_next_event() -> None:
    patient = PatientFactory()
    _marketing_history(patient, [{"consent_text": MARKETING_TEXT, "hours": -1}])
    assert payload_for_subject("customer", str(patient.pk))["customer"]["acceptMarketing"]
    ConsentRecord.objects.create(
        patient=patient, purpose="transactional", action="opt_out", source="provider_error"
    )
    assert not payload_for_subject("customer", str(patient.pk))["customer"]["acceptMarketing"]


def test_the_payload_has_no_accept_marketing_field_to_change() -> None:
    assert "accept_marketing" not in {f.name for f in Patient._meta.get_fields()}
    assert "acceptMarketing" not in CUSTOMER_FIELD_PATHS.values()
