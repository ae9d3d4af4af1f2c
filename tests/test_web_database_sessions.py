"""A threaded web server (runserver, as `make run` and development use it) on PostgreSQL
holds a bounded number of database sessions under a burst of status callbacks: each thread
used to open a session of its own, and a burst exhausted max_connections (500s)."""

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests
from django.conf import settings
from twilio.request_validator import RequestValidator

from integrations.models import OutboundMessage
from integrations.twilio.account import twilio_account
from tests.deployments import ROOT, free_port, wait_until_serving
from tests.factories import IntegrationFactory

pytestmark = pytest.mark.integration
APPLICATION_NAME = "careflow-test-web"
CALLBACKS = 60


@pytest.fixture
def web(transactional_db: Any) -> Iterator[str]:
    """runserver on the test database, its sessions named so they can be counted."""
    db = settings.DATABASES["default"]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
            f"?application_name={APPLICATION_NAME}"
        ),
        "SECURE_SSL_REDIRECT": "false",
    }
    env.pop("CAREFLOW_DB_POOL_MAX_SIZE", None)  # the default is what is tested
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 — this interpreter and this checkout's manage.py
        [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/admin/login/", timeout=60, alive=lambda: process.poll() is None)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _sessions() -> int:
    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=db["NAME"], autocommit=True
    ) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [APPLICATION_NAME],
        ).fetchone()
        return int(row[0]) if row else 0


def test_a_burst_of_status_callbacks_holds_a_bounded_number_of_sessions(web: str) -> None:
    integration = IntegrationFactory()
    message = OutboundMessage.objects.create(
        organization=integration.organization,
        integration=integration,
        idempotency_key="k1",
        purpose="transactional",
        to="+14155550123",
        from_number="+15005550006",
        body="hi",
        status=OutboundMessage.Status.SENT,
        provider_status="queued",
        provider_sid="SM" + "1" * 32,
    )
    url = f"{web}/webhooks/twilio/{integration.uuid}/status/{message.uuid}/"
    params = {
        "MessageSid": message.provider_sid or "",
        "MessageStatus": "sent",
        "AccountSid": twilio_account(integration).account_sid,
    }
    signature = RequestValidator(twilio_account(integration).auth_token).compute_signature(
        url, params
    )
    answers: Counter[int] = Counter()
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _sessions())
            time.sleep(0.01)

    start = threading.Barrier(CALLBACKS)

    def callback() -> None:
        with requests.Session() as session:  # keep-alive: the server's thread stays
            start.wait()
            for _ in range(20):  # runserver's listen backlog is short: a refused one retries
                try:
                    response = session.post(
                        url, data=params, headers={"X-Twilio-Signature": signature}, timeout=30
                    )
                except requests.ConnectionError:
                    time.sleep(0.1)
                    continue
                answers[response.status_code] += 1
                break
            time.sleep(1)  # the connection stays open a while, as a client's pool keeps it

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    clients = [threading.Thread(target=callback) for _ in range(CALLBACKS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join()
    done.set()
    sampler.join()

    assert answers == {204: CALLBACKS}
    assert peak <= 4, f"{peak} sessions for {CALLBACKS} concurrent callbacks"
