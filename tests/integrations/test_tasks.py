"""The send queue's Celery tasks under their former names: a message queued before the
deploy that renamed them (in Redis, or as a retry's ETA) is still sent, through the sends
queue."""

from typing import Any

import pytest

from config.celery import app as celery_app
from integrations import tasks
from integrations.models import OutboundMessage
from integrations.sending import message_prepare
from integrations.twilio.sandbox import SandboxServer
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

Status = OutboundMessage.Status
FORMER_NAMES = {
    "integrations.tasks.send_message": ("message_send", (7,)),
    "integrations.tasks.reconcile_sent_messages": ("sent_messages_reconcile", ()),
}


def _queue(task_name: str) -> str:
    return str(celery_app.amqp.router.route({}, task_name)["queue"].name)


@pytest.mark.parametrize(("former", "renamed"), FORMER_NAMES.items())
def test_a_task_sent_by_its_former_name_runs_the_renamed_task(
    former: str, renamed: tuple[str, tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    attribute, args = renamed
    calls: list[tuple[Any, ...]] = []

    def recorded(*received: Any) -> int:
        calls.append(received)
        return 3

    monkeypatch.setattr(tasks, attribute, recorded)
    result = celery_app.tasks[former](*args)
    assert calls == [args]
    assert result in (None, 3)  # the reconciliation's count is passed on


@pytest.mark.parametrize("former", FORMER_NAMES)
def test_both_names_of_a_send_queue_task_are_routed_to_the_sends_queue(former: str) -> None:
    renamed = getattr(tasks, FORMER_NAMES[former][0]).name
    assert renamed == f"integrations.tasks.{FORMER_NAMES[former][0]}"
    assert _queue(former) == _queue(renamed) == "sends"


@pytest.mark.django_db
def test_a_former_send_for_a_message_that_is_gone_does_nothing() -> None:
    assert celery_app.tasks["integrations.tasks.send_message"](0) is None


@pytest.mark.integration
def test_a_message_queued_under_the_former_name_is_sent_by_the_worker(
    worker: WorkerProcess, sandbox: SandboxServer
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    patient = PatientFactory(organization=integration.organization, phone="+14155550123")
    ConsentFactory(patient=patient)
    message = message_prepare(
        organization=integration.organization,
        integration=integration,
        idempotency_key="queued-before-the-deploy",
        to=patient.phone,
        from_number="+15005550006",
        body="Your order shipped",
        purpose="transactional",
        patient=patient,
    )
    assert message.status == Status.PENDING

    celery_app.send_task("integrations.tasks.send_message", args=(message.pk,))

    wait_for(
        lambda: (
            OutboundMessage.objects.get(pk=message.pk).status in (Status.SENT, Status.DELIVERED)
        ),
        what="the worker to send the message queued under the former name",
    )
    assert [m["to"] for m in sandbox.messages()] == ["+14155550123"]
