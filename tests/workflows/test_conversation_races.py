"""A reply and the timeout resolving one wait at the same instant, on PostgreSQL with a
real connection per thread: whichever commits first wins, and the run takes that branch
only, every time."""

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from tests.factories import AppointmentFactory, IntegrationFactory, PatientFactory
from workflows.conversations import reply_receive
from workflows.engine import run_advance, workflow_definition
from workflows.models import Event, ReplyWait, Run, Step, StepRun, Workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_worker")]
PHONE = "+14155550177"
SENDER = "+15005550006"
ROUNDS = 50


def _in_threads(*targets: Callable[[], Any]) -> list[Any]:
    results: list[Any] = [None] * len(targets)
    barrier = threading.Barrier(len(targets))

    def run(position: int) -> None:
        try:
            barrier.wait()
            results[position] = targets[position]()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(targets))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def _workflow() -> tuple[Workflow, Any]:
    integration = IntegrationFactory()
    organization = integration.organization
    workflow = Workflow.objects.create(
        organization=organization, name="Confirm", trigger="appointment.booked"
    )
    always = {"type": Step.Type.CONDITION, "parameters": {"query": {}}}
    for position, fields in enumerate(
        [
            {
                "type": Step.Type.ADAPTER,
                "parameters": {"message": "Reply C", "to": PHONE, "from": SENDER},
            },
            {
                "type": Step.Type.REPLY,
                "adapter": "",
                "function": "",
                "parameters": {
                    "kind": "duration",
                    "seconds": "60",
                    "branches": [
                        {"label": "Confirm", "match": "keywords", "keywords": ["c"], "goto": 3}
                    ],
                    "otherwise": {"goto": "end"},
                    "no_reply": {"goto": 4},
                },
            },
            always,  # 3: the Confirm branch
            always,  # 4: the no-reply branch
        ],
        start=1,
    ):
        Step.objects.create(workflow=workflow, position=position, **fields)
    patient = PatientFactory(organization=organization, phone=PHONE)
    return workflow, patient


def _parked_run(workflow: Workflow, patient: Any) -> Run:
    """A run parked at its wait whose deadline has just passed (due now), as the engine
    leaves it after sending its question."""
    appointment = AppointmentFactory(patient=patient)
    event = Event.objects.get(type="appointment.booked", subject_id=str(appointment.pk))
    past = timezone.now() - timedelta(milliseconds=1)
    run = Run.objects.create(
        workflow=workflow,
        event=event,
        definition=workflow_definition(workflow),
        status=Run.Status.WAITING,
        next_index=1,
        due_at=past,
    )
    StepRun.objects.create(
        run=run,
        index=0,
        status=StepRun.Status.SUCCEEDED,
        inputs={"message": "Reply C", "to": PHONE, "from": SENDER},
        result={"message_id": 1, "status": "sent"},
    )
    StepRun.objects.create(
        run=run,
        index=1,
        status=StepRun.Status.WAITING,
        started_at=past - timedelta(seconds=60),
        due_at=past,
        result={"question_step": 1},
    )
    ReplyWait.objects.create(
        run=run,
        index=1,
        organization_id=workflow.organization_id,
        phone=PHONE,
        sender=SENDER,
        asked_at=past - timedelta(seconds=60),
        deadline=past,
    )
    return run


def test_a_reply_and_the_timeout_at_the_same_instant_take_exactly_one_branch() -> None:
    workflow, patient = _workflow()
    outcomes = {"answered": 0, "timed_out": 0}
    for round_ in range(ROUNDS):
        run = _parked_run(workflow, patient)
        # The worker's path to its UPDATE is longer than the webhook's; a delay that differs
        # from round to round lets each side reach it first in some rounds, and tie in others.
        lag = (round_ % 10) * 0.004

        def reply(round_: int = round_, lag: float = lag) -> Any:
            time.sleep(lag)
            return reply_receive(
                organization_id=workflow.organization_id,
                phone=PHONE,
                sender=SENDER,
                text="C",
                inbound_ref=f"SM{round_:032d}",
            )

        routed, advanced = _in_threads(reply, partial(run_advance, run_id=run.pk))
        # The reply may have woken the run after the worker's attempt: advance what is due.
        run.refresh_from_db()
        if run.status == Run.Status.WAITING:
            run_advance(run_id=run.pk)
            run.refresh_from_db()
        wait = ReplyWait.objects.get(run=run)
        outcomes[wait.state] += 1
        assert run.status == Run.Status.SUCCEEDED, (round_, run.status, run.error)
        steps = dict(StepRun.objects.filter(run=run).values_list("index", "status"))
        result = StepRun.objects.get(run=run, index=1).result
        if wait.state == "answered":
            assert routed.wait_id == wait.pk and routed.branch == "Confirm"
            assert (wait.answer, wait.inbound) == ("C", f"SM{round_:032d}")
            assert result["branch"] == "Confirm"
            assert (steps[2], steps[3]) == ("succeeded", "skipped")
        else:
            assert wait.state == "timed_out"
            assert routed.wait_id is None  # the reply is kept unrouted, never half applied
            assert wait.answer == "" and wait.inbound is None
            assert result["branch"] == "no_reply"
            assert (steps[2], steps[3]) == ("skipped", "succeeded")
        assert advanced is None or advanced.pk == run.pk
    # Which side wins depends on scheduling; printed for whoever tunes the lags.
    print("reply vs timeout:", outcomes)
