"""Broadcasts through a real worker process (production, sending and the beat sweep) to the
loopback sandbox: every consenting member texted once at the sender's rate, the others
skipped with their reason, a cancel mid-way stopping what is not sent yet, and a worker
killed mid-broadcast leaving nothing sent twice."""

import time
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser

from integrations.broadcasts import CANCELLED_REASON, broadcast_cancel, broadcast_start
from integrations.models import Broadcast, Integration, OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord, Organization, Patient
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import SANDBOX_FROM, ConsentFactory, IntegrationFactory, PatientFactory
from workflows.models import Segment

pytestmark = pytest.mark.integration
Status = OutboundMessage.Status
State = Broadcast.Status
MARKETING = ConsentRecord.Purpose.MARKETING


def _broadcast(integration: Integration) -> Broadcast:
    clinic = integration.organization
    return Broadcast.objects.create(
        organization=clinic,
        name="Flu shots",
        segment=Segment.objects.create(organization=clinic, name="Everyone"),
        function="twilio.sendSMS",
        integration=integration,
        purpose=MARKETING,
        parameters={"message": "Hi {{customer.firstName}}, flu shots are in", "from": SANDBOX_FROM},
    )


def _members(clinic: Organization, count: int, *, consent: bool = True) -> list[Patient]:
    patients = []
    for _ in range(count):
        patient = PatientFactory(organization=clinic)
        if consent:
            ConsentFactory(patient=patient, purpose=MARKETING)
        patients.append(patient)
    return patients


def _status(broadcast: Broadcast) -> str:
    broadcast.refresh_from_db()
    return broadcast.status


def test_a_broadcast_reaches_every_consenting_member_once_at_the_senders_rate(
    worker: WorkerProcess, sandbox: SandboxServer, settings: Any
) -> None:
    rate = 10.0
    integration = sandbox_account(sandbox, IntegrationFactory(segments_per_second=rate))
    clinic = integration.organization
    consenting = _members(clinic, 20)
    without = _members(clinic, 3, consent=False)
    other = sandbox_account(sandbox, IntegrationFactory())
    _members(other.organization, 2)  # another clinic's patients: never texted
    broadcast = broadcast_start(broadcast=_broadcast(integration), user=AnonymousUser())

    wait_for(lambda: _status(broadcast) == State.COMPLETED, timeout=60, what="completion")

    sent = sandbox.messages()
    assert sorted(m["to"] for m in sent) == sorted(p.phone for p in consenting)
    received = sorted(m["received_at"] for m in sent)
    # 20 one-segment texts at 10/s: no faster than the rate allows (the first goes at once).
    assert received[-1] - received[0] >= (len(sent) - 1) / rate - 0.2
    skipped = broadcast.messages.filter(status=Status.SKIPPED)
    assert sorted(skipped.values_list("patient_id", flat=True)) == sorted(p.pk for p in without)
    assert all("consent" in m.skip_reason for m in skipped)
    assert broadcast.finished_at is not None
    assert sandbox.stats()["errors"] == 0


def test_cancel_mid_way_stops_the_rest(worker: WorkerProcess, sandbox: SandboxServer) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory(segments_per_second=2.0))
    patients = _members(integration.organization, 30)
    broadcast = broadcast_start(broadcast=_broadcast(integration), user=AnonymousUser())
    wait_for(lambda: len(sandbox.messages()) >= 3, timeout=30, what="the first texts")

    assert broadcast_cancel(broadcast_id=broadcast.pk)
    time.sleep(1.5)  # a text being sent when the cancel came finishes
    settled = len(sandbox.messages())
    time.sleep(3)  # at 2/s, six more would have gone by now

    assert len(sandbox.messages()) == settled < len(patients)
    assert _status(broadcast) == State.CANCELLED
    messages = broadcast.messages.all()
    # Sent, and delivered by now (the sandbox's status callbacks).
    went = [Status.SENT, Status.DELIVERED]
    sent = messages.filter(status__in=went).count()
    assert sent == settled
    others = messages.exclude(status__in=went).exclude(skip_reason=CANCELLED_REASON)
    assert list(others.values_list("status", "skip_reason")) == []
    # Production stopped: not every member has a message.
    assert messages.count() < len(patients) or sent < len(patients)


def test_a_worker_killed_mid_broadcast_sends_nothing_twice(
    worker: WorkerProcess, sandbox: SandboxServer, settings: Any
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory(segments_per_second=8.0))
    patients = _members(integration.organization, 24)
    broadcast = broadcast_start(broadcast=_broadcast(integration), user=AnonymousUser())
    wait_for(lambda: len(sandbox.messages()) >= 5, timeout=30, what="the first texts")

    worker.stop(kill=True)
    worker.start()

    # Messages made and handed to a task the kill lost, or being sent when it came, come back
    # through the sweep after CAREFLOW_BROADCAST_LOST_AFTER_SECONDS (20 s for the test worker);
    # one being sent is looked up at the sandbox before anything is sent again.
    wait_for(lambda: _status(broadcast) == State.COMPLETED, timeout=180, what="completion")
    sent = [m["to"] for m in sandbox.messages()]
    assert sorted(sent) == sorted(p.phone for p in patients)
    assert broadcast.messages.count() == len(patients)
