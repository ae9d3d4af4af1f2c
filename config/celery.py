import os
from typing import Any

from celery import Celery
from celery.signals import beat_init, task_postrun, task_prerun
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
    from workflows.listener import events_listener_start

    events_listener_start()


beat_init.connect(_events_listener_start, weak=False)
