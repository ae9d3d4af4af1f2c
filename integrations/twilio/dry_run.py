"""What a sendSMS step would do now, for a dry run: the send-time policy's decision on the
message it would create, with no side effect (nothing saved, nothing sent)."""

from collections.abc import Mapping
from datetime import datetime

from integrations.models import OutboundMessage
from integrations.policy import send_decide
from integrations.selectors import decision_checks
from integrations.sms import segment_info
from integrations.twilio.integration import NO_INTEGRATION, twilio_integration
from integrations.twilio.numbers import numbers_problem, recipient_patient
from patients.models import Organization, Patient
from workflows.adapters import DryRunResult


def sms_dry_run(
    *,
    organization: Organization,
    patient: Patient,
    inputs: Mapping[str, str],
    purpose: str,
    urgent: bool,
    clock: datetime,
) -> DryRunResult:
    integration = twilio_integration(organization)
    if integration is None:
        return DryRunResult("error", NO_INTEGRATION)
    problem = numbers_problem(inputs)
    if problem:  # as the engine says it (the send-time checks never see such a message)
        return DryRunResult("skip", f"would not send: {problem}")
    to = inputs.get("to", "").strip()
    body = inputs.get("message", "")
    info = segment_info(body)
    message = OutboundMessage(
        organization=organization,
        integration=integration,
        patient=recipient_patient(organization, patient, to),
        to=to,
        from_number=inputs.get("from", "").strip(),
        body=body,
        purpose=purpose,
        urgent=urgent,
    )
    decision = send_decide(message=message, now=clock)
    record = decision.as_dict(clock)
    preview = {
        "to": to,
        "from": message.from_number,
        "body": body,
        "characters": info.characters,
        "encoding": info.encoding,
        "segments": info.segments,
    }
    checks = decision_checks(record)
    if decision.allowed:
        return DryRunResult("send", "would send now", preview, record, checks)
    if decision.defer_until:
        return DryRunResult("defer", decision.reason, preview, record, checks)
    return DryRunResult("skip", f"would not send: {decision.reason}", preview, record, checks)
