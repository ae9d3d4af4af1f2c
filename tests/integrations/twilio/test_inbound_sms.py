"""Inbound SMS webhook: real signatures from twilio's RequestValidator; STOP/START/HELP;
free-text revocations flagged for review; the message.inbound event; replays."""

from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from twilio.request_validator import RequestValidator

from integrations.models import InboundMessage, Integration, MessagingPolicy
from integrations.policy import messaging_policy_forget, send_decide
from integrations.sending import message_prepare
from integrations.twilio.account import twilio_account
from integrations.twilio.keywords import inbound_sms_receive
from patients.models import ConsentRecord
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory
from workflows.models import Event

pytestmark = pytest.mark.django_db
PHONE = "+14155550123"


@pytest.fixture
def integration() -> Integration:
    return IntegrationFactory()


def _post(
    client: Client,
    integration: Integration,
    body: str,
    *,
    sid: str = "SM" + "a" * 32,
    token: str | None = None,
    signature: str | None = None,
    **extra: Any,
) -> Any:
    url = reverse("twilio-inbound-sms", kwargs={"integration_uuid": integration.uuid})
    params = {
        "MessageSid": sid,
        "AccountSid": twilio_account(integration).account_sid,
        "From": PHONE,
        "To": "+15005550006",
        "Body": body,
        "NumMedia": "0",
    }
    if signature is None:
        signature = RequestValidator(
            token or twilio_account(integration).auth_token
        ).compute_signature(f"http://testserver{url}", params)
    headers = {"HTTP_X_TWILIO_SIGNATURE": signature} if signature else {}
    return client.post(url, params, **headers, **extra)


def _state(patient: Any, purpose: str) -> str | None:
    latest = (
        ConsentRecord.objects.filter(patient=patient, purpose=purpose)
        .order_by("-occurred_at", "-id")
        .first()
    )
    return latest.action if latest else None


@pytest.mark.parametrize(
    "keyword", ["STOP", "stop", " Unsubscribe ", "CANCEL", "END", "QUIT", "STOPALL"]
)
def test_opt_out_keywords_opt_out_every_purpose_for_everyone_at_that_number(
    client: Client, integration: Integration, keyword: str
) -> None:
    parent = PatientFactory(organization=integration.organization, phone=PHONE)
    child = PatientFactory(organization=integration.organization, phone=PHONE)
    for patient in (parent, child):
        ConsentFactory(patient=patient, purpose="transactional")
        ConsentFactory(patient=patient, purpose="marketing")
    response = _post(client, integration, keyword)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/xml"
    for patient in (parent, child):
        assert _state(patient, "transactional") == _state(patient, "marketing") == "opt_out"
    record = ConsentRecord.objects.filter(action="opt_out").first()
    assert (
        record.source == "inbound_keyword" and record.evidence["keyword"] == keyword.strip().upper()
    )
    assert InboundMessage.objects.get().action == "opt_out"


def test_start_restores_what_was_given_before_and_nothing_more(
    client: Client, integration: Integration
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    given = ConsentFactory(patient=patient, purpose="transactional", consent_text="Care texts ok")
    _post(client, integration, "STOP", sid="SM" + "1" * 32)
    _post(client, integration, "start", sid="SM" + "2" * 32)
    assert _state(patient, "transactional") == "opt_in"
    restored = (
        ConsentRecord.objects.filter(patient=patient, action="opt_in").order_by("-id").first()
    )
    assert (
        restored.consent_text == "Care texts ok" and restored.evidence["restored_from"] == given.pk
    )
    assert _state(patient, "marketing") == "opt_out"  # never given in writing: not granted


def test_help_replies_with_the_clinics_text(client: Client, integration: Integration) -> None:
    response = _post(client, integration, "HELP")
    text = response.content.decode()
    assert "<Message>" in text and integration.organization.name in text
    assert InboundMessage.objects.get().action == "help"


def test_free_text_revocation_is_flagged_for_review(
    client: Client, integration: Integration
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient)
    _post(client, integration, "please stop texting me", sid="SM" + "3" * 32)
    _post(client, integration, "See you Tuesday!", sid="SM" + "4" * 32)
    flagged, plain = InboundMessage.objects.order_by("id")
    assert (flagged.needs_review, flagged.action) == (True, "none")
    assert plain.needs_review is False
    assert _state(patient, "transactional") == "opt_in"  # a person decides, not a regex


def test_every_inbound_records_message_inbound_with_the_customer(
    client: Client, integration: Integration
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE, first_name="Ida")
    _post(client, integration, "What time is my appointment?")
    event = Event.objects.get(type="message.inbound")
    assert event.payload["message"]["body"] == "What time is my appointment?"
    assert event.payload["customer"]["firstName"] == "Ida"
    assert event.payload["customer"]["id"] == str(patient.uuid)


def test_unknown_sender_is_recorded_without_a_customer(
    client: Client, integration: Integration
) -> None:
    assert _post(client, integration, "hello?").status_code == 200
    assert InboundMessage.objects.get().patient is None
    assert Event.objects.get(type="message.inbound").payload["customer"] is None


def test_a_replayed_webhook_changes_nothing_more(client: Client, integration: Integration) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient)
    for _ in range(3):
        assert _post(client, integration, "STOP").status_code == 200
    assert InboundMessage.objects.count() == 1
    assert ConsentRecord.objects.filter(action="opt_out").count() == 2  # one per purpose, once
    assert Event.objects.filter(type="message.inbound").count() == 1


@pytest.mark.parametrize("case", ["wrong_token", "missing", "tampered"])
def test_forged_inbound_gets_403_and_changes_nothing(
    client: Client, integration: Integration, case: str
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient)
    if case == "tampered":
        url = reverse("twilio-inbound-sms", kwargs={"integration_uuid": integration.uuid})
        params = {"MessageSid": "SM" + "5" * 32, "From": PHONE, "Body": "Hello"}
        signature = RequestValidator(twilio_account(integration).auth_token).compute_signature(
            f"http://testserver{url}", params
        )
        response = client.post(url, {**params, "Body": "STOP"}, HTTP_X_TWILIO_SIGNATURE=signature)
    else:
        response = _post(
            client,
            integration,
            "STOP",
            **({"token": "f" * 32} if case == "wrong_token" else {"signature": ""}),
        )
    assert response.status_code == 403
    assert not InboundMessage.objects.exists()
    assert _state(patient, "transactional") == "opt_in"
    assert not Event.objects.filter(type="message.inbound").exists()


def test_signature_made_for_another_integration_is_refused(client: Client) -> None:
    mine, theirs = IntegrationFactory(), IntegrationFactory()
    url = reverse("twilio-inbound-sms", kwargs={"integration_uuid": mine.uuid})
    params = {"MessageSid": "SM" + "6" * 32, "From": PHONE, "Body": "STOP"}
    signature = RequestValidator(twilio_account(theirs).auth_token).compute_signature(
        f"http://testserver{url}", params
    )
    assert client.post(url, params, HTTP_X_TWILIO_SIGNATURE=signature).status_code == 403


def test_missing_sender_is_a_clear_400(client: Client, integration: Integration) -> None:
    url = reverse("twilio-inbound-sms", kwargs={"integration_uuid": integration.uuid})
    params = {"MessageSid": "SM" + "7" * 32, "Body": "hi"}
    signature = RequestValidator(twilio_account(integration).auth_token).compute_signature(
        f"http://testserver{url}", params
    )
    response = client.post(url, params, HTTP_X_TWILIO_SIGNATURE=signature)
    assert response.status_code == 400
    assert b"From" in response.content


# --- keywords after normalisation, the FCC's words, careflow's own confirmation -----------


@pytest.mark.parametrize(
    ("body", "keyword"),
    [
        ("ＳＴＯＰ", "STOP"),
        ("STOP!", "STOP"),
        ("Stop.", "STOP"),
        ("STOP 🛑", "STOP"),
        ("S\u200bTOP", "STOP"),
        ("\u00a0stop\u00a0", "STOP"),
        ("“Unsubscribe”", "UNSUBSCRIBE"),
        ("REVOKE", "REVOKE"),
        ("Opt out", "OPT OUT"),
        ("opt-out", "OPT OUT"),
        ("OPTOUT", "OPT OUT"),
    ],
)
def test_decorated_and_fcc_opt_outs_opt_out_and_the_next_text_is_not_sent(
    client: Client, integration: Integration, body: str, keyword: str
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient, purpose="transactional")
    assert _post(client, integration, body).status_code == 200
    assert InboundMessage.objects.get().action == "opt_out"
    assert _state(patient, "transactional") == "opt_out"
    record = ConsentRecord.objects.filter(action="opt_out").first()
    assert record.evidence["keyword"] == keyword
    next_text = message_prepare(
        idempotency_key="after-stop",
        organization=integration.organization,
        integration=integration,
        to=PHONE,
        body="Your appointment is tomorrow",
        purpose="transactional",
        patient=patient,
    )
    decision = send_decide(message=next_text)
    assert not decision.allowed and "opt" in decision.reason.lower()


def _reply(response: Any) -> str:
    return response.content.decode()


@pytest.mark.parametrize("body", ["STOP", " stop ", "Revoke", "OPTOUT", "unsubscribe"])
def test_an_opt_out_twilio_confirms_itself_gets_no_second_confirmation(
    client: Client, integration: Integration, body: str
) -> None:
    assert "<Message>" not in _reply(_post(client, integration, body))


@pytest.mark.parametrize("body", ["STOP!", "ＳＴＯＰ", "Opt out", "S\u200bTOP", "Stop 🛑"])
def test_an_opt_out_only_careflow_recognises_is_confirmed_once(
    client: Client, integration: Integration, body: str
) -> None:
    PatientFactory(organization=integration.organization, phone=PHONE)
    first = _reply(_post(client, integration, body, sid="SM" + "a" * 32))
    assert "<Message>" in first and "unsubscribed" in first
    assert integration.organization.name in first and "START" in first
    # The same webhook again, and the same request again while opted out: no more texts.
    assert "<Message>" not in _reply(_post(client, integration, body, sid="SM" + "a" * 32))
    assert "<Message>" not in _reply(_post(client, integration, body, sid="SM" + "b" * 32))
    # Opted back in, then out again: a new revocation, confirmed again.
    _post(client, integration, "START", sid="SM" + "c" * 32)
    assert "unsubscribed" in _reply(_post(client, integration, body, sid="SM" + "d" * 32))


def test_decorated_help_gets_the_help_text(client: Client, integration: Integration) -> None:
    text = _reply(_post(client, integration, "Help?"))
    assert "<Message>" in text and integration.organization.name in text
    assert InboundMessage.objects.get().action == "help"


def test_decorated_start_restores_consent(client: Client, integration: Integration) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient, purpose="transactional")
    _post(client, integration, "STOP!", sid="SM" + "1" * 32)
    assert _state(patient, "transactional") == "opt_out"
    _post(client, integration, "Ｓｔａｒｔ 👍", sid="SM" + "2" * 32)
    assert _state(patient, "transactional") == "opt_in"


@pytest.mark.parametrize(
    "body", ["please ｓｔｏｐ texting me", "don’t text me", "I revoke consent", "stop it"]
)
def test_free_text_revocation_is_flagged_after_normalising(
    client: Client, integration: Integration, body: str
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient)
    response = _post(client, integration, body)
    inbound = InboundMessage.objects.get()
    assert (inbound.needs_review, inbound.action) == (True, "none")
    assert _state(patient, "transactional") == "opt_in"  # a person decides
    assert "<Message>" not in _reply(response)


@pytest.mark.parametrize("body", ["STOP\x00", "hello\x00there"])
def test_a_nul_in_a_signed_inbound_is_kept_visibly_not_a_500(
    client: Client, integration: Integration, body: str
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient)
    assert _post(client, integration, body).status_code == 200
    inbound = InboundMessage.objects.get()
    assert inbound.body == body.replace("\x00", "\ufffd")
    assert Event.objects.get(type="message.inbound").payload["message"]["body"] == inbound.body
    expected = "opt_out" if body.startswith("STOP") else "opt_in"
    assert _state(patient, "transactional") == expected


# --- inbound_sms_receive called directly: what each keyword records and answers ------------

SENDER = "+15005550006"


def _receive(integration: Integration, body: str, n: int, phone: str = PHONE) -> Any:
    return inbound_sms_receive(
        integration=integration, sid=f"SM{n:032d}", from_=phone, to=SENDER, body=body
    )


def _word(integration: Integration, **texts: Any) -> None:
    """The clinic's own keyword replies, so a test can tell which one was sent."""
    MessagingPolicy.objects.filter(organization=integration.organization).update(**texts)
    messaging_policy_forget(integration.organization_id)


def test_an_opt_out_records_exactly_its_evidence(integration: Integration) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient, purpose="transactional")
    result = _receive(integration, "Opt out", 1)
    records = ConsentRecord.objects.filter(patient=patient, action="opt_out")
    assert sorted(records.values_list("purpose", flat=True)) == ["marketing", "transactional"]
    for record in records:
        assert record.source == "inbound_keyword" and record.consent_text == ""
        assert record.evidence == {
            "inbound_message_id": result.message.pk,
            "sid": "SM" + "0" * 31 + "1",
            "keyword": "OPT OUT",
        }


def test_a_restoring_start_records_exactly_its_evidence(integration: Integration) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    given = ConsentFactory(patient=patient, purpose="transactional", consent_text="Care ok")
    _receive(integration, "STOP", 1)
    result = _receive(integration, "Start", 2)
    restored = ConsentRecord.objects.get(patient=patient, action="opt_in", source="inbound_keyword")
    assert (restored.purpose, restored.channel, restored.consent_text) == (
        "transactional",
        "sms",
        "Care ok",
    )
    assert restored.evidence == {
        "inbound_message_id": result.message.pk,
        "sid": "SM" + "0" * 31 + "2",
        "keyword": "START",
        "restored_from": given.pk,
    }


def test_start_restores_each_purpose_from_its_own_sms_history(integration: Integration) -> None:
    """Marketing given alone, then opted out: START restores marketing with its own text,
    and neither another purpose's, another channel's nor another patient's consent."""
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient, purpose="marketing", consent_text="Offers ok")
    ConsentFactory(patient=patient, purpose="marketing", channel="email", consent_text="Email")
    other = PatientFactory(organization=integration.organization, phone="+14155550999")
    ConsentFactory(patient=other, purpose="marketing", consent_text="Theirs")
    _receive(integration, "STOP", 1)
    _receive(integration, "START", 2)
    assert _state(patient, "transactional") == "opt_out"  # never given: not granted
    restored = ConsentRecord.objects.get(patient=patient, action="opt_in", source="inbound_keyword")
    assert (restored.purpose, restored.consent_text) == ("marketing", "Offers ok")


def test_start_restores_a_later_purpose_when_an_earlier_one_has_no_history(
    integration: Integration,
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient, purpose="marketing", consent_text="Offers ok")
    ConsentFactory(patient=patient, purpose="marketing", action="opt_out", source="admin")
    _receive(integration, "START", 1)
    assert _state(patient, "marketing") == "opt_in"
    assert not ConsentRecord.objects.filter(patient=patient, purpose="transactional").exists()


def test_start_from_a_patient_still_opted_in_records_nothing(integration: Integration) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    ConsentFactory(patient=patient, purpose="transactional")
    _receive(integration, "START", 1)
    assert ConsentRecord.objects.filter(patient=patient).count() == 1


def test_consent_history_is_read_by_when_it_happened_then_by_record(
    integration: Integration,
) -> None:
    """A consent backfilled later (a paper form) counts from when it was given; two given
    at the same instant are told apart by the order they were recorded in."""
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    now = timezone.now()
    ConsentFactory(patient=patient, consent_text="Tied, first", occurred_at=now - timedelta(days=3))
    ConsentFactory(patient=patient, consent_text="Tied, last", occurred_at=now - timedelta(days=3))
    ConsentFactory(patient=patient, consent_text="Backfilled", occurred_at=now - timedelta(days=9))
    _receive(integration, "STOP", 1)
    # An opt-in backfilled after the STOP, from before it: the patient is still opted out.
    ConsentFactory(patient=patient, consent_text="Older form", occurred_at=now - timedelta(days=8))
    _receive(integration, "START", 2)
    restored = ConsentRecord.objects.get(
        patient=patient, purpose="transactional", source="inbound_keyword", action="opt_in"
    )
    assert restored.consent_text == "Tied, last"


def _tied_records(patient: Any, *fields: dict[str, Any], physical: str) -> list[int]:
    """Record `fields` (one consent record each, all at the same instant) with ids in the
    order given — the last is the one recorded last — but stored in the table in `physical`
    order ("as recorded" or "reversed"); the ids, in the order given.

    With the index scans switched off for the rest of the test, PostgreSQL reads the history
    in stored order and sorts it: if the query left ties to the plan, whichever way its sort
    breaks them, one of the two stored orders picks the wrong record."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
            [ConsentRecord._meta.db_table, len(fields)],
        )
        ids = sorted(row[0] for row in cursor.fetchall())
        for setting in ("enable_indexscan", "enable_indexonlyscan", "enable_bitmapscan"):
            cursor.execute(f"SET LOCAL {setting} = off")
    at = timezone.now() - timedelta(days=1)
    rows = list(zip(ids, fields, strict=True))
    for pk, values in rows if physical == "as recorded" else reversed(rows):
        ConsentFactory(pk=pk, patient=patient, occurred_at=at, **values)
    return ids


@pytest.mark.parametrize("physical", ["as recorded", "reversed"])
def test_start_restores_the_opt_in_recorded_last_of_two_given_at_one_instant(
    integration: Integration, physical: str
) -> None:
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    _receive(integration, "STOP", 1)
    _, last = _tied_records(
        patient, {"consent_text": "Form A"}, {"consent_text": "Form B"}, physical=physical
    )
    _receive(integration, "STOP", 2)
    _receive(integration, "START", 3)
    restored = ConsentRecord.objects.get(
        patient=patient, purpose="transactional", source="inbound_keyword", action="opt_in"
    )
    assert (restored.consent_text, restored.evidence["restored_from"]) == ("Form B", last)


@pytest.mark.parametrize("physical", ["as recorded", "reversed"])
@pytest.mark.parametrize("recorded_last", ["opt_out", "opt_in"])
def test_start_reads_an_opt_in_and_an_opt_out_given_at_one_instant_by_the_one_recorded_last(
    integration: Integration, physical: str, recorded_last: str
) -> None:
    """Staff entered an opt-out and an opt-in dated the same minute: the one recorded last
    is the patient's state, so START restores only when that is the opt-out."""
    patient = PatientFactory(organization=integration.organization, phone=PHONE)
    opt_in = {"consent_text": "Care texts ok", "source": "admin"}
    opt_out = {"action": "opt_out", "source": "admin"}
    _tied_records(
        patient,
        *((opt_in, opt_out) if recorded_last == "opt_out" else (opt_out, opt_in)),
        physical=physical,
    )
    _receive(integration, "START", 1)
    restored = ConsentRecord.objects.filter(patient=patient, source="inbound_keyword")
    if recorded_last == "opt_out":
        assert [r.consent_text for r in restored] == ["Care texts ok"]
    else:
        assert not restored.exists()
    assert _state(patient, "transactional") == "opt_in"


def test_an_opt_out_confirmation_is_suppressed_only_by_this_numbers_own_opt_out_here(
    integration: Integration,
) -> None:
    _word(integration, stop_confirmation_reply="Opted out.")
    elsewhere = IntegrationFactory()
    _receive(elsewhere, "STOP!", 1)  # the same number, another clinic
    _receive(integration, "STOP!", 2, phone="+14155550999")  # another number, this clinic
    assert _receive(integration, "STOP!", 3).reply == "Opted out."
    _receive(integration, "thanks", 4)  # free text after the opt-out changes nothing
    assert _receive(integration, "STOP!", 5).reply is None


def test_the_latest_opt_out_or_opt_in_decides_by_time_then_by_record(
    integration: Integration,
) -> None:
    _word(integration, stop_confirmation_reply="Opted out.")
    _receive(integration, "STOP!", 1)
    start = _receive(integration, "START", 2).message
    # Recorded in the same instant: the later record (the START) is the latest.
    InboundMessage.objects.filter(pk=start.pk).update(
        created_at=InboundMessage.objects.get(provider_sid="SM" + "0" * 31 + "1").created_at
    )
    assert _receive(integration, "STOP!", 3).reply == "Opted out."
    # An opt-in recorded after that STOP but dated before it does not end the opt-out.
    late = _receive(integration, "START", 4).message
    InboundMessage.objects.filter(pk=late.pk).update(created_at=timezone.now() - timedelta(1))
    assert _receive(integration, "STOP!", 5).reply is None


def test_each_keyword_gets_its_own_reply_and_free_text_none(integration: Integration) -> None:
    _word(integration, help_text_reply="Call us.", stop_confirmation_reply="Opted out.")
    assert _receive(integration, "Help!", 1).reply == "Call us."
    assert _receive(integration, "hello there", 2).reply is None
    assert _receive(integration, "STOP!", 3).reply == "Opted out."


def test_a_keyword_in_an_enabled_language_is_one_and_answered_in_it(
    integration: Integration,
) -> None:
    organization = integration.organization
    organization.languages = ["en", "es"]
    organization.save(update_fields=["languages"])
    _word(
        integration,
        help_text_reply="Call us.",
        stop_confirmation_reply="Opted out.",
        translations={"es": {"help_text_reply": "Llámenos.", "stop_confirmation_reply": "Baja."}},
    )
    # The patient prefers Spanish: an English keyword is answered in Spanish too.
    PatientFactory(organization=organization, phone=PHONE, language="es")
    assert _receive(integration, "HELP", 1).reply == "Llámenos."
    result = _receive(integration, "PARAR", 2)
    assert (result.message.action, result.reply) == ("opt_out", "Baja.")
    # From a number with no patient: PARAR is still answered in Spanish, its own language.
    assert _receive(integration, "PARAR", 3, phone="+14155550999").reply == "Baja."


def test_a_stop_opts_out_only_this_clinics_patients_at_this_number(
    integration: Integration,
) -> None:
    here = PatientFactory(organization=integration.organization, phone=PHONE)
    neighbour = PatientFactory(organization=integration.organization, phone="+14155550999")
    elsewhere = PatientFactory(organization=IntegrationFactory().organization, phone=PHONE)
    for patient in (here, neighbour, elsewhere):
        ConsentFactory(patient=patient)
    _receive(integration, "STOP", 1)
    assert _state(here, "transactional") == "opt_out"
    assert _state(neighbour, "transactional") == _state(elsewhere, "transactional") == "opt_in"


def test_a_redelivered_keyword_returns_the_first_record_and_answers_again(
    integration: Integration,
) -> None:
    _word(integration, help_text_reply="Call us.")
    first = _receive(integration, "HELP", 1)
    again = _receive(integration, "HELP", 1)
    assert (first.created, first.reply) == (True, "Call us.")
    assert (again.created, again.message.pk, again.reply) == (False, first.message.pk, "Call us.")
    assert InboundMessage.objects.count() == 1


def test_the_inbound_is_linked_to_the_first_patient_at_the_number(
    integration: Integration,
) -> None:
    first = PatientFactory(organization=integration.organization, phone=PHONE)
    PatientFactory(organization=integration.organization, phone=PHONE)
    assert _receive(integration, "hello", 1).message.patient == first
    assert _receive(integration, "hello", 2, phone="+14155550999").message.patient is None


def test_the_inbound_and_its_event_keep_the_sid_and_the_number_texted(
    integration: Integration,
) -> None:
    result = _receive(integration, "hello", 7)
    assert (result.message.to, result.message.provider_sid) == (SENDER, "SM" + "0" * 31 + "7")
    event = Event.objects.get(type="message.inbound")
    assert event.payload["message"]["sid"] == "SM" + "0" * 31 + "7"
    assert event.payload["message"]["to"] == SENDER
    assert event.dedupe_key == f"message.inbound:{integration.organization_id}:SM{'0' * 31}7"
