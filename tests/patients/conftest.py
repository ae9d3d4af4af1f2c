"""Migration tests: migrate the test database to a given state and back to the latest."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(targets: list[tuple[str, str]]) -> Any:
    """Migrate to `targets` (forwards or backwards); the app registry of that state."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def latest_migrations() -> list[tuple[str, str]]:
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


@pytest.fixture
def migrated_back(transactional_db: Any, no_worker: None) -> Iterator[None]:
    """Migrate back and forth alone: the session's worker and its beat are stopped first, or a
    beat task (the message counts' roll-up, a sweep) would read or change the rows the test
    made between its migrations, or meet a table in its old shape."""
    latest = latest_migrations()
    try:
        yield
    finally:
        migrate(latest)  # leave the database as every other test expects it
