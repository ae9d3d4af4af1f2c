"""The sandbox's "Reply as patient" form, end to end: the page's form makes the sandbox post
a signed inbound SMS to careflow's inbound webhook (the live server), which records it as
Twilio's would be."""

import html
import re
from typing import Any

import pytest
import requests
from django.urls import reverse
from twilio.rest import Client

from integrations.models import InboundMessage, Integration
from integrations.twilio.account import twilio_account
from integrations.twilio.client import BaseUrlHttpClient
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

# The session's worker is stopped: its beat would act on the inbound events these tests commit
# while the test database is being emptied after each test (a deadlock with the TRUNCATE).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_worker")]
PHONE = "+14155550177"
CLINIC = "+15005550006"


def inbound_url(live_server: Any, integration: Integration) -> str:
    path = reverse("twilio-inbound-sms", kwargs={"integration_uuid": integration.uuid})
    return f"{live_server.url}{path}"


def text_the_patient(sandbox: SandboxServer, integration: Integration, body: str) -> str:
    """The clinic texts the patient through the sandbox, as careflow's sends do; its sid."""
    account = twilio_account(integration)
    client = Client(
        account.account_sid,
        account.auth_token,
        http_client=BaseUrlHttpClient(base_url=sandbox.url, timeout=5),
    )
    return str(client.messages.create(to=PHONE, from_=CLINIC, body=body).sid)


def reply_on_the_page(sandbox: SandboxServer, sid: str, body: str) -> requests.Response:
    """Fill the row's "Reply as patient" form and submit it, as the browser does."""
    session = requests.Session()
    session.trust_env = False
    page = session.get(sandbox.url + "/", timeout=5).text
    row = re.search(rf'<tr class=outbound data-sid="{sid}">(.*?)</tr>', page, re.S)
    assert row, page
    fields = dict(re.findall(r'<input type=hidden name=(\w+) value="([^"]*)">', row.group(1)))
    assert "Reply as patient" in row.group(1)
    return session.post(
        sandbox.url + "/_sandbox/reply",
        data={**fields, "body": body},
        headers={"Origin": sandbox.url},
        allow_redirects=False,
        timeout=20,
    )


@pytest.fixture
def integration(sandbox: SandboxServer, live_server: Any) -> Integration:
    integration = IntegrationFactory(senders=[CLINIC])
    account = twilio_account(integration)
    sandbox.add_account(
        account.account_sid,
        account.auth_token,
        numbers=[CLINIC],
        inbound_url=inbound_url(live_server, integration),
    )
    return integration


def test_a_reply_on_the_page_reaches_careflow_signed_and_is_recorded(
    sandbox: SandboxServer, integration: Integration
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    sid = text_the_patient(sandbox, integration, "Reply C to confirm tomorrow's visit")

    response = reply_on_the_page(sandbox, sid, "C.")

    assert response.status_code == 303
    [inbound] = sandbox.inbound_messages()
    assert (inbound["http_status"], inbound["in_reply_to"]) == (200, sid)
    recorded = InboundMessage.objects.get()
    assert recorded.provider_sid == inbound["sid"]
    assert (recorded.from_number, recorded.to, recorded.body) == (PHONE, CLINIC, "C.")
    assert (recorded.integration, recorded.patient) == (integration, patient)
    assert recorded.action == InboundMessage.Action.NONE


def test_stop_replied_on_the_page_opts_the_patient_out(
    sandbox: SandboxServer, integration: Integration
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient)
    sid = text_the_patient(sandbox, integration, "Your refill is due")

    assert reply_on_the_page(sandbox, sid, "STOP").status_code == 303

    latest = patient.consents.order_by("-occurred_at", "-id").first()
    assert latest is not None and latest.action == ConsentRecord.Action.OPT_OUT
    assert InboundMessage.objects.get().action == InboundMessage.Action.OPT_OUT


def test_a_reply_signed_with_another_token_is_refused_and_the_page_says_so(
    sandbox: SandboxServer, integration: Integration, live_server: Any
) -> None:
    account = twilio_account(integration)
    sid = text_the_patient(sandbox, integration, "Reply C to confirm")
    # The sandbox's idea of the token drifts from careflow's (a rotated token, say).
    sandbox.add_account(
        account.account_sid,
        "not-the-integrations-token",
        numbers=[CLINIC],
        inbound_url=inbound_url(live_server, integration),
    )

    assert reply_on_the_page(sandbox, sid, "C").status_code == 303

    assert [m["http_status"] for m in sandbox.inbound_messages()] == [403]
    assert "webhook answered 403" in requests.get(sandbox.url + "/", timeout=5).text
    assert not InboundMessage.objects.exists()


def test_careflows_twiml_answer_to_help_shows_in_the_conversation(
    sandbox: SandboxServer, integration: Integration
) -> None:
    PatientFactory(organization=integration.organization, phone=PHONE)
    sid = text_the_patient(sandbox, integration, "Your refill is due")

    assert reply_on_the_page(sandbox, sid, "HELP").status_code == 303

    [inbound] = sandbox.inbound_messages()
    [answer] = inbound["twiml_replies"]
    assert integration.organization.name in answer
    page = requests.get(sandbox.url + "/", timeout=5).text
    directions = re.findall(r"<td>\d\d:\d\d:\d\d</td><td>([^<]*)</td>", page)
    assert directions == ["outbound (TwiML answer)", "inbound", "outbound"]  # newest first
    assert html.escape(answer) in page
