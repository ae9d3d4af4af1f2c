"""No index of careflow's tables is written for nothing: none is a leading part of another
(an index on (a) beside one on (a, b) serves no lookup the second does not, and every INSERT
writes both), and the migration that took such indexes away drops them concurrently and
gives them back when reversed."""

from typing import Any

import pytest
from django.apps import apps
from django.db import connection

from tests.patients import conftest as migration_helpers
from tests.patients.conftest import latest_migrations, migrate

migrated_back = migration_helpers.migrated_back

APPS = ("patients", "workflows", "integrations")
BEFORE = [
    ("integrations", "0018_large"),
    ("workflows", "0016_large"),
    ("patients", "0012_language"),
]

# Plain b-tree indexes (no condition, no expression, not unique) whose columns and operator
# classes begin another plain b-tree index of the same table.
REDUNDANT = """
WITH idx AS (
    SELECT c.relname AS tbl, i.relname AS idx, x.indisunique AS uniq,
           x.indpred IS NOT NULL OR x.indexprs IS NOT NULL AS special,
           x.indkey::text AS cols, x.indclass::text AS opclasses, am.amname AS method
    FROM pg_index x
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_class c ON c.oid = x.indrelid
    JOIN pg_am am ON am.oid = i.relam
    WHERE c.relname = ANY(%s)
)
SELECT a.tbl, a.idx, b.idx
FROM idx a JOIN idx b ON a.tbl = b.tbl AND a.idx <> b.idx
WHERE NOT a.uniq AND NOT a.special AND NOT b.special
  AND a.method = 'btree' AND b.method = 'btree'
  AND (b.cols = a.cols OR b.cols LIKE a.cols || ' %%')
  AND (b.opclasses = a.opclasses OR b.opclasses LIKE a.opclasses || ' %%')
ORDER BY 1, 2, 3
"""

# The indexes the migrations of 7 Dec 2026 took away, one of each table (written out, not
# read from the models): a field's own index where a composite one starts with the field.
TAKEN = {
    ("integrations_outboundmessage", "organization_id"),
    ("integrations_outboundmessage", "patient_id"),
    ("workflows_steprun", "run_id"),
    ("workflows_run", "workflow_id"),
    ("workflows_event", "organization_id"),
    ("patients_auditentry", "model"),
}


def _tables(state: Any = apps) -> list[str]:
    return [
        model._meta.db_table
        for label in APPS
        for model in state.get_app_config(label).get_models()
        if model._meta.managed
    ]


def _redundant(tables: list[str]) -> list[tuple[str, str, str]]:
    with connection.cursor() as cursor:
        cursor.execute(REDUNDANT, [tables])
        return cursor.fetchall()


def _single_column_indexes(table: str) -> set[str]:
    """The columns of `table` that have a plain index of their own (the `_like` twin of a
    text column's counts too)."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {
        info["columns"][0]
        for info in constraints.values()
        if info["index"] and not info["unique"] and len(info["columns"]) == 1
    }


@pytest.mark.django_db
def test_no_index_of_careflows_tables_begins_another() -> None:
    tables = _tables()
    assert len(tables) > 30  # the query sees every table, not none
    assert _redundant(tables) == []


@pytest.mark.django_db
def test_the_query_finds_an_index_that_begins_another() -> None:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE idx_probe (a int, b int, c text)")
        cursor.execute("CREATE INDEX idx_probe_a ON idx_probe (a)")
        cursor.execute("CREATE INDEX idx_probe_ab ON idx_probe (a, b)")
        cursor.execute("CREATE INDEX idx_probe_b_where ON idx_probe (b) WHERE a > 0")
        cursor.execute("CREATE INDEX idx_probe_bc ON idx_probe (b, c)")
        cursor.execute("CREATE INDEX idx_probe_c_like ON idx_probe (c text_pattern_ops)")
        cursor.execute("CREATE INDEX idx_probe_cb ON idx_probe (c, b)")
    # (a) begins (a, b); a partial index and one of another operator class do not count.
    assert _redundant(["idx_probe"]) == [("idx_probe", "idx_probe_a", "idx_probe_ab")]


@pytest.mark.usefixtures("migrated_back")
def test_the_redundant_indexes_go_and_come_back_with_the_migrations() -> None:
    assert not {column for table, column in TAKEN if column in _single_column_indexes(table)}
    migrate(BEFORE)
    assert all(column in _single_column_indexes(table) for table, column in TAKEN)
    assert ("integrations_outboundmessage", "integrations_outboundmessage_patient_id_40e660cc") in {
        (table, index) for table, index, _ in _redundant(sorted({t for t, _ in TAKEN}))
    }
    migrate(latest_migrations())
    assert not {column for table, column in TAKEN if column in _single_column_indexes(table)}
    assert _redundant(_tables()) == []
