"""Compliance end to end: a STOP texted while a delayed workflow waits wins; quiet hours
defer a 23:00 message to 08:00 the next morning."""

from datetime import UTC, datetime, time
from typing import Any

import pytest
import time_machine

from integrations.models import Integration, MessagingPolicy, OutboundMessage
from integrations.sending import message_prepare, message_send
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import Order
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import Run, StepRun

Status = OutboundMessage.Status


@pytest.mark.integration
def test_stop_texted_while_a_delayed_workflow_waits_means_nothing_is_sent(
    worker: WorkerProcess, sandbox: SandboxServer, live_server: Any
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = WorkflowFactory(organization=integration.organization, trigger="order.shipped")
    SmsStepFactory(
        workflow=workflow,
        position=1,
        type="delay",
        adapter="",
        function="",
        parameters={"kind": "duration", "seconds": 4},
    )
    SmsStepFactory(workflow=workflow, position=2)
    patient = PatientFactory(organization=integration.organization, phone="+14155550144")
    ConsentFactory(patient=patient)
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT)
    order.status = Order.Status.SHIPPED
    order.save()
    wait_for(lambda: Run.objects.filter(status=Run.Status.WAITING).exists(), what="the wait")
    # the patient texts STOP: the sandbox posts a signed inbound webhook to our server
    answer = sandbox.send_inbound(
        account_sid=twilio_account(integration).account_sid,
        from_=patient.phone,
        to="+15005550006",
        body="STOP",
        url=f"{live_server.url}/webhooks/twilio/{integration.uuid}/inbound/",
    )
    assert answer["http_status"] == 200
    run = wait_for(
        lambda: Run.objects.filter(status__in=[Run.Status.SKIPPED, Run.Status.SUCCEEDED]).first(),
        timeout=30,
        what="the run to finish after the delay",
    )
    step = StepRun.objects.get(run=run, index=1)
    assert step.status == StepRun.Status.SKIPPED
    assert step.skip_reason.startswith("opted out of transactional SMS on ")
    assert "Inbound keyword" in step.skip_reason
    assert sandbox.stats()["creates"] == 0


@pytest.mark.django_db
def test_a_message_due_at_23_local_goes_out_at_08_the_next_morning(sandbox: SandboxServer) -> None:
    integration: Integration = sandbox_account(sandbox, IntegrationFactory())
    MessagingPolicy.objects.filter(organization=integration.organization).update(
        quiet_hours_start=time(8, 0), quiet_hours_end=time(21, 0)
    )
    patient = PatientFactory(
        organization=integration.organization, phone="+13125550123", timezone="America/Chicago"
    )
    ConsentFactory(patient=patient)
    eleven_pm = datetime(2026, 7, 1, 4, 0, tzinfo=UTC)  # 23:00 CDT on June 30
    with time_machine.travel(eleven_pm, tick=False):
        message = message_prepare(
            organization=integration.organization,
            integration=integration,
            idempotency_key="late",
            to=patient.phone,
            from_number="+15005550006",
            body="Your refill is ready",
            purpose="transactional",
            patient=patient,
        )
        deferred = message_send(message_id=message.pk)
    assert deferred.status == Status.PENDING
    assert deferred.next_attempt_at == datetime(2026, 7, 1, 13, 0, tzinfo=UTC)  # 08:00 CDT
    assert deferred.decision["checks"][-1]["check"] == "quiet hours"
    with time_machine.travel(datetime(2026, 7, 1, 12, 59, tzinfo=UTC), tick=False):
        assert message_send(message_id=message.pk).status == Status.PENDING  # 07:59: not yet
    assert sandbox.messages() == []
    with time_machine.travel(datetime(2026, 7, 1, 13, 0, tzinfo=UTC), tick=False):
        sent = message_send(message_id=message.pk)
    assert sent.status == Status.SENT
    assert [m["body"] for m in sandbox.messages()] == ["Your refill is ready"]
