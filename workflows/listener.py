"""Hands committed events to the broker from the beat process, so that recording an event
costs the saving process no broker round trip and no publishing work at all.

On PostgreSQL the outbox INSERT also queues a NOTIFY on `EVENTS_CHANNEL` with the event's
id (`workflows.outbox`); PostgreSQL delivers it when, and only if, the transaction
commits. This listener, a thread of every beat process, hands it to the workers
(`events_publish`: one queued task for however many events arrive before a worker starts
on them). While it is not listening (its session dropped, the broker down) nothing is lost: the
relay dispatches whatever stays undispatched. Two beat processes both listening may both
wake a worker, which the dispatch's claim makes harmless.
"""

import logging
import threading
from typing import Any

import psycopg
from django.db import connections

from workflows.outbox import EVENTS_CHANNEL, events_notify_enabled
from workflows.publishing import events_publish

logger = logging.getLogger(__name__)

RECONNECT_AFTER = (0.5, 1.0, 2.0, 5.0)  # seconds, then every 5 s


def _connect() -> psycopg.Connection[Any]:
    params = connections["default"].get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=True)


def events_listen(stop: threading.Event) -> None:
    """Hand the events notified to the workers, reconnecting when the session drops, until
    `stop` is set (checked at least every second)."""
    failures = 0
    while not stop.is_set():
        try:
            with _connect() as connection:
                connection.execute(f"LISTEN {EVENTS_CHANNEL}")
                if failures:
                    logger.info("event listener reconnected")
                failures = 0
                while not stop.is_set():
                    # One read returns every notification arrived by then (in a burst,
                    # many), published together: one Redis round trip for them all.
                    notified = connection.notifies(timeout=1.0, stop_after=1)
                    events_publish(event_ids=[int(notify.payload) for notify in notified])
        except (psycopg.Error, OSError) as exc:
            delay = RECONNECT_AFTER[min(failures, len(RECONNECT_AFTER) - 1)]
            failures += 1
            logger.warning(
                "event listener lost its database session (%s); retrying in %.1f s",
                type(exc).__name__,
                delay,
            )
            stop.wait(delay)


_started: list[threading.Thread] = []


def events_listener_start() -> None:
    """Start the listener thread, once per beat process (on beat_init: config.celery)."""
    if _started or not events_notify_enabled():
        return
    thread = threading.Thread(
        target=events_listen, args=(threading.Event(),), name="careflow-events", daemon=True
    )
    thread.start()
    _started.append(thread)
    logger.info("event listener started on channel %s", EVENTS_CHANNEL)
