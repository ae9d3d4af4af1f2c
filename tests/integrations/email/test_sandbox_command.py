"""`manage.py email_sandbox`: server specs from the command line and the environment."""

import argparse
import io
import os
import signal
import threading
import time

import pytest
import requests
from django.core.management import CommandError, call_command

from integrations.email.sandbox_command import (
    MAILGUN_VARIABLE,
    SERVERS_VARIABLE,
    parse_mailgun_domain,
    parse_server,
)


def test_parse_server_keeps_the_colons_of_the_webhook_url() -> None:
    assert parse_server("tok:a@x.org,b@x.org:http://u:p@127.0.0.1:8000/e/") == {
        "token": "tok",
        "senders": ["a@x.org", "b@x.org"],
        "webhook_url": "http://u:p@127.0.0.1:8000/e/",
    }
    assert parse_server("tok") == {"token": "tok", "senders": [], "webhook_url": None}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_server(":a@x.org")


def test_a_malformed_server_in_the_environment_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SERVERS_VARIABLE, "tok:a@x.org\n:nothing")
    with pytest.raises(CommandError, match=f"{SERVERS_VARIABLE}: expected TOKEN"):
        call_command("email_sandbox", "--port", "0")


def test_a_webhook_url_off_loopback_is_refused() -> None:
    with pytest.raises(CommandError, match="loopback"):
        call_command("email_sandbox", "--port", "0", "--server", "tok::http://example.com/e/")


def test_it_serves_until_stopped() -> None:
    out = io.StringIO()
    answered: list[bool] = []

    def stop_when_up() -> None:
        for _ in range(200):
            if out.getvalue().startswith("http://"):
                url = out.getvalue().splitlines()[0]
                answered.append(requests.get(url + "/_sandbox/stats.json", timeout=5).ok)
                break
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_up, daemon=True).start()
    call_command("email_sandbox", "--port", "0", "--server", "tok:a@x.org", stdout=out)
    assert answered == [True]
    assert "server: a@x.org" in out.getvalue()
    assert out.getvalue().rstrip().endswith("email sandbox stopped")


def test_mailgun_domains_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_mailgun_domain("mg.x.org:key-1:sig-1:a@x.org:http://127.0.0.1:8000/e/") == {
        "domain": "mg.x.org",
        "api_key": "key-1",
        "signing_key": "sig-1",
        "senders": ["a@x.org"],
        "webhook_url": "http://127.0.0.1:8000/e/",
    }
    with pytest.raises(argparse.ArgumentTypeError):
        parse_mailgun_domain("mg.x.org:key-only")
    monkeypatch.setenv(MAILGUN_VARIABLE, "mg.x.org:key-1")
    with pytest.raises(CommandError, match=f"{MAILGUN_VARIABLE}: expected DOMAIN"):
        call_command("email_sandbox", "--port", "0")
