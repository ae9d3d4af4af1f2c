"""Mailgun as an integration's ESP: EmailTransport through anymail's real Mailgun backend
against the sandbox's Mailgun API (what its answers and the network's failures become), the
Events API look-up, the signed webhooks at the per-integration endpoint, and the admin
form's Mailgun fields."""

import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from integrations.email import webhooks
from integrations.email.esps import mailgun
from integrations.email.forms import EmailIntegrationForm, webhook_url
from integrations.email.sandbox import SandboxServer
from integrations.email.transport import EmailTransport
from integrations.messaging import Accepted, Ambiguous, Refused
from integrations.models import Integration, OutboundMessage
from patients.models import ConsentRecord
from tests.factories import IntegrationFactory, OrganizationFactory, PatientFactory

Status = OutboundMessage.Status
DOMAIN = "mg.clinic.example"
KEY = "0123456789abcdef0123456789abcdef-0a1b2c3d-4e5f6a7b"
SIGNING_KEY = "whsk-0123456789abcdef"
SENDER = f"care@{DOMAIN}"
transport = EmailTransport()


@pytest.fixture
def sandbox(settings: Any) -> Iterator[SandboxServer]:
    server = SandboxServer(webhook_delay=None)
    server.add_mailgun_domain(DOMAIN, api_key=KEY, signing_key=SIGNING_KEY, senders=[SENDER])
    server.start()
    settings.CAREFLOW_MAILGUN_API_URL = server.url + "/v3"
    settings.CAREFLOW_MAILGUN_EU_API_URL = server.url + "/eu-is-not-here/v3"
    settings.CAREFLOW_EMAIL_DELIVERY = "esp"
    settings.CAREFLOW_EMAIL_HTTP_TIMEOUT = 2.0
    yield server
    server.stop()


def integration(key: str = KEY, domain: str = DOMAIN, region: str = "us") -> Any:
    return SimpleNamespace(
        uuid=uuid.uuid4(),
        settings={"esp": "mailgun", "mailgun_domain": domain, "mailgun_region": region},
        secrets=json.dumps({"mailgun_api_key": key, "mailgun_webhook_signing_key": SIGNING_KEY}),
        senders=[SENDER],
    )


def message(to: str = "pat@example.org", **account: Any) -> Any:
    return SimpleNamespace(
        pk=1,
        uuid=uuid.uuid4(),
        to=to,
        from_number=SENDER,
        body="See you tomorrow.",
        content={"subject": "Your appointment", "html": "<p>See you</p>"},
        integration=integration(**account),
        provider_sid=None,
    )


def a_minute_ago() -> Any:
    return timezone.now() - timedelta(minutes=1)


# Sending ---------------------------------------------------------------------------------


def test_accepted_with_the_metadata_as_user_variables(sandbox: SandboxServer) -> None:
    sent = message()
    accepted = transport.send(sent)
    [stored] = sandbox.messages()
    assert accepted == Accepted(provider_id=stored["id"], provider_status="sent")
    assert stored["id"].startswith("<") and stored["id"].endswith(f"@{DOMAIN}>")
    assert stored["metadata"] == {"careflow_message": str(sent.uuid)}
    assert (stored["subject"], stored["text_body"], stored["html_body"]) == (
        "Your appointment",
        "See you tomorrow.",
        "<p>See you</p>",
    )


@pytest.mark.parametrize(
    ("account", "code"),
    [
        ({"key": "key-" + "0" * 32}, "mg401"),  # a key Mailgun does not know
        ({"domain": "other.example"}, "mg404"),  # a domain the key does not own
        ({"region": "eu"}, "mg404"),  # the EU API does not have a US domain
    ],
)
def test_a_bad_key_or_domain_is_permanent(
    sandbox: SandboxServer, account: dict[str, str], code: str
) -> None:
    with pytest.raises(Refused) as caught:
        transport.send(message(**account))
    assert (caught.value.code, caught.value.retryable, caught.value.opted_out) == (
        code,
        False,
        False,
    )
    assert transport.explain_error(code)
    assert sandbox.stats()["accepted"] == 0


def test_a_bad_request_is_permanent_and_says_why(sandbox: SandboxServer) -> None:
    sandbox.add_mailgun_domain(DOMAIN, api_key=KEY, signing_key=SIGNING_KEY, senders=["x@a.b"])
    with pytest.raises(Refused) as caught:
        transport.send(message())
    assert (caught.value.code, caught.value.retryable) == ("mg400", False)
    assert "not allowed on this domain" in str(caught.value)


def test_rate_limit_is_retryable(sandbox: SandboxServer) -> None:
    sandbox.add_fault({"kind": "error", "status": 429})
    with pytest.raises(Refused) as caught:
        transport.send(message())
    assert (caught.value.code, caught.value.retryable) == ("mg429", True)


@pytest.mark.parametrize("kind", ["accept_then_error", "error"])
def test_server_error_is_ambiguous(sandbox: SandboxServer, kind: str) -> None:
    sandbox.add_fault({"kind": kind, "status": 503})
    with pytest.raises(Ambiguous) as caught:
        transport.send(message())
    assert caught.value.code == "mg503"
    assert "internal error" in transport.explain_error("mg503")


@pytest.mark.parametrize("kind", ["drop", "accept_then_drop"])
def test_connection_dropped_after_the_request_is_ambiguous(
    sandbox: SandboxServer, kind: str
) -> None:
    sandbox.add_fault({"kind": kind})
    with pytest.raises(Ambiguous) as caught:
        transport.send(message())
    assert caught.value.code == "network"


def test_never_connected_is_retryable(settings: Any) -> None:
    settings.CAREFLOW_EMAIL_DELIVERY = "esp"
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings.CAREFLOW_MAILGUN_API_URL = f"http://127.0.0.1:{port}/v3"
    with pytest.raises(Refused) as caught:
        transport.send(message())
    assert (caught.value.code, caught.value.retryable) == ("network", True)


def test_an_unknown_esp_is_refused_before_any_request(settings: Any) -> None:
    settings.CAREFLOW_EMAIL_DELIVERY = "esp"
    settings.CAREFLOW_MAILGUN_API_URL = "http://192.0.2.1/v3"  # never reached
    sent = message()
    sent.integration.settings["esp"] = "carrier-pigeon"
    with pytest.raises(Refused) as caught:
        transport.send(sent)
    assert (caught.value.code, caught.value.retryable) == ("esp", False)
    with pytest.raises(Ambiguous) as looked_up:
        transport.lookup(sent, since=a_minute_ago())
    assert looked_up.value.code == "esp"


# Looking up ------------------------------------------------------------------------------


def test_read_timeout_is_ambiguous_and_lookup_finds_the_message(
    sandbox: SandboxServer, settings: Any
) -> None:
    settings.CAREFLOW_EMAIL_HTTP_TIMEOUT = 0.3
    sandbox.add_fault({"kind": "slow", "delay": 0.8})
    sent = message()
    since = timezone.now()
    with pytest.raises(Ambiguous):
        transport.send(sent)
    settings.CAREFLOW_EMAIL_HTTP_TIMEOUT = 2.0
    found = None
    for _ in range(50):
        found = transport.lookup(sent, since=since)
        if found:
            break
        time.sleep(0.05)
    assert found is not None
    assert (found.provider_id, found.provider_status) == (sandbox.messages()[0]["id"], "sent")
    assert found.accepted_at is not None


def test_lookup_filters_by_recipient_and_since_and_matches_the_metadata(
    sandbox: SandboxServer,
) -> None:
    sent = message()
    transport.send(sent)
    transport.send(message())  # the same recipient, another message
    assert transport.lookup(message(), since=a_minute_ago()) is None
    assert transport.lookup(sent, since=a_minute_ago()) is not None
    later = timezone.now() + mailgun.LOOKUP_MARGIN + timedelta(minutes=1)
    assert transport.lookup(sent, since=later) is None  # `begin` reached Mailgun


def test_lookup_reads_every_page(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailgun, "LOOKUP_PAGE_SIZE", 2)
    for _ in range(4):
        transport.send(message())
    last = message()
    transport.send(last)
    found = transport.lookup(last, since=a_minute_ago())
    assert found is not None and found.provider_id == sandbox.messages()[-1]["id"]
    assert sandbox.stats()["searches"] == 4  # three pages of events and the empty fourth
    monkeypatch.setattr(mailgun, "LOOKUP_PAGES", 2)
    with pytest.raises(Ambiguous) as caught:  # not read to the end: not "not there"
        transport.lookup(message(), since=a_minute_ago())
    assert caught.value.code == "lookup"


@pytest.mark.parametrize(
    ("to", "status", "error_code"),
    [
        ("pat@example.org", "delivered", ""),
        ("bounce@example.org", "bounced", "mg-bounce"),
        ("softbounce@example.org", "deferred", "mg-temporary"),
        ("complaint@example.org", "complained", "mg-complained"),
    ],
)
def test_lookup_reports_how_far_the_message_got(
    settings: Any, to: str, status: str, error_code: str
) -> None:
    with SandboxServer(webhook_delay=0.01) as server:
        server.add_mailgun_domain(DOMAIN, api_key=KEY, signing_key=SIGNING_KEY)
        settings.CAREFLOW_MAILGUN_API_URL = server.url + "/v3"
        settings.CAREFLOW_EMAIL_DELIVERY = "esp"
        sent = message(to=to)
        transport.send(sent)
        deadline = time.monotonic() + 5
        found = transport.lookup(sent, since=a_minute_ago())
        while found is not None and found.provider_status != status:
            assert time.monotonic() < deadline, found
            time.sleep(0.02)
            found = transport.lookup(sent, since=a_minute_ago())
    assert found is not None and found.error_code == error_code
    assert found.reported_at is not None and found.accepted_at is not None


def test_lookup_is_ambiguous_when_the_events_api_fails(sandbox: SandboxServer) -> None:
    for rule in (
        {"kind": "error", "on": "search", "status": 500},
        {"kind": "drop", "on": "search"},
        {"kind": "error", "on": "search", "status": 401},
    ):
        sandbox.add_fault(rule)
        with pytest.raises(Ambiguous) as caught:
            transport.lookup(message(), since=a_minute_ago())
        assert caught.value.code == "lookup"


# Webhooks --------------------------------------------------------------------------------


@pytest.fixture
def stored(db: Any) -> Integration:
    found: Integration = IntegrationFactory(
        adapter="email",
        senders=[SENDER],
        settings={"esp": "mailgun", "mailgun_domain": DOMAIN, "mailgun_region": "us"},
        secrets={"mailgun_api_key": KEY, "mailgun_webhook_signing_key": SIGNING_KEY},
    )
    return found


@pytest.fixture
def sent(stored: Integration) -> OutboundMessage:
    return OutboundMessage.objects.create(
        organization=stored.organization,
        integration=stored,
        patient=PatientFactory(organization=stored.organization, email="pat@example.org"),
        idempotency_key=f"email-{uuid.uuid4()}",
        purpose="transactional",
        to="pat@example.org",
        from_number=SENDER,
        body="hi",
        status=Status.SENT,
        provider_status="sent",
        provider_sid=f"<20261206.abc@{DOMAIN}>",
    )


def event(sent: OutboundMessage, kind: str = "delivered", **overrides: Any) -> dict[str, Any]:
    return {
        "event": kind,
        "id": uuid.uuid4().hex,
        "timestamp": time.time(),
        "recipient": sent.to,
        "user-variables": {"careflow_message": str(sent.uuid)},
        "message": {"headers": {"message-id": (sent.provider_sid or "").strip("<>")}},
        **overrides,
    }


def signed(
    event_data: dict[str, Any],
    key: str = SIGNING_KEY,
    timestamp: float | None = None,
    token: str | None = None,
) -> dict[str, Any]:
    stamp = str(int(time.time() if timestamp is None else timestamp))
    token = token or uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {
        "signature": {"timestamp": stamp, "token": token, "signature": signature},
        "event-data": event_data,
    }


def post(client: Client, integration: Integration, payload: Any) -> Any:
    url = reverse("email-events", kwargs={"integration_uuid": integration.uuid})
    body = payload if isinstance(payload, bytes) else json.dumps(payload)
    return client.post(url, body, content_type="application/json")


def opt_outs(sent: OutboundMessage) -> list[ConsentRecord]:
    return list(
        ConsentRecord.objects.filter(patient=sent.patient, channel="email", action="opt_out")
    )


@pytest.mark.urls("config.urls")
def test_a_signed_delivery_applies(client: Client, sent: OutboundMessage) -> None:
    response = post(client, sent.integration, signed(event(sent)))
    assert response.status_code == 200, response.content
    sent.refresh_from_db()
    assert (sent.status, sent.provider_status) == (Status.DELIVERED, "delivered")
    assert opt_outs(sent) == []


@pytest.mark.urls("config.urls")
@pytest.mark.parametrize(
    ("extra", "status", "error_code", "opted_out"),
    [
        ({"severity": "permanent", "reason": "bounce"}, "bounced", "mg-bounce", True),
        (
            {"severity": "permanent", "reason": "suppress-bounce"},
            "bounced",
            "mg-suppress-boun",
            True,
        ),
        ({"severity": "temporary", "reason": "generic"}, "deferred", "", False),
    ],
)
def test_failures(
    client: Client,
    sent: OutboundMessage,
    extra: dict[str, str],
    status: str,
    error_code: str,
    opted_out: bool,
) -> None:
    assert post(client, sent.integration, signed(event(sent, "failed", **extra))).status_code == 200
    sent.refresh_from_db()
    assert (sent.provider_status, sent.error_code) == (status, error_code)
    assert len(opt_outs(sent)) == (len(ConsentRecord.Purpose.values) if opted_out else 0)


@pytest.mark.urls("config.urls")
def test_a_complaint_stays_delivered_and_opts_out_once(
    client: Client, sent: OutboundMessage
) -> None:
    data = event(sent, "complained")
    assert post(client, sent.integration, signed(data)).status_code == 200
    assert post(client, sent.integration, signed(data)).status_code == 200  # Mailgun again
    sent.refresh_from_db()
    assert (sent.status, sent.provider_status) == (Status.DELIVERED, "complained")
    assert len(opt_outs(sent)) == len(ConsentRecord.Purpose.values)


@pytest.mark.urls("config.urls")
def test_unsigned_forged_stale_and_replayed_webhooks_change_nothing(
    client: Client, sent: OutboundMessage
) -> None:
    data = event(sent, "failed", severity="permanent", reason="bounce")
    unsigned = {"event-data": data}
    forged = signed(data, key="not-the-signing-key")
    tampered = signed(data)
    tampered["signature"]["timestamp"] = str(int(time.time()) + 1)
    stale = signed(data, timestamp=time.time() - mailgun.SIGNATURE_WINDOW - 60)
    future = signed(data, timestamp=time.time() + mailgun.SIGNATURE_WINDOW + 60)
    assert post(client, sent.integration, unsigned).status_code == 401
    assert post(client, sent.integration, b"not json").status_code == 401
    assert post(client, sent.integration, forged).status_code == 403
    assert post(client, sent.integration, tampered).status_code == 403
    assert post(client, sent.integration, stale).status_code == 406
    assert post(client, sent.integration, future).status_code == 406
    sent.refresh_from_db()
    assert (sent.status, sent.provider_status) == (Status.SENT, "sent")
    assert opt_outs(sent) == []
    once = signed(event(sent))
    assert post(client, sent.integration, once).status_code == 200
    replayed = signed(event(sent, "failed", severity="permanent"), token=once["signature"]["token"])
    replayed["signature"] = once["signature"]
    assert post(client, sent.integration, replayed).status_code == 406
    sent.refresh_from_db()
    assert sent.provider_status == "delivered" and opt_outs(sent) == []


@pytest.mark.urls("config.urls")
def test_a_webhook_that_failed_is_taken_when_mailgun_sends_it_again(
    sent: OutboundMessage, monkeypatch: pytest.MonkeyPatch
) -> None:
    once = signed(event(sent))

    def broken(**kwargs: Any) -> bool:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(webhooks, "message_status_apply", broken)
    client = Client(raise_request_exception=False)
    assert post(client, sent.integration, once).status_code == 500
    monkeypatch.undo()
    assert post(client, sent.integration, once).status_code == 200  # not a replay
    assert post(client, sent.integration, once).status_code == 406  # this one is
    sent.refresh_from_db()
    assert sent.provider_status == "delivered"


@pytest.mark.urls("config.urls")
def test_another_integrations_key_and_message_are_refused(
    client: Client, sent: OutboundMessage
) -> None:
    other: Integration = IntegrationFactory(
        adapter="email",
        settings={"esp": "mailgun", "mailgun_domain": "mg.other.example"},
        secrets={"mailgun_api_key": KEY, "mailgun_webhook_signing_key": "other-signing-key-1234"},
    )
    # signed with the other integration's key, at this one's endpoint
    data = event(sent, "failed", severity="permanent", reason="bounce")
    assert (
        post(client, sent.integration, signed(data, key="other-signing-key-1234")).status_code
        == 403
    )
    # properly signed for the other integration, but naming this one's message
    answer = post(client, other, signed(data, key="other-signing-key-1234"))
    assert (answer.status_code, answer.content) == (200, b"ignored: no such message")
    # this integration's, but another message id than the one Mailgun gave
    wrong = event(sent, "failed", severity="permanent", reason="bounce")
    wrong["message"]["headers"]["message-id"] = "someone-else@mg.clinic.example"
    answer = post(client, sent.integration, signed(wrong))
    assert answer.content.startswith(b"ignored:")
    sent.refresh_from_db()
    assert sent.provider_status == "sent" and opt_outs(sent) == []


@pytest.mark.urls("config.urls")
def test_an_unreadable_event_is_a_400(client: Client, sent: OutboundMessage) -> None:
    payload = signed(event(sent))
    payload["event-data"] = "delivered"
    assert post(client, sent.integration, payload).status_code == 400


# The admin form --------------------------------------------------------------------------


def data(**overrides: Any) -> dict[str, Any]:
    return {
        "organization": OrganizationFactory().pk,
        "name": "Clinic email",
        "enabled": "on",
        "esp": "mailgun",
        "mailgun_api_key": KEY,
        "mailgun_domain": "MG.Clinic.Example",
        "mailgun_region": "eu",
        "mailgun_webhook_signing_key": SIGNING_KEY,
        "server_token": "",
        "webhook_secret": "",
        "message_stream": "",
        "send_rate": "",
        "sender_addresses": SENDER,
        **overrides,
    }


@pytest.mark.django_db
def test_the_form_stores_only_mailguns_values() -> None:
    form = EmailIntegrationForm(data=data(server_token="left-from-postmark"))
    assert form.is_valid(), form.errors
    saved = form.save()
    assert saved.settings == {
        "esp": "mailgun",
        "mailgun_domain": DOMAIN,
        "mailgun_region": "eu",
    }
    assert saved.secrets == {
        "mailgun_api_key": KEY,
        "mailgun_webhook_signing_key": SIGNING_KEY,
    }
    assert EmailIntegrationForm.account_display(saved) == f"Mailgun, domain “{DOMAIN}” (EU)"
    page = str(EmailIntegrationForm(instance=saved))
    assert KEY not in page and SIGNING_KEY not in page and DOMAIN in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("mailgun_api_key", "", "required"),
        ("mailgun_api_key", "pubkey-0123456789abcdef0123456789abcdef", "not a Mailgun private"),
        ("mailgun_api_key", "key-0123", "not a Mailgun private"),
        ("mailgun_webhook_signing_key", "", "required"),
        ("mailgun_webhook_signing_key", "short", "signing key"),
        ("mailgun_domain", "", "required"),
        ("mailgun_domain", "https://mg.clinic.example/", "domain name"),
        ("mailgun_domain", "care@mg.clinic.example", "domain name"),
        ("mailgun_domain", "localhost", "domain name"),
        ("mailgun_region", "mars", "valid choice"),
    ],
)
def test_bad_mailgun_values_are_refused_clearly(field: str, value: str, said: str) -> None:
    form = EmailIntegrationForm(data=data(**{field: value}))
    assert not form.is_valid()
    assert said in " ".join(form.errors[field])
    assert not Integration.objects.exists()


@pytest.mark.django_db
def test_blank_mailgun_secrets_keep_the_stored_ones() -> None:
    form = EmailIntegrationForm(data=data())
    assert form.is_valid(), form.errors
    saved = form.save()
    again = EmailIntegrationForm(
        instance=saved,
        data=data(
            organization=saved.organization_id,
            mailgun_api_key="",
            mailgun_webhook_signing_key="",
            mailgun_region="us",
        ),
    )
    assert again.is_valid(), again.errors
    again.save()
    saved.refresh_from_db()
    assert saved.secrets["mailgun_api_key"] == KEY
    assert saved.settings["mailgun_region"] == "us"


@pytest.mark.django_db
def test_switching_a_postmark_integration_to_mailgun_needs_mailguns_secrets() -> None:
    postmark: Integration = IntegrationFactory(
        adapter="email",
        senders=[SENDER],
        secrets={"server_token": "t", "webhook_secret": "w" * 16},
    )
    form = EmailIntegrationForm(
        instance=postmark,
        data=data(organization=postmark.organization_id, mailgun_api_key=""),
    )
    assert not form.is_valid()
    assert set(form.errors) == {"mailgun_api_key"}


@pytest.mark.django_db
def test_the_form_tells_the_script_which_fields_are_whose() -> None:
    page = str(EmailIntegrationForm()["esp"])
    fields = json.loads(page.split('data-esp-fields="')[1].split('"')[0].replace("&quot;", '"'))
    assert fields["mailgun"] == [
        "mailgun_api_key",
        "mailgun_domain",
        "mailgun_region",
        "mailgun_webhook_signing_key",
    ]
    assert fields["postmark"] == ["server_token", "webhook_secret", "message_stream"]


@pytest.mark.django_db
def test_credentials_check_asks_mailgun(sandbox: SandboxServer) -> None:
    good: Integration = IntegrationFactory(
        adapter="email",
        settings={"esp": "mailgun", "mailgun_domain": DOMAIN},
        secrets={"mailgun_api_key": KEY, "mailgun_webhook_signing_key": SIGNING_KEY},
    )
    accepted, said = EmailIntegrationForm.credentials_check(good)
    assert accepted and said == f"credentials accepted (domain {DOMAIN}: active)."
    good.secrets = {"mailgun_api_key": "key-" + "f" * 32}
    accepted, said = EmailIntegrationForm.credentials_check(good)
    assert not accepted and "Mailgun error 401" in said and "f" * 32 not in said
    good.settings = {"esp": "mailgun", "mailgun_domain": "unknown.example"}
    good.secrets = {"mailgun_api_key": KEY}
    accepted, said = EmailIntegrationForm.credentials_check(good)
    assert not accepted and "Mailgun error 404" in said and "region" in said


@pytest.mark.django_db
@pytest.mark.urls("config.urls")
def test_the_webhook_url_to_paste_into_mailgun_has_no_credentials(settings: Any) -> None:
    settings.CAREFLOW_PUBLIC_URL = "https://careflow.example/"
    found: Integration = IntegrationFactory(
        adapter="email", settings={"esp": "mailgun", "mailgun_domain": DOMAIN}
    )
    assert webhook_url(found) == (f"https://careflow.example/webhooks/email/{found.uuid}/events/")
