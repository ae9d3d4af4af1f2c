"""The email pieces together over real HTTP: EmailTransport sends through anymail to the
Postmark sandbox, whose webhooks reach careflow's endpoint on a live server with the
integration's basic-auth credentials, and change the message and the patient's consent."""

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from django.urls import reverse

from integrations.email import transport as email_transport
from integrations.email import webhooks
from integrations.email.account import EmailAccount
from integrations.email.sandbox import SandboxServer
from integrations.email.transport import EmailTransport
from integrations.models import Integration, OutboundMessage
from patients.models import ConsentRecord
from tests.factories import IntegrationFactory, PatientFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("integrations.email.urls")]
TOKEN = "server-token-e2e"
SECRET = "hook-secret"
SENDER = "clinic@example.com"
Status = OutboundMessage.Status
T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], *, timeout: float = 10.0) -> T:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s")
        time.sleep(0.05)
    return value


@pytest.fixture
def integration(monkeypatch: pytest.MonkeyPatch) -> Integration:
    found: Integration = IntegrationFactory(adapter="email")
    if hasattr(Integration, "secrets"):  # the provider-neutral settings (issue 15, section 3)
        found.secrets = json.dumps({"server_token": TOKEN, "webhook_secret": SECRET})  # type: ignore[attr-defined]
        found.senders = [SENDER]  # type: ignore[attr-defined]
        found.save()
    else:  # until they land, the account reader stands in
        account = EmailAccount(
            esp="postmark",
            server_token=TOKEN,
            webhook_auth=f"postmark:{SECRET}",
            message_stream="outbound",
            senders=(SENDER,),
            send_rate=None,
        )
        monkeypatch.setattr(webhooks, "email_account", lambda integration: account)
        monkeypatch.setattr(email_transport, "email_account", lambda integration: account)
    return found


@pytest.fixture
def sandbox(live_server: Any, integration: Integration, settings: Any) -> Any:
    path = reverse("email-events", kwargs={"integration_uuid": integration.uuid})
    origin = live_server.url.removeprefix("http://")
    server = SandboxServer(
        servers={
            TOKEN: {"senders": [SENDER], "webhook_url": f"http://postmark:{SECRET}@{origin}{path}"}
        },
        webhook_delay=0.05,
    )
    server.start()
    settings.CAREFLOW_POSTMARK_API_URL = server.url + "/"
    settings.CAREFLOW_EMAIL_DELIVERY = "postmark"
    yield server
    server.stop()


def outbound(integration: Integration, to: str) -> OutboundMessage:
    patient = PatientFactory(organization=integration.organization, email=to)
    message = OutboundMessage.objects.create(
        organization=integration.organization,
        integration=integration,
        patient=patient,
        idempotency_key=f"e2e-{to}",
        purpose="marketing",
        to=to,
        from_number=SENDER,
        body="Our spring newsletter",
        status=Status.SENT,
        provider_status="sent",
    )
    message.content = {"subject": "Spring", "html": ""}  # type: ignore[attr-defined]
    return message


def test_delivery_reaches_the_message(sandbox: SandboxServer, integration: Integration) -> None:
    message = outbound(integration, "pat@example.org")
    EmailTransport().send(message)
    wait_for(lambda: OutboundMessage.objects.get(pk=message.pk).status == Status.DELIVERED)
    [stored] = sandbox.messages()
    assert stored["webhooks"][0]["http_status"] == 200


def test_hard_bounce_records_the_email_opt_out(
    sandbox: SandboxServer, integration: Integration
) -> None:
    message = outbound(integration, "bounce@example.org")
    EmailTransport().send(message)
    records = wait_for(
        lambda: list(ConsentRecord.objects.filter(patient=message.patient, channel="email"))
    )
    assert {(r.purpose, r.action) for r in records} == {
        ("transactional", "opt_out"),
        ("marketing", "opt_out"),
    }
    assert sandbox.messages()[0]["webhooks"][0]["http_status"] == 200


def test_wrong_webhook_credentials_are_refused_and_change_nothing(
    sandbox: SandboxServer, integration: Integration, live_server: Any
) -> None:
    path = reverse("email-events", kwargs={"integration_uuid": integration.uuid})
    origin = live_server.url.removeprefix("http://")
    sandbox.add_server(TOKEN, senders=[SENDER], webhook_url=f"http://postmark:wrong@{origin}{path}")
    message = outbound(integration, "complaint@example.org")
    EmailTransport().send(message)
    webhooks_posted = wait_for(
        lambda: len(sandbox.messages()[0]["webhooks"]) == 2 and sandbox.messages()[0]["webhooks"]
    )
    assert [w["http_status"] for w in webhooks_posted] == [403, 403]
    assert not ConsentRecord.objects.filter(patient=message.patient).exists()
    assert OutboundMessage.objects.get(pk=message.pk).status == Status.SENT
