"""careflow against the sandbox where it behaves as real Twilio (issue 21): reconciling an
ambiguous send when Twilio refuses the look-up (test credentials, 403) or it keeps failing,
finding the attempt on a later page of the Messages list, what 21609 and the magic numbers'
codes are explained as, and the deploy check on CAREFLOW_PUBLIC_URL."""

from datetime import timedelta
from typing import Any

import pytest
from django.core.checks import run_checks
from django.utils import timezone

from integrations import alerts
from integrations.alerts import alerts_evaluate
from integrations.models import Alert, AlertSettings, Integration, OutboundMessage
from integrations.sending import message_prepare, message_send, sent_messages_reconcile
from integrations.twilio.account import twilio_account
from integrations.twilio.client import twilio_client
from integrations.twilio.errors import error_explanation
from integrations.twilio.sandbox import SandboxServer
from integrations.twilio.transport import public_url_problem
from tests.conftest import sandbox_account, wait_for
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

pytestmark = pytest.mark.django_db
Status = OutboundMessage.Status
TO = "+14155550123"
FROM = "+15005550006"


@pytest.fixture(autouse=True)
def _no_delivery_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Alerts are raised, not delivered, here (delivery has its own tests)."""

    class Task:
        @staticmethod
        def delay(alert_id: int) -> None:
            pass

    monkeypatch.setattr(alerts, "_delivery_task", Task)


def _integration(sandbox: SandboxServer, *, test_credentials: bool = False) -> Integration:
    integration = sandbox_account(sandbox, IntegrationFactory())
    if test_credentials:
        account = twilio_account(integration)
        sandbox.add_account(
            account.account_sid,
            account.auth_token,
            numbers=integration.senders,
            test_credentials=True,
        )
    return integration


def _client(integration: Integration) -> Any:
    account = twilio_account(integration)
    return twilio_client(account_sid=account.account_sid, auth_token=account.auth_token)


def _message(integration: Integration, *, body: str = "Your order shipped") -> OutboundMessage:
    patient = PatientFactory(organization=integration.organization, phone=TO)
    ConsentFactory(patient=patient)
    return message_prepare(
        organization=integration.organization,
        integration=integration,
        idempotency_key=f"key:{body}",
        to=TO,
        from_number=FROM,
        body=body,
        purpose="transactional",
        patient=patient,
    )


def _due_now(message: OutboundMessage) -> None:
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now())


# --- item 3: an unconfirmable send is bounded, marked and raised to staff -----------------


def test_a_lookup_refused_with_test_credentials_is_not_repeated_and_raises_an_alert(
    sandbox: SandboxServer,
) -> None:
    """Twilio's test credentials answer a create but refuse every look-up (403, 20008): the
    ambiguous send is left "unknown" at once (never resent: it may have gone out), with the
    reason, and the clinic's staff get a failure alert."""
    integration = _integration(sandbox, test_credentials=True)
    AlertSettings.objects.create(
        organization=integration.organization, staff_emails=["ops@clinic.example"]
    )
    sandbox.add_fault({"kind": "accept_then_drop", "count": 1})
    message = _message(integration)
    assert message_send(message_id=message.pk).status == Status.UNKNOWN
    _due_now(message)

    settled = message_send(message_id=message.pk)

    assert settled.status == Status.UNKNOWN
    assert settled.next_attempt_at is None  # nothing will ask again
    assert settled.lookup_failures == 1
    assert settled.error_code == "20008"
    assert settled.error_message.startswith("Not confirmed: careflow could not find out")
    assert "the provider refuses to look it up" in settled.error_message
    assert "test credentials" in error_explanation("20008")
    assert sandbox.stats()["creates"] == 1  # not resent
    # The run's sweeper may come back to it: Twilio is not asked again.
    assert message_send(message_id=message.pk).lookup_failures == 1

    raised = alerts_evaluate()

    assert [(a.condition, a.subject) for a in raised] == [
        (Alert.Condition.UNCONFIRMED, f"integration:{integration.pk}")
    ]
    assert "1 message(s) could not be confirmed" in raised[0].summary
    assert TO not in raised[0].summary and TO not in str(raised[0].details)
    assert alerts_evaluate() == []  # one alert per period


def test_failing_lookups_back_off_and_stop_after_the_limit(
    sandbox: SandboxServer, settings: Any
) -> None:
    settings.CAREFLOW_RECONCILE_MAX_FAILURES = 3
    integration = _integration(sandbox)
    sandbox.add_fault({"kind": "accept_then_drop", "count": 1})
    message = _message(integration)
    assert message_send(message_id=message.pk).status == Status.UNKNOWN
    settings.TWILIO_API_BASE_URL = "http://127.0.0.1:9"  # Twilio unreachable from now on

    waits = []
    for _ in range(2):
        _due_now(message)
        before = timezone.now()
        retried = message_send(message_id=message.pk)
        assert retried.status == Status.UNKNOWN
        assert retried.next_attempt_at is not None
        waits.append(retried.next_attempt_at - before)
    _due_now(message)
    given_up = message_send(message_id=message.pk)

    assert timedelta(seconds=14) < waits[0] < timedelta(seconds=16)
    assert timedelta(seconds=29) < waits[1] < timedelta(seconds=31)
    assert (given_up.status, given_up.lookup_failures) == (Status.UNKNOWN, 3)
    assert given_up.next_attempt_at is None
    assert "3 look-ups failed" in given_up.error_message
    assert given_up.error_code == "network"
    assert len(sandbox.messages()) == 1  # never resent


def test_a_new_ambiguous_attempt_starts_its_lookups_afresh(sandbox: SandboxServer) -> None:
    integration = _integration(sandbox)
    sandbox.add_fault({"kind": "drop", "count": 1})
    message = _message(integration)
    OutboundMessage.objects.filter(pk=message.pk).update(lookup_failures=5)
    assert message_send(message_id=message.pk).lookup_failures == 0


# --- item 2: a Messaging Service's sender, when no callback says it ----------------------


def test_polling_records_the_sender_a_messaging_service_chose(
    sandbox: SandboxServer, settings: Any
) -> None:
    """Every status callback lost: the look-up of a message still "sent" records the number
    the service chose, and careflow's segment count stands (Twilio answered "0")."""
    service = "MG" + "8" * 32
    integration = sandbox_account(
        sandbox, IntegrationFactory(messaging_service_sid=service, senders=["+15551230002"])
    )
    sandbox.status_callbacks = False
    patient = PatientFactory(organization=integration.organization, phone=TO)
    ConsentFactory(patient=patient)
    message = message_prepare(
        organization=integration.organization,
        integration=integration,
        idempotency_key="service",
        to=TO,
        messaging_service_sid=service,
        body="ł" * 71,  # UCS-2, two segments
        purpose="transactional",
        patient=patient,
    )
    sent = message_send(message_id=message.pk)
    assert (sent.status, sent.provider_status, sent.segments, sent.from_number) == (
        Status.SENT,
        "accepted",
        2,
        "",
    )
    wait_for(lambda: sandbox.messages()[0]["status"] == "delivered", what="Twilio to deliver")
    settings.CAREFLOW_STATUS_RECONCILE_AFTER_SECONDS = 0

    assert sent_messages_reconcile() == 1

    settled = OutboundMessage.objects.get(pk=message.pk)
    assert (settled.status, settled.from_number, settled.segments) == (
        Status.DELIVERED,
        "+15551230002",
        2,
    )


# --- item 7: the attempt is found wherever it is in the list ------------------------------


def test_reconciliation_reads_later_pages_to_find_the_attempt(sandbox: SandboxServer) -> None:
    """The look-up of an attempt Twilio's answer never reached us for lists the recipient's
    messages newest first, 50 a page, following next_page_uri: 210 texts sent to the same
    number since must not hide it (it would be sent twice)."""
    integration = _integration(sandbox)
    sandbox.add_fault({"kind": "accept_then_drop", "count": 1})
    message = _message(integration)
    assert message_send(message_id=message.pk).status == Status.UNKNOWN
    ours = sandbox.messages()[0]["sid"]
    client = _client(integration)
    for number in range(210):
        client.messages.create(to=TO, from_=FROM, body=f"another text {number}")
    wait_for(lambda: all(m["date_sent"] for m in sandbox.messages()), what="every message sent")
    _due_now(message)

    reconciled = message_send(message_id=message.pk)

    assert reconciled.provider_sid == ours
    assert reconciled.status in (Status.SENT, Status.DELIVERED)
    assert sandbox.stats()["accepted"] == 211  # ours once, found on the fifth page


def test_reconciliation_stops_paging_at_messages_sent_before_the_attempt(
    sandbox: SandboxServer,
) -> None:
    """Newest first: once a page reaches a message sent before the attempt (less the clock
    margin), no later one can be it; the look-up stops there instead of reading every page."""
    integration = _integration(sandbox)
    client = _client(integration)
    for number in range(120):
        client.messages.create(to=TO, from_=FROM, body=f"an older text {number}")
    wait_for(lambda: all(m["date_sent"] for m in sandbox.messages()), what="all sent")
    sandbox.add_fault({"kind": "drop", "count": 1})  # the attempt never reached Twilio
    message = _message(integration)
    assert message_send(message_id=message.pk).status == Status.UNKNOWN
    # The attempt began an hour after those texts were sent.
    OutboundMessage.objects.filter(pk=message.pk).update(
        sending_started_at=timezone.now() + timedelta(hours=1), next_attempt_at=timezone.now()
    )
    pages: list[str] = []
    http_client = client.http_client
    original = http_client.request

    def spy(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        pages.append(url)
        return original(method, url, *args, **kwargs)

    http_client.request = spy  # type: ignore[method-assign]
    try:
        still = message_send(message_id=message.pk)
    finally:
        http_client.request = original  # type: ignore[method-assign]

    assert still.status == Status.UNKNOWN  # not found, within the grace period: asked later
    assert len(pages) == 1  # the first page already reached older messages


# --- item 1: 21609 explained, and the deploy check ----------------------------------------


def test_21609_and_the_magic_numbers_codes_are_explained() -> None:
    assert "CAREFLOW_PUBLIC_URL" in error_explanation("21609")
    for code in ("21212", "21408", "21611", "21612"):
        assert error_explanation(code), code


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:8000", "is not an https URL"),
        ("http://careflow.example.com", "is not an https URL"),
        ("https://127.0.0.1:8000", "loopback, private or link-local address"),
        ("https://10.0.0.8", "loopback, private or link-local address"),
        ("https://172.16.4.2", "loopback, private or link-local address"),
        ("https://192.168.1.20", "loopback, private or link-local address"),
        ("https://169.254.10.1", "loopback, private or link-local address"),
        ("https://[::1]", "loopback, private or link-local address"),
        ("https://[fe80::1]", "loopback, private or link-local address"),
        ("https://localhost", "names a host only this machine or network knows"),
        ("https://careflow.local", "names a host only this machine or network knows"),
        ("https://careflow", "names a host only this machine or network knows"),
        ("https://", "has no host"),
        ("https://careflow.example.com:99999", "is not a valid URL"),
    ],
)
def test_deploy_check_refuses_a_callback_url_twilio_cannot_reach(
    settings: Any, url: str, problem: str
) -> None:
    settings.TWILIO_API_BASE_URL = "https://api.twilio.com"
    settings.CAREFLOW_PUBLIC_URL = url

    errors = [e for e in run_checks(include_deployment_checks=True) if e.id == "careflow.E005"]

    assert len(errors) == 1
    assert problem in errors[0].msg
    assert "21609" in errors[0].msg
    assert "CAREFLOW_PUBLIC_URL" in (errors[0].hint or "")
    assert public_url_problem(url)


@pytest.mark.parametrize(
    ("api", "url"),
    [
        ("https://api.twilio.com", "https://careflow.example.com"),
        ("https://api.dublin.ie1.twilio.com", "https://careflow.example.com/"),
        # A sandbox, not Twilio: `make run` and the tests call back on this machine.
        ("http://127.0.0.1:8099", "http://127.0.0.1:8000"),
    ],
)
def test_deploy_check_passes_a_public_https_url_or_a_sandbox(
    settings: Any, api: str, url: str
) -> None:
    settings.TWILIO_API_BASE_URL = api
    settings.CAREFLOW_PUBLIC_URL = url

    errors = run_checks(include_deployment_checks=True)

    assert [e for e in errors if e.id == "careflow.E005"] == []


def test_the_deploy_check_runs_only_with_deploy(settings: Any) -> None:
    settings.TWILIO_API_BASE_URL = "https://api.twilio.com"
    settings.CAREFLOW_PUBLIC_URL = "http://127.0.0.1:8000"

    assert [e for e in run_checks() if e.id == "careflow.E005"] == []
