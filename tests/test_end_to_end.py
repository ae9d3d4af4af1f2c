"""End to end: model change → signal → outbox → Redis → a real Celery worker process →
engine → twilio-python over HTTP → sandbox → signed status callback → our webhook."""

import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import transaction
from django.test import Client
from django.urls import reverse

from config.celery import app as celery_app
from integrations.models import Integration, OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord, Order, Patient
from tests.conftest import sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    StaffMembershipFactory,
    WorkflowFactory,
)
from workflows.models import Event, Run, StepRun
from workflows.tasks import events_dispatch

pytestmark = pytest.mark.integration
Status = OutboundMessage.Status


@pytest.fixture
def clinic(worker: Any, sandbox: SandboxServer) -> Integration:
    integration = sandbox_account(sandbox, IntegrationFactory())
    SmsStepFactory(
        workflow=WorkflowFactory(organization=integration.organization, trigger="order.shipped")
    )
    return integration


def _patient(
    integration: Integration, *, phone: str = "+14155550123", consent: bool = True
) -> Patient:
    patient = PatientFactory(organization=integration.organization, first_name="Ann", phone=phone)
    if consent:
        ConsentFactory(patient=patient)
    return patient


def _ship(patient: Patient, number: str = "5001") -> Order:
    order = OrderFactory(patient=patient, number=number, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()
    return order


def _message(**filters: Any) -> OutboundMessage | None:
    return OutboundMessage.objects.filter(**filters).first()


def test_order_shipped_sends_exactly_one_sms_and_callbacks_mark_it_delivered(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _ship(_patient(clinic))
    message = wait_for(lambda: _message(status=Status.DELIVERED), what="a delivered message")
    received = sandbox.messages()
    assert [(m["to"], m["from"], m["body"]) for m in received] == [
        ("+14155550123", "+15005550006", "Hi Ann, order 5001 has shipped!")
    ]
    assert message.provider_sid == received[0]["sid"]
    # the sandbox records a callback's answer after our webhook has committed its change
    wait_for(lambda: len(sandbox.messages()[0]["callbacks"]) == 2, what="both callbacks")
    callbacks = sandbox.messages()[0]["callbacks"]
    assert [(c["status"], c.get("http_status")) for c in callbacks] == [
        ("sent", 204),
        ("delivered", 204),
    ]
    run = Run.objects.get()
    assert run.status == Run.Status.SUCCEEDED
    assert StepRun.objects.get(run=run).status == StepRun.Status.SUCCEEDED


def test_no_consent_sends_nothing_and_records_why(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _ship(_patient(clinic, consent=False))
    step_run = wait_for(
        lambda: StepRun.objects.filter(status=StepRun.Status.SKIPPED).first(),
        what="the skipped step",
    )
    assert step_run.skip_reason == "no SMS consent"
    assert OutboundMessage.objects.get().skip_reason == "no SMS consent"
    assert sandbox.stats()["creates"] == 0


def test_opt_out_after_the_event_but_before_the_send_wins(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    sandbox.add_fault({"kind": "error", "status": 429, "code": 20429, "count": 1})
    patient = _patient(clinic)
    _ship(patient)
    wait_for(
        lambda: _message(status=Status.PENDING, error_code="20429"),
        what="the first attempt to be throttled",
    )
    ConsentFactory(
        patient=patient, action=ConsentRecord.Action.OPT_OUT, source=ConsentRecord.Source.ADMIN
    )
    message = wait_for(lambda: _message(status=Status.SKIPPED), what="the retry to skip")
    assert message.skip_reason.startswith("opted out of transactional SMS on ")
    assert sandbox.stats()["accepted"] == 0


def test_21610_records_the_opt_out(clinic: Integration, sandbox: SandboxServer) -> None:
    patient = _patient(clinic, phone="+15005550004")
    _ship(patient)
    message = wait_for(lambda: _message(status=Status.FAILED), what="the refused message")
    assert message.error_code == "21610"
    assert (
        ConsentRecord.objects.filter(
            patient=patient, action="opt_out", source="provider_error"
        ).count()
        == 2
    )
    # The run's outcome is written after the message's, in the worker's next statement.
    assert wait_for(lambda: Run.objects.get().status == Run.Status.FAILED, what="the failed run")


def test_429_then_success_sends_exactly_one(clinic: Integration, sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "error", "status": 429, "code": 20429, "count": 2})
    _ship(_patient(clinic))
    message = wait_for(
        lambda: _message(status__in=[Status.SENT, Status.DELIVERED]),
        timeout=30,
        what="the message to go out after two 429s",
    )
    assert message.attempts == 3
    assert sandbox.stats()["accepted"] == 1
    assert wait_for(lambda: Run.objects.get().status == Run.Status.SUCCEEDED)


def test_the_same_event_dispatched_again_makes_one_run_and_one_message(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _ship(_patient(clinic))
    event = Event.objects.get(type="order.shipped")
    for _ in range(3):
        events_dispatch.delay([event.pk])
    wait_for(lambda: _message(status=Status.DELIVERED), what="the delivered message")
    wait_for(lambda: not Run.objects.exclude(status=Run.Status.SUCCEEDED).exists())
    assert Run.objects.count() == 1
    assert OutboundMessage.objects.count() == 1
    assert sandbox.stats()["accepted"] == 1


@pytest.fixture
def broker_down() -> Iterator[None]:
    """Make this process's publisher point at a port where no broker listens."""
    old_pool, old_producers = celery_app._pool, celery_app.amqp._producer_pool
    celery_app.conf.broker_write_url = "redis://127.0.0.1:9/15"
    celery_app._pool = celery_app.amqp._producer_pool = None
    try:
        yield
    finally:
        celery_app.conf.broker_write_url = None
        celery_app._pool, celery_app.amqp._producer_pool = old_pool, old_producers


def test_event_committed_while_the_broker_is_down_is_relayed_later(
    clinic: Integration, sandbox: SandboxServer, broker_down: None, caplog: Any, settings: Any
) -> None:
    settings.CAREFLOW_EVENTS_NOTIFY = False  # the saving process publishes (as on SQLite)
    patient = _patient(clinic)
    with transaction.atomic():
        _ship(patient)
    event = Event.objects.get(type="order.shipped")
    # the background publish failed, and said so without failing (or slowing) the save
    # (published with the order's order.created, recorded in the same transaction)
    failed = re.compile(
        rf"broker unavailable; events? [^\n]*\b{event.pk}\b[^\n]* left for the relay"
    )
    wait_for(lambda: failed.search(caplog.text), what="the failed publish to be logged")
    # the worker's beat relay (its own connection to the real broker) picks it up
    wait_for(lambda: _message(status=Status.DELIVERED), what="the relayed event's SMS")
    event.refresh_from_db()
    assert event.dispatched_at is not None
    assert sandbox.stats()["accepted"] == 1


def test_readme_walkthrough_clinic_admin_ships_an_order_in_the_admin(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    patient = _patient(clinic, phone="+14155550101")
    order = OrderFactory(patient=patient, number="SR-1001", status=Order.Status.AWAITING_SHIPMENT)
    membership = StaffMembershipFactory(organization=clinic.organization)
    membership.user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_order", "change_order"])
    )
    client = Client()
    client.force_login(membership.user)
    response = client.post(
        reverse("admin:patients_order_change", args=[order.pk]),
        {
            "organization": clinic.organization.pk,
            "patient": patient.pk,
            "number": "SR-1001",
            "status": "shipped",
            "line_items": "[]",
            "shipping_address": "{}",
            "total_amount": "89.00",
            "discount_amount": "0",
            "coupon": "",
            "tracking_number": "1Z9",
        },
    )
    assert response.status_code == 302
    message = wait_for(lambda: _message(status=Status.DELIVERED), what="the walkthrough's SMS")
    assert message.to == "+14155550101"
    assert message.body == "Hi Ann, order SR-1001 has shipped!"
