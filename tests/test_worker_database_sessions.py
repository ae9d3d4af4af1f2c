"""A worker whose database sessions were terminated (server restart, administrator) goes on
working: every task checks its session first, as Django does around a request."""

import re
from typing import Any

import pytest

from integrations.models import OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order
from tests.conftest import (
    WORKER_APPLICATION_NAME,
    WorkerProcess,
    sandbox_account,
    sessions_terminate,
    wait_for,
)
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import Run

pytestmark = pytest.mark.integration
# A dispatch task that failed. (Beat's own tasks run every half second here, and one may be
# mid-query when its session is ended: that failure is the termination, not what follows.)
DISPATCH_FAILED = re.compile(rb"Task workflows\.tasks\.events_dispatch\[[^\]]+\] raised")


def test_tasks_after_the_workers_sessions_were_terminated_run_without_a_failure(
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
    wait_for(
        lambda: Run.objects.filter(status=Run.Status.SUCCEEDED).count() == 2,
        what="the first two runs finished",
    )
    # when an administrator terminates them all
    assert sessions_terminate(WORKER_APPLICATION_NAME) >= 1
    offset = worker.log_path.stat().st_size

    # then the next events are dispatched by their own tasks, none of them failing
    for order in orders[2:]:
        ship(order)
    wait_for(lambda: len(sandbox.messages()) == 4, what="the messages after the termination")
    assert sorted(m["body"] for m in sandbox.messages()) == [
        f"Hi Ann, order S{index} has shipped!" for index in range(4)
    ]
    assert OutboundMessage.objects.count() == 4
    log = worker.log_path.read_bytes()[offset:]
    assert not DISPATCH_FAILED.search(log), log.decode(errors="replace")[-3000:]
