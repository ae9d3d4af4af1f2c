"""The engine in-process, talking to the sandbox over HTTP (no worker needed here)."""

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from integrations.models import OutboundMessage
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord, Order
from tests.conftest import sandbox_account
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, Run, StepRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def clinic(sandbox: SandboxServer) -> dict[str, Any]:
    integration = sandbox_account(sandbox, IntegrationFactory())
    org = integration.organization
    workflow = WorkflowFactory(organization=org, trigger="order.shipped")
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=org, first_name="Ann", phone="+14155550123")
    return {"org": org, "integration": integration, "workflow": workflow, "patient": patient}


def _ship(patient: Any) -> Event:
    order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT, number="7001")
    order.status = Order.Status.SHIPPED
    order.save()
    return Event.objects.get(type="order.shipped", subject_id=str(order.pk))


def test_shipped_order_sends_one_sms_with_right_to_from_body(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    event = _ship(clinic["patient"])
    (run_id,) = event_dispatch(event_id=event.pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.SUCCEEDED
    received = sandbox.messages()
    assert [(m["to"], m["from"], m["body"]) for m in received] == [
        ("+14155550123", "+15005550006", "Hi Ann, order 7001 has shipped!")
    ]
    message = OutboundMessage.objects.get()
    assert message.status == OutboundMessage.Status.SENT
    assert message.provider_sid == received[0]["sid"]
    assert message.segments == 1 and message.encoding == "GSM-7"
    assert message.consent_record is not None
    step_run = StepRun.objects.get(run_id=run_id)
    assert step_run.inputs["to"] == "+14155550123"
    assert step_run.result["sid"] == received[0]["sid"]


# The statements one order.shipped event costs a worker, from dispatch to a sent SMS: the
# hot path of every burst (bench/e2e.py), including the read of the clinic's messaging policy
# (cached for 5 s in a worker). Savepoints only exist inside the test's transaction.
STATEMENTS_PER_EVENT = 13


def test_an_event_that_sends_one_sms_costs_a_bounded_number_of_statements(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    from workflows.tasks import events_dispatch

    ConsentFactory(patient=clinic["patient"])
    event = _ship(clinic["patient"])
    with CaptureQueriesContext(connection) as queries:
        events_dispatch([event.pk])
    assert OutboundMessage.objects.get().status == OutboundMessage.Status.SENT
    statements = [
        query["sql"]
        for query in queries.captured_queries
        if not query["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
    ]
    assert len(statements) <= STATEMENTS_PER_EVENT, "\n".join(s[:100] for s in statements)


def test_a_step_run_another_holder_created_meanwhile_is_updated_not_duplicated(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    from workflows.engine import events_dispatch, runs_continue

    ConsentFactory(patient=clinic["patient"])
    _, (run,) = events_dispatch(event_ids=[_ship(clinic["patient"]).pk], claim_per_event=1)
    StepRun.objects.create(run=run, index=0)  # e.g. a worker whose lease was taken over
    (run,) = runs_continue(runs=[run])
    assert run.status == Run.Status.SUCCEEDED
    step_run = StepRun.objects.get(run=run)  # still one row, and it says what happened
    assert step_run.status == StepRun.Status.SUCCEEDED
    assert step_run.inputs["to"] == "+14155550123" and step_run.result["status"] == "sent"
    assert len(sandbox.messages()) == 1


def test_dispatching_the_same_event_twice_or_one_that_does_not_exist_makes_one_run(
    clinic: dict[str, Any],
) -> None:
    event = _ship(clinic["patient"])
    assert len(event_dispatch(event_id=event.pk)) == 1
    assert event_dispatch(event_id=event.pk) == []
    assert event_dispatch(event_id=event.pk + 1000) == []
    assert Run.objects.filter(event=event).count() == 1
    assert Run.objects.count() == 1
    event.refresh_from_db()
    assert event.dispatched_at is not None


def test_a_run_knows_its_patient_by_the_events_customer_id(clinic: dict[str, Any]) -> None:
    patient = clinic["patient"]
    (run_id,) = event_dispatch(event_id=_ship(patient).pk)
    assert Run.objects.get(pk=run_id).patient_key == str(patient.uuid)


def test_advancing_a_finished_run_again_sends_nothing_more(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run_advance(run_id=run_id)
    assert run_advance(run_id=run_id) is None  # not claimable: already finished
    assert len(sandbox.messages()) == 1


def test_no_consent_skips_with_the_reason_recorded(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.SKIPPED
    step_run = StepRun.objects.get(run_id=run_id)
    assert (step_run.status, step_run.skip_reason) == (StepRun.Status.SKIPPED, "no SMS consent")
    message = OutboundMessage.objects.get()
    assert (message.status, message.skip_reason) == (
        OutboundMessage.Status.SKIPPED,
        "no SMS consent",
    )
    assert sandbox.messages() == []


def test_marketing_step_needs_marketing_consent(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"], purpose=ConsentRecord.Purpose.TRANSACTIONAL)
    clinic["workflow"].steps.update(purpose=ConsentRecord.Purpose.MARKETING)
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run_advance(run_id=run_id)
    assert OutboundMessage.objects.get().skip_reason == "no SMS consent"
    assert sandbox.messages() == []


def test_disabled_or_other_trigger_or_filtered_workflows_do_not_run(clinic: dict[str, Any]) -> None:
    org = clinic["org"]
    WorkflowFactory(organization=org, trigger="order.shipped", enabled=False)
    WorkflowFactory(organization=org, trigger="order.created")
    WorkflowFactory(organization=org, trigger="order.shipped", filter={"order.number": "other"})
    matching = WorkflowFactory(
        organization=org, trigger="order.shipped", filter={"order.number": "7001"}
    )
    WorkflowFactory(trigger="order.shipped")  # another clinic's
    event = _ship(clinic["patient"])
    runs = Run.objects.filter(pk__in=event_dispatch(event_id=event.pk))
    assert {r.workflow_id for r in runs} == {clinic["workflow"].pk, matching.pk}


def test_unapproved_sender_is_skipped(clinic: dict[str, Any], sandbox: SandboxServer) -> None:
    ConsentFactory(patient=clinic["patient"])
    step = clinic["workflow"].steps.get()
    step.parameters = {**step.parameters, "from": "+14155550000"}
    step.save()
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run_advance(run_id=run_id)
    message = OutboundMessage.objects.get()
    assert message.skip_reason == "sender +14155550000 is not an approved number for this clinic"
    assert sandbox.messages() == []


def test_invalid_recipient_is_skipped(clinic: dict[str, Any], sandbox: SandboxServer) -> None:
    ConsentFactory(patient=clinic["patient"])
    step = clinic["workflow"].steps.get()
    step.parameters = {**step.parameters, "to": "+1555"}
    step.save()
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run = run_advance(run_id=run_id)
    # Said as it is: the number is invalid, not "not a patient of this clinic".
    assert run is not None and run.status == Run.Status.SKIPPED
    step_run = StepRun.objects.get(run_id=run_id)
    assert step_run.skip_reason == "To Phone “+1555” is not a valid phone number"
    assert not OutboundMessage.objects.exists()
    assert sandbox.messages() == []


def test_template_error_fails_the_step_and_sends_nothing(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    step = clinic["workflow"].steps.get()
    step.parameters = {**step.parameters, "message": "Hi {{customer.nickname}}"}
    step.save()
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.FAILED
    assert "customer.nickname is not in this event's data" in run.error
    assert not OutboundMessage.objects.exists()
    assert sandbox.messages() == []


def test_runs_pin_the_definition_they_started_with(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    step = clinic["workflow"].steps.get()
    step.parameters = {**step.parameters, "message": "edited after the run started"}
    step.save()
    run_advance(run_id=run_id)
    assert sandbox.messages()[0]["body"] == "Hi Ann, order 7001 has shipped!"


def _steps(workflow: Any, *definitions: dict[str, Any]) -> None:
    workflow.steps.all().delete()
    for position, definition in enumerate(definitions, start=1):
        SmsStepFactory(workflow=workflow, position=position, **definition)


def _sms(message: str = "Hi {{customer.firstName}}") -> dict[str, Any]:
    return {
        "type": "adapter",
        "parameters": {"message": message, "to": "{{customer.phone}}", "from": "+15005550006"},
    }


def _due(run_id: int) -> None:
    from datetime import timedelta

    from django.utils import timezone

    past = timezone.now() - timedelta(seconds=1)
    Run.objects.filter(pk=run_id).update(due_at=past)
    StepRun.objects.filter(run_id=run_id, status="waiting").update(due_at=past)
    for step_run in StepRun.objects.filter(run_id=run_id, status="waiting"):
        if "until" in step_run.result:
            step_run.result = {"until": past.isoformat()}
            step_run.save()


def test_condition_false_ends_the_run_and_marks_the_rest_not_reached(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    _steps(
        clinic["workflow"],
        {
            "type": "condition",
            "adapter": "",
            "function": "",
            "parameters": {"query": {"order.totalAmount": 0}},
        },
        _sms(),
    )
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.SUCCEEDED
    first, second = StepRun.objects.filter(run_id=run_id).order_by("index")
    assert first.result == {"matched": False, "then": "end"}
    assert (second.status, second.skip_reason) == (
        StepRun.Status.SKIPPED,
        "not reached: the condition at step 1 was false",
    )
    assert sandbox.messages() == []


def test_condition_false_can_jump_ahead(clinic: dict[str, Any], sandbox: SandboxServer) -> None:
    ConsentFactory(patient=clinic["patient"])
    _steps(
        clinic["workflow"],
        {
            "type": "condition",
            "adapter": "",
            "function": "",
            "parameters": {"query": {"order.number": "nope"}, "else": "3"},
        },
        _sms("skipped text"),
        _sms("jumped text"),
    )
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run_advance(run_id=run_id)
    assert [m["body"] for m in sandbox.messages()] == ["jumped text"]
    statuses = list(
        StepRun.objects.filter(run_id=run_id).order_by("index").values_list("status", flat=True)
    )
    assert statuses == ["succeeded", "skipped", "succeeded"]


def test_condition_on_an_earlier_steps_result(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    _steps(
        clinic["workflow"],
        _sms("first"),
        {
            "type": "condition",
            "adapter": "",
            "function": "",
            "parameters": {"query": {"status": "sent"}, "context": "history.1.result"},
        },
        _sms("second, because the first was sent"),
    )
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run_advance(run_id=run_id)
    assert [m["body"] for m in sandbox.messages()] == [
        "first",
        "second, because the first was sent",
    ]


def test_delay_waits_then_sees_current_data_and_the_trigger_snapshot(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    ConsentFactory(patient=clinic["patient"])
    _steps(
        clinic["workflow"],
        {
            "type": "delay",
            "adapter": "",
            "function": "",
            "parameters": {"kind": "duration", "seconds": 3600},
        },
        {
            "type": "condition",
            "adapter": "",
            "function": "",
            "parameters": {"query": {"order.trackingNumber": "1Z-NEW"}},
        },
        _sms('was {{trigger.order.trackingNumber | default:"none"}}, now {{order.trackingNumber}}'),
    )
    event = _ship(clinic["patient"])
    (run_id,) = event_dispatch(event_id=event.pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.WAITING
    assert run.due_at is not None
    assert run_advance(run_id=run_id) is None  # not due yet: nobody may claim it
    order = Order.objects.get(pk=event.subject_id)
    order.tracking_number = "1Z-NEW"
    order.save()
    _due(run_id)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.SUCCEEDED
    assert [m["body"] for m in sandbox.messages()] == ["was none, now 1Z-NEW"]


def test_retry_from_the_failed_step_does_not_repeat_succeeded_steps(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    from workflows.engine import run_retry

    ConsentFactory(patient=clinic["patient"])
    _steps(clinic["workflow"], _sms("first"), _sms("second"))
    sandbox.add_fault(
        {"kind": "error", "status": 400, "code": 21602, "count": 1, "match": {"Body": "second"}}
    )
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.FAILED
    assert run.error.startswith("step 2: Twilio error 21602")
    assert run_retry(run=run) is True
    assert run_retry(run=Run.objects.get(pk=run_id)) is False  # pending now, not failed
    retried = StepRun.objects.get(run_id=run_id, index=1)
    assert (retried.status, retried.generation, retried.attempts) == ("pending", 1, 0)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.SUCCEEDED
    assert [m["body"] for m in sandbox.messages()] == ["first", "second"]
    assert OutboundMessage.objects.filter(body="second").count() == 2  # the failure stays on record
    assert OutboundMessage.objects.filter(body="first").count() == 1


def test_disabling_cancels_waiting_runs_and_says_how_many(clinic: dict[str, Any]) -> None:
    from workflows.engine import workflow_disable
    from workflows.selectors import workflow_waiting_runs

    _steps(
        clinic["workflow"],
        {
            "type": "delay",
            "adapter": "",
            "function": "",
            "parameters": {"kind": "duration", "seconds": 3600},
        },
        _sms(),
    )
    run_ids = []
    for number in ("1", "2"):
        order = OrderFactory(patient=clinic["patient"], number=number)
        order.status = Order.Status.SHIPPED
        order.save()
        run_ids += event_dispatch(
            event_id=Event.objects.get(subject_id=str(order.pk), type="order.shipped").pk
        )
    for run_id in run_ids:
        run_advance(run_id=run_id)
    assert workflow_waiting_runs(workflow=clinic["workflow"]) == 2
    assert workflow_disable(workflow=clinic["workflow"]) == 2
    assert set(Run.objects.values_list("status", flat=True)) == {Run.Status.CANCELLED}
    assert set(StepRun.objects.values_list("status", flat=True)) == {StepRun.Status.CANCELLED}
    _due(run_ids[0])
    assert run_advance(run_id=run_ids[0]) is None
    assert not OutboundMessage.objects.exists()


def test_a_run_cancelled_while_held_stops_after_its_current_step(
    clinic: dict[str, Any], sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from workflows import engine

    ConsentFactory(patient=clinic["patient"])
    _steps(clinic["workflow"], _sms("first"), _sms("second"))
    (run_id,) = event_dispatch(event_id=_ship(clinic["patient"]).pk)
    real_finish = engine._step_finish

    def finish_then_cancel(step_run: StepRun, outcome: Any) -> None:
        real_finish(step_run, outcome)
        Run.objects.filter(pk=run_id).update(status=Run.Status.CANCELLED)

    monkeypatch.setattr(engine, "_step_finish", finish_then_cancel)
    engine.run_advance(run_id=run_id)
    assert [m["body"] for m in sandbox.messages()] == ["first"]
    assert Run.objects.get(pk=run_id).status == Run.Status.CANCELLED


def _ship_many(patient: Any, count: int) -> list[int]:
    orders = OrderFactory.create_batch(
        count, patient=patient, organization=patient.organization, status="awaiting_shipment"
    )
    for order in orders:
        order.status = Order.Status.SHIPPED
        order.save()
    return list(
        Event.objects.filter(type="order.shipped").order_by("id").values_list("id", flat=True)
    )


def _batch_sent_but_not_finished(clinic: dict[str, Any], count: int) -> tuple[Any, list[Run]]:
    """`count` events dispatched and their runs advanced as one batch, whose SMS went out,
    up to (not including) the batch's finishing writes."""
    from workflows.engine import RunBatch, _run_continue, events_dispatch

    ConsentFactory(patient=clinic["patient"])
    _, runs = events_dispatch(event_ids=_ship_many(clinic["patient"], count), claim_per_event=1)
    batch = RunBatch(runs)
    for run in runs:
        _run_continue(run, {}, batch)
    return batch, runs


# A batch of events, each sending one SMS: what a worker woken for a burst does per batch
# (claim, workflows, steps, runs; patients with consents; integration; the messaging
# policy, cached for 5 s in a worker), per event (the step run's INSERT and the message's
# INSERT), then Twilio's answers, the step runs and the runs recorded together.
BATCH_STATEMENTS = 11
STATEMENTS_PER_EVENT_IN_A_BATCH = 2


def test_a_batch_of_events_costs_two_statements_per_event_and_a_few_per_batch(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    from workflows.tasks import events_dispatch

    ConsentFactory(patient=clinic["patient"])
    event_ids = _ship_many(clinic["patient"], 20)
    with CaptureQueriesContext(connection) as queries:
        events_dispatch(event_ids)
    assert len(sandbox.messages()) == 20
    assert set(Run.objects.values_list("status", flat=True)) == {Run.Status.SUCCEEDED}
    assert set(StepRun.objects.values_list("status", flat=True)) == {StepRun.Status.SUCCEEDED}
    assert all(sr.result["sid"] for sr in StepRun.objects.all())
    messages = OutboundMessage.objects.all()
    assert {m.status for m in messages} == {OutboundMessage.Status.SENT}
    assert {m.provider_status for m in messages} == {"queued"}
    assert {m.provider_sid for m in messages} == {m["sid"] for m in sandbox.messages()}
    statements = [
        query["sql"]
        for query in queries.captured_queries
        if not query["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))
    ]
    assert len(statements) <= BATCH_STATEMENTS + 20 * STATEMENTS_PER_EVENT_IN_A_BATCH, "\n".join(
        s[:100] for s in statements
    )


def test_a_batch_whose_worker_dies_before_its_end_is_taken_over_and_sends_nothing_again(
    clinic: dict[str, Any], sandbox: SandboxServer, settings: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    _, runs = _batch_sent_but_not_finished(clinic, 2)
    # the worker dies here, before the batch's finishing writes: both SMS went out, and
    # neither Twilio's answers nor the runs' ends were recorded
    assert len(sandbox.messages()) == 2
    assert set(Run.objects.values_list("status", flat=True)) == {Run.Status.RUNNING}
    sending = OutboundMessage.objects.all()
    assert {m.status for m in sending} == {OutboundMessage.Status.SENDING}
    assert {m.provider_sid for m in sending} == {None}
    # whoever takes the runs over after the lease, once the messages are stale
    Run.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    OutboundMessage.objects.update(sending_started_at=timezone.now() - timedelta(hours=1))
    for run in runs:
        taken = run_advance(run_id=run.pk)
        assert taken is not None and taken.status == Run.Status.SUCCEEDED
    assert len(sandbox.messages()) == 2  # found at Twilio, not sent again
    assert set(OutboundMessage.objects.values_list("provider_sid", flat=True)) == {
        m["sid"] for m in sandbox.messages()
    }
    # the look-up's answer settles each message: still on its way, or already delivered by
    # the time it was asked (the sandbox moves on by itself)
    taken_over = OutboundMessage.objects.all()
    assert {m.status for m in taken_over} <= {
        OutboundMessage.Status.SENT,
        OutboundMessage.Status.DELIVERED,
    }
    assert all(m.sent_at is not None for m in taken_over)


def test_a_run_cancelled_while_its_batch_went_on_stays_cancelled(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:

    batch, (first, second) = _batch_sent_but_not_finished(clinic, 2)
    Run.objects.filter(pk=second.pk).update(status=Run.Status.CANCELLED)  # workflow disabled
    batch.finish()
    assert (first.status, second.status) == (Run.Status.SUCCEEDED, Run.Status.CANCELLED)
    assert Run.objects.get(pk=second.pk).status == Run.Status.CANCELLED
    assert Run.objects.get(pk=first.pk).status == Run.Status.SUCCEEDED


def test_a_batch_renews_the_lease_of_the_runs_it_still_holds(
    clinic: dict[str, Any], settings: Any
) -> None:
    from workflows.engine import RunBatch, events_dispatch

    _, runs = events_dispatch(event_ids=_ship_many(clinic["patient"], 2), claim_per_event=1)
    leases = dict(Run.objects.values_list("id", "lease_expires_at"))
    batch = RunBatch(runs)
    batch.hold()  # too soon: nothing written
    assert dict(Run.objects.values_list("id", "lease_expires_at")) == leases
    batch._renewed -= settings.CAREFLOW_RUN_LEASE_SECONDS  # a third of the lease has passed
    batch.hold()
    for run in Run.objects.all():
        before = leases[run.pk]
        assert run.lease_expires_at is not None and before is not None
        assert run.lease_expires_at > before


def test_a_status_callback_before_the_batch_records_twilios_answer_keeps_its_status(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    from integrations.sending import message_status_apply

    batch, _ = _batch_sent_but_not_finished(clinic, 1)
    (sent,) = sandbox.messages()
    message = OutboundMessage.objects.get()
    assert message.status == OutboundMessage.Status.SENDING
    assert message_status_apply(message=message, provider_status="delivered", sid=sent["sid"])
    batch.finish()
    message.refresh_from_db()
    assert (message.status, message.provider_status) == ("delivered", "delivered")
    assert message.provider_sid == sent["sid"] and message.sent_at is not None
    assert Run.objects.get().status == Run.Status.SUCCEEDED


def test_a_batch_records_twilios_answers_together_and_keeps_a_callbacks_status(
    clinic: dict[str, Any], sandbox: SandboxServer
) -> None:
    from integrations.sending import message_status_apply

    batch, _ = _batch_sent_but_not_finished(clinic, 3)
    sids = {m["sid"] for m in sandbox.messages()}
    first = OutboundMessage.objects.order_by("id").first()
    assert first is not None and first.status == OutboundMessage.Status.SENDING
    # the first message's delivery report arrives before the batch records the answers
    first_sid = {m["body"]: m["sid"] for m in sandbox.messages()}[first.body]
    assert message_status_apply(message=first, provider_status="delivered", sid=first_sid)
    batch.finish()
    messages = list(OutboundMessage.objects.order_by("id"))
    assert {m.provider_sid for m in messages} == sids
    assert [m.status for m in messages] == ["delivered", "sent", "sent"]
    assert all(m.sent_at is not None for m in messages)


@pytest.mark.django_db(transaction=True)
def test_the_provider_is_called_only_once_the_messages_claim_is_committed_durably(
    clinic: dict[str, Any], sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatch and the step's start commit without waiting for the disk (lost in a
    crash of the database server, they are redone); the claim before the send must not be:
    its commit is what makes them, and the claim itself, durable before anything goes out."""
    from integrations.twilio.transport import TwilioTransport
    from workflows.tasks import events_dispatch

    seen: list[tuple[bool, str, str]] = []
    send = TwilioTransport.send

    def send_watched(self: TwilioTransport, message: OutboundMessage) -> Any:
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            setting = cursor.fetchone()[0]
        claimed = OutboundMessage.objects.values_list("status", flat=True).get(pk=message.pk)
        seen.append((connection.in_atomic_block, setting, claimed))
        return send(self, message)

    monkeypatch.setattr(TwilioTransport, "send", send_watched)
    ConsentFactory(patient=clinic["patient"])
    event = _ship(clinic["patient"])
    with CaptureQueriesContext(connection) as queries:
        events_dispatch([event.pk])
    assert seen == [(False, "on", OutboundMessage.Status.SENDING)]
    # the step's start commits lazily in its own INSERT: no SET and RESET of the session
    statements = [query["sql"] for query in queries.captured_queries]
    assert not [s for s in statements if s.startswith(("SET synchronous", "RESET synchronous"))]
    (started,) = [s for s in statements if s.startswith('INSERT INTO "workflows_steprun"')]
    assert "set_config('synchronous_commit', 'off', true)" in started
    assert OutboundMessage.objects.get().status == OutboundMessage.Status.SENT
    assert Run.objects.get().status == Run.Status.SUCCEEDED
    assert len(sandbox.messages()) == 1
