"""Two-way conversations end to end, with a real worker and beat: the workflow texts a
question, the Twilio sandbox posts the patient's reply as a signed inbound webhook to the
live server, and the worker takes the reply's branch; a wait with no reply times out."""

from typing import Any

import pytest

from integrations.models import Integration, OutboundMessage
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import Patient
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    AppointmentFactory,
    ConsentFactory,
    IntegrationFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.models import ReplyWait, Run, StepRun

pytestmark = pytest.mark.integration
SENDER = "+15005550006"


def _sms(message: str) -> dict[str, Any]:
    return {"parameters": {"message": message, "to": "{{customer.phone}}", "from": SENDER}}


def _workflow(integration: Integration, seconds: int) -> None:
    workflow = WorkflowFactory(
        organization=integration.organization, trigger="appointment.booked", enabled=True
    )
    steps = [
        _sms("Reply C to confirm, X to cancel"),
        {
            "type": "reply",
            "adapter": "",
            "function": "",
            "parameters": {
                "kind": "duration",
                "seconds": str(seconds),
                "branches": [
                    {"label": "Confirm", "match": "keywords", "keywords": ["c"], "goto": "next"},
                    {"label": "Cancel", "match": "keywords", "keywords": ["x"], "goto": 4},
                ],
                "otherwise": {"goto": "end"},
                "no_reply": {"goto": 5},
            },
        },
        _sms("Thanks {{customer.firstName}}, you are confirmed."),
        _sms("Your appointment is cancelled."),
        _sms("We did not hear back: please call us."),
    ]
    for position, step in enumerate(steps, start=1):
        SmsStepFactory(workflow=workflow, position=position, **step)


def _patient(integration: Integration) -> Patient:
    patient = PatientFactory(
        organization=integration.organization, first_name="Ann", phone="+14155550161"
    )
    ConsentFactory(patient=patient)
    return patient


def _bodies(sandbox: SandboxServer) -> list[str]:
    return [m["body"] for m in sandbox.messages()]  # in arrival order


def test_a_reply_through_the_signed_webhook_takes_its_branch(
    worker: WorkerProcess, sandbox: SandboxServer, live_server: Any
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    _workflow(integration, seconds=3600)
    patient = _patient(integration)
    AppointmentFactory(patient=patient)
    wait_for(
        lambda: ReplyWait.objects.filter(state="waiting").exists(), timeout=30, what="the wait"
    )
    answer = sandbox.send_inbound(
        account_sid=twilio_account(integration).account_sid,
        from_=patient.phone,
        to=SENDER,
        body="c.",
        url=f"{live_server.url}/webhooks/twilio/{integration.uuid}/inbound/",
    )
    assert answer["http_status"] == 200
    run = wait_for(
        lambda: Run.objects.filter(status=Run.Status.SUCCEEDED).first(),
        timeout=30,
        what="the run to take the Confirm branch",
    )
    wait_for(lambda: len(sandbox.messages()) == 2, timeout=10, what="the confirmation")
    assert _bodies(sandbox) == [
        "Reply C to confirm, X to cancel",
        "Thanks Ann, you are confirmed.",
    ]
    wait = ReplyWait.objects.get(run=run)
    assert (wait.state, wait.branch, wait.inbound) == ("answered", "Confirm", answer["message_sid"])
    result = StepRun.objects.get(run=run, index=1).result
    assert (result["reply"], result["branch"]) == ("c.", "Confirm")
    assert OutboundMessage.objects.count() == 2


def test_no_reply_times_out_into_the_no_reply_branch(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    _workflow(integration, seconds=2)
    AppointmentFactory(patient=_patient(integration))
    run = wait_for(
        lambda: Run.objects.filter(status=Run.Status.SUCCEEDED).first(),
        timeout=30,
        what="the run to time out and take the no-reply branch",
    )
    assert ReplyWait.objects.get(run=run).state == "timed_out"
    assert StepRun.objects.get(run=run, index=1).result["branch"] == "no_reply"
    wait_for(lambda: len(sandbox.messages()) == 2, timeout=10, what="the follow-up")
    assert _bodies(sandbox)[-1] == "We did not hear back: please call us."
