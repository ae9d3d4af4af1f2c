"""Broadcasts (integrations.broadcasts): the state machine, production in batches, the send-time
checks every member's message goes through, cancelling, and re-running after a crash. The
providers are the loopback sandboxes (Twilio, Postmark) over HTTP."""

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from integrations.broadcasts import (
    CANCELLED_REASON,
    BroadcastError,
    broadcast_advance,
    broadcast_cancel,
    broadcast_messages_due,
    broadcast_messages_send,
    broadcast_problems,
    broadcast_progress,
    broadcast_recipients,
    broadcast_start,
    broadcasts_due,
)
from integrations.email.sandbox import SandboxServer as EmailSandbox
from integrations.models import (
    Broadcast,
    Integration,
    MessagingPolicy,
    OutboundMessage,
    ShortLink,
)
from integrations.policy import messaging_policy_forget
from integrations.short_links import CODE_LENGTH
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord, Organization, Patient
from tests.conftest import sandbox_account
from tests.factories import (
    SANDBOX_FROM,
    ConsentFactory,
    IntegrationFactory,
    OrganizationFactory,
    PatientFactory,
    UserFactory,
)
from workflows.models import Segment

pytestmark = pytest.mark.django_db
Status = OutboundMessage.Status
State = Broadcast.Status
MARKETING = ConsentRecord.Purpose.MARKETING


@pytest.fixture
def integration(sandbox: SandboxServer) -> Integration:
    return sandbox_account(sandbox, IntegrationFactory())


@pytest.fixture
def clinic(integration: Integration) -> Organization:
    return integration.organization


def make_broadcast(
    clinic: Organization,
    *,
    message: str = "Hi {{customer.firstName}}, flu shots are in!",
    **extra: Any,
) -> Broadcast:
    segment = Segment.objects.get_or_create(organization=clinic, name="Everyone")[0]
    fields: dict[str, Any] = {
        "organization": clinic,
        "name": f"Flu {Broadcast.objects.count()}",
        "segment": segment,
        "function": "twilio.sendSMS",
        "integration": clinic.integrations.get(),
        "purpose": MARKETING,
        "parameters": {"message": message, "from": SANDBOX_FROM},
        **extra,
    }
    return Broadcast.objects.create(**fields)


def member(clinic: Organization, *, consent: bool = True, **fields: Any) -> Patient:
    patient = PatientFactory(organization=clinic, **fields)
    if consent:
        ConsentFactory(patient=patient, purpose=MARKETING)
    return patient


def run_to_end(broadcast: Broadcast) -> None:
    """Production and sending as the tasks do them, in this process, until all is made."""
    for _ in range(100):
        advance = broadcast_advance(broadcast_id=broadcast.pk)
        broadcast_messages_send(message_ids=advance.message_ids)
        if advance.again_in is None:
            break
    broadcasts_due()
    broadcast.refresh_from_db()


def start(broadcast: Broadcast, at: datetime | None = None) -> Broadcast:
    return broadcast_start(broadcast=broadcast, at=at, user=UserFactory())


def test_a_broadcast_sends_to_every_member_once_and_completes(
    clinic: Organization, sandbox: SandboxServer, settings: Any
) -> None:
    settings.CAREFLOW_BROADCAST_BATCH = 3
    patients = [member(clinic) for _ in range(7)]
    broadcast = start(make_broadcast(clinic))
    assert (broadcast.status, broadcast.recipients) == (State.SENDING, 7)

    run_to_end(broadcast)

    assert broadcast.status == State.COMPLETED and broadcast.finished_at is not None
    assert broadcast.cursor == patients[-1].pk
    sent = sorted(m["to"] for m in sandbox.messages())
    assert sent == sorted(p.phone for p in patients)
    bodies = {m["body"] for m in sandbox.messages()}
    assert bodies == {f"Hi {p.first_name}, flu shots are in!" for p in patients}
    progress = broadcast_progress(broadcast=broadcast)
    assert (progress["sent"], progress["queued"], progress["skipped"]) == (7, 0, 0)
    assert progress["done"] is True


def test_a_second_clinics_patients_are_never_included(
    clinic: Organization, sandbox: SandboxServer
) -> None:
    mine = member(clinic)
    other_integration = sandbox_account(sandbox, IntegrationFactory())
    member(other_integration.organization)
    broadcast = start(make_broadcast(clinic))
    run_to_end(broadcast)
    assert [m["to"] for m in sandbox.messages()] == [mine.phone]
    assert set(broadcast.messages.values_list("patient__organization", flat=True)) == {clinic.pk}


def test_a_batch_made_again_after_a_crash_writes_and_sends_nothing_twice(
    clinic: Organization, sandbox: SandboxServer, settings: Any
) -> None:
    settings.CAREFLOW_BROADCAST_BATCH = 4
    for _ in range(6):
        member(clinic)
    broadcast = start(make_broadcast(clinic))
    first = broadcast_advance(broadcast_id=broadcast.pk)
    broadcast_messages_send(message_ids=first.message_ids)
    # A worker died after inserting a batch but before its cursor was committed: the batch
    # is made again from the old cursor.
    Broadcast.objects.filter(pk=broadcast.pk).update(cursor=0)
    again = broadcast_advance(broadcast_id=broadcast.pk)
    assert again.message_ids == []  # the four exist and are sent: nothing new to hand on
    broadcast_messages_send(message_ids=first.message_ids)  # a redelivered sending task
    run_to_end(broadcast)
    assert broadcast.messages.count() == 6
    assert len(sandbox.messages()) == 6
    assert len({m["to"] for m in sandbox.messages()}) == 6


def test_production_is_locked_so_two_runners_never_make_the_same_batch(
    clinic: Organization,
) -> None:
    member(clinic)
    broadcast = start(make_broadcast(clinic))
    with transaction.atomic():
        Broadcast.objects.select_for_update().get(pk=broadcast.pk)

        # Another worker holds the broadcast: this one skips it instead of waiting.
        def other() -> Any:
            try:
                return broadcast_advance(broadcast_id=broadcast.pk)
            finally:
                connection.close()

        with ThreadPoolExecutor(1) as pool:
            skipped = pool.submit(other).result(timeout=10)
    assert skipped.message_ids == [] and skipped.again_in is None
    assert OutboundMessage.objects.count() == 0


def test_send_time_checks_skip_and_defer_with_their_reasons(
    clinic: Organization, sandbox: SandboxServer
) -> None:
    consented = member(clinic)
    no_consent = member(clinic, consent=False)
    opted_out = member(clinic)
    ConsentFactory(patient=opted_out, purpose=MARKETING, action=ConsentRecord.Action.OPT_OUT)
    no_phone = member(clinic, phone="")
    broadcast = start(make_broadcast(clinic))
    run_to_end(broadcast)

    by_patient = {m.patient_id: m for m in broadcast.messages.all()}
    assert by_patient[consented.pk].status == Status.SENT
    assert by_patient[no_consent.pk].status == Status.SKIPPED
    assert "consent" in by_patient[no_consent.pk].skip_reason
    assert by_patient[opted_out.pk].status == Status.SKIPPED
    assert "opted out" in by_patient[opted_out.pk].skip_reason
    assert by_patient[no_phone.pk].status == Status.SKIPPED, by_patient[no_phone.pk].error_message
    assert by_patient[no_phone.pk].skip_reason == "the patient has no phone number"
    assert [m["to"] for m in sandbox.messages()] == [consented.phone]
    progress = broadcast_progress(broadcast=broadcast)
    assert progress["sent"] == 1 and progress["skipped"] == 3
    assert sum(progress["skippedByReason"].values()) == 3
    assert broadcast.status == State.COMPLETED


def _quiet_now(clinic: Organization) -> None:
    """Quiet hours now in the patients' zone (New York): the window opens in two hours."""
    local = timezone.now().astimezone(ZoneInfo("America/New_York"))
    opens = (local + timedelta(hours=2)).time().replace(second=0, microsecond=0)
    closes = (local + timedelta(hours=3)).time().replace(second=0, microsecond=0)
    MessagingPolicy.objects.filter(organization=clinic).update(
        quiet_hours_start=opens, quiet_hours_end=closes
    )


def test_quiet_hours_defer_then_the_sweep_sends_when_they_end(
    clinic: Organization, sandbox: SandboxServer
) -> None:
    patient = member(clinic)
    _quiet_now(clinic)
    broadcast = start(make_broadcast(clinic))
    run_to_end(broadcast)
    message = broadcast.messages.get()
    assert message.status == Status.PENDING and message.next_attempt_at is not None
    assert message.next_attempt_at > timezone.now() + timedelta(minutes=90)
    assert broadcast.status == State.SENDING  # not complete while a message is deferred
    assert broadcast_messages_due() == []  # not due yet
    assert sandbox.messages() == []

    # The window opens: the message's time comes, and the sweep hands it on.
    MessagingPolicy.objects.filter(organization=clinic).update(
        quiet_hours_start=time(0, 0), quiet_hours_end=time.max
    )
    messaging_policy_forget()
    OutboundMessage.objects.filter(pk=message.pk).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    due = broadcast_messages_due()
    assert due == [message.pk]
    assert broadcast_messages_due() == []  # claimed: a second sweep does not hand it on
    broadcast_messages_send(message_ids=due)
    assert [m["to"] for m in sandbox.messages()] == [patient.phone]
    broadcasts_due()
    broadcast.refresh_from_db()
    assert broadcast.status == State.COMPLETED


def test_cancel_mid_way_stops_production_and_skips_what_is_not_sent(
    clinic: Organization, sandbox: SandboxServer, settings: Any
) -> None:
    settings.CAREFLOW_BROADCAST_BATCH = 3
    for _ in range(8):
        member(clinic)
    broadcast = start(make_broadcast(clinic))
    first = broadcast_advance(broadcast_id=broadcast.pk)
    broadcast_messages_send(message_ids=first.message_ids[:1])  # one went out

    assert broadcast_cancel(broadcast_id=broadcast.pk) is True
    assert broadcast_cancel(broadcast_id=broadcast.pk) is False  # once

    broadcast_messages_send(message_ids=first.message_ids)  # a sending task already queued
    assert broadcast_advance(broadcast_id=broadcast.pk).message_ids == []
    broadcast.refresh_from_db()
    assert broadcast.status == State.CANCELLED and broadcast.cancelled_at is not None
    assert len(sandbox.messages()) == 1
    statuses = sorted(broadcast.messages.values_list("status", "skip_reason"))
    assert statuses == [
        (Status.SENT, ""),
        (Status.SKIPPED, CANCELLED_REASON),
        (Status.SKIPPED, CANCELLED_REASON),
    ]
    assert broadcast.messages.count() == 3  # the other five were never made
    broadcasts_due()
    broadcast.refresh_from_db()
    assert broadcast.status == State.CANCELLED


def test_scheduled_broadcast_starts_when_due(clinic: Organization) -> None:
    member(clinic)
    later = timezone.now() + timedelta(hours=1)
    broadcast = start(make_broadcast(clinic), at=later)
    assert (broadcast.status, broadcast.scheduled_at) == (State.SCHEDULED, later)
    assert broadcasts_due() == []
    assert broadcasts_due(now=later + timedelta(seconds=1)) == [broadcast.pk]
    broadcast.refresh_from_db()
    assert broadcast.status == State.SENDING and broadcast.started_at is not None


def test_only_a_draft_starts_and_only_once(clinic: Organization) -> None:
    broadcast = start(make_broadcast(clinic))
    with pytest.raises(BroadcastError, match="sending"):
        start(broadcast)
    assert broadcast_cancel(broadcast_id=broadcast.pk)
    with pytest.raises(BroadcastError, match="cancelled"):
        start(broadcast)


def test_an_unapproved_sender_is_refused_before_anything_is_sent(clinic: Organization) -> None:
    broadcast = make_broadcast(clinic)
    broadcast.parameters = {"message": "Hi", "from": "+15550001111"}
    broadcast.save()
    problems = broadcast_problems(broadcast=broadcast)
    assert "not an approved sending number" in " ".join(problems["from"])
    with pytest.raises(BroadcastError, match="approved"):
        start(broadcast)
    broadcast.refresh_from_db()
    assert broadcast.status == State.DRAFT


def test_a_segment_whose_filter_cannot_be_used_stops_the_start_and_counts_no_one(
    clinic: Organization,
) -> None:
    broadcast = make_broadcast(clinic)
    member(clinic)
    # Written around the admin's checks (the admin refuses such a filter on save).
    Segment.objects.filter(pk=broadcast.segment_id).update(filter={"customer.provinceCod": "FL"})
    broadcast.refresh_from_db()
    problems = broadcast_problems(broadcast=broadcast)
    assert 'unknown segment field "customer.provinceCod"' in " ".join(problems["segment"])
    assert broadcast_recipients(broadcast=broadcast) == 0
    with pytest.raises(BroadcastError, match="segment's filter"):
        start(broadcast)
    broadcast.refresh_from_db()
    assert broadcast.status == State.DRAFT
    assert not OutboundMessage.objects.filter(broadcast=broadcast).exists()


def test_only_the_members_the_segments_filter_chooses_are_sent_to(
    clinic: Organization, sandbox: SandboxServer
) -> None:
    florida = [member(clinic, province_code="FL") for _ in range(3)]
    member(clinic, province_code="TX")
    member(clinic, province_code="")
    broadcast = make_broadcast(clinic)
    Segment.objects.filter(pk=broadcast.segment_id).update(filter={"customer.provinceCode": "FL"})
    broadcast.refresh_from_db()
    assert broadcast_recipients(broadcast=broadcast) == 3
    run_to_end(start(broadcast))
    sent_to = set(
        OutboundMessage.objects.filter(broadcast=broadcast, status=Status.SENT).values_list(
            "patient_id", flat=True
        )
    )
    assert sent_to == {patient.pk for patient in florida}
    assert OutboundMessage.objects.filter(broadcast=broadcast).count() == 3
    assert broadcast.status == State.COMPLETED


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Hi {{customer.frstName}}", "did you mean"),
        ("Hi {{customer.firstName", "{{"),
        ("", "required"),
    ],
)
def test_message_templates_are_checked_as_a_workflow_step_is(
    clinic: Organization, message: str, expected: str
) -> None:
    broadcast = make_broadcast(clinic, message=message)
    assert expected in " ".join(broadcast_problems(broadcast=broadcast)["message"])


def test_each_member_gets_the_variant_in_their_language(
    clinic: Organization, sandbox: SandboxServer
) -> None:
    Organization.objects.filter(pk=clinic.pk).update(languages=["es"])
    clinic.refresh_from_db()
    english = member(clinic)
    spanish = member(clinic, language="es")
    broadcast = make_broadcast(clinic)
    broadcast.parameters["variants"] = {"es": {"message": "Hola {{customer.firstName}}"}}
    broadcast.save()
    run_to_end(start(broadcast))
    bodies = {m["to"]: m["body"] for m in sandbox.messages()}
    assert bodies[spanish.phone] == f"Hola {spanish.first_name}"
    assert bodies[english.phone] == f"Hi {english.first_name}, flu shots are in!"
    languages = dict(broadcast.messages.values_list("patient_id", "language"))
    assert languages == {english.pk: "en", spanish.pk: "es"}


def test_production_waits_while_enough_is_queued_ahead(clinic: Organization, settings: Any) -> None:
    settings.CAREFLOW_BROADCAST_BATCH = 5
    settings.CAREFLOW_BROADCAST_AHEAD_SECONDS = 1.0
    Integration.objects.filter(pk=clinic.integrations.get().pk).update(
        settings={**clinic.integrations.get().settings, "segments_per_second": 2.0}
    )
    for _ in range(12):
        member(clinic)
    broadcast = start(make_broadcast(clinic))
    first = broadcast_advance(broadcast_id=broadcast.pk)
    assert len(first.message_ids) == 5
    # Five unsent messages at 2/s are 2.5 s of sending: more than the 1 s allowed ahead.
    held = broadcast_advance(broadcast_id=broadcast.pk)
    assert held.message_ids == [] and held.again_in is not None and held.again_in > 0
    assert broadcast.messages.count() == 5


def test_database_constraints_hold_the_states(clinic: Organization) -> None:
    broadcast = make_broadcast(clinic)
    for bad in (
        {"status": State.SCHEDULED, "scheduled_at": None},
        {"status": State.SENDING},
        {"status": State.CANCELLED},
        {"status": State.COMPLETED},
        {"status": "exploded"},
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            Broadcast.objects.filter(pk=broadcast.pk).update(**bad)


# First-contact wording, short links, caps: the send path's, on a broadcast's texts ---------


def _policy(clinic: Organization, **fields: Any) -> None:
    MessagingPolicy.objects.update_or_create(organization=clinic, defaults=fields)
    messaging_policy_forget()


def test_the_first_broadcast_text_to_a_number_carries_the_clinics_wording_the_next_does_not(
    clinic: Organization, sandbox: SandboxServer
) -> None:
    _policy(
        clinic,
        first_contact_enabled=True,
        brand_name="Sunrise Telehealth",
        marketing_per_day=None,
        marketing_per_week=None,
    )
    patient = member(clinic)
    first = start(make_broadcast(clinic))
    run_to_end(first)
    second = start(make_broadcast(clinic, message="Hi {{customer.firstName}}, last call!"))
    run_to_end(second)

    assert [m["body"] for m in sandbox.messages()] == [
        f"Sunrise Telehealth: Hi {patient.first_name}, flu shots are in! Reply STOP to opt out.",
        f"Hi {patient.first_name}, last call!",
    ]
    assert first.messages.get().first_contact is True
    assert second.messages.get().first_contact is False


LONG = "https://sunrise.example/flu/book?campaign=autumn-2026&location=main-street-clinic"


def test_a_long_link_in_a_broadcast_goes_out_as_the_clinics_short_link(
    clinic: Organization, sandbox: SandboxServer
) -> None:
    _policy(clinic, short_links_enabled=True, short_link_domain="https://go.sunrise.example")
    patients = [member(clinic) for _ in range(2)]
    broadcast = start(make_broadcast(clinic, message=f"Book your flu shot: {LONG}"))
    run_to_end(broadcast)

    short = re.compile(
        rf"Book your flu shot: (https://go\.sunrise\.example/l/([A-Za-z0-9]{{{CODE_LENGTH}}}))"
    )
    bodies = {m["to"]: m["body"] for m in sandbox.messages()}
    assert sorted(bodies) == sorted(p.phone for p in patients)
    codes = set()
    for patient in patients:
        found = short.fullmatch(bodies[patient.phone])
        assert found is not None, bodies[patient.phone]
        message = broadcast.messages.get(patient=patient)
        assert message.body == bodies[patient.phone]  # the log shows the body as sent
        link = ShortLink.objects.get(code=found[2])
        assert (link.message_id, link.url) == (message.pk, LONG)
        codes.add(found[2])
    assert len(codes) == 2  # one link per message: a click says whose it was


def test_a_member_at_their_frequency_cap_is_skipped_with_the_caps_reason(
    clinic: Organization, sandbox: SandboxServer
) -> None:
    _policy(clinic, marketing_per_day=1, marketing_per_week=None)
    earlier = member(clinic)
    run_to_end(start(make_broadcast(clinic)))
    newcomer = member(clinic)

    second = start(make_broadcast(clinic, message="Hi {{customer.firstName}}, last call!"))
    run_to_end(second)

    capped = second.messages.get(patient=earlier)
    assert capped.status == Status.SKIPPED
    assert capped.skip_reason.startswith("frequency cap: at most 1 marketing")
    assert second.messages.get(patient=newcomer).status == Status.SENT
    assert [m["to"] for m in sandbox.messages()] == [earlier.phone, newcomer.phone]
    progress = broadcast_progress(broadcast=second)
    assert progress["skippedByReason"] == {capped.skip_reason: 1}
    assert second.status == State.COMPLETED


# Email ----------------------------------------------------------------------------------

EMAIL_TOKEN = "broadcast-postmark-token"
EMAIL_SENDER = "care@clinic.example"


@pytest.fixture
def email_sandbox(settings: Any) -> Iterator[EmailSandbox]:
    """The Postmark sandbox over HTTP (no webhooks: the send is what is under test)."""
    with EmailSandbox(
        servers={EMAIL_TOKEN: {"senders": [EMAIL_SENDER]}}, webhook_delay=None
    ) as server:
        settings.CAREFLOW_EMAIL_DELIVERY = "esp"
        settings.CAREFLOW_POSTMARK_API_URL = server.url + "/"
        settings.CAREFLOW_EMAIL_HTTP_TIMEOUT = 2.0
        yield server


@pytest.fixture
def email_clinic(email_sandbox: EmailSandbox) -> Organization:
    """A clinic whose only integration is email, at the Postmark sandbox."""
    integration = IntegrationFactory(
        organization=OrganizationFactory(),
        adapter="email",
        name="Email",
        senders=[EMAIL_SENDER],
        settings={"esp": "postmark", "message_stream": "outbound"},
        secrets={"server_token": EMAIL_TOKEN, "webhook_secret": "unused"},
    )
    organization: Organization = integration.organization
    return organization


def email_member(clinic: Organization, *, consent: bool = True, **fields: Any) -> Patient:
    patient = PatientFactory(organization=clinic, **fields)
    if consent:
        ConsentFactory(patient=patient, purpose=MARKETING, channel="email")
    return patient


def test_an_email_broadcast_reaches_the_members_with_email_consent_only(
    email_clinic: Organization, email_sandbox: EmailSandbox
) -> None:
    consented = [email_member(email_clinic) for _ in range(2)]
    # Consent to marketing texts is not consent to marketing email.
    texts_only = email_member(email_clinic, consent=False)
    ConsentFactory(patient=texts_only, purpose=MARKETING, channel="sms")
    opted_out = email_member(email_clinic)
    ConsentFactory(
        patient=opted_out,
        purpose=MARKETING,
        channel="email",
        action=ConsentRecord.Action.OPT_OUT,
    )
    no_email = email_member(email_clinic, email="")
    broadcast = make_broadcast(
        email_clinic,
        function="email.sendEmail",
        parameters={
            "subject": "Flu shots are in, {{customer.firstName}}",
            "body": "Hi {{customer.firstName}},\n\nbook yours this week.",
            "from": EMAIL_SENDER,
        },
    )
    assert broadcast_problems(broadcast=broadcast) == {}
    run_to_end(start(broadcast))

    assert broadcast.status == State.COMPLETED
    sent = {m["to"][0]: m for m in email_sandbox.messages()}
    assert sorted(sent) == sorted(p.email for p in consented)
    for patient in consented:
        email = sent[patient.email]
        assert email["from"] == EMAIL_SENDER
        assert email["subject"] == f"Flu shots are in, {patient.first_name}"
        assert email["text_body"] == f"Hi {patient.first_name},\n\nbook yours this week."
    by_patient = {m.patient_id: m for m in broadcast.messages.all()}
    assert {by_patient[p.pk].channel for p in consented} == {"email"}
    assert {by_patient[p.pk].status for p in consented} == {Status.SENT}
    assert by_patient[texts_only.pk].status == Status.SKIPPED
    assert "consent" in by_patient[texts_only.pk].skip_reason
    assert by_patient[opted_out.pk].status == Status.SKIPPED
    assert "opted out" in by_patient[opted_out.pk].skip_reason
    assert by_patient[no_email.pk].status == Status.SKIPPED
    assert by_patient[no_email.pk].skip_reason == "the patient has no email"
    progress = broadcast_progress(broadcast=broadcast)
    assert (progress["sent"], progress["skipped"], progress["failed"]) == (2, 3, 0)
