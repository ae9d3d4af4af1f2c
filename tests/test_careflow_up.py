"""`make run`'s supervisor (`manage.py careflow_up`): beat runs as a process of its own and
is started again when it dies, as the worker is, so events keep being processed; the
embedded beat it replaced (`worker -B`) was never restarted, and with it went the event
relay, the run sweeper and the listener. Emails go to files under var/, where the demo's
welcome email workflow writes them."""

import os
import re
import signal
from pathlib import Path

from tests.conftest import wait_for
from tests.deployments import CareflowUp, careflow_up, child_processes

# An order ships in a process whose broker cannot be reached: its event is left in the
# outbox, and only the relay, on beat, can bring it to the worker.
SHIP = """
from patients.models import Order
order = Order.objects.get(patient__first_name={name!r})
order.status = Order.Status.SHIPPED
order.tracking_number = {tracking!r}
order.save()
"""
NO_BROKER = "redis://127.0.0.1:1/0"
SIGN_UP = """
from django.db import transaction
from patients.models import ConsentRecord, Organization, Patient
clinic = Organization.objects.get(slug="sunrise")
with transaction.atomic():
    olivia = Patient.objects.create(
        organization=clinic, first_name="Olivia", last_name="Reed", phone="+14155550111",
        email="olivia@example.com",
    )
    ConsentRecord.objects.create(
        patient=olivia, channel="email", purpose="transactional", action="opt_in",
        source="signup_form", consent_text="Emails about my care.",
    )
    Patient.objects.create(
        organization=clinic, first_name="Ravi", last_name="Shah", phone="+14155550112",
        email="ravi@example.com",
    )
"""


def _child(stack: CareflowUp, role: str) -> int:
    def found() -> int:
        pids = [
            pid
            for pid, argv in child_processes(stack.process.pid).items()
            # "python -m celery -A config beat", or as Celery retitles its processes when
            # setproctitle is installed: "[celery beat] -A config beat …", "[celeryd: …]
            # -active- (-A config worker …)" (its pool's children carry no arguments).
            if "celery" in argv and f"-A config {role} " in f"{argv} "
        ]
        return pids[0] if len(pids) == 1 else 0

    return wait_for(found, timeout=30, what=f"careflow_up's {role} process")


def _ship_and_see_it_texted(stack: CareflowUp, name: str, tracking: str) -> None:
    shipped = stack.manage(
        "shell", "-c", SHIP.format(name=name, tracking=tracking), CELERY_BROKER_URL=NO_BROKER
    )
    assert shipped.returncode == 0, shipped.stdout + shipped.stderr

    def texted() -> bool:
        assert stack.process.poll() is None, f"careflow_up exited:\n{stack.tail()}"
        return any(tracking in message["body"] for message in stack.sandbox_messages())

    wait_for(texted, timeout=90, interval=0.5, what=f"the SMS for {name}'s order\n")


def _sign_up_and_see_the_welcome_email(stack: CareflowUp, emails: Path) -> None:
    """A patient signs up with email consent: the demo's "Welcome email" workflow writes
    them an email under var/email; one without email consent gets none."""
    assert any(f"Emails:         written to {emails}/" in line for line in stack.output)
    signed_up = stack.manage("shell", "-c", SIGN_UP)
    assert signed_up.returncode == 0, signed_up.stdout + signed_up.stderr

    def written() -> str:
        assert stack.process.poll() is None, f"careflow_up exited:\n{stack.tail()}"
        text = "".join(path.read_text() for path in emails.glob("*.log"))
        return text if "Subject: Welcome to Sunrise Telehealth, Olivia" in text else ""

    text = wait_for(written, timeout=90, interval=0.5, what="the welcome email\n")
    assert "From: care@sunrise.example" in text and "To: olivia@example.com" in text
    assert "Hi Olivia," in text
    logged = ""
    for _ in range(60):
        logged = stack.manage(
            "shell",
            "--verbosity=0",
            "-c",
            "from integrations.models import OutboundMessage as M; "
            "print(sorted(M.objects.filter(channel='email').values_list('to', 'status')))",
        ).stdout
        if "ravi@example.com" in logged:
            break
    # written is accepted; Ravi, without email consent, is skipped by the send-time policy
    assert re.search(r"\('olivia@example\.com', '(sent|delivered)'\)", logged), logged
    assert "('ravi@example.com', 'skipped')" in logged
    assert "ravi@example.com" not in text


def _killed_and_restarted(stack: CareflowUp, role: str) -> None:
    before = _child(stack, role)
    os.kill(before, signal.SIGKILL)
    wait_for(
        lambda: any(f"{role} exited with code -9; restarting" in line for line in stack.output),
        timeout=30,
        what=f"careflow_up to say it restarts {role}",
    )
    wait_for(lambda: _child(stack, role) not in (0, before), timeout=30, what=f"a new {role}")


def test_beat_and_worker_are_restarted_and_events_still_go_out(tmp_path: Path) -> None:
    with careflow_up(tmp_path / "var") as stack:
        worker = child_processes(stack.process.pid)[_child(stack, "worker")]
        assert " -B" not in worker  # beat is not embedded in the worker
        token = stack.manage(
            "shell",
            "--verbosity=0",
            "-c",
            "from integrations.models import Integration as I; "
            "from integrations.twilio.account import twilio_account as t; "
            "print(t(I.objects.get(adapter='twilio')).auth_token)",
        ).stdout.strip()
        assert len(token) == 32
        for argv in child_processes(stack.process.pid).values():
            assert token not in argv, "an Auth Token on a command line, readable with ps"
        _sign_up_and_see_the_welcome_email(stack, tmp_path / "var" / "email")

        _killed_and_restarted(stack, "beat")
        _ship_and_see_it_texted(stack, "Maria", "1ZBEATKILLED")

        _killed_and_restarted(stack, "worker")
        _ship_and_see_it_texted(stack, "James", "1ZWORKERKILLED")
        assert stack.process.poll() is None  # neither exit stopped the stack
