"""patients.consent: the one rule over the consent history, as Python (the send-time policy,
the patient page) and as SQL (customer.acceptMarketing built by the outbox INSERT), and the
two never disagree."""

import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.models import OutboundMessage
from integrations.policy import send_decide
from patients.consent import (
    channel_consent_history,
    consent_allowed_sql,
    consent_history_prefetch,
    consent_verdict,
    keyword_opt_out,
    patient_accepts_marketing,
    sms_consent_history,
)
from patients.models import ConsentRecord, Patient
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

pytestmark = pytest.mark.django_db
OPT_IN, OPT_OUT = ConsentRecord.Action.OPT_IN, ConsentRecord.Action.OPT_OUT
TX, MKT = ConsentRecord.Purpose.TRANSACTIONAL, ConsentRecord.Purpose.MARKETING
Source = ConsentRecord.Source
TEXT = "I agree to receive texts. Reply STOP to opt out."


def _history(patient: Patient) -> list[ConsentRecord]:
    return sms_consent_history(patient)


def test_no_history_is_no_consent() -> None:
    verdict = consent_verdict([], purpose=TX)
    assert not verdict.allowed
    assert (verdict.check, verdict.reason) == ("consent", "no SMS consent")
    assert verdict.latest is verdict.opt_in is verdict.opt_out is None


def test_the_latest_decision_of_the_purpose_decides() -> None:
    patient = PatientFactory()
    now = timezone.now()
    ConsentFactory(patient=patient, occurred_at=now - timedelta(days=2))
    out = ConsentFactory(
        patient=patient, action=OPT_OUT, source=Source.ADMIN, occurred_at=now - timedelta(days=1)
    )
    verdict = consent_verdict(_history(patient), purpose=TX)
    assert verdict.latest == out and not verdict.allowed and verdict.check == "consent"
    assert verdict.reason.startswith("opted out of transactional SMS on ")
    renewed = ConsentFactory(patient=patient, occurred_at=now)
    verdict = consent_verdict(_history(patient), purpose=TX)
    assert verdict.allowed and verdict.opt_in == renewed


def test_marketing_needs_its_text_and_a_written_source() -> None:
    patient = PatientFactory()
    ConsentFactory(patient=patient, purpose=MKT, consent_text="\u3000\n\t")
    assert consent_verdict(_history(patient), purpose=MKT).check == "consent"
    ConsentFactory(patient=patient, purpose=MKT, source=Source.PROVIDER_ERROR, consent_text=TEXT)
    assert not consent_verdict(_history(patient), purpose=MKT).allowed
    ConsentFactory(patient=patient, purpose=MKT, source=Source.CHECKOUT, consent_text=TEXT)
    assert consent_verdict(_history(patient), purpose=MKT).allowed
    # Transactional texts need consent, not a written one.
    ConsentFactory(patient=patient, purpose=TX, consent_text="")
    assert consent_verdict(_history(patient), purpose=TX).allowed


def test_a_stop_under_any_purpose_overrides_an_earlier_opt_in() -> None:
    patient = PatientFactory()
    opt_in = ConsentFactory(patient=patient, occurred_at=timezone.now() - timedelta(hours=1))
    stop = ConsentFactory(
        patient=patient, purpose=MKT, action=OPT_OUT, source=Source.INBOUND_KEYWORD
    )
    verdict = consent_verdict(_history(patient), purpose=TX)
    assert (verdict.check, verdict.opt_in, verdict.opt_out) == ("opt-out", opt_in, stop)
    assert keyword_opt_out(_history(patient)) == stop
    # A staff opt-out of one purpose is not a STOP: it stops only its own purpose.
    other = PatientFactory()
    ConsentFactory(patient=other, occurred_at=timezone.now() - timedelta(hours=1))
    ConsentFactory(patient=other, purpose=MKT, action=OPT_OUT, source=Source.ADMIN)
    assert consent_verdict(_history(other), purpose=TX).allowed
    assert keyword_opt_out(_history(other)) is None


def test_a_keyword_opt_out_ends_with_any_later_opt_in() -> None:
    patient = PatientFactory()
    stop = ConsentFactory(
        patient=patient,
        action=OPT_OUT,
        source=Source.INBOUND_KEYWORD,
        occurred_at=timezone.now() - timedelta(hours=1),
    )
    assert keyword_opt_out(_history(patient)) == stop
    ConsentFactory(patient=patient, purpose=MKT, consent_text=TEXT)
    assert keyword_opt_out(_history(patient)) is None


def test_ties_in_time_go_to_the_later_record() -> None:
    patient = PatientFactory()
    moment = timezone.now()
    ConsentFactory(patient=patient, occurred_at=moment)
    out = ConsentFactory(patient=patient, action=OPT_OUT, source=Source.ADMIN, occurred_at=moment)
    assert consent_verdict(_history(patient), purpose=TX).latest == out


def test_accepts_marketing_reads_a_known_answer_before_asking_the_database(
    django_assert_num_queries: Any,
) -> None:
    patient = Patient.objects.get(pk=PatientFactory().pk)
    with django_assert_num_queries(1):
        assert patient_accepts_marketing(patient) is False
    patient.__dict__["marketing_consent_allowed"] = True
    with django_assert_num_queries(0):
        assert patient_accepts_marketing(patient) is True


def _sql_allows(patient: Patient, purpose: str) -> bool:
    sql = consent_allowed_sql(purpose=purpose, patient_id="%s")
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {sql}", [patient.pk])
        return bool(cursor.fetchone()[0])


def _decide(patient: Patient, integration: Any, purpose: str) -> OutboundMessage:
    return OutboundMessage(
        organization=patient.organization,
        integration=integration,
        patient=patient,
        idempotency_key=f"t:{uuid.uuid4()}",
        purpose=purpose,
        to=patient.phone,
        from_number="+15005550006",
        body="hi",
        urgent=True,  # quiet hours are not the question here
    )


# Texts that are, and are not, a written consent to Python's str.strip() (any Unicode space).
TEXTS = ["", TEXT, " ", "\n\t", "\u00a0", "\u2028", "\u3000", "\x1c", "\u200b", " ok "]
decision = st.tuples(
    st.sampled_from([TX, MKT]),
    st.sampled_from([OPT_IN, OPT_OUT]),
    st.sampled_from(Source.values),
    st.sampled_from(TEXTS),
    st.integers(min_value=-3, max_value=3),  # hours from now: some back-dated, some tied
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(decisions=st.lists(decision, max_size=7))
def test_sql_python_and_the_send_time_policy_agree(decisions: list[tuple[Any, ...]]) -> None:
    integration = IntegrationFactory()
    patient = PatientFactory(organization=integration.organization)
    base = timezone.now().replace(microsecond=0)
    for purpose, action, source, text, hours in decisions:
        ConsentRecord.objects.create(
            patient=patient,
            purpose=purpose,
            action=action,
            source=source,
            consent_text=text,
            occurred_at=base + timedelta(hours=hours),
        )
    history = _history(Patient.objects.get(pk=patient.pk))
    for purpose in (TX, MKT):
        verdict = consent_verdict(history, purpose=purpose)
        assert _sql_allows(patient, purpose) is verdict.allowed, (purpose, decisions)
        sent = send_decide(message=_decide(patient, integration, purpose))
        refused = [c for c in sent.checks if c["check"] in ("consent", "opt-out") and not c["ok"]]
        if verdict.allowed:
            assert not refused, (purpose, decisions, sent.checks)
        else:
            assert refused == [{"check": verdict.check, "ok": False, "detail": verdict.reason}]
    fresh = Patient.objects.get(pk=patient.pk)
    assert patient_accepts_marketing(fresh) is consent_verdict(history, purpose=MKT).allowed


# --- the history read with a batch of patients ------------------------------------------------


def test_the_prefetch_reads_every_channel_and_each_reader_takes_its_own(
    django_assert_num_queries: Any,
) -> None:
    patient = PatientFactory()
    sms = ConsentFactory(patient=patient)
    # A channel the model does not offer yet: the history carries it all the same.
    other = ConsentFactory(patient=patient, channel="email", purpose=MKT)
    with django_assert_num_queries(2):
        [read] = Patient.objects.filter(pk=patient.pk).prefetch_related(consent_history_prefetch())
    with django_assert_num_queries(0):
        assert sms_consent_history(read) == [sms]
        assert channel_consent_history(read, "email") == [other]
        assert channel_consent_history(read, "voice") == []


def test_without_the_prefetch_a_channels_history_is_one_query(
    django_assert_num_queries: Any,
) -> None:
    patient = PatientFactory()
    ConsentFactory(patient=patient, channel="email")
    read = Patient.objects.get(pk=patient.pk)
    with django_assert_num_queries(1):
        assert sms_consent_history(read) == []


def test_an_email_verdict_names_its_channel() -> None:
    assert consent_verdict([], purpose=TX, channel="email").reason == "no email consent"
    patient = PatientFactory()
    bounced: ConsentRecord = ConsentFactory(
        patient=patient, channel="email", action=OPT_OUT, source=Source.PROVIDER_EVENT
    )
    # the channel is the history's own when not given
    verdict = consent_verdict([bounced], purpose=TX)
    assert verdict.reason.startswith("opted out of transactional email on ")
    assert consent_verdict([], purpose=TX).reason == "no SMS consent"
