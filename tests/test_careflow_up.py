"""`make run`'s supervisor (`manage.py careflow_up`): beat runs as a process of its own and
is started again when it dies, as the worker is, so events keep being processed; the
embedded beat it replaced (`worker -B`) was never restarted, and with it went the event
relay, the run sweeper and the listener."""

import os
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


def _child(stack: CareflowUp, role: str) -> int:
    def found() -> int:
        pids = [
            pid
            for pid, argv in child_processes(stack.process.pid).items()
            if f" celery -A config {role}" in argv
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
            "print(t(I.objects.get()).auth_token)",
        ).stdout.strip()
        assert len(token) == 32
        for argv in child_processes(stack.process.pid).values():
            assert token not in argv, "an Auth Token on a command line, readable with ps"

        _killed_and_restarted(stack, "beat")
        _ship_and_see_it_texted(stack, "Maria", "1ZBEATKILLED")

        _killed_and_restarted(stack, "worker")
        _ship_and_see_it_texted(stack, "James", "1ZWORKERKILLED")
        assert stack.process.poll() is None  # neither exit stopped the stack
