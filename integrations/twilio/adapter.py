"""Twilio → sendSMS, the first adapter."""

from collections.abc import Mapping

from integrations.adapters import Adapter, Function, Outcome, Parameter, StepContext
from integrations.models import Integration, OutboundMessage
from integrations.sending import MessagesAccepted, message_prepare_and_deliver
from integrations.twilio.account import ADAPTER
from patients.models import Organization, Patient
from patients.phones import e164_problem, is_e164

Status = OutboundMessage.Status

SEND_SMS = Function(
    name="sendSMS",
    label="Send SMS",
    parameters=(
        Parameter(
            "message",
            "Message",
            "The text to send. Use {{variables}} to personalise it.",
            example="Hi {{customer.firstName}}, your order {{order.number}} has shipped!",
        ),
        Parameter(
            "to",
            "To Phone",
            "The recipient, normally {{customer.phone}}.",
            example="{{customer.phone}}",
            check=e164_problem,
        ),
        Parameter(
            "from",
            "From Phone",
            "One of the clinic's approved Twilio numbers.",
            example="+15005550006",
            # No number check: whether it is one of the clinic's approved numbers
            # (workflows.validation.SENDER_PARAMETERS) says more.
        ),
    ),
)


def recipient_patient(
    organization: Organization, customer: Patient | None, to: str
) -> Patient | None:
    """The patient a message to `to` goes to: the event's customer when the number is
    theirs, otherwise the one patient of this clinic with that number."""
    if customer is not None and customer.phone == to:
        return customer
    matches = list(Patient.objects.filter(organization=organization, phone=to)[:2])
    return matches[0] if len(matches) == 1 else None


def numbers_problem(inputs: Mapping[str, str]) -> str:
    """Why a step's rendered To or From cannot be texted, or "". A {{variable}} can render to
    anything (an email, a note, a long text); unsaid here, it was "not a patient of this
    clinic" later, or a value too long for the message row."""
    for label, name in (("To Phone", "to"), ("From Phone", "from")):
        number = inputs.get(name, "").strip()
        if (number or name == "to") and not is_e164(number):
            shown = number if len(number) <= 24 else number[:23] + "…"
            return f"{label} “{shown}” is not a valid phone number"
    return ""


def twilio_integration(organization: Organization) -> Integration | None:
    """The clinic's enabled Twilio integration (at most one, by constraint)."""
    enabled = Integration.objects.filter(
        organization=organization, adapter=ADAPTER, enabled=True
    ).order_by()
    return next(iter(enabled[:1]), None)


class TwilioAdapter(Adapter):
    name = "twilio"
    label = "Twilio"
    functions = {SEND_SMS.name: SEND_SMS}

    def execute(self, *, function: str, context: StepContext) -> Outcome:
        if function != SEND_SMS.name:
            return Outcome("failed", reason=f"Twilio has no function {function!r}")
        key = ("twilio-integration", context.organization.pk)
        if key not in context.memo:
            context.memo[key] = twilio_integration(context.organization)
        integration = context.memo[key]
        if integration is None:
            return Outcome("failed", reason="this clinic has no enabled Twilio integration")
        accepted = context.memo.get("twilio-accepted")
        if accepted is None and context.at_batch_end is not None:
            accepted = context.memo["twilio-accepted"] = MessagesAccepted()
            context.at_batch_end.append(accepted.write)
        to = context.inputs["to"].strip()
        problem = numbers_problem(context.inputs)
        if problem:
            return Outcome("skipped", reason=problem)
        message = message_prepare_and_deliver(
            accepted=accepted,
            organization=context.organization,
            integration=integration,
            idempotency_key=context.idempotency_key,
            first_attempt=context.attempt <= 1,
            to=to,
            from_number=context.inputs["from"].strip(),
            body=context.inputs["message"],
            purpose=context.purpose,
            patient=recipient_patient(context.organization, context.patient, to),
            step_run_id=context.step_run_id,
            is_test=context.is_test,
            urgent=context.urgent,
        )
        return _outcome(message)


def _outcome(message: OutboundMessage) -> Outcome:
    result = {
        "message_id": message.pk,
        "status": message.status,
        "sid": message.provider_sid,
        "segments": message.segments,
    }
    if message.status in (Status.SENT, Status.DELIVERED):
        return Outcome("succeeded", result=result)
    if message.status == Status.SKIPPED:
        return Outcome("skipped", result=result, reason=message.skip_reason)
    if message.status in (Status.FAILED, Status.UNDELIVERED):
        reason = f"Twilio error {message.error_code}: {message.error_message}".strip()
        return Outcome("failed", result=result, reason=reason)
    # deferred by quiet hours, pending with a retry time, unknown awaiting reconciliation,
    # or claimed by another worker
    if (
        message.status == Status.PENDING
        and message.slot_at
        and (message.next_attempt_at == message.slot_at)
    ):
        reason = "queued: waiting for this sending number's turn (Twilio's throughput limit)"
    elif message.status == Status.PENDING and message.decision.get("defer_until"):
        reason = f"waiting: {message.decision['reason']}"
    elif message.error_code:
        reason = f"retrying after error {message.error_code}: {message.error_message}"
    else:
        reason = "send in progress"
    return Outcome("retry", result=result, reason=reason, retry_at=message.next_attempt_at)
