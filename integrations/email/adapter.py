"""Email → sendEmail: the second messaging adapter (issue 15).

The step renders Subject, Body (text), an optional HTML body, To and From from the run's
data; the messaging core sends it through `EmailTransport` with the same claim, policy
(consent by channel and purpose, quiet hours, caps) and exactly-once reconciliation as SMS.
"""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator

from integrations.email.account import email_account
from integrations.email.transport import email_error_explanation
from integrations.message_steps import (
    message_dry_run,
    message_step_outcome,
    step_accepted,
    step_deliver,
    step_integration,
)
from integrations.models import Integration, OutboundMessage
from patients.models import Organization, Patient
from workflows.adapters import (
    Adapter,
    DryRunResult,
    Function,
    Outcome,
    Parameter,
    SenderNoun,
    StepContext,
)

ADAPTER = "email"
# Mail clients cut subjects near here; RFC 5322 recommends lines of at most 78 characters.
LONG_SUBJECT = 78
# Gmail clips a message whose HTML is over 102 KB behind "[Message clipped]".
LONG_BODY = 100_000
MAX_ADDRESS = 254  # RFC 5321's path limit, and OutboundMessage.to's length

EMAIL_CLINICAL_DATA_NOTE = (
    "keep it out of emails: email is not a private channel and is often read on shared "
    "devices (say “your results are ready in the patient portal” instead)"
)
# No "localhost" exception (Django allows it by default): no patient lives there.
_validate_email = EmailValidator(allowlist=[])


def email_problem(value: str) -> str:
    """Why `value` is not an email address, or ""."""
    address = value.strip()
    if len(address) > MAX_ADDRESS:
        return "is too long for an email address"
    try:
        _validate_email(address)
    except ValidationError:
        return "is not a valid email address"
    return ""


SEND_EMAIL = Function(
    name="sendEmail",
    label="Send email",
    parameters=(
        Parameter(
            "subject",
            "Subject",
            "The subject line. Use {{variables}} to personalise it.",
            example="Your order {{order.number}} has shipped",
            translatable=True,
        ),
        Parameter(
            "body",
            "Body",
            "The email as plain text (every client can show it).",
            example="Hi {{customer.firstName}},\n\nyour order {{order.number}} has shipped!",
            multiline=True,
            translatable=True,
        ),
        Parameter(
            "html",
            "HTML body",
            "Optional: the same email as HTML, for clients that show it.",
            required=False,
            kind="html",
            multiline=True,
            translatable=True,
        ),
        Parameter(
            "to",
            "To",
            "The recipient, normally {{customer.email}}.",
            example="{{customer.email}}",
            check=email_problem,
        ),
        Parameter(
            "from",
            "From",
            "One of the clinic's verified sender addresses.",
            example="clinic@example.com",
            # No check here: whether it is one of the clinic's verified senders says more.
        ),
    ),
    clinical_data_note=EMAIL_CLINICAL_DATA_NOTE,
    channel="email",
    preview_parameter="body",
    sender_parameter="from",
    sender_noun=SenderNoun(
        one="a verified sender address",
        many="verified sender addresses",
        choose="Choose an address…",
        none="No verified sender addresses yet",
        unlisted="(not a verified sender address)",
    ),
)


def email_integration(organization: Organization) -> Integration | None:
    """The clinic's enabled email integration (the first, if there are several)."""
    enabled = Integration.objects.filter(
        organization=organization, adapter=ADAPTER, enabled=True
    ).order_by("pk")
    return next(iter(enabled[:1]), None)


def recipient_patient(
    organization: Organization, customer: Patient | None, to: str
) -> Patient | None:
    """The patient an email to `to` goes to: the event's customer when the address is
    theirs, otherwise the one patient of this clinic with that address."""
    if customer is not None and customer.email and customer.email.lower() == to.lower():
        return customer
    matches = list(Patient.objects.filter(organization=organization, email__iexact=to)[:2])
    return matches[0] if len(matches) == 1 else None


def addresses_problem(inputs: Mapping[str, str], senders: Iterable[str]) -> str:
    """Why a step's rendered To or From cannot be emailed, or "". A {{variable}} can render
    to anything; unsaid here, it was "not a patient of this clinic" later, or a refusal
    by the provider."""
    for label, name in (("To", "to"), ("From", "from")):
        address = inputs.get(name, "").strip()
        if email_problem(address):
            shown = address if len(address) <= 40 else address[:39] + "…"
            return f"{label} “{shown}” is not a valid email address"
    sender = inputs.get("from", "").strip().lower()
    if sender not in (s.lower() for s in senders):
        return f"From “{sender}” is not one of this clinic's verified senders"
    return ""


def _subject(inputs: Mapping[str, str]) -> str:
    # A rendered variable may hold line breaks; a header may not.
    return " ".join(inputs.get("subject", "").split())


def _content(inputs: Mapping[str, str]) -> dict[str, str]:
    return {"subject": _subject(inputs), "html": inputs.get("html", "")}


def _warnings(*, subject: str | None, body: str) -> list[str]:
    warnings = []
    if subject is not None and not subject:
        warnings.append("the subject is empty")
    if subject and len(subject) > LONG_SUBJECT:
        warnings.append(f"the subject is over {LONG_SUBJECT} characters: inboxes will cut it")
    if not body.strip():
        warnings.append("the body is empty")
    if len(body) > LONG_BODY:
        warnings.append("the body is very long: some inboxes clip it")
    return warnings


class EmailAdapter(Adapter):
    name = "email"
    label = "Email"
    functions = {SEND_EMAIL.name: SEND_EMAIL}

    def execute(self, *, function: str, context: StepContext) -> Outcome:
        fields = self.message_fields(function, context=context)
        if isinstance(fields, Outcome):
            return fields
        accepted = step_accepted(context, adapter=ADAPTER)
        return _outcome(step_deliver(context, accepted=accepted, **fields))

    def message_fields(self, function: str, *, context: StepContext) -> dict[str, Any] | Outcome:
        if function != SEND_EMAIL.name:
            return Outcome("failed", reason=f"Email has no function {function!r}")
        integration = step_integration(context, adapter=ADAPTER, lookup=email_integration)
        if integration is None:
            return Outcome("failed", reason="this clinic has no enabled email integration")
        problem = addresses_problem(context.inputs, email_account(integration).senders)
        if problem:
            return Outcome("skipped", reason=problem)
        to = context.inputs["to"].strip()
        return {
            "integration": integration,
            "channel": "email",
            "to": to,
            "from_number": context.inputs["from"].strip(),
            "body": context.inputs["body"],
            "content": _content(context.inputs),
            "patient": recipient_patient(context.organization, context.patient, to),
        }

    def setup_problem(self, organization: Organization) -> str:
        integration = email_integration(organization)
        if integration is None:
            return "this clinic has no enabled email integration"
        account = email_account(integration)
        if not account.senders:
            return "this clinic's email integration has no verified sender address"
        return ""

    def senders(self, organization_ids: Iterable[int] | None) -> dict[int, list[str]]:
        integrations = Integration.objects.filter(adapter=ADAPTER, enabled=True).order_by("pk")
        if organization_ids is not None:
            integrations = integrations.filter(organization_id__in=list(organization_ids))
        found: dict[int, list[str]] = {}
        for integration in integrations:
            known = found.setdefault(integration.organization_id, [])
            known.extend(s for s in email_account(integration).senders if s not in known)
        return found

    def preview(self, function: str, text: str) -> dict[str, Any]:
        return {
            "text": text,
            "characters": len(text),
            "lines": text.count("\n") + 1 if text else 0,
            "warnings": _warnings(subject=None, body=text),
        }

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
        integration = email_integration(organization)
        if integration is None:
            return DryRunResult("error", "this clinic has no enabled email integration")
        problem = addresses_problem(inputs, email_account(integration).senders)
        if problem:  # as the engine says it (the send-time checks never see such a message)
            return DryRunResult("skip", f"would not send: {problem}")
        to = inputs.get("to", "").strip()
        body = inputs.get("body", "")
        content = _content(inputs)
        # The email columns of the messaging core (issue 15, section 2).
        email_fields: dict[str, Any] = {"channel": "email", "content": content}
        message = OutboundMessage(
            organization=organization,
            integration=integration,
            patient=recipient_patient(organization, patient, to),
            to=to,
            from_number=inputs.get("from", "").strip(),
            body=body,
            purpose=purpose,
            urgent=urgent,
            **email_fields,
        )
        preview = {
            "to": to,
            "from": message.from_number,
            "subject": content["subject"],
            "body": body,
            "html": content["html"],
            "characters": len(body),
            "warnings": _warnings(subject=content["subject"], body=body),
        }
        return message_dry_run(message, clock=clock, preview=preview)

    def error_explanation(self, code: str) -> str:
        return email_error_explanation(code)


def _outcome(message: OutboundMessage) -> Outcome:
    return message_step_outcome(
        message, provider_label="email", result={"provider_id": message.provider_sid}
    )
