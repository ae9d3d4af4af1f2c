"""config/settings.py on each broker careflow runs on: Redis, or RabbitMQ beside a Redis for
the workers' coordination (throttle, waiting list, cache). Read in a fresh interpreter with a
user's environment, as a deployment reads them."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.deployments import ROOT, fresh_env

READ = (
    "import json, config.settings as s; print(json.dumps({"
    "'throttle': s.CAREFLOW_THROTTLE_REDIS_URL, 'cache': s.CACHES['default'], "
    "'transport': getattr(s, 'CELERY_BROKER_TRANSPORT_OPTIONS', None)}))"
)
RABBITMQ = "amqp://careflow:secret@rabbit.example:5672/careflow"


def _read(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 — our own interpreter and arguments
        [sys.executable, "-c", READ],
        cwd=ROOT,
        env={**fresh_env(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _settings(tmp_path: Path, **env: str) -> dict[str, Any]:
    done = _read(tmp_path, **env)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def test_a_redis_broker_is_also_the_throttles_and_the_caches_redis(tmp_path: Path) -> None:
    read = _settings(tmp_path, CELERY_BROKER_URL="redis://redis.example:6379/2")

    assert read["throttle"] == "redis://redis.example:6379/2"
    assert read["cache"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert read["cache"]["LOCATION"] == "redis://redis.example:6379/2"
    assert read["transport"] == {"visibility_timeout": 600}


def test_rabbitmq_takes_the_throttle_and_the_cache_from_the_redis_named_for_them(
    tmp_path: Path,
) -> None:
    read = _settings(
        tmp_path,
        CELERY_BROKER_URL=RABBITMQ,
        CAREFLOW_THROTTLE_REDIS_URL="redis://redis.example:6379/4",
    )

    assert read["throttle"] == "redis://redis.example:6379/4"
    assert read["cache"]["BACKEND"] == "django.core.cache.backends.redis.RedisCache"
    assert read["cache"]["LOCATION"] == "redis://redis.example:6379/4"
    # Redis's visibility timeout means nothing to RabbitMQ, which redelivers a dead worker's
    # tasks when its connection closes.
    assert read["transport"] is None


def test_rabbitmq_without_a_redis_for_the_throttle_is_refused(tmp_path: Path) -> None:
    """Each worker process would otherwise pace a sender on its own, together over its rate."""
    done = _read(tmp_path, CELERY_BROKER_URL=RABBITMQ)

    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "CAREFLOW_THROTTLE_REDIS_URL must name a Redis" in done.stderr
    assert "secret" not in done.stderr  # the broker's password is not repeated


def test_the_embedded_setup_needs_no_redis(tmp_path: Path) -> None:
    read = _settings(tmp_path)

    assert read["throttle"] == "filesystem://"
    assert read["cache"]["BACKEND"] == "django.core.cache.backends.filebased.FileBasedCache"
