import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.baseline.settings")

app = Celery("bench_baseline")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["bench.baseline"])
