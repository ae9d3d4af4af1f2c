"""Twilio → sendSMS, the first adapter."""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from integrations.models import OutboundMessage
from integrations.sending import MessagesAccepted, message_prepare_and_deliver
from integrations.twilio.dry_run import sms_dry_run
from integrations.twilio.errors import error_explanation
from integrations.twilio.integration import NO_INTEGRATION, twilio_integration, twilio_senders
from integrations.twilio.numbers import numbers_problem, recipient_patient
from integrations.twilio.previews import sms_preview
from patients.models import Organization, Patient
from patients.phones import e164_problem
from workflows.adapters import (
    Adapter,
    DryRunResult,
    Function,
    Outcome,
    Parameter,
    SenderNoun,
    StepContext,
)

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
            # (`sender_parameter`, checked against `TwilioAdapter.senders`) says more.
        ),
    ),
    sender_parameter="from",
    sender_noun=SenderNoun(
        one="an approved sending number",
        many="approved sending numbers",
        choose="Choose a number…",
        none="No approved numbers yet",
        unlisted="(not an approved number)",
    ),
    preview_parameter="message",
    channel="sms",
)


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
            return Outcome("failed", reason=NO_INTEGRATION)
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

    def setup_problem(self, organization: Organization) -> str:
        return "" if twilio_integration(organization) is not None else NO_INTEGRATION

    def senders(self, organization_ids: Iterable[int] | None) -> dict[int, list[str]]:
        return twilio_senders(organization_ids)

    def preview(self, function: str, text: str) -> dict[str, Any]:
        return sms_preview(text)

    def dry_run(
        self,
        function: str,
        *,
        organization: Organization,
        patient: Patient,
        inputs: Mapping[str, str],
        purpose: str,
        urgent: bool,
        clock: datetime,
    ) -> DryRunResult:
        if function != SEND_SMS.name:
            return DryRunResult("error", f"Twilio has no function {function!r}")
        return sms_dry_run(
            organization=organization,
            patient=patient,
            inputs=inputs,
            purpose=purpose,
            urgent=urgent,
            clock=clock,
        )

    def error_explanation(self, code: str) -> str:
        return error_explanation(code)


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
