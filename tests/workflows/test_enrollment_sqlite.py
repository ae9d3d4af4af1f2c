"""The enrollment claim's SQL on SQLite, which `make run` uses: the same upsert (`INSERT … ON
CONFLICT … DO UPDATE … WHERE … RETURNING`, SQLite 3.35 and later), in a process of its own
with the settings a user's shell has (a fresh SQLite database, migrated)."""

from pathlib import Path

from tests.deployments import sqlite_shell

SCRIPT = """
from datetime import timedelta
from django.db import connection
from django.utils import timezone
from patients.models import Order
from tests.factories import OrderFactory, PatientFactory, SmsStepFactory, WorkflowFactory
from workflows.engine import event_dispatch, events_dispatch
from workflows.enrollment import enrollment_check, workflow_enrollments_backfill
from workflows.models import Enrollment, Event, Run

assert connection.vendor == "sqlite", connection.vendor

def ship(patient, order=None):
    if order is None:
        order = OrderFactory(patient=patient, organization=patient.organization)
    order.status = Order.Status.AWAITING_SHIPMENT
    order.save()
    order.status = Order.Status.SHIPPED
    order.save()
    return Event.objects.filter(type="order.shipped", subject_id=str(order.pk)).latest("id")

for rule, days, exclusive, reason in [
    ("period", 30, True, "period"),
    ("patient", None, False, "patient"),
    ("every", None, True, "active"),
    ("record", None, False, "record"),
]:
    workflow = WorkflowFactory(
        trigger="order.shipped", enrollment=rule, enrollment_days=days,
        enrollment_exclusive=exclusive,
    )
    SmsStepFactory(workflow=workflow)
    Event.objects.update(dispatched_at=timezone.now())
    patient = PatientFactory(organization=workflow.organization)
    order = OrderFactory(patient=patient, organization=patient.organization)
    events = [ship(patient, order), ship(patient, order)]
    _, runs = events_dispatch(event_ids=[e.pk for e in events], claim_per_event=0)
    assert len(runs) == 1, (rule, runs)
    assert list(workflow.skips.values_list("reason", flat=True)) == [reason], rule
    refusal = enrollment_check(
        workflow=workflow, patient_key=str(patient.uuid), subject_type="order",
        subject_id=str(order.pk), now=timezone.now(),
    )
    assert refusal is not None and refusal.reason == reason, (rule, refusal)
    # The run ended 40 days ago: the period and "not while active" let the patient in again.
    Run.objects.filter(workflow=workflow).update(status="succeeded")
    Enrollment.objects.filter(workflow=workflow).update(
        enrolled_at=timezone.now() - timedelta(days=40)
    )
    again = len(event_dispatch(event_id=ship(patient, order).pk))
    assert again == (1 if rule in ("period", "every") else 0), (rule, again)
    assert workflow_enrollments_backfill(workflow=workflow) >= 0
    workflow.enabled = False
    workflow.save()
print("sqlite ok")
"""


def test_the_claim_works_on_sqlite(tmp_path: Path) -> None:
    assert "sqlite ok" in sqlite_shell(tmp_path, SCRIPT)
