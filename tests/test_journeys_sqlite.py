"""`make run` keeps its data in SQLite: the journey features' queries (goals and exits read
JSON; enrollment claims) must work there as on PostgreSQL. The engine's functions run in a
`manage.py shell` against a fresh SQLite database, as the README's first command sets up."""

from pathlib import Path

from tests.deployments import sqlite_shell_result

SCRIPT = """
import json
from patients.models import Organization, Patient
from workflows import goals
from workflows.engine import events_dispatch
from workflows.models import Event, Run, Step, Workflow

org = Organization.objects.create(name="Clinic", slug="clinic", timezone="UTC")
patient = Patient.objects.create(organization=org, first_name="A", phone="+14155550123")
workflow = Workflow.objects.create(
    organization=org, name="Reminder", trigger="appointment.booked", enabled=True,
    goal_event="appointment.confirmed",
    exits=[{"event": "appointment.cancelled", "filter": {}, "scope": "patient"}],
)
Step.objects.create(workflow=workflow, position=1, type="delay", adapter="", function="",
                    parameters={"kind": "duration", "seconds": "3600"})
n = 0

def event(kind):
    global n
    n += 1
    return Event.objects.create(
        organization=org, type=kind, payload={"customer": {"id": str(patient.uuid)}},
        dedupe_key=f"e{n}", subject_type="appointment", subject_id="1",
    )

out = {}
events_dispatch(event_ids=[event("appointment.booked").pk], claim_per_event=0)
run = Run.objects.get()
event("appointment.cancelled")  # recorded, not dispatched yet: the send-time check sees it
found = goals.run_ending_recorded(run=run)
out["recorded"] = found[0].event if found else None
events_dispatch(event_ids=[Event.objects.get(type="appointment.cancelled").pk], claim_per_event=0)
run.refresh_from_db()
out["exit"] = [run.status, run.exit_reason]
events_dispatch(event_ids=[event("appointment.booked").pk], claim_per_event=0)
events_dispatch(event_ids=[event("appointment.confirmed").pk], claim_per_event=0)
second = Run.objects.exclude(pk=run.pk).get()
out["goal"] = [second.status, second.goal_reached_at is not None]
print("RESULT " + json.dumps(out))
"""


def test_goals_and_exits_work_on_sqlite(tmp_path: Path) -> None:
    assert sqlite_shell_result(tmp_path, SCRIPT) == {
        "recorded": "appointment.cancelled",
        "exit": ["exited", "exit: appointment.cancelled"],
        "goal": ["exited", True],
    }
