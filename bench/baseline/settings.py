"""Settings of the baseline: a plain Django app on its own PostgreSQL database, the same
Redis broker server (its own DB number) and the same Celery/DB-connection settings as
careflow's config.settings."""

import os

import environ

env = environ.Env()

SECRET_KEY = "bench-baseline-not-secret"  # noqa: S105
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
INSTALLED_APPS = ["django.contrib.contenttypes", "bench.baseline"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL")
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
CELERY_BROKER_CONNECTION_TIMEOUT = 2.0
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "sends"
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)

TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL")
TWILIO_HTTP_TIMEOUT = env.float("TWILIO_HTTP_TIMEOUT", default=10.0)
BENCH_TWILIO_ACCOUNT_SID = env.str("BENCH_TWILIO_ACCOUNT_SID", default="AC" + "0" * 32)
BENCH_TWILIO_AUTH_TOKEN = env.str("BENCH_TWILIO_AUTH_TOKEN", default="bench-token")
BENCH_TWILIO_FROM = "+15005550006"
BENCH_RATE_LIMIT = os.environ.get("BENCH_RATE_LIMIT") or None

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="WARNING")},
    "loggers": {"twilio.http_client": {"level": "WARNING"}},
}
