"""EmailTransport against the loopback Postmark sandbox, through anymail's real backend: what
Postmark's answers and the network's failures become (accepted / refused / ambiguous)."""

import json
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.utils import timezone

from integrations import sending
from integrations.email.sandbox import SandboxServer
from integrations.email.transport import STATUS_MAP, STATUS_RANK, EmailTransport
from integrations.messaging import Accepted, Ambiguous, Found, Refused

TOKEN = "server-token-1"
SENDER = "clinic@example.com"


@pytest.fixture
def sandbox(settings: Any) -> Iterator[SandboxServer]:
    server = SandboxServer(servers={TOKEN: {"senders": [SENDER]}}, webhook_delay=None)
    server.start()
    settings.CAREFLOW_POSTMARK_API_URL = server.url + "/"
    settings.CAREFLOW_EMAIL_DELIVERY = "postmark"
    settings.CAREFLOW_EMAIL_HTTP_TIMEOUT = 2.0
    yield server
    server.stop()


def integration(token: str = TOKEN, **settings: Any) -> Any:
    return SimpleNamespace(
        uuid=uuid.uuid4(),
        settings=settings,
        secrets=json.dumps({"server_token": token, "webhook_secret": "s3cret"}),
        senders=[SENDER],
    )


def message(to: str = "pat@example.org", token: str = TOKEN, html: str = "") -> Any:
    return SimpleNamespace(
        pk=1,
        uuid=uuid.uuid4(),
        to=to,
        from_number=SENDER,
        body="See you tomorrow.",
        content={"subject": "Your appointment", "html": html},
        integration=integration(token),
        provider_sid=None,
    )


transport = EmailTransport()


def test_accepted_with_metadata_and_no_tracking(sandbox: SandboxServer) -> None:
    sent = message(html="<p>See you</p>")
    accepted = transport.send(sent)
    [stored] = sandbox.messages()
    assert accepted == Accepted(provider_id=stored["id"], provider_status="sent")
    assert stored["metadata"] == {"careflow_message": str(sent.uuid)}
    assert stored["subject"] == "Your appointment"
    assert stored["text_body"] == "See you tomorrow."
    assert stored["html_body"] == "<p>See you</p>"


def test_bad_token_is_permanent(sandbox: SandboxServer) -> None:
    with pytest.raises(Refused) as caught:
        transport.send(message(token="wrong"))
    assert (caught.value.code, caught.value.retryable, caught.value.opted_out) == (
        "10",
        False,
        False,
    )
    assert "token" in transport.explain_error("10")


def test_unverified_sender_is_permanent(sandbox: SandboxServer) -> None:
    sent = message()
    sent.from_number = "other@example.com"
    with pytest.raises(Refused) as caught:
        transport.send(sent)
    assert caught.value.code == "400"
    assert not caught.value.retryable


def test_inactive_recipient_is_an_opt_out(sandbox: SandboxServer) -> None:
    with pytest.raises(Refused) as caught:
        transport.send(message(to="inactive@example.org"))
    assert (caught.value.code, caught.value.opted_out, caught.value.retryable) == (
        "406",
        True,
        False,
    )


def test_recipient_postmark_finds_invalid_is_permanent(sandbox: SandboxServer) -> None:
    with pytest.raises(Refused) as caught:
        transport.send(message(to="pat@localhost"))
    assert caught.value.code == "300"
    assert not caught.value.opted_out


def test_address_anymail_cannot_parse_is_refused_before_sending(sandbox: SandboxServer) -> None:
    with pytest.raises(Refused) as caught:
        transport.send(message(to="a@b@c, d"))
    assert not caught.value.retryable
    assert sandbox.stats()["sends"] == 0


def test_rate_limit_is_retryable(sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "error"})
    with pytest.raises(Refused) as caught:
        transport.send(message())
    assert (caught.value.code, caught.value.retryable) == ("429", True)


@pytest.mark.parametrize("kind", ["accept_then_error", "error"])
def test_server_error_is_ambiguous(sandbox: SandboxServer, kind: str) -> None:
    sandbox.add_fault({"kind": kind, "status": 503, "code": 500})
    with pytest.raises(Ambiguous) as caught:
        transport.send(message())
    assert caught.value.code == "500"


@pytest.mark.parametrize("kind", ["drop", "accept_then_drop"])
def test_connection_dropped_after_the_request_is_ambiguous(
    sandbox: SandboxServer, kind: str
) -> None:
    sandbox.add_fault({"kind": kind})
    with pytest.raises(Ambiguous) as caught:
        transport.send(message())
    assert caught.value.code == "network"


def test_read_timeout_is_ambiguous_and_lookup_finds_the_message(
    sandbox: SandboxServer, settings: Any
) -> None:
    settings.CAREFLOW_EMAIL_HTTP_TIMEOUT = 0.3
    sandbox.add_fault({"kind": "slow", "delay": 0.8})
    sent = message()
    with pytest.raises(Ambiguous):
        transport.send(sent)
    settings.CAREFLOW_EMAIL_HTTP_TIMEOUT = 2.0
    found = None
    for _ in range(50):
        found = transport.lookup(sent, since=None)  # type: ignore[arg-type]
        if found:
            break
        time.sleep(0.05)
    assert found == Found(provider_id=sandbox.messages()[0]["id"], provider_status="sent")


def test_never_connected_is_retryable(sandbox: SandboxServer, settings: Any) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.CAREFLOW_POSTMARK_API_URL = f"http://127.0.0.1:{port}/"
    with pytest.raises(Refused) as caught:
        transport.send(message())
    assert (caught.value.code, caught.value.retryable) == ("network", True)
    with pytest.raises(Ambiguous):
        transport.lookup(message(), since=None)  # type: ignore[arg-type]


def test_a_claim_is_not_taken_for_a_dead_workers_while_its_send_may_still_wait(
    settings: Any,
) -> None:
    """A send waits up to the timeout to connect and as long again for the answer; a claim
    taken for a dead worker's sooner is looked up, missed, and sent a second time while the
    first request may still be accepted."""
    settings.CAREFLOW_EMAIL_HTTP_TIMEOUT = 60.0
    assert transport.send_timeout() == 60.0
    claimed = SimpleNamespace(
        sending_started_at=timezone.now() - timedelta(seconds=2 * 60 - 1),
        updated_at=timezone.now(),
        integration=SimpleNamespace(adapter="email"),
    )
    assert not sending._sending_stale(claimed)  # type: ignore[arg-type]
    claimed.sending_started_at = timezone.now() - timedelta(seconds=2 * 60 + 31)
    assert sending._sending_stale(claimed)  # type: ignore[arg-type]


def test_lookup_is_none_when_postmark_has_no_such_message(sandbox: SandboxServer) -> None:
    transport.send(message())
    assert transport.lookup(message(), since=None) is None  # type: ignore[arg-type]


def test_lookup_is_ambiguous_when_the_search_fails(sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "error", "on": "search", "status": 500})
    with pytest.raises(Ambiguous) as caught:
        transport.lookup(message(), since=None)  # type: ignore[arg-type]
    assert caught.value.code == "lookup"
    sandbox.add_fault({"kind": "drop", "on": "search"})
    with pytest.raises(Ambiguous):
        transport.lookup(message(), since=None)  # type: ignore[arg-type]


def test_local_file_delivery(settings: Any, tmp_path: Path) -> None:
    settings.CAREFLOW_EMAIL_DELIVERY = "file"
    settings.EMAIL_FILE_PATH = str(tmp_path)
    sent = message()
    accepted = transport.send(sent)
    assert accepted == Accepted(provider_id=f"local-{sent.uuid}", provider_status="delivered")
    [written] = list(tmp_path.iterdir())
    text = written.read_text()
    assert "Subject: Your appointment" in text
    assert f"X-Careflow-Message: {sent.uuid}" in text
    assert transport.lookup(sent, since=None) is None  # type: ignore[arg-type]
    sent.provider_sid = accepted.provider_id
    assert transport.lookup(sent, since=None) == Found(accepted.provider_id, "delivered")  # type: ignore[arg-type]


def test_local_delivery_that_cannot_write_is_retryable(settings: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings.CAREFLOW_EMAIL_DELIVERY = "file"
    settings.EMAIL_FILE_PATH = str(blocker / "inside")
    with pytest.raises(Refused) as caught:
        transport.send(message())
    assert (caught.value.code, caught.value.retryable) == ("local", True)


def test_status_words_units_and_throttle() -> None:
    assert set(STATUS_MAP) <= set(STATUS_RANK)
    assert STATUS_MAP["complained"] == "delivered"
    assert STATUS_RANK["complained"] > STATUS_RANK["delivered"] > STATUS_RANK["sent"]
    assert STATUS_RANK["bounced"] == STATUS_RANK["delivered"]
    sent = message()
    assert transport.units(sent) == 1
    assert transport.throttle(sent) is None
    sent.integration.settings = {"send_rate": 5}
    assert transport.throttle(sent) == (f"email:{sent.integration.uuid}", 5.0)
    assert transport.explain_error("nope") == ""
