"""The journeys schema (0008): runs made before it learn their patient from their event, so
enrollment rules and goals count them."""

from typing import Any

import pytest

from tests.patients import conftest as migration_helpers
from tests.patients.conftest import migrate

migrated_back = migration_helpers.migrated_back

BEFORE = [("workflows", "0007_reply_wait")]
AFTER = [("workflows", "0008_journeys")]


def _run(apps: Any, organization: Any, workflow: Any, n: int, payload: dict[str, Any]) -> Any:
    event = apps.get_model("workflows", "Event").objects.create(
        organization=organization, type="order.shipped", payload=payload, dedupe_key=f"k{n}"
    )
    return apps.get_model("workflows", "Run").objects.create(workflow=workflow, event=event)


@pytest.mark.usefixtures("migrated_back")
def test_runs_made_before_the_journeys_schema_get_their_event_customer_as_patient_key() -> None:
    old = migrate(BEFORE)
    organization = old.get_model("patients", "Organization").objects.create(
        name="Clinic", slug="clinic", timezone="UTC"
    )
    workflow = old.get_model("workflows", "Workflow").objects.create(
        organization=organization, name="Shipped", trigger="order.shipped"
    )
    with_customer = _run(old, organization, workflow, 1, {"customer": {"id": "c-1"}})
    without = _run(old, organization, workflow, 2, {"order": {"id": "o-1"}})
    odd = _run(old, organization, workflow, 3, {"customer": "not an object"})

    new = migrate(AFTER)
    keys = dict(new.get_model("workflows", "Run").objects.values_list("id", "patient_key"))

    assert keys == {with_customer.pk: "c-1", without.pk: "", odd.pk: ""}
