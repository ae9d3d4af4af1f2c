"""`make run` keeps its data in SQLite: a segment's SQL must choose there exactly what
filter_matches does on the segment documents, as on PostgreSQL (code-point text order,
decimals, dates, EXISTS and COUNT subqueries, the marketing consent rule). Run in a `manage.py shell` against a fresh
SQLite database."""

from pathlib import Path

from tests.deployments import sqlite_shell_result

SCRIPT = """
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from django.db import connection
from patients.models import (Appointment, ConsentRecord, Order, Organization, Patient,
                             Subscription)
from workflows.filters import filter_matches
from workflows.models import Segment
from workflows.segments import segment_document, segment_patients, segment_q

now = datetime.now(UTC)
org = Organization.objects.create(name="Clinic", slug="clinic", timezone="UTC")
other = Organization.objects.create(name="Other", slug="other", timezone="UTC")
Patient.objects.create(organization=other, first_name="Elsewhere", province_code="FL")
people = [
    Patient.objects.create(organization=org, first_name="Ana", province_code="FL",
                           dob=date(1990, 5, 1)),
    Patient.objects.create(organization=org, first_name="Bo", province_code="NY", is_test=True),
    Patient.objects.create(organization=org, first_name="Zoë", province_code="fl", city="Ålesund"),
    Patient.objects.create(organization=org, first_name="apple"),
]
ana, bo, zoe, apple = people
for who, days, total in ((ana, 90, "49.99"), (ana, 400, "10.00"), (bo, 91, "0.10")):
    order = Order.objects.create(organization=org, patient=who, number=f"{who.pk}-{days}",
                                 total_amount=Decimal(total))
    Order.objects.filter(pk=order.pk).update(created_at=now - timedelta(days=days))
Subscription.objects.create(patient=ana, product_id="SKU-Z", product_name="Zinc",
                            status="active", price=Decimal("49.99"))
Subscription.objects.create(patient=bo, product_id="SKU-Z", product_name="Zinc",
                            status="cancelled", current_cycle=3)
Appointment.objects.create(patient=zoe, starts_at=now - timedelta(days=3), status="completed")
for who, text in ((ana, "Yes, text me offers."), (bo, "\\u2003 ")):
    ConsentRecord.objects.create(patient=who, purpose="marketing", action="opt_in",
                                 source="signup_form", consent_text=text)

queries = [
    {"customer.provinceCode": "FL"},
    {"customer.firstName": {"$gt": "Z"}},
    {"customer.firstName": {"$lt": "a"}},
    {"customer.city": {"$gte": "Å"}},
    {"customer.dob": {"$lt": "2000-01-01"}},
    {"customer.dob": None},
    {"customer.dob": {"$gte": {"$date": "1990-05-01T00:00:01Z"}}},
    {"customer.isTest": True},
    {"customer.acceptMarketing": True},
    {"customer.acceptMarketing": {"$ne": True}},
    {"customer.createdAt": {"$gte": {"$date": "2020-01-01T00:00:00Z"}}},
    {"orders.daysSinceLast": {"$gt": 90}},
    {"orders.daysSinceLast": {"$gte": 90}},
    {"orders.daysSinceLast": None},
    {"orders.count": {"$gte": 2}},
    {"orders.count": 0},
    {"orders.items.totalAmount": {"$gt": 49.98}},
    {"orders.items.totalAmount": 0.1},
    {"orders.items": {"$size": 1}},
    {"subscriptions": {"$elemMatch": {"status": "active", "price": 49.99}}},
    {"subscriptions.currentCycle": {"$gte": 2.5}},
    {"subscriptions.status": {"$ne": "active"}},
    {"$or": [{"appointments.daysSinceLast": {"$lte": 3}}, {"customer.provinceCode": "NY"}]},
    {"$nor": [{"customer.provinceCode": {"$in": ["FL", "fl"]}}]},
    {"customer.provinceCode": {"$not": {"$in": ["FL"]}}},
]
loaded = Patient.objects.filter(organization=org).prefetch_related(
    "subscriptions", "orders", "appointments")
documents = {p.pk: segment_document(p, now=now) for p in loaded}
mismatches = []
chosen_counts = []
for query in queries:
    chosen = set(Patient.objects.filter(organization=org).filter(segment_q(query, now=now))
                 .values_list("pk", flat=True))
    expected = {pk for pk, doc in documents.items() if filter_matches(query, doc)}
    chosen_counts.append(len(chosen))
    if chosen != expected:
        mismatches.append([query, sorted(chosen), sorted(expected)])
segment = Segment.objects.create(organization=org, name="FL", filter={"customer.provinceCode": "FL"})
print("RESULT " + json.dumps({
    "vendor": connection.vendor,
    "mismatches": mismatches,
    "chosen": chosen_counts,
    "members": [p.first_name for p in segment_patients(segment=segment)],
}, default=str))
"""


def test_segments_choose_the_same_patients_on_sqlite(tmp_path: Path) -> None:
    result = sqlite_shell_result(tmp_path, SCRIPT)
    assert result["vendor"] == "sqlite"
    assert result["mismatches"] == []
    assert result["members"] == ["Ana"]
    # the filters are not all trivially empty or full
    assert len(set(result["chosen"])) >= 3
