"""Rate limits per key, reads and writes apart, counted in the shared cache (real Redis)."""

from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import Client

from integrations.api.keys import IssuedApiKey, api_key_issue
from integrations.checks import api_rates_check
from integrations.models import ApiKey
from tests.api.conftest import assert_error, key_client, post

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_rates(settings: Any) -> None:
    settings.CAREFLOW_API_RATE_READ = "3/min"
    settings.CAREFLOW_API_RATE_WRITE = "2/min"


def test_the_cache_is_redis_shared_by_every_process() -> None:
    backend = django_settings.CACHES["default"]["BACKEND"]
    assert backend == "django.core.cache.backends.redis.RedisCache"
    cache.set("careflow-api-test", "1", 5)
    # Another process (a gunicorn worker) reads what this one wrote: it is in Redis itself.
    client = redis.Redis.from_url(django_settings.CACHES["default"]["LOCATION"])
    assert any(b"careflow-api-test" in key for key in client.keys("*careflow-api-test*"))


def test_reads_over_the_rate_are_refused_with_retry_after(
    small_rates: None, api: Client, write_key: IssuedApiKey
) -> None:
    for _ in range(3):
        assert api.get("/api/v1/patients/").status_code == 200
    refused = api.get("/api/v1/patients/")
    error = assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert "retry in" in error["message"]
    # Writes are counted apart.
    assert post(api, "/api/v1/patients/", {"first_name": "Ann"}).status_code == 201


def test_writes_have_their_own_rate(small_rates: None, api: Client) -> None:
    for _ in range(2):
        assert post(api, "/api/v1/patients/", {"first_name": "Ann"}).status_code == 201
    assert_error(post(api, "/api/v1/patients/", {"first_name": "Ann"}), 429, "rate_limited")


def test_each_key_has_its_own_limit(small_rates: None, api: Client, clinic: Any) -> None:
    for _ in range(3):
        api.get("/api/v1/patients/")
    assert api.get("/api/v1/patients/").status_code == 429
    other = api_key_issue(organization=clinic, name="Second", scope=ApiKey.Scope.READ)
    assert key_client(other.token).get("/api/v1/patients/").status_code == 200


def test_refused_keys_are_not_counted_against_a_real_one(small_rates: None, api: Client) -> None:
    for _ in range(5):
        key_client("cfk_unknown").get("/api/v1/patients/")
    assert api.get("/api/v1/patients/").status_code == 200


@pytest.mark.parametrize("rate", ["abc", "10/fortnight", "0/min", "/min", ""])
def test_a_rate_that_does_not_parse_fails_the_checks(settings: Any, rate: str) -> None:
    assert api_rates_check() == []
    settings.CAREFLOW_API_RATE_WRITE = rate
    assert [e.id for e in api_rates_check()] == ["careflow.api.E001"]
