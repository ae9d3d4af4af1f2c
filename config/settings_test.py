"""Settings for the test suite: the production parts (PostgreSQL, Redis), never eager Celery.

Only defaults are set here; DATABASE_URL / CELERY_BROKER_URL from the environment win.
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/careflow")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins
