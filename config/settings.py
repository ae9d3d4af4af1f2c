"""careflow settings.

Everything comes from the environment (django-environ). The embedded defaults give a
self-contained development setup: SQLite, a filesystem Celery broker that needs no server,
and the local Twilio sandbox. Setting DATABASE_URL, CELERY_BROKER_URL and real Twilio
credentials switches to production parts; `manage.py check --deploy` refuses the
development secrets.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Runtime files of the embedded setup (SQLite database, filesystem broker); git-ignored.
VAR_DIR = Path(env.str("CAREFLOW_VAR_DIR", default=str(BASE_DIR / "var")))

# Development-only secrets. Both are rejected by `manage.py check --deploy` (careflow.E001/E002).
DEV_SECRET_KEY = "careflow-development-secret-key-not-for-production"  # noqa: S105
DEV_ENCRYPTION_KEY = "Y2FyZWZsb3ctZGV2ZWxvcG1lbnQta2V5LTAwMDAwMDA="

SECRET_KEY = env.str("SECRET_KEY", default=DEV_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Behind a TLS-terminating proxy, trust its scheme header so webhook signatures are checked
# against the public https:// URL Twilio signed.
if env.bool("USE_X_FORWARDED_PROTO", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
USE_X_FORWARDED_HOST = env.bool("USE_X_FORWARDED_HOST", default=False)

# --- HTTPS and sessions -------------------------------------------------------------------
# Safe for production unless DEBUG is on: cookies only over HTTPS, plain HTTP redirected, HSTS
# for a year. `make run` (careflow_up) serves plain http://127.0.0.1 and turns the first three
# off for its own processes; so do the tests.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# Sent only on HTTPS responses, so harmless on a local http:// stack. includeSubDomains covers
# only this host's subdomains; `preload` does nothing until the domain's owner submits it.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
# Admin sessions show patient data: they end after a working day (absolute, from login) and
# when the browser closes, instead of Django's two weeks.
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 60 * 60)
SESSION_EXPIRE_AT_BROWSER_CLOSE = env.bool("SESSION_EXPIRE_AT_BROWSER_CLOSE", default=True)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_celery_results",
    # Login throttling (django-axes) and the optional second factor (django-otp, TOTP).
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    # The HTTP API (integrations.api): DRF, its OpenAPI schema, Swagger UI's files (no CDN).
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "patients",
    "workflows",
    "integrations",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Static files from STATIC_ROOT (collectstatic), in every deployment including `make run`:
    # no web server in front is needed, and DEBUG never decides whether the admin is styled.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session logged in with a one-time code.
    "django_otp.middleware.OTPMiddleware",
    "patients.audit.AuditActorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a refused (locked-out) login into its lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'careflow.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The embedded setup runs web, worker and beat against one file: WAL lets readers
    # proceed during a write, IMMEDIATE takes the write lock up front instead of failing
    # with "database is locked" on lock upgrade.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # The analytics indexes carry extra columns (INCLUDE) for index-only scans on
    # PostgreSQL; SQLite, the embedded dev database, builds them without those columns.
    SILENCED_SYSTEM_CHECKS = ["models.W040"]
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # Each process keeps a bounded pool of PostgreSQL sessions (psycopg_pool; Django closes a
    # connection by handing it back). Without one, a threaded server (runserver, gunicorn
    # gthread) opens a session per thread, and a burst of status callbacks exhausted
    # max_connections (measured: 150 concurrent callbacks at runserver held 78 sessions and
    # 127 answers were 500s; with the pool, 4 sessions and no 500). A sync gunicorn worker or
    # a Celery prefork child uses one at a time, so keeps one, as a persistent connection
    # did. Sessions in all: processes × CAREFLOW_DB_POOL_MAX_SIZE at most (README, sizing).
    # 0 turns pooling off for persistent connections (CONN_MAX_AGE), e.g. behind PgBouncer.
    _pool_max = env.int("CAREFLOW_DB_POOL_MAX_SIZE", default=4)
    if _pool_max > 0:
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django refuses persistence with a pool
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": _pool_max,
            # A request waits this long for a free session, then fails (rather than queue
            # without end behind a stuck one).
            "timeout": env.float("CAREFLOW_DB_POOL_TIMEOUT", default=10.0),
            "max_idle": 300.0,
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    # psycopg prepares no statement at all while this is None (Django's default). Django's
    # cursors bind on the client and never prepare; with a threshold no statement reaches,
    # only those run through common.db.prepared_cursor are prepared. Off behind a
    # pooler that cannot keep prepared statements (PgBouncer in transaction mode before 1.21).
    if env.bool("CAREFLOW_PREPARED_STATEMENTS", default=True):
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("prepare_threshold", 2**31 - 1)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- admin login: throttling and second factor ---------------------------------------------
# patients.login.LoginThrottleBackend (django-axes) refuses a locked-out username+address pair
# before ModelBackend checks its password.
AUTHENTICATION_BACKENDS = [
    "patients.login.LoginThrottleBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env.bool("AXES_ENABLED", default=True)
# Locked out after this many failed logins (a wrong one-time code counts too) for one
# username from one address; other addresses and other usernames are not affected.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Unlocked this long after the last failed attempt (0: only by `axes_reset_username`).
_axes_cooloff_minutes = env.float("AXES_COOLOFF_MINUTES", default=15.0)
AXES_COOLOFF_TIME = timedelta(minutes=_axes_cooloff_minutes) if _axes_cooloff_minutes else None
AXES_RESET_ON_SUCCESS = True  # a successful login clears that pair's failures
AXES_LOCKOUT_TEMPLATE = "admin/careflow/locked_out.html"
# Behind a reverse proxy every client has the proxy's address, so one attacker locks out
# everyone; set AXES_PROXY_COUNT to the number of proxies in front of Django, which must
# set X-Forwarded-For (the client cannot be trusted to).
AXES_IPWARE_PROXY_COUNT = env.int("AXES_PROXY_COUNT", default=0) or None
if AXES_IPWARE_PROXY_COUNT:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
# Support staff and superusers (who see every clinic) must log in with a one-time code from
# a confirmed TOTP device; everyone with a device must anyway (patients.login).
CAREFLOW_SUPPORT_STAFF_REQUIRE_OTP = env.bool("CAREFLOW_SUPPORT_STAFF_REQUIRE_OTP", default=False)
# The issuer an authenticator app shows beside the account.
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="careflow")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(VAR_DIR / "static")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed names (cached forever by browsers, new name on every change) and gzip/brotli
    # copies, written by `collectstatic`; careflow_up runs it on every start.
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- secrets at rest --------------------------------------------------------------------
# Error pages and error reports hide sensitive POST parameters and local variables (the Auth
# Token of the integration form, the plaintext being encrypted) with DEBUG on as well.
DEFAULT_EXCEPTION_REPORTER_FILTER = "config.reporting.SecretsHiddenExceptionReporterFilter"
# Comma-separated Fernet keys; the first encrypts, all decrypt (rotation: prepend a new key,
# re-save, then drop the old one). Deliberately separate from SECRET_KEY.
CAREFLOW_ENCRYPTION_KEYS = env.list("CAREFLOW_ENCRYPTION_KEYS", default=[DEV_ENCRYPTION_KEY])

# --- Celery -------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    # The embedded broker is a folder every process (web, worker, beat) must find in place.
    for _folder in (_broker_dir, VAR_DIR / "broker-control"):
        _folder.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir),
        "data_folder_out": str(_broker_dir),
        "control_folder": str(VAR_DIR / "broker-control"),
        "store_processed": False,
        "polling_interval": 0.2,
    }
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # acks_late + Redis: an unacknowledged task is redelivered after this many seconds.
    # Every task is idempotent, so redelivery costs time, never a duplicate SMS.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
# RabbitMQ (amqp://) needs no option: it redelivers a task as soon as the connection of the
# worker holding it closes, and closes a channel holding a task unacknowledged for longer
# than its consumer_timeout (30 min by default). A task is held that long only while it waits
# for its ETA in the worker, and careflow gives no task an ETA or countdown over a minute
# (workflows.tasks.SHORT_WAIT): longer waits are rows swept by beat.
CELERY_BROKER_CONNECTION_TIMEOUT = env.float("CELERY_BROKER_CONNECTION_TIMEOUT", default=2.0)
CELERY_RESULT_BACKEND = "django-db"
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's consumer, less a crash of celery 5.7 on losing the broker (see the class).
CELERY_WORKER_CONSUMER = "config.celery:Consumer"
CELERY_TASK_DEFAULT_QUEUE = "runs"
CELERY_TASK_ROUTES = {
    "workflows.tasks.events_dispatch": {"queue": "events"},
    "workflows.tasks.events_relay": {"queue": "events"},
    "workflows.tasks.run_advance": {"queue": "runs"},
    "workflows.tasks.runs_sweep": {"queue": "runs"},
    "workflows.tasks.time_triggers_scan": {"queue": "events"},
    "integrations.tasks.message_send": {"queue": "sends"},
    "integrations.tasks.sent_messages_reconcile": {"queue": "sends"},
    # Failure alerts: a few per hour at most, never on a patient's critical path.
    "integrations.tasks.alerts_evaluate": {"queue": "runs"},
    "integrations.tasks.alert_deliver": {"queue": "runs"},
    "integrations.tasks.message_counts_roll_up": {"queue": "runs"},
    # Broadcasts: production and the sweep beside the runs, their sends with the others.
    "integrations.tasks.broadcast_advance": {"queue": "runs"},
    "integrations.tasks.broadcasts_sweep": {"queue": "runs"},
    "integrations.tasks.broadcast_messages_send": {"queue": "sends"},
    "integrations.tasks.idempotency_records_purge": {"queue": "runs"},
    "integrations.tasks.retention_apply": {"queue": "runs"},
    # The former names of the same tasks, still registered as forwarders (see the end of
    # workflows/tasks.py and integrations/tasks.py) for tasks queued before a deploy: routed
    # to the same queues. Remove with the forwarders.
    "workflows.tasks.dispatch_events": {"queue": "events"},
    "workflows.tasks.relay_events": {"queue": "events"},
    "workflows.tasks.advance_run": {"queue": "runs"},
    "workflows.tasks.sweep_runs": {"queue": "runs"},
    "workflows.tasks.scan_time_triggers": {"queue": "events"},
    "integrations.tasks.send_message": {"queue": "sends"},
    "integrations.tasks.reconcile_sent_messages": {"queue": "sends"},
}
CELERY_BEAT_SCHEDULE = {
    "events-relay": {
        "task": "workflows.tasks.events_relay",
        "schedule": env.float("CAREFLOW_RELAY_INTERVAL", default=5.0),
    },
    "runs-sweep": {
        "task": "workflows.tasks.runs_sweep",
        "schedule": env.float("CAREFLOW_SWEEP_INTERVAL", default=5.0),
    },
    # Time-based triggers (upcoming renewals, appointment reminders). Safe to overlap or to
    # run from two beat processes: each record is claimed in the database.
    "time-triggers-scan": {
        "task": "workflows.tasks.time_triggers_scan",
        "schedule": env.float("CAREFLOW_SCAN_INTERVAL", default=60.0),
    },
    # Messages still "sent" long after acceptance: their final status callback was lost
    # (Twilio does not retry it), so they are looked up at Twilio. Claimed in the database.
    "sent-messages-reconcile": {
        "task": "integrations.tasks.sent_messages_reconcile",
        "schedule": env.float("CAREFLOW_STATUS_RECONCILE_INTERVAL", default=60.0),
    },
    # Failure alerts: evaluate each clinic's conditions and deliver what is due. Safe to
    # overlap or to run from two beat processes: an alert is claimed by a unique row.
    "alerts-evaluate": {
        "task": "integrations.tasks.alerts_evaluate",
        "schedule": env.float("CAREFLOW_ALERTS_INTERVAL", default=60.0),
    },
    # Workflow analytics' hourly message counts: catch up with new messages and status
    # changes (the figures are exact meanwhile; the lag only costs the page time).
    "message-counts-roll-up": {
        "task": "integrations.tasks.message_counts_roll_up",
        "schedule": env.float("CAREFLOW_ANALYTICS_ROLL_UP_INTERVAL", default=60.0),
    },
    # Broadcasts: start the due ones, restart stopped production, hand on deferred messages.
    "broadcasts-sweep": {
        "task": "integrations.tasks.broadcasts_sweep",
        "schedule": env.float("CAREFLOW_BROADCAST_SWEEP_INTERVAL", default=2.0),
    },
    # The API's idempotency outcomes older than 24 hours (integrations.api.idempotency).
    "idempotency-records-purge": {
        "task": "integrations.tasks.idempotency_records_purge",
        "schedule": 3600.0,
    },
}
# Retention (integrations.retention): events, runs, step runs and messages older than a
# clinic's MessagingPolicy.retention_days, or this when it has none, are deleted by
# `manage.py careflow_retention`, CAREFLOW_RETENTION_BATCH rows per transaction. Never less
# than 6 years (HIPAA's audit records); the command refuses a shorter setting. Beat runs it
# daily only with CAREFLOW_RETENTION_DAILY: deleting is the operator's decision.
CAREFLOW_RETENTION_DAYS = env.int("CAREFLOW_RETENTION_DAYS", default=6 * 365 + 2)
CAREFLOW_RETENTION_BATCH = env.int("CAREFLOW_RETENTION_BATCH", default=5000)
if env.bool("CAREFLOW_RETENTION_DAILY", default=False):
    CELERY_BEAT_SCHEDULE["retention-apply"] = {
        "task": "integrations.tasks.retention_apply",
        "schedule": 86400.0,
    }
# How long a message may stay "sent" without news before it is looked up at Twilio (then
# again after twice as long each time, at most 12 hours apart), how many look-ups at most
# (some carriers never report delivery), and how many messages one run looks up.
CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = env.float(
    "CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS", default=600.0
)
CAREFLOW_STATUS_RECONCILE_MAX_CHECKS = env.int("CAREFLOW_STATUS_RECONCILE_MAX_CHECKS", default=8)
CAREFLOW_STATUS_RECONCILE_BATCH = env.int("CAREFLOW_STATUS_RECONCILE_BATCH", default=50)
# Look-ups of an ambiguous send (no answer after the request went out) that may fail, 15 s
# apart and doubling (at most an hour), before the message is left "unknown" for staff and a
# failure alert says so (about an hour in all with 8). A look-up the provider refuses outright
# (Twilio 401/403, e.g. test credentials) is not repeated.
CAREFLOW_RECONCILE_MAX_FAILURES = env.int("CAREFLOW_RECONCILE_MAX_FAILURES", default=8)
# Celery's Django fixup closes the DB connection after every task unless this is set; a new
# PostgreSQL connection per task nearly halves throughput.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)

# The Redis that coordinates every worker and web process (common.coordination: the
# per-sender throttle, the events' waiting list; and the cache below); by default the broker's
# Redis. With another broker (RabbitMQ) it must be set: a broker queue cannot hold a shared
# token bucket, and without one each worker process would pace its senders on its own.
_REDIS_SCHEMES = ("redis://", "rediss://")
CAREFLOW_THROTTLE_REDIS_URL = env.str("CAREFLOW_THROTTLE_REDIS_URL", default=CELERY_BROKER_URL)
if not CAREFLOW_THROTTLE_REDIS_URL.startswith(_REDIS_SCHEMES) and not CELERY_BROKER_URL.startswith(
    ("filesystem://", "memory://")
):
    raise ImproperlyConfigured(
        "CAREFLOW_THROTTLE_REDIS_URL must name a Redis (redis://…) when the Celery broker is "
        "not Redis: the per-sender throttle is shared by all workers through it"
    )

# The cache: the API's per-key rate limits live here, so every web process (gunicorn workers)
# must share it. By default the coordinating Redis when there is one; otherwise (`make run`,
# one web process on SQLite) files under var/, which its processes share too.
CACHES = {
    "default": env.cache_url(
        "CAREFLOW_CACHE_URL",
        default=CAREFLOW_THROTTLE_REDIS_URL
        if CAREFLOW_THROTTLE_REDIS_URL.startswith(_REDIS_SCHEMES)
        else f"filecache://{VAR_DIR / 'cache'}",
    )
}
CACHES["default"].setdefault("KEY_PREFIX", "careflow")

# --- the HTTP API (/api/v1/, integrations.api) ---------------------------------------------
# Requests per key: reads (GET) and writes (POST, PATCH) counted apart. "<n>/<sec|min|hour|day>".
CAREFLOW_API_RATE_READ = env.str("CAREFLOW_API_RATE_READ", default="1200/min")
CAREFLOW_API_RATE_WRITE = env.str("CAREFLOW_API_RATE_WRITE", default="300/min")
# A request body over this many bytes is refused (413) before it is read.
CAREFLOW_API_MAX_BODY_BYTES = env.int("CAREFLOW_API_MAX_BODY_BYTES", default=256 * 1024)
REST_FRAMEWORK = {
    # Each API view names its own authentication (API keys; staff sessions for the docs).
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["integrations.api.parsing.StorableJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "integrations.api.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "careflow API",
    "DESCRIPTION": (
        "Patients, their consent and their records (orders, appointments, subscriptions, "
        "prescriptions…), the clinic's custom events, and its workflows' runs (start one for a "
        "patient, read its status) for one clinic, authenticated with the clinic's API key: "
        "`Authorization: Bearer cfk_…`. Every 4xx answer has one shape: "
        '`{"error": {"type": "…", "message": "…", "fields": {…}}}`. Writes accept an '
        "`Idempotency-Key` header: a retry with the same key and body replays the first answer."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAdminUser"],
    "SERVE_AUTHENTICATION": ["rest_framework.authentication.SessionAuthentication"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"RunStatusEnum": "workflows.models.Run.Status"},
}

# --- careflow -----------------------------------------------------------------------------
# Public base URL of this deployment, used to build Twilio StatusCallback URLs.
CAREFLOW_PUBLIC_URL = env.str("CAREFLOW_PUBLIC_URL", default="http://127.0.0.1:8000")
# An event that has not been dispatched this many seconds after it was recorded is picked
# up by the relay (broker down at commit time, worker crash before dispatch).
CAREFLOW_RELAY_AFTER_SECONDS = env.float("CAREFLOW_RELAY_AFTER_SECONDS", default=5.0)
# On PostgreSQL, recording an event queues a NOTIFY (delivered at commit) and the beat
# process's listener publishes the dispatch task: saving a record does no broker work.
# Off (or on SQLite), the saving process publishes from a background thread after commit.
CAREFLOW_EVENTS_NOTIFY = env.bool("CAREFLOW_EVENTS_NOTIFY", default=True)
# A run left "running" longer than this (its worker died) is taken over by the sweeper.
CAREFLOW_RUN_LEASE_SECONDS = env.float("CAREFLOW_RUN_LEASE_SECONDS", default=120.0)
CAREFLOW_SEND_MAX_RETRIES = env.int("CAREFLOW_SEND_MAX_RETRIES", default=6)
# Broadcasts (integrations.broadcasts): members made into messages per batch; seconds of
# sending at the sender's rate made ahead at most (bounds memory, the queue and a cancel's
# reach); messages per sending task; and how long a made message may wait unsent before the
# sweep hands it on again (its task was lost).
CAREFLOW_BROADCAST_BATCH = env.int("CAREFLOW_BROADCAST_BATCH", default=500)
CAREFLOW_BROADCAST_AHEAD_SECONDS = env.float("CAREFLOW_BROADCAST_AHEAD_SECONDS", default=10.0)
CAREFLOW_BROADCAST_SEND_CHUNK = env.int("CAREFLOW_BROADCAST_SEND_CHUNK", default=100)
CAREFLOW_BROADCAST_LOST_AFTER_SECONDS = env.float(
    "CAREFLOW_BROADCAST_LOST_AFTER_SECONDS", default=300.0
)
# subscription.upcoming_renewal fires this many days before a subscription's renewal date.
CAREFLOW_RENEWAL_LEAD_DAYS = env.int("CAREFLOW_RENEWAL_LEAD_DAYS", default=7)
# appointment.reminder fires this many hours before an appointment starts.
CAREFLOW_APPOINTMENT_REMINDER_HOURS = env.float("CAREFLOW_APPOINTMENT_REMINDER_HOURS", default=24.0)

TWILIO_API_BASE_URL = env.str("TWILIO_API_BASE_URL", default="https://api.twilio.com")
TWILIO_HTTP_TIMEOUT = env.float("TWILIO_HTTP_TIMEOUT", default=10.0)

# Email (integrations/email): how careflow's messages to patients leave. "esp" sends through
# django-anymail's backend of each integration's own ESP (its `esp` setting: Postmark or
# Mailgun) with the integration's own credentials ("postmark", the value before Mailgun, means
# the same); "console" prints them and "file" writes them under EMAIL_FILE_PATH (`make run`, no ESP).
CAREFLOW_EMAIL_DELIVERY = env.str("CAREFLOW_EMAIL_DELIVERY", default="esp")
EMAIL_FILE_PATH = env.str("EMAIL_FILE_PATH", default=str(VAR_DIR / "email"))
# Postmark's API origin; the tests and `make run` point it at integrations.email.sandbox.
CAREFLOW_POSTMARK_API_URL = env.str(
    "CAREFLOW_POSTMARK_API_URL", default="https://api.postmarkapp.com/"
)
# Mailgun's API base by region (an integration's `mailgun_region`); the tests point both at
# integrations.email.sandbox.
CAREFLOW_MAILGUN_API_URL = env.str("CAREFLOW_MAILGUN_API_URL", default="https://api.mailgun.net/v3")
CAREFLOW_MAILGUN_EU_API_URL = env.str(
    "CAREFLOW_MAILGUN_EU_API_URL", default="https://api.eu.mailgun.net/v3"
)
# Seconds to connect and, separately, to wait for the ESP's answer: anymail's default (30 s)
# would hold a worker too long.
CAREFLOW_EMAIL_HTTP_TIMEOUT = env.float("CAREFLOW_EMAIL_HTTP_TIMEOUT", default=10.0)

# Staff email (failure alerts) goes through Django's mail API and this backend. By default it
# follows CAREFLOW_EMAIL_DELIVERY's local choices (`make run` writes files), else SMTP; the
# tests point django-anymail's Postmark backend at the email sandbox.
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default={
        "file": "django.core.mail.backends.filebased.EmailBackend",
        "console": "django.core.mail.backends.console.EmailBackend",
    }.get(CAREFLOW_EMAIL_DELIVERY, "django.core.mail.backends.smtp.EmailBackend"),
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.float("EMAIL_TIMEOUT", default=10.0)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="careflow@localhost")
# For EMAIL_BACKEND=anymail.backends.postmark.EmailBackend (staff email through Postmark).
ANYMAIL = {
    "POSTMARK_SERVER_TOKEN": env.str("POSTMARK_SERVER_TOKEN", default=""),
    "POSTMARK_API_URL": CAREFLOW_POSTMARK_API_URL,
    "REQUESTS_TIMEOUT": CAREFLOW_EMAIL_HTTP_TIMEOUT,
}
# How many times an alert's delivery is tried (backoff between tries) before it is given up.
CAREFLOW_ALERT_MAX_ATTEMPTS = env.int("CAREFLOW_ALERT_MAX_ATTEMPTS", default=6)

# The outbound webhook adapter (postJSON): seconds to connect and, separately, to wait for
# each read of the answer.
CAREFLOW_WEBHOOK_TIMEOUT = env.float("CAREFLOW_WEBHOOK_TIMEOUT", default=10.0)
# True lets webhooks reach loopback/private/link-local addresses and plain http://. Only for
# tests and local development: with it on, a workflow can probe the internal network.
CAREFLOW_WEBHOOK_ALLOW_PRIVATE = env.bool("CAREFLOW_WEBHOOK_ALLOW_PRIVATE", default=False)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # twilio-python logs full request bodies (patient phone numbers, message text) at INFO.
    "loggers": {"twilio.http_client": {"level": "WARNING"}},
}
