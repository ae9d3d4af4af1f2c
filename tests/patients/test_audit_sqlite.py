"""The audit trail on SQLite, which `make run` uses: there an audited record's save reads its
row before the UPDATE (no UPDATE … FROM … FOR UPDATE RETURNING), and the entry of a save that
records an event is an INSERT of its own (no outbox statement to carry it). In a process of
its own with a fresh SQLite database, as tests/test_journeys_sqlite.py does."""

from pathlib import Path

from tests.deployments import sqlite_shell_result

SCRIPT = """
import json
from django.db import connection
from django.db.models import F
from patients.models import AuditEntry, Order
from tests.factories import OrderFactory
from workflows.models import Event

assert connection.vendor == "sqlite", connection.vendor
order = Order.objects.get(pk=OrderFactory(coupon="").pk)
Order.objects.filter(pk=order.pk).update(coupon="LATER")
order.status = "shipped"
order.save()
order.total_amount = F("total_amount") + 1
order.save()
entries = AuditEntry.objects.filter(model="patients.Order", action="updated").order_by("id")
out = {
    "changes": [sorted(e.changes) for e in entries],
    "coupon": entries[0].changes["coupon"],
    "status": entries[0].changes["status"],
    "events": Event.objects.filter(type="order.shipped", subject_id=str(order.pk)).count(),
    "replaced": order.replaced.status,
}
print("RESULT " + json.dumps(out))
"""


def test_audited_saves_on_sqlite_read_the_row_before_and_write_their_entries(
    tmp_path: Path,
) -> None:
    result = sqlite_shell_result(tmp_path, SCRIPT)
    assert result["changes"] == [
        ["coupon", "status", "status_history"],
        ["total_amount"],
    ]
    assert result["coupon"] == ["LATER", ""]
    assert result["status"] == ["processing", "shipped"]
    assert result["events"] == 1
    assert result["replaced"] == "shipped"
