"""A worker whose database sessions were terminated (server restart, administrator) goes on
working: every task checks its session first, as Django does around a request."""

from typing import Any

import pytest
from django.db import connection

from integrations.models import OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order
from tests.conftest import WORKER_APPLICATION_NAME, WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import Event

pytestmark = pytest.mark.integration
DATABASE_ERRORS = (b"OperationalError", b"InterfaceError")


def _terminate_worker_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [WORKER_APPLICATION_NAME],
        )
        return int(cursor.fetchone()[0])


def test_tasks_after_the_workers_sessions_were_terminated_run_without_a_database_error(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    SmsStepFactory(
        workflow=WorkflowFactory(organization=integration.organization, trigger="order.shipped")
    )
    orders: list[Any] = []
    for index in range(4):
        patient = PatientFactory(
            organization=integration.organization, first_name="Ann", phone=f"+1415555{index:04d}"
        )
        ConsentFactory(patient=patient)
        orders.append(
            OrderFactory(patient=patient, number=f"S{index}", status=Order.Status.AWAITING_SHIPMENT)
        )

    def ship(order: Any) -> None:
        order.status = Order.Status.SHIPPED
        order.save()

    # given a worker whose processes have open sessions (two prefork children)
    for order in orders[:2]:
        ship(order)
    wait_for(lambda: len(sandbox.messages()) == 2, what="the first two messages")
    # when an administrator terminates them all
    assert _terminate_worker_sessions() >= 1
    offset = worker.log_path.stat().st_size

    # then the next events are dispatched by their own tasks, with no failed task between
    for order in orders[2:]:
        ship(order)
    wait_for(lambda: len(sandbox.messages()) == 4, what="the messages after the termination")
    assert sorted(m["body"] for m in sandbox.messages()) == [
        f"Hi Ann, order S{index} has shipped!" for index in range(4)
    ]
    assert OutboundMessage.objects.count() == 4
    log = worker.log_path.read_bytes()[offset:]
    assert not any(error in log for error in DATABASE_ERRORS), log.decode(errors="replace")[-3000:]
    assert not Event.objects.filter(relayed_at__isnull=False).exists()
