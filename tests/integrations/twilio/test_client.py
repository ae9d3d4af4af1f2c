"""The Twilio client's HTTP session: the environment's settings (proxies, CA bundle)
honoured, but read once per origin instead of on every request."""

from typing import Any

import pytest
import requests

from integrations.twilio.client import _Session


def test_the_environments_ca_bundle_is_honoured_and_read_once_per_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/clinic/ca.pem")
    reads: list[str] = []
    original = requests.Session.merge_environment_settings

    def counting(self: Any, url: str, *args: Any) -> Any:
        reads.append(url)
        return original(self, url, *args)

    monkeypatch.setattr(requests.Session, "merge_environment_settings", counting)
    session = _Session()
    first = session.merge_environment_settings(
        "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json", None, None, None, None
    )
    second = session.merge_environment_settings(
        "https://api.twilio.com/2010-04-01/Accounts/AC2/Messages.json", None, None, None, None
    )
    assert first["verify"] == "/etc/clinic/ca.pem"
    assert second == first
    second["proxies"]["https"] = "changed by a caller"  # each caller gets its own copy
    other = session.merge_environment_settings("http://127.0.0.1:9/x", None, None, None, None)
    assert len(reads) == 2  # once per origin
    assert (
        session.merge_environment_settings("https://api.twilio.com/y", None, None, None, None)
        == first
    )
    assert other["verify"] == "/etc/clinic/ca.pem"


def test_explicit_settings_are_not_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    session = _Session()
    explicit = session.merge_environment_settings(
        "https://api.twilio.com/x", {"https": "http://p:1"}, None, False, None
    )
    assert explicit["verify"] is False and explicit["proxies"]["https"] == "http://p:1"
    assert session._environment == {}
