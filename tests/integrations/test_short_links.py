"""Short links: the links in a text are replaced at the claim by random codes on the clinic's
link domain, recorded in the claimed body (a retry sends the same), measured as sent; the
patient's data is nowhere in them; email is left alone."""

import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from integrations.models import MessagingPolicy, OutboundMessage, ShortLink
from integrations.policy import messaging_policy_forget
from integrations.sending import message_prepare_and_deliver, message_send
from integrations.short_links import (
    CODE_LENGTH,
    LinkSettings,
    links_in,
    links_preview,
    short_links_fields,
)
from integrations.sms import segment_info
from integrations.twilio.previews import sms_preview
from integrations.twilio.sandbox import SandboxServer
from patients.models import Patient
from tests.conftest import at_once, sandbox_account
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

Status = OutboundMessage.Status
LONG = "https://sunrise.example/patients/appointments/confirm?appointment=8812&ref=sms-reminder"
SHORT = re.compile(rf"https://go\.sunrise\.example/l/([A-Za-z0-9]{{{CODE_LENGTH}}})")


def _policy(organization: Any, **fields: Any) -> None:
    values = {
        "short_links_enabled": True,
        "short_link_domain": "https://go.sunrise.example",
        **fields,
    }
    MessagingPolicy.objects.update_or_create(organization=organization, defaults=values)
    messaging_policy_forget()


@pytest.fixture
def send(sandbox: SandboxServer) -> Any:
    integration = sandbox_account(sandbox, IntegrationFactory())

    def send(patient: Patient, key: str, body: str = f"Confirm here: {LONG} Thanks!") -> Any:
        return message_prepare_and_deliver(
            organization=integration.organization,
            integration=integration,
            idempotency_key=key,
            first_attempt=True,
            to=patient.phone,
            from_number="+15005550006",
            body=body,
            purpose="transactional",
            patient=patient,
        )

    send.organization = integration.organization  # type: ignore[attr-defined]
    return send


def _patient(send: Any, phone: str = "+14155550123") -> Patient:
    patient: Patient = PatientFactory(
        organization=send.organization, phone=phone, first_name="Rosalind", last_name="Okafor"
    )
    ConsentFactory(patient=patient)
    return patient


def test_links_are_found_without_the_punctuation_after_them() -> None:
    body = "See https://a.example/x. Or (http://b.example/y?z=1), then https://a.example/x!"
    assert [url for _, _, url in links_in(body)] == [
        "https://a.example/x",
        "http://b.example/y?z=1",
        "https://a.example/x",
    ]
    assert links_in("no link here, nor ftp://x.example nor https:// alone") == []


def test_preview_counts_the_short_length() -> None:
    link = LinkSettings("https://go.sunrise.example", 30)
    body = f"Confirm here: {LONG} Thanks!"
    shown, count = links_preview(body, link)
    assert count == 1
    assert shown == f"Confirm here: https://go.sunrise.example/l/{'x' * CODE_LENGTH} Thanks!"
    assert link.length == len("https://go.sunrise.example/l/") + CODE_LENGTH


@pytest.mark.django_db
def test_a_sent_text_carries_a_short_link_to_the_original(
    send: Any, sandbox: SandboxServer
) -> None:
    _policy(send.organization)
    patient = _patient(send)
    message = send(patient, "k1")
    assert message.status == Status.SENT
    sent = sandbox.messages()[0]["body"]
    match = SHORT.search(sent)
    assert match and LONG not in sent
    assert sent == f"Confirm here: {match.group(0)} Thanks!"
    link = ShortLink.objects.get()
    assert (link.code, link.url, link.message_id) == (match.group(1), LONG, message.pk)
    assert link.organization_id == send.organization.pk
    assert timedelta(days=29, hours=23) < link.expires_at - timezone.now() <= timedelta(days=30)
    # The message log shows and measures the body as sent.
    stored = OutboundMessage.objects.get(pk=message.pk)
    assert stored.body == sent
    assert stored.characters == len(sent)
    assert stored.segments == segment_info(sent).segments == 1
    # Nothing of the patient (name, phone, ids) is in the link.
    for secret in (patient.first_name, patient.last_name, patient.phone[2:], str(patient.pk)):
        assert secret.lower() not in match.group(0).lower()
    assert str(message.uuid) not in match.group(0)


@pytest.mark.django_db
def test_codes_are_random_and_one_per_message_and_url(send: Any, sandbox: SandboxServer) -> None:
    """The same URL twice in a text is one link; another text gets its own."""
    _policy(send.organization)
    patient = _patient(send)
    send(patient, "k1", body=f"{LONG} or {LONG} or https://b.example/x")
    send(patient, "k2")
    codes = [link.code for link in ShortLink.objects.all()]
    assert len(codes) == len(set(codes)) == 3
    first = sandbox.messages()[0]["body"]
    assert len(set(SHORT.findall(first))) == 2 and len(SHORT.findall(first)) == 3


@pytest.mark.django_db
def test_off_by_default_and_the_default_domain_is_careflows(
    send: Any, sandbox: SandboxServer, settings: Any
) -> None:
    patient = _patient(send)
    send(patient, "k1")
    assert LONG in sandbox.messages()[0]["body"]
    assert not ShortLink.objects.exists()
    settings.CAREFLOW_PUBLIC_URL = "https://careflow.example/"
    _policy(send.organization, short_link_domain="")
    send(patient, "k2")
    assert re.search(
        rf"https://careflow\.example/l/[A-Za-z0-9]{{{CODE_LENGTH}}} Thanks!$",
        sandbox.messages()[1]["body"],
    )


@pytest.mark.django_db
def test_a_retried_send_keeps_its_links(send: Any, sandbox: SandboxServer) -> None:
    """Refused with a retryable error after the claim: the retry sends the recorded body, and
    a claim run again makes no second link."""
    _policy(send.organization)
    patient = _patient(send)
    sandbox.add_fault({"kind": "error", "status": 429, "code": 20429, "count": 1})
    message = send(patient, "k1")
    assert message.status == Status.PENDING
    claimed = OutboundMessage.objects.get(pk=message.pk).body
    assert SHORT.search(claimed)
    _policy(send.organization, short_link_domain="https://other.example")
    OutboundMessage.objects.filter(pk=message.pk).update(next_attempt_at=None)
    assert message_send(message_id=message.pk).status == Status.SENT
    assert [m["body"] for m in sandbox.messages()] == [claimed]
    assert ShortLink.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("fault", ["accept_then_drop", "drop"])
def test_a_lost_answer_is_reconciled_by_the_body_with_its_links(
    send: Any, sandbox: SandboxServer, fault: str
) -> None:
    """Twilio's answer is lost after it accepted the text (or the connection dropped before):
    the message is looked up by the recorded body, with its short links, and found (or found
    missing and sent again with the same links), so it reaches Twilio once, as claimed."""
    _policy(send.organization)
    patient = _patient(send)
    sandbox.add_fault({"kind": fault, "count": 1})
    message = send(patient, "k1")
    claimed = OutboundMessage.objects.get(pk=message.pk).body
    assert SHORT.search(claimed)
    for _ in range(3):
        OutboundMessage.objects.filter(pk=message.pk).update(
            next_attempt_at=None,
            sending_started_at=timezone.now() - timedelta(minutes=10),
            updated_at=timezone.now() - timedelta(minutes=10),
        )
        if message_send(message_id=message.pk).status == Status.SENT:
            break
    assert OutboundMessage.objects.get(pk=message.pk).status == Status.SENT
    assert [m["body"] for m in sandbox.messages()] == [claimed]
    assert ShortLink.objects.count() == 1


@pytest.mark.django_db
def test_a_claim_repeated_finds_the_same_links(send: Any) -> None:
    """A claim that made its links and then lost the race (or crashed before recording the
    body) is repeated: the same code for the same message and URL."""
    _policy(send.organization)
    patient = PatientFactory(organization=send.organization, phone="+14155550123")
    message = send(patient, "k1")  # no consent: skipped, never claimed
    message = OutboundMessage.objects.select_related("integration").get(pk=message.pk)
    now = timezone.now()
    first = short_links_fields(message, now=now)
    again = short_links_fields(message, now=now + timedelta(seconds=5))
    assert first["body"] == again["body"]
    assert ShortLink.objects.count() == 1
    # Once recorded, the short link is not shortened again.
    message.body = first["body"]
    assert short_links_fields(message, now=now) == {}


@pytest.mark.django_db(transaction=True)
def test_claims_racing_make_one_link(sandbox: SandboxServer) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    _policy(integration.organization)
    patient = PatientFactory(organization=integration.organization, phone="+14155550123")
    message = message_prepare_and_deliver(
        organization=integration.organization,
        integration=integration,
        idempotency_key="k1",
        first_attempt=True,
        to=patient.phone,
        from_number="+15005550006",
        body=f"Go {LONG}",
        purpose="transactional",
        patient=patient,
    )  # skipped (no consent): its links are made by the racing claims below
    fresh = OutboundMessage.objects.select_related("integration")
    bodies = at_once(
        4, lambda n: short_links_fields(fresh.get(pk=message.pk), now=timezone.now())["body"]
    )
    assert len(set(bodies)) == 1
    assert ShortLink.objects.count() == 1


@pytest.mark.django_db
def test_links_with_first_contact_wording_are_counted_together(
    send: Any, sandbox: SandboxServer
) -> None:
    _policy(
        send.organization,
        first_contact_enabled=True,
        brand_name="Sunrise Telehealth",
    )
    message = send(_patient(send), "k1")
    sent = sandbox.messages()[0]["body"]
    assert sent.startswith("Sunrise Telehealth: Confirm here: https://go.sunrise.example/l/")
    assert sent.endswith("Thanks! Reply STOP to opt out.")
    assert OutboundMessage.objects.get(pk=message.pk).characters == len(sent)


@pytest.mark.django_db
def test_email_links_are_left_alone(send: Any) -> None:
    _policy(send.organization)
    email = IntegrationFactory(organization=send.organization, adapter="email", senders=[])
    patient = _patient(send)
    message = OutboundMessage(
        organization=send.organization,
        integration=email,
        patient=patient,
        to="r@example.com",
        body=f"Hi {LONG}",
        purpose="transactional",
        channel="email",
    )
    message.save()
    assert short_links_fields(message, now=timezone.now()) == {}


@pytest.mark.django_db
def test_builder_preview_says_links_are_shortened() -> None:
    link = LinkSettings("https://go.sunrise.example", 30)
    preview = sms_preview(f"Confirm here: {LONG} Thanks!", links=link)
    assert preview["segments"] == 1
    assert preview["characters"] == len("Confirm here: https://go.sunrise.example/l/ Thanks!") + 10
    assert "Links are shortened when sent" in preview["shortLinks"]
    assert f"~{link.length} characters" in preview["shortLinks"]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("http://go.sunrise.example", "https://"),
        ("https://go.sunrise.example/path", "no path"),
        ("https://go.sunrise.example?x=1", "no path"),
        ("https://user@go.sunrise.example", "no path"),
    ],
)
def test_a_bad_link_domain_is_refused_with_a_clear_error(value: str, error: str) -> None:
    policy = MessagingPolicy(short_links_enabled=True, short_link_domain=value)
    with pytest.raises(ValidationError) as raised:
        policy.full_clean(
            exclude=["organization"], validate_unique=False, validate_constraints=False
        )
    assert error in str(raised.value.message_dict["short_link_domain"])


def test_link_lifetime_is_bounded() -> None:
    for days in (0, 366):
        policy = MessagingPolicy(short_link_days=days)
        with pytest.raises(ValidationError) as raised:
            policy.full_clean(
                exclude=["organization"], validate_unique=False, validate_constraints=False
            )
        assert "short_link_days" in raised.value.message_dict
