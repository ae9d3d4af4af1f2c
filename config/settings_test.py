"""Settings for the test suite: the production parts (PostgreSQL, Redis), never eager Celery.

Only defaults are set here; DATABASE_URL / CELERY_BROKER_URL from the environment win (an
amqp:// broker, RabbitMQ, with CAREFLOW_THROTTLE_REDIS_URL set: .ci/rabbitmq).
"""

import os

os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/careflow")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")

from config.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins

# The test client and live server speak plain HTTP; the production defaults would redirect it.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = False
# Templates render {% static %} without a collectstatic manifest, and WhiteNoise serves the
# apps' files as they are (no STATIC_ROOT to collect into); the README's stack test
# (tests/browser/test_readme.py) and tests/test_production_server.py run the real storage.
STATIC_ROOT = None  # type: ignore[assignment]
WHITENOISE_USE_FINDERS = True
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
