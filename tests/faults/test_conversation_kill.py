"""Fault: workers SIGKILLed while they act on patients' replies. Each of N runs has texted
its question and waits; the sandbox posts each patient's "C" as a signed inbound webhook
(routed in the web process, which is not killed), and the workers, woken, take the Confirm
branch and text the confirmation. Workers are killed at random moments, aimed at a run that
holds an answered wait (the reply taken, the run not yet advanced past it), and started
again. Every reply must be acted on exactly once: one confirmation per patient, never two,
none lost (a run held by a dead worker is taken over after its lease; a wake-up task lost
with its worker is replaced by beat's sweep of runs due).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/careflow_faults \\
        .venv/bin/pytest tests/faults/test_conversation_kill.py
"""

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from integrations.models import OutboundMessage
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord, Patient
from tests.conftest import sandbox_account, wait_for
from tests.factories import AppointmentFactory, IntegrationFactory, SmsStepFactory, WorkflowFactory
from tests.faults.conftest import FaultWorker, tasks_received
from tests.faults.harness import REPORTS, SENDER_RATE, fault_random
from workflows.models import ReplyWait, Run, StepRun

pytestmark = pytest.mark.faults

PATIENTS = 40
KILLS = 4
SENDER = "+15005550006"
QUESTION = "Reply C to confirm your appointment"


def _taken_not_advanced() -> bool:
    """A run that holds an answered wait and has not finished: the window of the fault."""
    return ReplyWait.objects.filter(
        state=ReplyWait.State.ANSWERED,
        run__status__in=[Run.Status.WAITING, Run.Status.RUNNING],
    ).exists()


def test_replies_are_acted_on_exactly_once_while_workers_are_killed(
    start_worker: Callable[..., FaultWorker], sandbox: SandboxServer, live_server: Any
) -> None:
    rng, seed = fault_random("conversation-kill")
    integration = sandbox_account(sandbox, IntegrationFactory(**SENDER_RATE))
    organization = integration.organization
    workflow = WorkflowFactory(
        organization=organization, trigger="appointment.booked", enabled=True
    )
    sms = {"to": "{{customer.phone}}", "from": SENDER}
    SmsStepFactory(workflow=workflow, position=1, parameters={"message": QUESTION, **sms})
    SmsStepFactory(
        workflow=workflow,
        position=2,
        type="reply",
        adapter="",
        function="",
        parameters={
            "kind": "duration",
            "seconds": "3600",
            "branches": [
                {"label": "Confirm", "match": "keywords", "keywords": ["c"], "goto": "next"}
            ],
        },
    )
    SmsStepFactory(
        workflow=workflow,
        position=3,
        parameters={"message": "Confirmed, {{customer.firstName}}", **sms},
    )
    patients = Patient.objects.bulk_create(
        Patient(
            organization=organization,
            first_name=f"C{index}",
            last_name="Fault",
            phone=f"+1415301{index:04d}",
            timezone="America/New_York",
        )
        for index in range(PATIENTS)
    )
    ConsentRecord.objects.bulk_create(
        ConsentRecord(
            patient=patient,
            purpose=ConsentRecord.Purpose.TRANSACTIONAL,
            action=ConsentRecord.Action.OPT_IN,
            source=ConsentRecord.Source.SIGNUP_FORM,
            consent_text="I agree to receive texts about my appointments.",
        )
        for patient in patients
    )
    workers = [start_worker("conv-a", beat=True), start_worker("conv-b")]
    started = time.monotonic()
    for patient in patients:
        AppointmentFactory(patient=patient)
    wait_for(
        lambda: ReplyWait.objects.filter(state=ReplyWait.State.WAITING).count() == PATIENTS,
        timeout=120,
        what="every question to be sent and its run to wait",
    )

    account = twilio_account(integration).account_sid
    url = f"{live_server.url}/webhooks/twilio/{integration.uuid}/inbound/"
    statuses: list[int] = []

    def reply_all() -> None:
        for patient in patients:
            answer = sandbox.send_inbound(
                account_sid=account, from_=patient.phone, to=SENDER, body="C", url=url
            )
            statuses.append(int(answer.get("http_status", 0)))
            time.sleep(rng.uniform(0.0, 0.05))

    replies = threading.Thread(target=reply_all)
    replies.start()
    log = []
    for _ in range(KILLS):
        aim_until = time.monotonic() + 2.0
        while not _taken_not_advanced() and time.monotonic() < aim_until:
            time.sleep(0.005)
        victim = rng.choice(workers)
        answered = ReplyWait.objects.filter(state=ReplyWait.State.ANSWERED).count()
        victim.kill()
        log.append(f"{victim.name}@{answered}answered")
        time.sleep(rng.uniform(0.0, 1.5))
        victim.start()
    replies.join()
    assert statuses == [200] * PATIENTS

    wait_for(
        lambda: Run.objects.filter(status=Run.Status.SUCCEEDED).count() == PATIENTS,
        timeout=180,
        what="every run to take the Confirm branch",
    )
    elapsed = time.monotonic() - started
    # Exactly once, counted at the sandbox (what Twilio would bill) and in the database.
    by_phone: dict[str, list[str]] = defaultdict(list)
    for message in sandbox.messages():
        by_phone[message["to"]].append(message["body"])
    for patient in patients:
        assert by_phone[patient.phone] == [QUESTION, f"Confirmed, {patient.first_name}"], (
            patient.phone
        )
    assert OutboundMessage.objects.count() == 2 * PATIENTS
    assert ReplyWait.objects.filter(state=ReplyWait.State.ANSWERED).count() == PATIENTS
    assert (
        StepRun.objects.filter(index=1, status=StepRun.Status.SUCCEEDED, result__branch="Confirm")
        .values("run")
        .distinct()
        .count()
        == PATIENTS
    )
    line = (
        f"conversation SIGKILL: {PATIENTS} replies acted on exactly once in {elapsed:.1f}s; "
        f"seed {seed}; kills (worker@answered): {', '.join(log)}; "
        f"tasks received: {tasks_received(workers)}"
    )
    REPORTS.append(line)
    print(line)
