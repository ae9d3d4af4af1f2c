"""Who may call: a clinic's key as a bearer token, and nothing else; each refusal a 401 with
WWW-Authenticate in the error shape. The key is never logged."""

import logging
from datetime import timedelta

import pytest
import time_machine
from django.test import Client
from django.utils import timezone

from integrations.api.keys import IssuedApiKey, api_key_revoke
from integrations.models import ApiKey
from tests.api.conftest import assert_error, key_client

pytestmark = pytest.mark.django_db

URL = "/api/v1/patients/"


def _refused(response: object) -> dict[str, object]:
    error = assert_error(response, 401, "authentication_failed")
    assert response["WWW-Authenticate"] == 'Bearer realm="careflow"'  # type: ignore[index]
    return error


def test_a_request_without_a_key_is_refused() -> None:
    _refused(Client().get(URL))


@pytest.mark.parametrize(
    "header",
    ["Basic dXNlcjpwdw==", "Bearer", "Bearer ", "Token cfk_x", "cfk_abc", "Api-Key cfk_abc"],
)
def test_another_scheme_or_an_empty_key_is_refused(header: str, write_key: IssuedApiKey) -> None:
    _refused(Client().get(URL, headers={"authorization": header}))


def test_an_unknown_key_is_refused(write_key: IssuedApiKey) -> None:
    _refused(
        key_client(write_key.token[:-1] + ("A" if write_key.token[-1] != "A" else "B")).get(URL)
    )
    _refused(key_client("cfk_" + "x" * 500).get(URL))
    _refused(key_client("not-a-careflow-key").get(URL))


def test_a_revoked_key_is_refused_at_once(write_key: IssuedApiKey) -> None:
    client = key_client(write_key.token)
    assert client.get(URL).status_code == 200

    assert api_key_revoke(api_key=write_key.api_key) is True
    assert api_key_revoke(api_key=write_key.api_key) is False  # already revoked

    _refused(client.get(URL))


def test_the_key_is_stored_only_as_its_hash(write_key: IssuedApiKey) -> None:
    stored = ApiKey.objects.get()
    assert write_key.token.startswith("cfk_") and len(write_key.token) >= 40
    assert write_key.token not in {stored.key_hash, stored.prefix, stored.name}
    assert stored.prefix == write_key.token[:8]


def test_last_used_is_written_at_most_once_a_minute(write_key: IssuedApiKey) -> None:
    client = key_client(write_key.token)
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        client.get(URL)
    first = ApiKey.objects.get().last_used_at
    assert first == start
    with time_machine.travel(start + timedelta(seconds=30), tick=False):
        client.get(URL)
    assert ApiKey.objects.get().last_used_at == first
    with time_machine.travel(start + timedelta(seconds=61), tick=False):
        client.get(URL)
    assert ApiKey.objects.get().last_used_at == start + timedelta(seconds=61)


def test_the_key_is_never_logged(write_key: IssuedApiKey, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    key_client(write_key.token).get(URL)
    key_client(write_key.token + "x").get(URL)
    Client().post(
        URL,
        data="{",
        content_type="application/json",
        headers={"authorization": f"Bearer {write_key.token}"},
    )
    assert write_key.token not in caplog.text
