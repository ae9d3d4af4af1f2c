"""May we text this person now? Every check runs at send time, not when the run started,
so a consent withdrawn while a message waited is honoured."""

from dataclasses import dataclass

from integrations.models import OutboundMessage
from patients.models import ConsentRecord
from patients.phones import is_e164
from patients.selectors import consent_active_opt_in


@dataclass(frozen=True, slots=True)
class SendDecision:
    allowed: bool
    reason: str = ""
    consent_record: ConsentRecord | None = None


def send_decide(*, message: OutboundMessage) -> SendDecision:
    """Decide whether `message` may go out now; the first failing check gives the reason."""
    patient = message.patient
    if patient is None:
        return SendDecision(False, "recipient is not a patient of this clinic")
    consent = consent_active_opt_in(patient=patient, purpose=message.purpose)
    if consent is None:
        return SendDecision(False, "no SMS consent")
    integration = message.integration
    if not integration.enabled:
        return SendDecision(False, "the clinic's Twilio integration is disabled", consent)
    if message.messaging_service_sid:
        if message.messaging_service_sid != integration.messaging_service_sid:
            return SendDecision(
                False, "messaging service is not the clinic's approved one", consent
            )
    elif message.from_number not in integration.sending_numbers:
        return SendDecision(
            False,
            f"sender {message.from_number} is not an approved number for this clinic",
            consent,
        )
    if not is_e164(message.to):
        return SendDecision(False, f"recipient {message.to!r} is not a valid phone number", consent)
    return SendDecision(True, consent_record=consent)
