"""The engine's Celery tasks under their former names: a task queued before the deploy that
renamed them (in Redis, or sent by a beat still running the previous release) still runs, on
the queue it was routed to."""

from typing import Any

import pytest

from config.celery import app as celery_app
from tests.conftest import WorkerProcess
from workflows import tasks

# Former wire name → the renamed task (an attribute of workflows.tasks) and sample arguments.
FORMER_NAMES = {
    "workflows.tasks.dispatch_events": ("events_dispatch", ([1, 2],)),
    "workflows.tasks.advance_run": ("run_advance", (7,)),
    "workflows.tasks.relay_events": ("events_relay", ()),
    "workflows.tasks.sweep_runs": ("runs_sweep", ()),
    "workflows.tasks.scan_time_triggers": ("time_triggers_scan", ()),
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
    assert result in (None, 3)  # the beat tasks' counts are passed on


@pytest.mark.parametrize(("former", "renamed"), FORMER_NAMES.items())
def test_a_former_name_is_routed_to_its_renamed_task_queue(
    former: str, renamed: tuple[str, tuple[Any, ...]]
) -> None:
    current = getattr(tasks, renamed[0])
    assert current.name == f"workflows.tasks.{renamed[0]}"
    assert _queue(former) == _queue(current.name)
    assert _queue(former) != "celery"


def test_a_former_name_keeps_its_task_options() -> None:
    # A dispatch is acknowledged on receipt (see events_dispatch): its forwarder too.
    assert celery_app.tasks["workflows.tasks.dispatch_events"].acks_late is False
    assert celery_app.tasks["workflows.tasks.advance_run"].acks_late is True


def test_a_name_never_registered_is_not_forwarded() -> None:
    with pytest.raises(KeyError):
        celery_app.tasks["workflows.tasks.advance_runs"]


def test_the_worker_registers_the_former_names(worker: WorkerProcess) -> None:
    started = worker.log_path.read_text()
    for name in [*FORMER_NAMES, *(f"workflows.tasks.{new}" for new, _ in FORMER_NAMES.values())]:
        assert f". {name}\n" in started
