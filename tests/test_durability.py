"""Worker sessions commit asynchronously; the send claim still waits for the disk."""

from collections.abc import Iterator
from typing import Any

import pytest
from celery.signals import worker_process_init
from django.db import connections
from django.db.backends.signals import connection_created

from config.durability import durable

pytestmark = pytest.mark.django_db(transaction=True)


def _synchronous_commit(conn: Any) -> str:
    with conn.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        return str(cursor.fetchone()[0])


@pytest.fixture
def fresh_connection() -> Iterator[Any]:
    """A database session of its own, as a worker process would open after start-up."""
    conn = connections.create_connection("default")
    try:
        yield conn
    finally:
        conn.close()
        connection_created.disconnect(dispatch_uid="careflow-async-commit")


def test_a_worker_process_commits_asynchronously(fresh_connection: Any) -> None:
    worker_process_init.send(sender=None)  # what a prefork child sends when it starts
    fresh_connection.ensure_connection()
    assert _synchronous_commit(fresh_connection) == "off"


def test_durable_commits_synchronously_in_a_worker_session() -> None:
    conn = connections["default"]
    with conn.cursor() as cursor:
        cursor.execute("SET synchronous_commit TO off")  # as in a worker's session
    try:
        with durable():
            assert _synchronous_commit(conn) == "on"
        assert _synchronous_commit(conn) == "off"  # SET LOCAL: this transaction only
    finally:
        with conn.cursor() as cursor:
            cursor.execute("RESET synchronous_commit")


def test_web_sessions_keep_synchronous_commits(fresh_connection: Any) -> None:
    fresh_connection.ensure_connection()  # no worker start-up signal in this process
    assert _synchronous_commit(fresh_connection) == "on"


def test_the_setting_turns_asynchronous_worker_commits_off(
    fresh_connection: Any, settings: Any
) -> None:
    settings.CAREFLOW_WORKER_ASYNC_COMMIT = False
    worker_process_init.send(sender=None)
    fresh_connection.ensure_connection()
    assert _synchronous_commit(fresh_connection) == "on"
