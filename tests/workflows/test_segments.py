"""Segments: the field catalogue, the filter's translation to SQL and its refusals, and the
selector broadcasts read (`segment_patients`). Agreement with filter_matches on generated
filters is tests/workflows/test_segments_agreement.py."""

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from patients.models import Order, Patient
from tests.factories import (
    AppointmentFactory,
    OrderFactory,
    OrganizationFactory,
    PatientFactory,
    SubscriptionFactory,
)
from workflows.filters import FilterError, filter_matches
from workflows.models import Segment
from workflows.segments import (
    SEGMENT_FIELDS,
    segment_document,
    segment_field_catalogue,
    segment_patients,
    segment_q,
)

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def _members(query: Any, organization: Any) -> set[str]:
    patients = Patient.objects.filter(organization=organization).filter(segment_q(query, now=NOW))
    return set(patients.values_list("first_name", flat=True))


def _ordered(patient: Patient, days_ago: float) -> Order:
    order = OrderFactory(patient=patient)
    Order.objects.filter(pk=order.pk).update(created_at=NOW - timedelta(days=days_ago))
    return order


@pytest.fixture
def clinic() -> Any:
    clinic = OrganizationFactory()
    ana = PatientFactory(organization=clinic, first_name="Ana", province_code="FL")
    bo = PatientFactory(organization=clinic, first_name="Bo", province_code="NY")
    PatientFactory(organization=clinic, first_name="Cy", province_code="FL")
    _ordered(ana, 90)
    _ordered(ana, 200)
    _ordered(bo, 89.9)
    SubscriptionFactory(patient=ana, status="active", product_id="SKU-Z", product_name="Zinc")
    SubscriptionFactory(patient=ana, status="active", product_id="SKU-D", product_name="Vit D")
    SubscriptionFactory(patient=bo, status="cancelled", product_id="SKU-Z", product_name="Zinc")
    PatientFactory(first_name="Elsewhere", province_code="FL")  # another clinic
    return clinic


# --- the brief's examples, and "no orders" -------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"customer.provinceCode": "FL"}, {"Ana", "Cy"}),
        ({"customer.defaultAddress.provinceCode": "FL"}, {"Ana", "Cy"}),
        (
            {"subscriptions": {"$elemMatch": {"status": "active", "product.name": "Zinc"}}},
            {"Ana"},
        ),
        # any subscription's status / product, not necessarily the same one
        ({"subscriptions.status": "cancelled", "subscriptions.product.id": "SKU-Z"}, {"Bo"}),
        ({"orders.daysSinceLast": {"$gt": 90}}, set()),
        ({"orders.daysSinceLast": {"$gte": 90}}, {"Ana"}),
        ({"orders.daysSinceLast": {"$lt": 90}}, {"Bo"}),
        ({"orders.daysSinceLast": 89}, {"Bo"}),
        # no orders: daysSinceLast is null, so only null (or count 0) finds them
        ({"orders.daysSinceLast": None}, {"Cy"}),
        ({"orders.count": 0}, {"Cy"}),
        ({"orders.count": {"$gte": 2}}, {"Ana"}),
        ({"orders.items": {"$size": 1}}, {"Bo"}),
        ({"subscriptions.status": {"$ne": "active"}}, {"Bo", "Cy"}),
        ({"$nor": [{"customer.provinceCode": "FL"}]}, {"Bo"}),
        ({"customer.provinceCode": {"$in": ["NY", "GA"]}}, {"Bo"}),
        ({"appointments.count": 0}, {"Ana", "Bo", "Cy"}),
        ({}, {"Ana", "Bo", "Cy"}),
    ],
)
def test_filters_choose_the_patients_their_documents_match(
    clinic: Any, query: dict[str, Any], expected: set[str]
) -> None:
    assert _members(query, clinic) == expected
    patients = Patient.objects.filter(organization=clinic).prefetch_related(
        "subscriptions", "orders", "appointments"
    )
    matched = {
        p.first_name for p in patients if filter_matches(query, segment_document(p, now=NOW))
    }
    assert matched == expected


def test_dates_compare_with_full_dates_and_date_literals() -> None:
    clinic = OrganizationFactory()
    PatientFactory(organization=clinic, first_name="Old", dob=date(1950, 1, 2))
    PatientFactory(organization=clinic, first_name="Young", dob=date(2001, 1, 1))
    PatientFactory(organization=clinic, first_name="Unknown", dob=None)
    assert _members({"customer.dob": {"$lt": "1960-01-01"}}, clinic) == {"Old"}
    assert _members({"customer.dob": {"$gte": {"$date": "2001-01-01T00:00:00Z"}}}, clinic) == {
        "Young"
    }
    # after midnight UTC of 2001-01-01, that date (its midnight) is no longer "at or after"
    assert _members({"customer.dob": {"$gte": {"$date": "2001-01-01T00:00:01Z"}}}, clinic) == set()
    assert _members({"customer.dob": None}, clinic) == {"Unknown"}
    assert _members({"customer.dob": "1950-1-2"}, clinic) == set()  # never the document's text


def test_text_compares_by_code_point_as_the_matcher_does() -> None:
    clinic = OrganizationFactory()
    for name in ("apple", "Banana", "Ångström", "zoë"):
        PatientFactory(organization=clinic, first_name=name)
    # "B" < "a" < "z" < "Å" in code points, whatever the database's locale says
    assert _members({"customer.firstName": {"$gt": "Z"}}, clinic) == {"apple", "zoë", "Ångström"}
    assert _members({"customer.firstName": {"$lt": "a"}}, clinic) == {"Banana"}


def test_a_datetime_compares_with_a_date_literal() -> None:
    clinic = OrganizationFactory()
    new = PatientFactory(organization=clinic, first_name="New")
    old = PatientFactory(organization=clinic, first_name="Old")
    Patient.objects.filter(pk=old.pk).update(created_at=datetime(2020, 1, 1, tzinfo=UTC))
    Patient.objects.filter(pk=new.pk).update(created_at=NOW)
    query = {"customer.createdAt": {"$gte": {"$date": "2026-01-01T00:00:00Z"}}}
    assert _members(query, clinic) == {"New"}


def test_the_last_appointment_is_one_that_has_started() -> None:
    clinic = OrganizationFactory()
    seen = PatientFactory(organization=clinic, first_name="Seen")
    booked = PatientFactory(organization=clinic, first_name="Booked")
    AppointmentFactory(patient=seen, starts_at=NOW - timedelta(days=10), status="completed")
    AppointmentFactory(patient=booked, starts_at=NOW + timedelta(days=2))
    assert _members({"appointments.daysSinceLast": {"$gte": 10}}, clinic) == {"Seen"}
    assert _members({"appointments.daysSinceLast": None}, clinic) == {"Booked"}
    assert _members({"appointments.items.status": "booked"}, clinic) == {"Booked"}


# --- refusals: what the database cannot answer as workflows do -------------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"customer.provinceCod": "FL"}, 'did you mean "customer.provinceCode"?'),
        ({"customer.firstName": {"$regex": "^A"}}, 'customer.firstName: "$regex" is not'),
        ({"orders.count": {"$mod": [2, 0]}}, 'orders.count: "$mod" is not available'),
        ({"customer.city": {"$size": 1}}, 'customer.city: "$size" tests a list'),
        ({"customer": {"$exists": True}}, "customer: is a group of fields"),
        ({"subscriptions": {"$elemMatch": {"$gt": 1}}}, "as an object: name its fields"),
        ({"subscriptions": {"$elemMatch": {"sku": "X"}}}, 'subscriptions have no field "sku"'),
        ({"subscriptions": {"$in": ["x"]}}, "cannot test the list of subscriptions as a whole"),
        ({"subscriptions.0.status": "active"}, 'unknown segment field "subscriptions.0.status"'),
        (
            {"customer.createdAt": {"$gt": "2026-01-01"}},
            'compares a date-time with {"$date": "2026-01-31T00:00:00Z"}',
        ),
        ({"customer.city": {"$gt": {"$date": "2026-01-01"}}}, "this field is text"),
        ({"customer.city": {"$gt": [1]}}, '"$gt" compares with a number'),  # filter_validate
        ("FL", "a filter must be a JSON object"),
    ],
)
def test_what_cannot_be_translated_is_refused_naming_field_and_operator(
    query: Any, message: str
) -> None:
    with pytest.raises(FilterError) as raised:
        segment_q(query)
    assert message in str(raised.value)


def test_the_builder_catalogue_lists_every_field_once_with_its_type() -> None:
    fields = segment_field_catalogue()
    paths = [f["path"] for f in fields]
    assert len(paths) == len(set(paths))
    assert {
        "customer.provinceCode",
        "customer.language",
        "customer.city",
        "customer.createdAt",
        "subscriptions.status",
        "subscriptions.product.name",
        "orders.count",
        "orders.daysSinceLast",
        "orders.items.status",
        "appointments.count",
    } <= set(paths)
    assert "customer.defaultAddress.provinceCode" not in paths  # accepted, not offered twice
    assert {f["type"] for f in fields} <= {"string", "number", "boolean", "date", "datetime"}
    # every field offered can be filtered on with its example (or null)
    for item in fields:
        segment_q({item["path"]: item["example"]})
    assert set(SEGMENT_FIELDS) >= {"subscriptions", "orders.items", "appointments.items"}


# --- the selector --------------------------------------------------------------------------


def test_segment_patients_is_one_query_ordered_by_pk_without_duplicates(clinic: Any) -> None:
    segment = Segment.objects.create(
        organization=clinic,
        name="Active",
        filter={"subscriptions.status": "active", "customer.provinceCode": {"$ne": "GA"}},
    )
    with CaptureQueriesContext(connection) as queries:
        members = list(segment_patients(segment=segment))
    assert len(queries.captured_queries) == 1
    # Ana has two active subscriptions and is still one member (EXISTS, not a join)
    assert [p.first_name for p in members] == ["Ana"]
    everyone = Segment.objects.create(organization=clinic, name="All")
    pks = list(segment_patients(segment=everyone).values_list("pk", flat=True))
    assert pks == sorted(pks) and len(pks) == 3
    with CaptureQueriesContext(connection) as queries:
        assert segment_patients(segment=everyone).count() == 3
    assert len(queries.captured_queries) == 1


def test_a_saved_filter_that_cannot_be_used_raises_rather_than_choosing_everyone(
    clinic: Any,
) -> None:
    segment = Segment.objects.create(
        organization=clinic, name="Bad", filter={"customer.city": {"$regex": "x"}}
    )
    with pytest.raises(FilterError):
        list(segment_patients(segment=segment))


@pytest.mark.parametrize("days", [740_000, 1_000_000, 3_700_000, 10**20])
def test_a_number_of_days_older_than_any_date_chooses_no_one(clinic: Any, days: int) -> None:
    assert _members({"orders.daysSinceLast": {"$gte": days}}, clinic) == set()
    assert _members({"orders.daysSinceLast": {"$lt": days}}, clinic) == {"Ana", "Bo"}
