"""Property: a segment's SQL (`segment_q`) chooses exactly the patients whose segment document
(`segment_document`, built from the same catalogue) `filter_matches` accepts.

A clinic of patients with awkward records (blank and null values, consent histories, no records at all, orders
a microsecond either side of a day boundary, future appointments, decimal prices) is built
once; Hypothesis then writes filters over every catalogue field — cross-typed values, null,
$date, negations, $in/$nin/$all/$exists/$not, $elemMatch, $size, $and/$or/$nor — and each one
the compiler accepts must pick the same patients as the matcher. A filter it refuses must
still be a valid workflow filter (the refusal is about SQL, not a typo).
"""

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patients.models import Appointment, Order, Patient
from tests.factories import (
    AppointmentFactory,
    ConsentFactory,
    OrderFactory,
    OrganizationFactory,
    PatientFactory,
    SubscriptionFactory,
)
from workflows.filters import FilterError, filter_matches, filter_validate
from workflows.segments import RECORDS, segment_document, segment_field_catalogue, segment_q

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 6, 15, 12, 0, 0, 500, tzinfo=UTC)
DAY = timedelta(days=1)
US = timedelta(microseconds=1)


def _clinic() -> list[Patient]:
    """Patients whose documents differ in every way a translation could get wrong."""
    org = OrganizationFactory()
    other = PatientFactory()  # another clinic: never in the results
    SubscriptionFactory(patient=other, status="active")

    def patient(**fields: Any) -> Patient:
        return PatientFactory(organization=org, **fields)

    bare = patient(first_name="Bare", last_name="", email="", phone="", province_code="")
    fl = patient(
        province_code="FL", city="Tampa", dob=date(1990, 5, 1), language="es", gender="female"
    )
    ny = patient(province_code="NY", city="new york", dob=date(1990, 5, 2), is_test=True)
    uni = patient(first_name="Zoë", city="Ålesund", province_code="fl", source="Ab")
    old = patient(province_code="FL", dob=date(2000, 1, 1))
    Patient.objects.filter(pk=old.pk).update(created_at=datetime(2020, 1, 1, tzinfo=UTC))
    Patient.objects.filter(pk=fl.pk).update(created_at=NOW - 5 * DAY)

    def order(who: Patient, ago: timedelta, **fields: Any) -> None:
        made = OrderFactory(patient=who, **fields)
        Order.objects.filter(pk=made.pk).update(created_at=NOW - ago)

    order(fl, 90 * DAY, status="shipped", total_amount=Decimal("49.99"), coupon="VIP")
    order(fl, 91 * DAY + US, status="processing")
    order(ny, 91 * DAY - US, status="shipped", total_amount=Decimal("120.00"))
    order(uni, 0 * DAY, total_amount=Decimal("0.10"))
    order(uni, 400 * DAY, status="shipped")
    order(old, -2 * DAY)  # dated in the future: not "the last order" yet
    SubscriptionFactory(patient=fl, status="active", product_id="SKU-Z", product_name="Zinc")
    SubscriptionFactory(patient=fl, status="cancelled", product_id="SKU-D", product_name="Vit D")
    SubscriptionFactory(
        patient=ny,
        status="paused",
        product_id="SKU-Z",
        product_name="Zinc",
        price=Decimal("49.99"),
        current_cycle=3,
        next_cycle_date=None,
    )
    SubscriptionFactory(
        patient=uni, status="active", product_id="SKU-D", next_cycle_date=date(2026, 7, 1)
    )
    for who, ago, status in (
        (fl, 3 * DAY, "completed"),
        (fl, -3 * DAY, "booked"),
        (ny, -1 * DAY, "confirmed"),
        (old, 30 * DAY + US, "no_show"),
    ):
        made = AppointmentFactory(patient=who, status=status, starts_at=NOW - ago)
        Appointment.objects.filter(pk=made.pk).update(starts_at=NOW - ago)
    # customer.acceptMarketing: written consent; blank text; a later STOP; opted in again
    written = "Yes, text me offers. Reply STOP to opt out."
    for who, purpose, action, source, text, days_ago in (
        (fl, "marketing", "opt_in", "signup_form", written, 9),
        (ny, "marketing", "opt_in", "signup_form", " \u2003\n", 9),
        (uni, "marketing", "opt_in", "checkout", written, 9),
        (uni, "transactional", "opt_out", "inbound_keyword", "", 2),
        (old, "marketing", "opt_out", "admin", "", 20),
        (old, "marketing", "opt_in", "admin", written, 5),
        (bare, "transactional", "opt_in", "signup_form", written, 1),
    ):
        ConsentFactory(
            patient=who,
            purpose=purpose,
            action=action,
            source=source,
            consent_text=text,
            occurred_at=NOW - days_ago * DAY,
        )
    return [bare, fl, ny, uni, old]


FIELDS = segment_field_catalogue()
ALIASES = ["customer.defaultAddress.provinceCode", "customer.defaultAddress.city"]
SCALAR_PATHS = [f["path"] for f in FIELDS] + ALIASES
RECORD_FIELDS = {r.path: [f.path for f in r.fields] for r in RECORDS}

values = st.sampled_from(
    [
        None,
        True,
        False,
        0,
        1,
        2,
        3,
        90,
        91,
        2.5,
        49.99,
        0.1,
        -1,
        10**20,
        "",
        "FL",
        "fl",
        "Tampa",
        "Zoë",
        "active",
        "shipped",
        "SKU-Z",
        "Zinc",
        "es",
        "1990-05-01",
        "1990-05-1",
        "2026-07-01",
        "A",
        "a\x00",
        {"$date": "1990-05-01T00:00:00Z"},
        {"$date": "1990-05-01T12:00:00Z"},
        {"$date": "2026-06-10T12:00:00Z"},
        {"$date": "2020-01-01T00:00:00+00:00"},
        [],
        ["FL"],
        {"a": 1},
    ]
)


def _condition(value_strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    comparison = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte"])
    single = st.builds(lambda op, v: {op: v}, comparison, value_strategy)
    listed = st.builds(
        lambda op, vs: {op: vs},
        st.sampled_from(["$in", "$nin", "$all"]),
        st.lists(value_strategy, max_size=3),
    )
    exists = st.builds(lambda flag: {"$exists": flag}, st.booleans())
    pair = st.builds(lambda a, b: {**a, **b}, single, single)
    positive = st.one_of(single, listed, exists, pair)
    negated = st.builds(lambda inner: {"$not": inner}, st.one_of(single, listed))
    return st.one_of(value_strategy, positive, negated)


def _leaf(paths: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda p, c: {p: c}, st.sampled_from(paths), _condition(values))


def _documents(leaf: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.builds(
                lambda op, subs: {op: subs},
                st.sampled_from(["$and", "$or", "$nor"]),
                st.lists(inner, min_size=1, max_size=3),
            ),
            st.builds(lambda a, b: {**a, **b}, inner, inner),
        ),
        max_leaves=4,
    )


def _elem_match(path: str) -> st.SearchStrategy[dict[str, Any]]:
    inner = _documents(_leaf(RECORD_FIELDS[path]))
    return st.one_of(
        st.builds(lambda q: {path: {"$elemMatch": q}}, inner),
        st.builds(lambda q: {path: {"$not": {"$elemMatch": q}}}, inner),
        st.builds(lambda n: {path: {"$size": n}}, st.integers(min_value=0, max_value=3)),
    )


filters = _documents(st.one_of(_leaf(SCALAR_PATHS), *(_elem_match(p) for p in RECORD_FIELDS)))


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(query=filters)
def test_sql_agrees_with_the_matcher(query: dict[str, Any], clinic: list[Patient]) -> None:
    try:
        filter_validate(query)
    except FilterError:
        return  # not a filter at all (e.g. {"$exists": …} mixed badly): nothing to compare
    try:
        condition = segment_q(query, now=NOW)
    except FilterError as exc:
        # A refusal names the field and the operator, as an admin needs to fix it.
        assert ": " in str(exc)
        return
    organization = clinic[0].organization_id
    chosen = set(
        Patient.objects.filter(organization_id=organization)
        .filter(condition)
        .values_list("pk", flat=True)
    )
    expected = {p.pk for p in clinic if filter_matches(query, DOCUMENTS[p.pk])}
    assert chosen == expected, (query, {p.pk: DOCUMENTS[p.pk] for p in clinic})


DOCUMENTS: dict[int, dict[str, Any]] = {}


@pytest.fixture
def clinic() -> list[Patient]:
    patients = _clinic()
    loaded = Patient.objects.filter(pk__in=[p.pk for p in patients]).prefetch_related(
        "subscriptions", "orders", "appointments"
    )
    DOCUMENTS.clear()
    DOCUMENTS.update({p.pk: segment_document(p, now=NOW) for p in loaded})
    return list(loaded)


def test_the_documents_have_the_catalogue_values(clinic: list[Patient]) -> None:
    fl = next(p for p in clinic if p.city == "Tampa")
    document = DOCUMENTS[fl.pk]
    assert document["customer"]["provinceCode"] == "FL"
    assert document["customer"]["defaultAddress"]["provinceCode"] == "FL"
    assert document["customer"]["dob"] == "1990-05-01"
    assert document["orders"]["count"] == 2
    assert document["orders"]["daysSinceLast"] == 90
    assert document["appointments"]["daysSinceLast"] == 3  # the future one has not started
    assert {s["product"]["name"] for s in document["subscriptions"]} == {"Zinc", "Vit D"}
    bare = next(p for p in clinic if p.first_name == "Bare")
    assert DOCUMENTS[bare.pk]["orders"] == {"count": 0, "daysSinceLast": None, "items": []}
    marketing = {p.first_name: DOCUMENTS[p.pk]["customer"]["acceptMarketing"] for p in clinic}
    assert sorted(name for name, accepts in marketing.items() if accepts) == sorted(
        [fl.first_name, next(p for p in clinic if p.dob == date(2000, 1, 1)).first_name]
    )
