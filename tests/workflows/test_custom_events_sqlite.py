"""Custom event types and direct starts on SQLite, which `make run` uses: declaring a type,
recording an event of it, its workflow dispatched, a direct start (claimed at once, once per
key), the builder's schema and a run's status, in a process of its own with the settings a
user's shell has (a fresh SQLite database, migrated)."""

from pathlib import Path

from tests.deployments import sqlite_shell

SCRIPT = """
from django.db import connection
from tests.factories import (
    CustomEventTypeFactory, PatientFactory, SmsStepFactory, WorkflowFactory,
)
from workflows import builder
from workflows.custom_events import custom_event_record, event_types
from workflows.engine import event_dispatch
from workflows.models import Run
from workflows.selectors import run_status
from workflows.starts import workflow_start

assert connection.vendor == "sqlite", connection.vendor

custom = CustomEventTypeFactory()
org = custom.organization
workflow = WorkflowFactory(organization=org, trigger=custom.type_name, enrollment="patient")
SmsStepFactory(workflow=workflow, parameters={"message": "Kit {{data.kitId}}", "to": "x"})
assert custom.workflows_using() == [workflow]
assert custom.type_name in event_types(organization_id=org.pk)
schema = builder.builder_schema(organization_id=org.pk)
assert any(t["category"] == "Custom" for t in schema["triggers"])
patient = PatientFactory(organization=org)
event, created = custom_event_record(
    organization=org, type_name=custom.type_name, patient=patient,
    data={"kitId": "K-1"}, idempotency_key="k",
)
assert created
assert custom_event_record(
    organization=org, type_name=custom.type_name, patient=patient,
    data={"kitId": "K-1"}, idempotency_key="k",
)[1] is False
assert len(event_dispatch(event_id=event.pk)) == 1
other = PatientFactory(organization=org)
started = workflow_start(
    workflow=workflow, patient=other, data={"data": {"kitId": "K-2"}}, idempotency_key="s"
)
assert started.run is not None, started
again = workflow_start(
    workflow=workflow, patient=other, data={"data": {"kitId": "K-2"}}, idempotency_key="s"
)
assert again.run == started.run and not again.created
refused = workflow_start(
    workflow=workflow, patient=other, data={"data": {"kitId": "K-3"}}, idempotency_key="t"
)
assert refused.run is None and refused.skip.reason == "patient", refused
assert run_status(run=Run.objects.get(pk=started.run.pk))["status"] == "pending"
print("sqlite ok")
"""


def test_custom_events_and_starts_work_on_sqlite(tmp_path: Path) -> None:
    assert "sqlite ok" in sqlite_shell(tmp_path, SCRIPT)
