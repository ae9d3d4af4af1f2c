import os
from typing import Any

from celery import Celery
from celery.signals import beat_init, task_postrun, task_prerun
from celery.worker.consumer import Consumer as CeleryConsumer
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("careflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def _database_sessions_checked(**kwargs: Any) -> None:
    """What Django does around every request, around every task: drop a session that broke
    (the server restarted, an administrator terminated it) or outlived CONN_MAX_AGE.

    With CELERY_DB_REUSE_MAX set, Celery's own fixup keeps a session for that many tasks
    without looking at it, so one terminated session failed every later task of the process.
    """
    task = kwargs.get("task")
    if not getattr(getattr(task, "request", None), "is_eager", False):
        close_old_connections()


task_prerun.connect(_database_sessions_checked, weak=False)
task_postrun.connect(_database_sessions_checked, weak=False)


def _events_listener_start(**kwargs: Any) -> None:
    # Imported when beat starts, not with this module: config/__init__ imports this module
    # before Django's apps are loaded, and the listener's outbox needs the models.
    from workflows.listener import events_listener_start

    events_listener_start()


beat_init.connect(_events_listener_start, weak=False)


class Consumer(CeleryConsumer):
    """Celery's worker consumer (CELERY_WORKER_CONSUMER), without celery 5.7's crash on losing
    the broker while a task is unacknowledged.

    On a lost connection, celery 5.7 first collects the connection (closing its channels and
    dropping its transport) and then closes it once more. When the broker went away in the
    middle of a read, the Redis channel's first close fails half-way; the second one then
    disconnects the channel's pools and restores its unacknowledged tasks through the transport
    already dropped: AttributeError ("'NoneType' object has no attribute 'hostname'"), which
    is not a connection error, so the whole worker exits ("Unrecoverable error"), and so does
    any later acknowledgement on that channel. A send or a run advance (acks_late) running
    while the consumer waits for the next task is that moment. Leaving the second close out
    is celery 5.6's behaviour: the collected connection is let go, its channel keeps its pool
    for the acknowledgements still to come, and those that cannot be made leave their tasks to
    the visibility timeout (or, with the broker's data gone, to the relay and the sweeper).
    """

    def on_connection_error_after_connected(self, exc: Exception) -> None:
        connection = self.connection
        if connection is not None:
            connection.close = _collected_already  # type: ignore[method-assign]
        super().on_connection_error_after_connected(exc)


def _collected_already() -> None:
    """Closing a connection that Consumer.on_connection_error_after_connected collected."""
