import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init, worker_process_init
from django.db import close_old_connections

from config.durability import worker_commits_asynchronously

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("careflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Prefork children start with worker_process_init; solo and thread pools run tasks in the
# worker's own process, which starts with worker_init.
worker_process_init.connect(worker_commits_asynchronously, weak=False)
worker_init.connect(worker_commits_asynchronously, weak=False)


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
