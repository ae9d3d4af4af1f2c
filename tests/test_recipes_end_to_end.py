"""The ready-made workflows end to end, as a clinic gets them: added from the recipe, enabled,
then a real worker and beat run them against the Twilio sandbox. The patient gets the
question, the sandbox posts the patient's reply as a signed inbound webhook to the live server,
and the reply's branch writes the clinic's records and texts the follow-up."""

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from integrations.models import Integration
from integrations.recipes import (
    CANCELLED,
    CONFIRMED,
    NO_SHOW_QUESTION,
    REFILL_QUESTION,
    REFILL_THANKS,
    REMINDER_REASK,
    RESCHEDULING,
    SATISFACTION_QUESTION,
    SATISFACTION_SORRY,
    SATISFACTION_THANKS,
)
from integrations.twilio.account import twilio_account
from integrations.twilio.sandbox import SandboxServer
from patients.models import Appointment, Patient, PatientNote, Task
from tests.conftest import WorkerProcess, sandbox_account, wait_for
from tests.factories import (
    AppointmentFactory,
    ConsentFactory,
    IntegrationFactory,
    PatientFactory,
    SubscriptionFactory,
)
from workflows.models import Event, ReplyWait, Run, StepRun, Workflow
from workflows.recipes import RECIPES, recipe_add
from workflows.scans import appointment_reminders_scan, upcoming_renewals_scan

pytestmark = pytest.mark.integration
SENDER = "+15005550006"


class Clinic:
    """A clinic with the sandbox's Twilio account, one recipe added and enabled, one patient."""

    def __init__(self, sandbox: SandboxServer, live_server: Any, slug: str) -> None:
        self.sandbox = sandbox
        self.integration: Integration = sandbox_account(sandbox, IntegrationFactory())
        self.url = f"{live_server.url}/webhooks/twilio/{self.integration.uuid}/inbound/"
        self.workflow = recipe_add(recipe=RECIPES[slug], organization=self.integration.organization)
        self.patient: Patient = PatientFactory(
            organization=self.integration.organization, first_name="Ann", phone="+14155550161"
        )
        ConsentFactory(patient=self.patient)

    def enable(self, **wait_seconds: int) -> None:
        """Enable the workflow; `wait_seconds` shortens the wait at step number "s<n>"."""
        for name, seconds in wait_seconds.items():
            step = self.workflow.steps.get(position=int(name.removeprefix("s")))
            step.parameters = {**step.parameters, "kind": "duration", "seconds": str(seconds)}
            step.save()
        Workflow.objects.filter(pk=self.workflow.pk).update(enabled=True)

    def bodies(self) -> list[str]:
        return [m["body"] for m in self.sandbox.messages()]  # in arrival order

    def texts(self, count: int) -> list[str]:
        wait_for(lambda: len(self.sandbox.messages()) >= count, timeout=30, what=f"{count} texts")
        return self.bodies()

    def waiting(self, count: int = 1) -> None:
        wait_for(
            lambda: (
                ReplyWait.objects.filter(state="waiting").count() == count
                and ReplyWait.objects.count() >= count
            ),
            timeout=30,
            what="the question to wait for its reply",
        )

    def reply(self, body: str) -> None:
        answer = self.sandbox.send_inbound(
            account_sid=twilio_account(self.integration).account_sid,
            from_=self.patient.phone,
            to=SENDER,
            body=body,
            url=self.url,
        )
        assert answer["http_status"] == 200

    def finished(self) -> Run:
        return wait_for(
            lambda: Run.objects.filter(workflow=self.workflow, status=Run.Status.SUCCEEDED).first(),
            timeout=40,
            what="the run to finish",
        )

    def tasks(self) -> list[str]:
        return list(Task.objects.filter(patient=self.patient).values_list("title", flat=True))


def _waits(run: Run) -> list[tuple[str, str]]:
    """Each wait of the run: its state, and the branch its step recorded."""
    branches = dict(StepRun.objects.filter(run=run).values_list("index", "result__branch"))
    waits = ReplyWait.objects.filter(run=run).order_by("index")
    return [(w.state, branches[w.index]) for w in waits]


def _reminded(clinic: Clinic, *, starts_in: timedelta = timedelta(hours=23)) -> Appointment:
    appointment = AppointmentFactory(patient=clinic.patient, starts_at=timezone.now() + starts_in)
    # The worker's beat scans too (every minute) and may take it first: either way, once.
    appointment_reminders_scan()
    reminders = Event.objects.filter(type="appointment.reminder", subject_id=str(appointment.pk))
    assert reminders.count() == 1
    return appointment


def _appointment_ended(clinic: Clinic, status: str) -> None:
    """An appointment an hour ago, marked as it ended (its status change fires the trigger)."""
    appointment = AppointmentFactory(
        patient=clinic.patient, starts_at=timezone.now() - timedelta(hours=1)
    )
    appointment.status = status
    appointment.save()


@pytest.mark.parametrize(
    ("reply", "status", "follow_up", "task"),
    [
        ("c.", Appointment.Status.CONFIRMED, CONFIRMED, ""),
        ("X", Appointment.Status.CANCELLED, CANCELLED, ""),
        ("r 👍", Appointment.Status.RESCHEDULE_REQUESTED, RESCHEDULING, "to reschedule"),
    ],
    ids=["confirm", "cancel", "reschedule"],
)
def test_appointment_reminder_answers_set_the_appointment_status(
    worker: WorkerProcess,
    sandbox: SandboxServer,
    live_server: Any,
    reply: str,
    status: str,
    follow_up: str,
    task: str,
) -> None:
    clinic = Clinic(sandbox, live_server, "appointment-reminder")
    clinic.enable()
    appointment = _reminded(clinic)
    clinic.waiting()
    assert clinic.texts(1)[0].startswith("Hi Ann, a reminder of your appointment on ")
    assert clinic.bodies()[0].endswith("Reply C to confirm, X to cancel, R to reschedule.")
    clinic.reply(reply)
    clinic.finished()
    appointment.refresh_from_db()
    assert appointment.status == status
    texts = clinic.texts(2)
    assert len(texts) == 2
    assert texts[1].split(" on ")[0] == follow_up.split(" on ")[0]
    if task:
        [title] = clinic.tasks()
        assert title.startswith("Call Ann Lee to reschedule the appointment on ")
    else:
        assert clinic.tasks() == []


@pytest.mark.parametrize(
    ("second", "status", "tasks"),
    [
        ("C", Appointment.Status.CONFIRMED, []),
        (
            "still no idea",
            Appointment.Status.BOOKED,
            ["Call Ann Lee: reply to the appointment reminder not understood"],
        ),
    ],
    ids=["then-confirms", "unclear-twice-staff-call"],
)
def test_appointment_reminder_reasks_once_then_takes_the_second_reply(
    worker: WorkerProcess,
    sandbox: SandboxServer,
    live_server: Any,
    second: str,
    status: str,
    tasks: list[str],
) -> None:
    clinic = Clinic(sandbox, live_server, "appointment-reminder")
    clinic.enable()
    appointment = _reminded(clinic)
    clinic.waiting()
    clinic.reply("what time is it?")
    assert clinic.texts(2)[1] == REMINDER_REASK
    clinic.reply(second)
    clinic.finished()
    appointment.refresh_from_db()
    assert appointment.status == status
    assert clinic.tasks() == tasks
    assert ReplyWait.objects.get().reasked is True
    if not tasks:
        assert clinic.texts(3)[2].startswith("Thank you, your appointment on ")
    else:
        assert len(clinic.bodies()) == 2  # the question and the one re-ask


def test_appointment_reminder_with_no_reply_reminds_again_and_takes_that_answer(
    worker: WorkerProcess, sandbox: SandboxServer, live_server: Any
) -> None:
    clinic = Clinic(sandbox, live_server, "appointment-reminder")
    clinic.enable(s2=2)
    appointment = _reminded(clinic)
    texts = clinic.texts(2)
    assert texts[1].startswith("Hi Ann, we have not heard back about your appointment on ")
    wait_for(
        lambda: ReplyWait.objects.filter(state="waiting", index=11).exists(),
        timeout=30,
        what="the second reminder's wait",
    )
    clinic.reply("R")
    run = clinic.finished()
    appointment.refresh_from_db()
    assert appointment.status == Appointment.Status.RESCHEDULE_REQUESTED
    assert len(clinic.tasks()) == 1
    assert clinic.texts(3)[2] == RESCHEDULING
    assert _waits(run) == [("timed_out", "no_reply"), ("answered", "Reschedule")]


def test_appointment_reminder_with_no_reply_at_all_ends_two_hours_before(
    worker: WorkerProcess, sandbox: SandboxServer, live_server: Any
) -> None:
    clinic = Clinic(sandbox, live_server, "appointment-reminder")
    clinic.enable(s2=2)  # the second wait is the recipe's own: until 2 hours before
    appointment = _reminded(clinic, starts_in=timedelta(hours=2, seconds=8))
    run = clinic.finished()
    assert _waits(run) == [("timed_out", "no_reply"), ("timed_out", "no_reply")]
    assert len(clinic.bodies()) == 2  # two reminders, nothing else
    appointment.refresh_from_db()
    assert appointment.status == Appointment.Status.BOOKED
    assert clinic.tasks() == []


@pytest.mark.parametrize("reply", ["YES", "no"])
def test_refill_due_yes_asks_staff_for_the_refill_and_no_leaves_a_note(
    worker: WorkerProcess, sandbox: SandboxServer, live_server: Any, reply: str
) -> None:
    clinic = Clinic(sandbox, live_server, "refill-due")
    clinic.enable()
    SubscriptionFactory(
        patient=clinic.patient, next_cycle_date=timezone.localdate() + timedelta(days=3)
    )
    assert upcoming_renewals_scan() == 1
    clinic.waiting()
    assert clinic.texts(1) == [REFILL_QUESTION.replace("{{customer.firstName}}", "Ann")]
    clinic.reply(reply)
    clinic.finished()
    notes = list(PatientNote.objects.filter(patient=clinic.patient).values_list("text", flat=True))
    if reply == "YES":
        assert clinic.tasks() == ["Refill request from Ann Lee (replied to the refill reminder)"]
        assert notes == []
        assert clinic.texts(2)[1] == REFILL_THANKS
    else:
        assert clinic.tasks() == []
        assert notes == ["Replied NO to the refill reminder: no refill needed."]
        assert len(clinic.bodies()) == 1


def test_no_show_reply_1_asks_staff_to_rebook(
    worker: WorkerProcess, sandbox: SandboxServer, live_server: Any
) -> None:
    clinic = Clinic(sandbox, live_server, "no-show-follow-up")
    clinic.enable()
    _appointment_ended(clinic, Appointment.Status.NO_SHOW)
    clinic.waiting()
    assert clinic.texts(1) == [NO_SHOW_QUESTION.replace("{{customer.firstName}}", "Ann")]
    clinic.reply("1")
    clinic.finished()
    assert clinic.tasks() == ["Call Ann Lee to rebook a missed appointment"]
    assert len(clinic.texts(2)) == 2


@pytest.mark.parametrize(("score", "task"), [("2", True), ("5!", False)])
def test_post_visit_score_low_makes_a_task_good_gets_thanks(
    worker: WorkerProcess, sandbox: SandboxServer, live_server: Any, score: str, task: bool
) -> None:
    clinic = Clinic(sandbox, live_server, "post-visit-satisfaction")
    clinic.enable()
    _appointment_ended(clinic, Appointment.Status.COMPLETED)
    clinic.waiting()
    assert clinic.texts(1) == [SATISFACTION_QUESTION.replace("{{customer.firstName}}", "Ann")]
    clinic.reply(score)
    clinic.finished()
    texts = clinic.texts(2)
    if task:
        assert clinic.tasks() == ["Low visit score (2) from Ann Lee: call them"]
        assert texts[1] == SATISFACTION_SORRY
    else:
        assert clinic.tasks() == []
        assert texts[1] == SATISFACTION_THANKS.replace("{{customer.firstName}}", "Ann")
