"""Reads over patient records."""

from dataclasses import dataclass

from patients.consent import ConsentVerdict, consent_verdict, keyword_opt_out
from patients.models import ConsentRecord, Patient


def consent_current(
    *, patient: Patient, purpose: str, channel: str = ConsentRecord.Channel.SMS
) -> ConsentRecord | None:
    """The patient's latest consent decision for this channel and purpose, if any.

    The answer is the newest record by when it happened (ties broken by insertion order),
    so a later opt-out always wins over an earlier opt-in and vice versa.
    """
    return (
        ConsentRecord.objects.filter(patient=patient, channel=channel, purpose=purpose)
        .order_by("-occurred_at", "-id")
        .first()
    )


def consent_active_opt_in(
    *, patient: Patient, purpose: str, channel: str = ConsentRecord.Channel.SMS
) -> ConsentRecord | None:
    """The opt-in a send may rely on, by the send-time rule (`patients.consent`): the latest
    decision, if it is an opt-in (in writing, for marketing) with no STOP since."""
    history = ConsentRecord.objects.filter(patient=patient, channel=channel).order_by()
    verdict = consent_verdict(history, purpose=purpose)
    return verdict.opt_in if verdict.allowed else None


@dataclass(frozen=True, slots=True)
class PurposeConsent:
    """A purpose's current consent, as the patient page shows it."""

    purpose: str
    label: str
    state: str  # one of CONSENT_STATES
    # The decision the state comes from: the latest for the purpose, or the STOP after it.
    record: ConsentRecord | None
    # What the send-time policy makes of the history for this purpose (the same rule).
    verdict: ConsentVerdict

    @property
    def state_label(self) -> str:
        return CONSENT_STATES[self.state]


OPTED_IN, OPTED_OUT, NEVER_ASKED = "opted_in", "opted_out", "never_asked"
CONSENT_STATES = {OPTED_IN: "Opted in", OPTED_OUT: "Opted out", NEVER_ASKED: "Never asked"}


@dataclass(frozen=True, slots=True)
class ConsentSummary:
    purposes: list[PurposeConsent]
    # The STOP (or Twilio 21610) in force for this patient's number, if any.
    keyword_opt_out: ConsentRecord | None
    decisions: int


def patient_consent_summary(*, patient: Patient) -> ConsentSummary:
    """The patient's current SMS consent for each purpose, derived from the append-only
    history by the send-time rule (`patients.consent`), and whether a STOP is in force.
    One query."""
    history = list(
        ConsentRecord.objects.filter(patient=patient, channel=ConsentRecord.Channel.SMS)
        .select_related("recorded_by")
        .order_by()
    )
    purposes = []
    for purpose, label in ConsentRecord.Purpose.choices:
        verdict = consent_verdict(history, purpose=purpose)
        if verdict.latest is None:
            state, record = NEVER_ASKED, None
        elif verdict.opt_out is not None:
            state, record = OPTED_OUT, verdict.opt_out
        elif verdict.latest.action == ConsentRecord.Action.OPT_OUT:
            state, record = OPTED_OUT, verdict.latest
        else:
            state, record = OPTED_IN, verdict.latest
        purposes.append(PurposeConsent(purpose, str(label), state, record, verdict))
    return ConsentSummary(purposes, keyword_opt_out(history), len(history))
