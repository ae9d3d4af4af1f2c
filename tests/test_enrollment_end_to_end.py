"""End to end through a real worker: a workflow that texts a patient at most once per 30
days, two orders of the patient shipped (one after the other, then two at once) → one SMS at
the sandbox, the other triggers recorded as skipped with their reason."""

from typing import Any

import pytest
from django.db import transaction

from integrations.models import Integration, OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order, Patient
from tests.conftest import sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import EnrollmentSkip, Event, Run, Workflow

pytestmark = pytest.mark.integration


@pytest.fixture
def clinic(worker: Any, sandbox: SandboxServer) -> Integration:
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = WorkflowFactory(
        organization=integration.organization,
        trigger="order.shipped",
        enrollment=Workflow.Enrollment.PERIOD,
        enrollment_days=30,
    )
    SmsStepFactory(workflow=workflow)
    return integration


def _patient(integration: Integration, phone: str) -> Patient:
    patient = PatientFactory(organization=integration.organization, first_name="Ann", phone=phone)
    ConsentFactory(patient=patient)
    return patient


def _ship(patient: Patient, number: str) -> None:
    order = OrderFactory(patient=patient, number=number, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()


def _dispatched(count: int) -> bool:
    return Event.objects.filter(type="order.shipped", dispatched_at__isnull=False).count() == count


def test_two_shipments_one_after_the_other_text_once(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    patient = _patient(clinic, "+14155550123")
    _ship(patient, "6001")
    wait_for(lambda: OutboundMessage.objects.filter(status="delivered").exists(), what="the SMS")
    _ship(patient, "6002")
    skip = wait_for(lambda: EnrollmentSkip.objects.first(), what="the skip")
    assert skip.reason == EnrollmentSkip.Reason.PERIOD
    run = Run.objects.get()
    assert skip.detail == f"enrolled moments ago (run {run.pk}); at most once per 30 days"
    wait_for(lambda: _dispatched(2), what="both events dispatched")
    assert [m["body"] for m in sandbox.messages()] == ["Hi Ann, order 6001 has shipped!"]
    assert OutboundMessage.objects.count() == 1


def test_two_shipments_at_once_text_once(clinic: Integration, sandbox: SandboxServer) -> None:
    patient = _patient(clinic, "+14155550124")
    with transaction.atomic():  # committed together: they reach the worker together
        _ship(patient, "7001")
        _ship(patient, "7002")
    wait_for(lambda: _dispatched(2), what="both events dispatched")
    wait_for(lambda: OutboundMessage.objects.filter(status="delivered").exists(), what="the SMS")
    assert Run.objects.count() == 1
    skip = EnrollmentSkip.objects.get()
    assert skip.reason == EnrollmentSkip.Reason.PERIOD
    assert len(sandbox.messages()) == 1
    assert sandbox.messages()[0]["to"] == "+14155550124"
