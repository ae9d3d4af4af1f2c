import os

from celery import Celery
from celery.signals import worker_init, worker_process_init

from config.durability import worker_commits_asynchronously

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("careflow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# Prefork children start with worker_process_init; solo and thread pools run tasks in the
# worker's own process, which starts with worker_init.
worker_process_init.connect(worker_commits_asynchronously, weak=False)
worker_init.connect(worker_commits_asynchronously, weak=False)
