"""Twilio → sendSMS, the first adapter."""

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from integrations.first_contact import clinic_wording, first_contact_due
from integrations.message_steps import (
    message_dry_run,
    message_step_outcome,
    step_accepted,
    step_deliver,
    step_integration,
)
from integrations.models import OutboundMessage
from integrations.policy import messaging_policy
from integrations.short_links import link_settings, links_note, links_preview
from integrations.twilio.errors import error_explanation
from integrations.twilio.integration import NO_INTEGRATION, twilio_integration, twilio_senders
from integrations.twilio.media import media_url_problem
from integrations.twilio.numbers import numbers_problem, recipient_patient
from integrations.twilio.previews import sms_dry_run_preview, sms_preview
from patients.models import Organization, Patient
from patients.phones import e164_problem
from workflows.adapters import (
    Adapter,
    Conversation,
    DryRunResult,
    Function,
    Outcome,
    Parameter,
    SenderNoun,
    StepContext,
)

QUEUED_FOR_THROUGHPUT = "queued: waiting for this sending number's turn (Twilio's throughput limit)"

SEND_SMS = Function(
    name="sendSMS",
    label="Send SMS",
    parameters=(
        Parameter(
            "message",
            "Message",
            "The text to send. Use {{variables}} to personalise it.",
            example="Hi {{customer.firstName}}, your order {{order.number}} has shipped!",
            translatable=True,
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
        Parameter(
            "media",
            "Media URL",
            "Optional: an https link to an image (JPEG, PNG, GIF) or a PDF, up to 5 MB, sent "
            "with the text as an MMS (US and Canadian numbers; billed per MMS).",
            required=False,
            example="https://example.com/instructions.pdf",
            check=media_url_problem,
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
    conversation=True,
)


class TwilioAdapter(Adapter):
    name = "twilio"
    label = "Twilio"
    functions = {SEND_SMS.name: SEND_SMS}

    def execute(self, *, function: str, context: StepContext) -> Outcome:
        fields = self.message_fields(function, context=context)
        if isinstance(fields, Outcome):
            return fields
        accepted = step_accepted(context, adapter="twilio")
        return _outcome(step_deliver(context, accepted=accepted, **fields))

    def message_fields(self, function: str, *, context: StepContext) -> dict[str, Any] | Outcome:
        if function != SEND_SMS.name:
            return Outcome("failed", reason=f"Twilio has no function {function!r}")
        integration = step_integration(context, adapter="twilio", lookup=twilio_integration)
        if integration is None:
            return Outcome("failed", reason=NO_INTEGRATION)
        to = context.inputs["to"].strip()
        problem = numbers_problem(context.inputs)
        if problem:
            return Outcome("skipped", reason=problem)
        media_url = context.inputs.get("media", "").strip()
        problem = media_url_problem(media_url)
        if problem:  # a templated URL, rendered now: nothing is sent
            return Outcome("failed", reason=f"Media URL: {problem}")
        return {
            "integration": integration,
            "to": to,
            "from_number": context.inputs["from"].strip(),
            "body": context.inputs["message"],
            "media_url": media_url,
            "patient": recipient_patient(context.organization, context.patient, to),
        }

    def setup_problem(self, organization: Organization) -> str:
        return "" if twilio_integration(organization) is not None else NO_INTEGRATION

    def senders(self, organization_ids: Iterable[int] | None) -> dict[int, list[str]]:
        return twilio_senders(organization_ids)

    def preview(self, function: str, text: str) -> dict[str, Any]:
        return sms_preview(text)

    def preview_for(
        self,
        function: str,
        text: str,
        *,
        organization: Organization | None,
        inputs: Mapping[str, str],
        language: str = "",
    ) -> dict[str, Any]:
        wording = links = None
        if organization is not None:
            policy = messaging_policy(organization.pk)
            wording = clinic_wording(policy, organization, language=language)
            links = link_settings(policy)
        return sms_preview(text, wording=wording, media_url=inputs.get("media", ""), links=links)

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
        integration = twilio_integration(organization)
        if integration is None:
            return DryRunResult("error", NO_INTEGRATION)
        problem = numbers_problem(inputs)
        if problem:  # as the engine says it (the send-time checks never see such a message)
            return DryRunResult("skip", f"would not send: {problem}")
        to = inputs.get("to", "").strip()
        media_url = inputs.get("media", "").strip()
        problem = media_url_problem(media_url)
        if problem:  # as the engine says it
            return DryRunResult("error", f"Media URL: {problem}")
        message = OutboundMessage(
            organization=organization,
            integration=integration,
            patient=recipient_patient(organization, patient, to),
            to=to,
            from_number=inputs.get("from", "").strip(),
            body=inputs.get("message", ""),
            media_url=media_url,
            purpose=purpose,
            urgent=urgent,
        )
        # The body as it would go out: its links as short as they will be, with the clinic's
        # first-contact wording if no text that carried it has reached this number (within
        # the interval).
        policy = messaging_policy(organization.pk)
        links = link_settings(policy)
        links_shown = ""
        if links is not None:
            message.body, count = links_preview(message.body, links)
            links_shown = links_note(links, count) if count else ""
        wording = clinic_wording(policy, organization)
        note = ""
        if wording is not None:
            if first_contact_due(message, wording, now=clock):
                message.body = wording.apply(message.body)
                note = f"first text to this number: the clinic's wording is {wording.when}"
            else:
                note = f"the clinic's wording is left out: this number had it ({wording.when})"
        preview = sms_dry_run_preview(message)
        if note:
            preview["first_contact"] = note
        if links_shown:
            preview["short_links"] = links_shown
        return message_dry_run(message, clock=clock, preview=preview)

    def error_explanation(self, code: str) -> str:
        return error_explanation(code)

    def conversation(
        self, function: str, *, inputs: Mapping[str, str], result: Mapping[str, Any]
    ) -> Conversation | None:
        if function != SEND_SMS.name or not result.get("message_id"):
            return None
        sender = str(inputs.get("from", "")).strip()
        if not sender:  # sent through a Messaging Service: the number Twilio chose
            sender = (
                OutboundMessage.objects.filter(pk=result["message_id"])
                .values_list("from_number", flat=True)
                .first()
                or ""
            )
        return Conversation(
            patient=str(inputs.get("to", "")).strip(),
            sender=sender,
            question=str(result["message_id"]),
        )


def _outcome(message: OutboundMessage) -> Outcome:
    return message_step_outcome(
        message,
        provider_label="Twilio",
        result={"sid": message.provider_sid, "segments": message.segments},
        queued_reason=QUEUED_FOR_THROUGHPUT,
    )
