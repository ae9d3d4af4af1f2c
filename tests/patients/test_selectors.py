from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from patients.models import ConsentRecord
from patients.selectors import consent_active_opt_in, consent_current, patient_consent_summary
from tests.factories import ConsentFactory, PatientFactory, UserFactory

pytestmark = pytest.mark.django_db
OPT_IN, OPT_OUT = ConsentRecord.Action.OPT_IN, ConsentRecord.Action.OPT_OUT
TX, MKT = ConsentRecord.Purpose.TRANSACTIONAL, ConsentRecord.Purpose.MARKETING


def test_no_history_means_no_consent() -> None:
    assert consent_active_opt_in(patient=PatientFactory(), purpose=TX) is None


def test_latest_decision_wins_by_time_not_insertion_order() -> None:
    patient = PatientFactory()
    now = timezone.now()
    opt_in = ConsentFactory(patient=patient, occurred_at=now - timedelta(days=2))
    ConsentFactory(patient=patient, action=OPT_OUT, occurred_at=now - timedelta(days=1))
    assert consent_active_opt_in(patient=patient, purpose=TX) is None
    # a back-dated record entered later does not override the newer opt-out
    ConsentFactory(patient=patient, occurred_at=now - timedelta(days=3))
    assert consent_active_opt_in(patient=patient, purpose=TX) is None
    renewed = ConsentFactory(patient=patient, occurred_at=now)
    assert consent_active_opt_in(patient=patient, purpose=TX) == renewed
    assert renewed != opt_in


def test_purposes_are_independent() -> None:
    patient = PatientFactory()
    ConsentFactory(patient=patient, purpose=TX)
    assert consent_active_opt_in(patient=patient, purpose=TX) is not None
    assert consent_active_opt_in(patient=patient, purpose=MKT) is None


def test_an_active_opt_in_is_one_the_send_time_policy_relies_on() -> None:
    patient = PatientFactory()
    ConsentFactory(patient=patient, purpose=MKT, consent_text="")  # no written consent
    assert consent_active_opt_in(patient=patient, purpose=MKT) is None
    ConsentFactory(patient=patient, occurred_at=timezone.now() - timedelta(hours=1))
    ConsentFactory(
        patient=patient,
        purpose=MKT,
        action=OPT_OUT,
        source=ConsentRecord.Source.INBOUND_KEYWORD,
        consent_text="",
    )
    # The STOP was recorded under marketing; it still ends the transactional opt-in.
    assert consent_current(patient=patient, purpose=TX).action == OPT_IN
    assert consent_active_opt_in(patient=patient, purpose=TX) is None


def test_same_timestamp_ties_go_to_the_later_record() -> None:
    patient = PatientFactory()
    moment = timezone.now()
    ConsentFactory(patient=patient, occurred_at=moment)
    out = ConsentFactory(patient=patient, action=OPT_OUT, occurred_at=moment)
    assert consent_current(patient=patient, purpose=TX) == out


def test_consent_history_is_append_only() -> None:
    record = ConsentFactory()
    record.action = OPT_OUT
    with pytest.raises(ValidationError, match="append-only"):
        record.save()
    with pytest.raises(ValidationError, match="append-only"):
        record.delete()
    assert ConsentRecord.objects.get(pk=record.pk).action == OPT_IN


# --- patient_consent_summary: the patient page's consent panel ------------------------------


def test_every_purpose_is_summarised_and_never_asked_without_history() -> None:
    summary = patient_consent_summary(patient=PatientFactory())
    assert [row.purpose for row in summary.purposes] == ConsentRecord.Purpose.values
    assert {row.state_label for row in summary.purposes} == {"Never asked"}
    assert summary.keyword_opt_out is None and summary.decisions == 0


def test_the_summary_shows_the_decision_the_state_comes_from() -> None:
    patient = PatientFactory()
    now = timezone.now()
    ConsentFactory(patient=patient, occurred_at=now - timedelta(days=3))
    marketing = ConsentFactory(patient=patient, purpose=MKT, occurred_at=now - timedelta(days=2))
    summary = patient_consent_summary(patient=patient)
    by_purpose = {row.purpose: row for row in summary.purposes}
    assert by_purpose[MKT].state == "opted_in" and by_purpose[MKT].record == marketing
    assert by_purpose[MKT].verdict.allowed
    stop = ConsentFactory(
        patient=patient,
        purpose=MKT,
        action=OPT_OUT,
        source=ConsentRecord.Source.INBOUND_KEYWORD,
        occurred_at=now - timedelta(days=1),
    )
    summary = patient_consent_summary(patient=patient)
    by_purpose = {row.purpose: row for row in summary.purposes}
    # The STOP was recorded under marketing only, yet it stops transactional texts too.
    assert by_purpose[TX].state == "opted_out" and by_purpose[TX].record == stop
    assert by_purpose[TX].verdict.check == "opt-out"
    assert summary.keyword_opt_out == stop and summary.decisions == 3


def test_the_summary_costs_one_query(django_assert_num_queries: Any) -> None:
    patient = PatientFactory()
    for _ in range(5):
        ConsentFactory(patient=patient, recorded_by=UserFactory())
    with django_assert_num_queries(1):
        summary = patient_consent_summary(patient=patient)
        [str(row.record.recorded_by) for row in summary.purposes if row.record]
