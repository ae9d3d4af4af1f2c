from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from patients.models import ConsentRecord
from patients.selectors import consent_active_opt_in, consent_current
from tests.factories import ConsentFactory, PatientFactory

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
