"""What every messaging adapter's step does the same way, whatever the channel: find the
clinic's integration once per batch, record the provider's acceptances at the batch's end,
say what became of a message as the step's Outcome, and dry-run a message through the
send-time policy. The adapters keep only what differs (their fields, checks and wording)."""

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from integrations.models import Integration, OutboundMessage
from integrations.policy import send_decide
from integrations.selectors import decision_checks
from integrations.sending import MessagesAccepted, message_prepare_and_deliver
from patients.models import Organization
from workflows.adapters import DryRunResult, Outcome, StepContext

Status = OutboundMessage.Status


def step_integration(
    context: StepContext,
    *,
    adapter: str,
    lookup: Callable[[Organization], Integration | None],
) -> Integration | None:
    """The clinic's integration for `adapter`, looked up once per organization in a batch."""
    key = (f"{adapter}-integration", context.organization.pk)
    if key not in context.memo:
        context.memo[key] = lookup(context.organization)
    integration: Integration | None = context.memo[key]
    return integration


def step_accepted(context: StepContext, *, adapter: str) -> MessagesAccepted | None:
    """The batch's record of `adapter`'s accepted messages, written once at the batch's end
    (None outside a batch: each acceptance is then written as it happens)."""
    key = f"{adapter}-accepted"
    accepted: MessagesAccepted | None = context.memo.get(key)
    if accepted is None and context.at_batch_end is not None:
        accepted = context.memo[key] = MessagesAccepted()
        context.at_batch_end.append(accepted.write)
    return accepted


def step_deliver(
    context: StepContext,
    *,
    integration: Integration,
    accepted: MessagesAccepted | None,
    **fields: Any,
) -> OutboundMessage:
    """Prepare and deliver the step's message: the run's own fields (key, attempt, purpose,
    urgency, test flag) from `context`, the channel's (to, from_number, body, ...) from
    `fields`."""
    return message_prepare_and_deliver(
        accepted=accepted,
        organization=context.organization,
        integration=integration,
        idempotency_key=context.idempotency_key,
        first_attempt=context.attempt <= 1,
        purpose=context.purpose,
        step_run_id=context.step_run_id,
        workflow_id=context.workflow_id,
        step_index=context.step_index,
        is_test=context.is_test,
        urgent=context.urgent,
        language=context.language,
        **fields,
    )


def message_step_outcome(
    message: OutboundMessage,
    *,
    provider_label: str,
    result: Mapping[str, Any],
    queued_reason: str = "",
) -> Outcome:
    """What became of a step's message, as the step's Outcome. `provider_label` names the
    provider in a failure ("Twilio error 21211: …"); `result` adds the provider's fields to
    the step's result; `queued_reason`, when given, is what a message waiting for its
    throttle slot says (without it, it says what any other pending message says)."""
    outcome_result = {"message_id": message.pk, "status": message.status, **result}
    if message.status in (Status.SENT, Status.DELIVERED):
        return Outcome("succeeded", result=outcome_result)
    if message.status == Status.SKIPPED:
        return Outcome("skipped", result=outcome_result, reason=message.skip_reason)
    if message.status in (Status.FAILED, Status.UNDELIVERED):
        reason = f"{provider_label} error {message.error_code}: {message.error_message}".strip()
        return Outcome("failed", result=outcome_result, reason=reason)
    # deferred by quiet hours, pending with a retry time or a throttle slot, unknown
    # awaiting reconciliation, or claimed by another worker
    if (
        queued_reason
        and message.status == Status.PENDING
        and message.slot_at
        and (message.next_attempt_at == message.slot_at)
    ):
        reason = queued_reason
    elif message.status == Status.PENDING and message.decision.get("defer_until"):
        reason = f"waiting: {message.decision['reason']}"
    elif message.error_code:
        reason = f"retrying after error {message.error_code}: {message.error_message}"
    else:
        reason = "send in progress"
    return Outcome("retry", result=outcome_result, reason=reason, retry_at=message.next_attempt_at)


def message_dry_run(
    message: OutboundMessage, *, clock: datetime, preview: dict[str, Any]
) -> DryRunResult:
    """What sending `message` (unsaved) would do at `clock`: the send-time policy's
    decision, with each check in the policy's order. Nothing is saved or sent."""
    decision = send_decide(message=message, now=clock)
    record = decision.as_dict(clock)
    checks = decision_checks(record)
    if decision.allowed:
        return DryRunResult("send", "would send now", preview, record, checks)
    if decision.defer_until:
        return DryRunResult("defer", decision.reason, preview, record, checks)
    return DryRunResult("skip", f"would not send: {decision.reason}", preview, record, checks)
