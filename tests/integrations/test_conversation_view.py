"""The patient page's conversation with Wait-for-reply: each question with its run, the reply
it got (or none by its deadline, or its cancelling), the branch taken and what the run wrote
back; replies no question waited for, marked so; and the run page's timeline showing the
branches not taken. The engine runs in-process on the loopback sandbox (the workers'
version is tests/test_conversation_end_to_end.py)."""

import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.models import Integration
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
    clinic_client,
)
from tests.workflows.test_conversations import _wait
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, ReplyWait, Run

pytestmark = pytest.mark.django_db
PHONE = "+14155550123"
SENDER = "+15005550006"
QUESTION = "Reply C to confirm, X to cancel"


def _appointment_status(status: str) -> dict[str, Any]:
    return {
        "adapter": "records",
        "function": "setAppointmentStatus",
        "parameters": {"appointment": "{{appointment.id}}", "status": status},
    }


# 1 question, 2 wait, 3 confirm it (Confirm), 4 cancel it (Cancel); anything else: re-ask once
STEPS: list[dict[str, Any]] = [
    {"parameters": {"message": QUESTION, "to": "{{customer.phone}}", "from": SENDER}},
    _wait(otherwise={"goto": "end", "reask": "Sorry, please reply C or X."}),
    _appointment_status("confirmed"),
    _appointment_status("cancelled"),
]


@pytest.fixture
def clinic(sandbox: SandboxServer) -> Integration:
    integration = sandbox_account(sandbox, IntegrationFactory())
    workflow = integration.organization.workflows.create(
        name="Appointment confirmation", trigger="appointment.booked", enabled=True
    )
    for position, step in enumerate(STEPS, start=1):
        SmsStepFactory(workflow=workflow, position=position, **step)
    return integration


@pytest.fixture
def patient(clinic: Integration) -> Patient:
    patient = PatientFactory(organization=clinic.organization, first_name="Ann", phone=PHONE)
    ConsentFactory(patient=patient)
    return patient


def _ask(patient: Patient) -> tuple[Run, Appointment]:
    """Book an appointment: its run texts the question and waits."""
    appointment = AppointmentFactory(patient=patient)
    event = Event.objects.get(type="appointment.booked", subject_id=str(appointment.pk))
    (run_id,) = event_dispatch(event_id=event.pk)
    run = run_advance(run_id=run_id)
    assert run is not None and run.status == Run.Status.WAITING
    return run, appointment


def _reply(clinic: Integration, body: str, sid: str) -> None:
    inbound_sms_receive(integration=clinic, sid=sid, from_=PHONE, to=SENDER, body=body)


def _advance(run: Run) -> Run:
    advanced = run_advance(run_id=run.pk)
    assert advanced is not None
    return advanced


def _answered(
    clinic: Integration, patient: Patient, text: str, sid: str
) -> tuple[Run, Appointment]:
    """Ask, and have the patient answer `text`: the run has taken its branch."""
    run, appointment = _ask(patient)
    _reply(clinic, text, sid=sid)
    run = _advance(run)
    assert run.status == Run.Status.SUCCEEDED
    appointment.refresh_from_db()
    return run, appointment


def _page(patient: Patient, client: Client | None = None) -> str:
    client = client or clinic_client(
        patient.organization,
        "view_patient",
        "view_outboundmessage",
        "view_inboundmessage",
        "view_run",
    )
    response = client.get(reverse("admin:patients_patient_change", args=[patient.pk]))
    assert response.status_code == 200
    return response.content.decode()


def _chat(html: str) -> str:
    match = re.search(r'<ol class="cf-chat">(.*?)</ol>\s*</div>', html, re.S)
    assert match, "no conversation on the page"
    return re.sub(r"\s+", " ", match.group(1))


def test_a_question_shows_its_reply_branch_run_and_what_was_written_back(
    clinic: Integration, patient: Patient
) -> None:
    run, appointment = _answered(clinic, patient, "C.", sid="SM" + "c" * 32)
    assert appointment.status == Appointment.Status.CONFIRMED

    chat = _chat(_page(patient))
    question, answer = chat.split('data-direction="received"')
    assert QUESTION in question
    assert 'data-wait-state="answered"' in question
    assert 'reply “<span class="cf-chat-reply">C.</span>” → branch' in question
    assert '<strong class="cf-chat-branch">Confirm</strong>' in question
    assert "Written back:" in question and "confirmed" in question.split("Written back:")[1]
    assert reverse("admin:workflows_run_change", args=[run.pk]) in question
    # The reply names the question it answered, with its run.
    assert "Answer to Appointment confirmation, step 2: branch “Confirm”" in answer
    assert reverse("admin:workflows_run_change", args=[run.pk]) in answer
    assert "No question was waiting" not in chat


def test_the_run_timeline_shows_the_wait_and_the_branch_not_taken(
    clinic: Integration, patient: Patient
) -> None:
    run, _ = _answered(clinic, patient, "c", sid="SM" + "d" * 32)
    client = clinic_client(patient.organization, "view_run")
    html = client.get(reverse("admin:workflows_run_change", args=[run.pk])).content.decode()
    steps = re.findall(r'<li class="cf-timeline-step (cf-status-\w+)"', html)
    assert steps == [
        "cf-status-succeeded",
        "cf-status-succeeded",
        "cf-status-succeeded",
        "cf-status-nottaken",
    ]
    assert "<dt>Not taken</dt><dd>not reached: in another branch of step 2</dd>" in html
    assert html.count(">not taken</span>") == 1
    assert "<dt>Answer</dt><dd>“c”</dd>" in html and "<dt>Branch</dt><dd>Confirm</dd>" in html


def test_a_reply_that_matched_nothing_is_shown_as_asked_again_then_the_answer(
    clinic: Integration, patient: Patient, sandbox: SandboxServer
) -> None:
    run, appointment = _ask(patient)
    _reply(clinic, "what?", sid="SM" + "e" * 32)
    run = _advance(run)  # sends the clarifying text, keeps waiting
    assert "Sorry, please reply C or X." in [m["body"] for m in sandbox.messages()]
    _reply(clinic, "x", sid="SM" + "f" * 32)
    run = _advance(run)
    appointment.refresh_from_db()
    assert appointment.status == Appointment.Status.CANCELLED

    chat = _chat(_page(patient))
    assert "The first reply, “what?”, matched no branch: asked again." in chat
    assert '<strong class="cf-chat-branch">Cancel</strong>' in chat
    assert "Matched no branch of Appointment confirmation, step 2: asked again" in chat
    assert "Answer to Appointment confirmation, step 2: branch “Cancel”" in chat
    assert "cancelled" in chat.split("Written back:")[1]


def test_no_reply_by_the_deadline_and_an_opt_out_are_shown_on_their_questions(
    clinic: Integration, patient: Patient
) -> None:
    timed_out, _ = _ask(patient)
    ReplyWait.objects.filter(run=timed_out).update(deadline="2000-01-01T12:00Z")
    Run.objects.filter(pk=timed_out.pk).update(due_at="2000-01-01T00:00Z")
    assert _advance(timed_out).status == Run.Status.SUCCEEDED
    opted_out, _ = _ask(patient)
    _reply(clinic, "STOP", sid="SM" + "a" * 32)
    opted_out.refresh_from_db()
    assert opted_out.status == Run.Status.CANCELLED

    chat = _chat(_page(patient))
    first, second = chat.split('class="cf-chat-question"')[1:]
    assert 'data-wait-state="timed_out"' in first and "no reply by <time" in first
    assert "Jan 1, 2000" in first and '<strong class="cf-chat-branch">no reply</strong>' in first
    assert "Written back" not in first
    assert 'data-wait-state="cancelled"' in second
    assert "cancelled: the patient opted out (STOP)" in second
    # STOP is a keyword, never an answer, and not an unrouted reply either.
    assert "No question was waiting" not in chat


def test_a_question_still_waiting_shows_until_when(clinic: Integration, patient: Patient) -> None:
    run, _ = _ask(patient)
    wait = ReplyWait.objects.get(run=run)
    ReplyWait.objects.filter(pk=wait.pk).update(deadline="2031-05-04T17:00Z")
    chat = _chat(_page(patient))
    assert 'data-wait-state="waiting"' in chat
    assert 'waiting for a reply until <time datetime="2031-05-04T' in chat
    assert "cf-chat-branch" not in chat and "Written back" not in chat


def test_a_reply_no_question_waited_for_is_kept_and_marked(
    clinic: Integration, patient: Patient
) -> None:
    _reply(clinic, "Running 10 minutes late", sid="SM" + "b" * 32)
    chat = _chat(_page(patient))
    assert "Running 10 minutes late" in chat
    assert "cf-chat-unrouted" in chat
    assert "No question was waiting for this reply: kept here for staff." in chat


def test_replies_and_workflow_names_are_escaped(clinic: Integration, patient: Patient) -> None:
    clinic.organization.workflows.update(name="<b>Confirm</b>")
    run, _ = _ask(patient)
    _reply(clinic, "<script>alert(1)</script>", sid="SM" + "9" * 32)  # re-asked
    _advance(run)
    _reply(clinic, "c <img src=x>", sid="SM" + "8" * 32)
    _advance(run)
    html = _page(patient)
    assert "<script>alert(1)" not in html and "<img src=x>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "c &lt;img src=x&gt;" in html
    assert "&lt;b&gt;Confirm&lt;/b&gt;, step 2" in html


def test_another_clinics_admin_cannot_open_the_patient_or_the_run(
    clinic: Integration, patient: Patient
) -> None:
    run, _ = _ask(patient)
    other = clinic_client(
        IntegrationFactory().organization,
        "view_patient",
        "view_outboundmessage",
        "view_inboundmessage",
        "view_run",
    )
    for url in (
        reverse("admin:patients_patient_change", args=[patient.pk]),
        reverse("admin:workflows_run_change", args=[run.pk]),
    ):
        response = other.get(url, follow=True)
        # The admin's answer to an object outside the user's queryset: "doesn't exist".
        assert response.redirect_chain == [(reverse("admin:index"), 302)]
        assert QUESTION not in response.content.decode()


def test_the_conversation_costs_the_same_queries_however_many_questions(
    clinic: Integration, patient: Patient
) -> None:
    client = clinic_client(
        patient.organization,
        "view_patient",
        "view_outboundmessage",
        "view_inboundmessage",
        "view_run",
    )

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            _page(patient, client)
        return len(captured)

    _answered(clinic, patient, "c", sid="SM" + "1" * 32)
    few = queries()
    for n in range(2, 5):
        _answered(clinic, patient, "x" if n % 2 else "c", sid="SM" + str(n) * 32)
    _reply(clinic, "unrouted", sid="SM" + "7" * 32)
    assert queries() == few
