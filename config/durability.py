"""When a worker's commit must reach the disk before the worker goes on.

A PostgreSQL commit waits for its WAL flush (fdatasync: about 4 ms on this machine's disk),
and a run touches a handful of rows in several transactions; on the worker those flushes,
not the SQL, were most of an event's cost. Worker sessions therefore commit with
`synchronous_commit = off`: the commit is visible to every other session at once, exactly as
before, but a crash of the PostgreSQL *server* (not of a worker or a connection) can lose the
last few hundred milliseconds of those commits.

That loss is safe because every worker write is recoverable from what stays durable: the
outbox event and the order are committed by the web request (synchronously), and a lost
dispatch, run step or message result is redone by the relay and sweeper, idempotently.
The one write that must never be lost is the one that precedes an action outside the
database: claiming a message for sending before calling Twilio (a lost claim would let it be
sent again without a lookup). That transaction runs in `durable()`, which flushes its commit
and, with it, every earlier commit of the session.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.signals import connection_created


@contextmanager
def durable() -> Iterator[None]:
    """A transaction whose commit is on disk when the block exits, whatever the session's
    synchronous_commit."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO on")
        yield


def _commit_asynchronously(sender: Any, connection: Any, **kwargs: Any) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")


def worker_commits_asynchronously(**kwargs: Any) -> None:
    """Connected to Celery's worker start-up signals: this process's database sessions from
    now on commit without waiting for the WAL flush (see the module docstring)."""
    if settings.CAREFLOW_WORKER_ASYNC_COMMIT:
        connection_created.connect(_commit_asynchronously, dispatch_uid="careflow-async-commit")
