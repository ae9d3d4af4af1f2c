"""Wait-for-reply in-process: the engine parks a run as a ReplyWait after its question, the
inbound SMS path routes a reply to it (workflows.conversations), and the run branches on it.
Twilio is the loopback sandbox; workers are not needed here (tests/test_conversation_end_to_end.py
has them)."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from integrations.models import InboundMessage, Integration, OutboundMessage
from integrations.twilio.keywords import inbound_sms_receive
from integrations.twilio.sandbox import SandboxServer
from patients.models import Appointment, Patient
from tests.conftest import sandbox_account
from tests.factories import (
    AppointmentFactory,
    ConsentFactory,
    IntegrationFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows.conversations import ReplyRouted, reply_receive, reply_waits_cancel
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, ReplyWait, Run, StepRun, Workflow

pytestmark = pytest.mark.django_db
PHONE = "+14155550123"
SENDER = "+15005550006"


def _sms(message: str) -> dict[str, Any]:
    return {"parameters": {"message": message, "to": "{{customer.phone}}", "from": SENDER}}


def _wait(**params: Any) -> dict[str, Any]:
    return {
        "type": "reply",
        "adapter": "",
        "function": "",
        "parameters": {
            "kind": "duration",
            "seconds": "3600",
            "branches": [
                {"label": "Confirm", "match": "keywords", "keywords": ["c", "yes"], "goto": "next"},
                {"label": "Cancel", "match": "keywords", "keywords": ["x"], "goto": 4},
            ],
            "otherwise": {"goto": 5},
            "no_reply": {"goto": "end"},
            **params,
        },
    }


# 1 question, 2 wait, 3 "confirmed" (Confirm), 4 "cancelled" (Cancel), 5 "sorry" (otherwise)
STEPS = [
    _sms("Reply C to confirm, X to cancel"),
    _wait(),
    _sms("Confirmed"),
    _sms("Cancelled"),
    _sms("Sorry?"),
]


@pytest.fixture
def clinic(sandbox: SandboxServer) -> Integration:
    return sandbox_account(sandbox, IntegrationFactory())


def _workflow(integration: Integration, steps: list[dict[str, Any]] = STEPS) -> Workflow:
    workflow = WorkflowFactory(
        organization=integration.organization, trigger="appointment.booked", enabled=True
    )
    for position, step in enumerate(steps, start=1):
        SmsStepFactory(workflow=workflow, position=position, **step)
    return workflow


def _patient(integration: Integration, phone: str = PHONE) -> Patient:
    patient = PatientFactory(organization=integration.organization, first_name="Ann", phone=phone)
    ConsentFactory(patient=patient)
    return patient


def _start(integration: Integration, patient: Patient) -> Run:
    """Book an appointment, dispatch its event and advance its run(s) until they wait."""
    appointment = AppointmentFactory(patient=patient)
    event = Event.objects.get(type="appointment.booked", subject_id=str(appointment.pk))
    run_ids = event_dispatch(event_id=event.pk)
    for run_id in run_ids:
        run_advance(run_id=run_id)
    return Run.objects.get(pk=run_ids[-1])


def _reply(integration: Integration, body: str, *, sid: str, phone: str = PHONE) -> Any:
    return inbound_sms_receive(integration=integration, sid=sid, from_=phone, to=SENDER, body=body)


def _route(organization_id: int, text: str, *, ref: str, sender: str = SENDER) -> ReplyRouted:
    """Route a reply as the inbound SMS path does (without recording the message)."""
    return reply_receive(
        organization_id=organization_id, phone=PHONE, sender=sender, text=text, inbound_ref=ref
    )


def _advance(run: Run) -> Run:
    """What the worker woken by the reply does (the test's transaction never commits, so the
    task queued on commit never runs: the wake is checked, then the advance done here)."""
    run.refresh_from_db()
    assert run.status == Run.Status.WAITING and run.due_at is not None
    assert run.due_at <= timezone.now()
    advanced = run_advance(run_id=run.pk)
    assert advanced is not None
    return advanced


def _two_questions(clinic: Integration) -> tuple[Run, Run]:
    """Two runs of one workflow waiting on the same patient's reply, the second asked last."""
    _workflow(clinic)
    patient = _patient(clinic)
    return _start(clinic, patient), _start(clinic, patient)


def _time_up(run: Run) -> None:
    """The wait's deadline passed a second ago, and the run is due (beat's sweep's view)."""
    past = timezone.now() - timedelta(seconds=1)
    ReplyWait.objects.filter(run=run).update(deadline=past)
    Run.objects.filter(pk=run.pk).update(due_at=past)


def _bodies(sandbox: SandboxServer) -> list[str]:
    return [m["body"] for m in sandbox.messages()]


def test_the_run_waits_after_its_question_as_a_reply_wait(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _workflow(clinic)
    run = _start(clinic, _patient(clinic))
    assert run.status == Run.Status.WAITING
    wait = ReplyWait.objects.get(run=run)
    assert (wait.index, wait.phone, wait.sender, wait.state) == (1, PHONE, SENDER, "waiting")
    assert wait.deadline - wait.asked_at == timedelta(hours=1)
    assert run.due_at == wait.deadline  # the timeout is the run's due time, swept by beat
    question = OutboundMessage.objects.get(step_run__index=0)
    assert wait.question == str(question.pk)
    step_run = StepRun.objects.get(run=run, index=1)
    assert step_run.status == StepRun.Status.WAITING
    assert step_run.result["question_step"] == 1
    assert _bodies(sandbox) == ["Reply C to confirm, X to cancel"]


@pytest.mark.parametrize(
    ("reply", "branch", "sent"),
    [
        ("C", "Confirm", "Confirmed"),
        ("yes 👍", "Confirm", "Confirmed"),  # YES is an opt-in word, and an answer here
        ("x.", "Cancel", "Cancelled"),
        ("what?", "otherwise", "Sorry?"),
    ],
)
def test_a_reply_takes_its_branch_and_runs_only_that_branch(
    clinic: Integration, sandbox: SandboxServer, reply: str, branch: str, sent: str
) -> None:
    _workflow(clinic)
    run = _start(clinic, _patient(clinic))
    _reply(clinic, reply, sid="SM" + "1" * 32)
    wait = ReplyWait.objects.get(run=run)
    assert (wait.state, wait.branch, wait.answer) == ("answered", branch, reply)
    assert wait.inbound == "SM" + "1" * 32
    run = _advance(run)
    assert run.status == Run.Status.SUCCEEDED
    assert _bodies(sandbox) == ["Reply C to confirm, X to cancel", sent]
    step_run = StepRun.objects.get(run=run, index=1)
    assert step_run.status == StepRun.Status.SUCCEEDED
    assert step_run.result["reply"] == reply and step_run.result["branch"] == branch
    assert step_run.result["inbound"] == "SM" + "1" * 32 and step_run.result["reasked"] is False
    skipped = StepRun.objects.filter(run=run, status=StepRun.Status.SKIPPED)
    assert skipped.count() == 2  # the other two branches' steps
    assert all("not reached" in s.skip_reason for s in skipped)


def test_no_reply_before_the_timeout_takes_the_no_reply_branch(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _workflow(clinic)
    run = _start(clinic, _patient(clinic))
    _time_up(run)
    run = run_advance(run_id=run.pk)
    assert run is not None and run.status == Run.Status.SUCCEEDED
    wait = ReplyWait.objects.get(run=run)
    assert wait.state == "timed_out" and wait.resolved_at is not None
    assert StepRun.objects.get(run=run, index=1).result["branch"] == "no_reply"
    assert _bodies(sandbox) == ["Reply C to confirm, X to cancel"]
    # A reply after the wait timed out answers nothing (it is kept, as any unrouted reply).
    assert _reply(clinic, "C", sid="SM" + "2" * 32).created
    assert ReplyWait.objects.get(run=run).answer == ""


def test_a_reply_just_after_the_deadline_still_answers_until_the_wait_is_timed_out(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _workflow(clinic)
    run = _start(clinic, _patient(clinic))
    _time_up(run)
    _reply(clinic, "x", sid="SM" + "h" * 32)
    run = _advance(run)
    assert ReplyWait.objects.get(run=run).state == "answered"
    assert _bodies(sandbox)[-1] == "Cancelled"


def test_an_unmatched_first_reply_is_reasked_once_then_takes_otherwise(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    steps = [*STEPS]
    steps[1] = _wait(otherwise={"goto": 5, "reask": "Sorry, please reply C or X."})
    _workflow(clinic, steps)
    run = _start(clinic, _patient(clinic))
    routed = _route(clinic.organization_id, "maybe", ref="SM" + "3" * 32)
    assert routed.reasked and routed.run_id == run.pk
    run = _advance(run)
    assert run.status == Run.Status.WAITING  # still waiting, same deadline
    wait = ReplyWait.objects.get(run=run)
    assert run.due_at == wait.deadline
    assert (wait.state, wait.reasked, wait.reask_reply) == ("waiting", True, "maybe")
    reask = OutboundMessage.objects.get(idempotency_key=f"run:{run.pk}:step:1:reask")
    assert (reask.to, reask.from_number, reask.body) == (PHONE, SENDER, reask.body)
    assert _bodies(sandbox)[-1] == "Sorry, please reply C or X."
    # Woken again (e.g. a redelivered task): the clarifying text is not sent twice.
    Run.objects.filter(pk=run.pk).update(due_at=timezone.now())
    run = run_advance(run_id=run.pk)
    assert run is not None and run.status == Run.Status.WAITING
    assert len(sandbox.messages()) == 2
    # A second unmatched reply takes "anything else".
    routed = _route(clinic.organization_id, "dunno", ref="SM" + "4" * 32)
    assert routed.branch == "otherwise" and not routed.reasked
    run = _advance(run)
    assert run.status == Run.Status.SUCCEEDED
    assert _bodies(sandbox)[-1] == "Sorry?"
    result = StepRun.objects.get(run=run, index=1).result
    assert result["reasked"] is True and result["reply"] == "dunno"
    assert result["reask"]["status"] == "sent"


def test_a_reply_while_no_question_waits_is_kept(clinic: Integration) -> None:
    _patient(clinic)
    result = _reply(clinic, "C", sid="SM" + "5" * 32)
    assert result.created and result.message.body == "C"
    assert Event.objects.filter(type="message.inbound").count() == 1
    assert not ReplyWait.objects.exists()


def test_the_most_recent_question_wins_and_the_other_keeps_waiting(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    first, second = _two_questions(clinic)
    assert first.pk != second.pk
    ReplyWait.objects.filter(run=first).update(asked_at=timezone.now() - timedelta(minutes=5))
    _reply(clinic, "C", sid="SM" + "6" * 32)
    assert ReplyWait.objects.get(run=second).state == "answered"
    assert ReplyWait.objects.get(run=first).state == "waiting"
    first.refresh_from_db()
    assert first.status == Run.Status.WAITING
    assert first.due_at is not None and first.due_at > timezone.now()
    # The next reply goes to the one still waiting.
    _reply(clinic, "X", sid="SM" + "7" * 32)
    assert ReplyWait.objects.get(run=first).branch == "Cancel"


def test_a_reply_from_another_number_or_to_another_sender_answers_nothing(
    clinic: Integration,
) -> None:
    _workflow(clinic)
    run = _start(clinic, _patient(clinic))
    _reply(clinic, "C", sid="SM" + "8" * 32, phone="+14155550199")
    routed = _route(clinic.organization_id, "C", ref="SM" + "9" * 32, sender="+15005550007")
    assert routed.wait_id is None
    other = IntegrationFactory()  # another clinic, same numbers
    routed = _route(other.organization_id, "C", ref="SM" + "a" * 32)
    assert routed.wait_id is None
    assert ReplyWait.objects.get(run=run).state == "waiting"


def test_a_redelivered_inbound_webhook_is_routed_once(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    first, second = _two_questions(clinic)
    assert _reply(clinic, "C", sid="SM" + "b" * 32).created
    assert not _reply(clinic, "C", sid="SM" + "b" * 32).created
    answered = ReplyWait.objects.filter(state="answered")
    assert answered.count() == 1  # the redelivery did not answer the other question
    assert ReplyWait.objects.filter(run__in=[first, second], state="waiting").count() == 1


def test_stop_cancels_the_numbers_waiting_runs_and_is_never_an_answer(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _workflow(clinic)
    patient = _patient(clinic)
    run = _start(clinic, patient)
    elsewhere = IntegrationFactory()  # the same number at another clinic keeps waiting
    other = ReplyWait.objects.create(
        run=run,
        index=1,
        generation=7,
        organization=elsewhere.organization,
        phone=PHONE,
        sender=SENDER,
        asked_at=timezone.now(),
        deadline=timezone.now() + timedelta(hours=1),
    )
    _reply(clinic, "STOP", sid="SM" + "c" * 32)
    wait = ReplyWait.objects.get(run=run, generation=0)
    assert wait.state == "cancelled" and "opted out" in wait.reason
    assert wait.answer == "" and wait.inbound is None
    run.refresh_from_db()
    assert run.status == Run.Status.CANCELLED and "opted out (STOP)" in run.error
    assert StepRun.objects.get(run=run, index=1).status == StepRun.Status.CANCELLED
    other.refresh_from_db()
    assert other.state == "waiting"
    assert _bodies(sandbox) == ["Reply C to confirm, X to cancel"]  # nothing more sent
    assert reply_waits_cancel(organization_id=clinic.organization_id, phone=PHONE, reason="x") == 0


@pytest.mark.parametrize("keyword", ["HELP", "info"])
def test_help_is_never_an_answer(clinic: Integration, keyword: str) -> None:
    steps = [*STEPS]
    steps[1] = _wait(
        branches=[{"label": "Info", "match": "keywords", "keywords": ["info"], "goto": "next"}]
    )
    _workflow(clinic, steps)
    run = _start(clinic, _patient(clinic))
    _reply(clinic, keyword, sid="SM" + "d" * 32)
    assert ReplyWait.objects.get(run=run).state == "waiting"


def test_yes_from_an_opted_out_number_is_an_opt_in_not_an_answer(clinic: Integration) -> None:
    _workflow(clinic)
    run = _start(clinic, _patient(clinic))
    _reply(clinic, "STOP", sid="SM" + "e" * 32)
    assert ReplyWait.objects.get(run=run).state == "cancelled"
    result = _reply(clinic, "YES", sid="SM" + "f" * 32)
    assert result.message.action == InboundMessage.Action.OPT_IN


def test_a_wait_whose_question_was_not_sent_is_skipped_and_the_run_ends(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _workflow(clinic)
    patient = PatientFactory(organization=clinic.organization, phone=PHONE)  # no consent
    run = _start(clinic, patient)
    assert run.status == Run.Status.SKIPPED
    assert not ReplyWait.objects.exists()
    wait_step = StepRun.objects.get(run=run, index=1)
    assert wait_step.status == StepRun.Status.SKIPPED
    assert "no text was sent" in wait_step.skip_reason
    assert sandbox.messages() == []


def test_the_confirm_branch_ends_at_its_segment_end(
    clinic: Integration, sandbox: SandboxServer
) -> None:
    _workflow(clinic)
    run = _start(clinic, _patient(clinic))
    _reply(clinic, "C", sid="SM" + "g" * 31)
    run = _advance(run)
    # Steps 4 and 5 belong to other branches: not sent, marked not reached.
    assert _bodies(sandbox) == ["Reply C to confirm, X to cancel", "Confirmed"]
    reasons = dict(
        StepRun.objects.filter(run=run, index__in=[3, 4]).values_list("index", "skip_reason")
    )
    assert reasons == {
        3: "not reached: in another branch of step 2",
        4: "not reached: in another branch of step 2",
    }
    assert Appointment.objects.count() == 1


def test_a_reply_while_a_worker_holds_the_run_is_not_left_until_the_deadline(
    clinic: Integration, sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second reply arrives while the worker is sending the clarifying text (the run is
    "running", so the reply's wake cannot touch it): parking sees the wait answered and makes
    the run due at once instead of at the deadline an hour away."""
    from workflows import engine

    steps = [*STEPS]
    steps[1] = _wait(otherwise={"goto": 5, "reask": "Sorry, please reply C or X."})
    _workflow(clinic, steps)
    run = _start(clinic, _patient(clinic))
    _route(clinic.organization_id, "maybe", ref="SM" + "i" * 32)
    reask_send = engine._reask_send

    def reask_then_reply(*args: Any, **kwargs: Any) -> Any:
        outcome = reask_send(*args, **kwargs)
        assert Run.objects.get(pk=run.pk).status == Run.Status.RUNNING
        _route(clinic.organization_id, "C", ref="SM" + "j" * 32)
        return outcome

    monkeypatch.setattr(engine, "_reask_send", reask_then_reply)
    run = _advance(run)
    assert ReplyWait.objects.get(run=run).state == "answered"
    assert run.status == Run.Status.WAITING
    assert run.due_at is not None and run.due_at <= timezone.now()
    run = _advance(run)
    assert run.status == Run.Status.SUCCEEDED
    assert _bodies(sandbox) == [
        "Reply C to confirm, X to cancel",
        "Sorry, please reply C or X.",
        "Confirmed",
    ]
