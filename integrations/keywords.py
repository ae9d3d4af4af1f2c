"""Inbound SMS: opt-out/opt-in/help keywords, staff review of free-text revocations, and
the message.inbound event. Keywords match the whole body, case-insensitively, as Twilio's."""

import re
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from integrations.models import InboundMessage, Integration
from integrations.policy import messaging_policy
from patients.models import ConsentRecord, Patient
from patients.services import inbound_message_record

OPT_OUT_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN_KEYWORDS = frozenset({"START", "YES", "UNSTOP"})
HELP_KEYWORDS = frozenset({"HELP", "INFO"})
# Free text that may be a request to stop, by "any reasonable means": a person decides.
REVOCATION = re.compile(
    r"\b(stop|unsubscribe|opt[\s-]*out|remove me|take me off|leave me alone|"
    r"(do not|don'?t|dont|never) (text|message|sms|contact|send)|no more (texts?|messages?|sms))\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class InboundResult:
    message: InboundMessage
    reply: str | None
    created: bool


def keyword_action(body: str) -> str:
    word = body.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return InboundMessage.Action.OPT_OUT
    if word in OPT_IN_KEYWORDS:
        return InboundMessage.Action.OPT_IN
    if word in HELP_KEYWORDS:
        return InboundMessage.Action.HELP
    return InboundMessage.Action.NONE


def _opt_out(patient: Patient, inbound: InboundMessage) -> None:
    for purpose in ConsentRecord.Purpose.values:
        ConsentRecord.objects.create(
            patient=patient,
            purpose=purpose,
            action=ConsentRecord.Action.OPT_OUT,
            source=ConsentRecord.Source.INBOUND_KEYWORD,
            consent_text="",
            evidence={
                "inbound_message_id": inbound.pk,
                "sid": inbound.provider_sid,
                "keyword": inbound.body.strip().upper(),
            },
        )


def _opt_in_restore(patient: Patient, inbound: InboundMessage) -> None:
    """START restores what the patient had agreed to before they opted out, with the same
    consent text; it does not grant a consent (e.g. marketing) never given in writing."""
    for purpose in ConsentRecord.Purpose.values:
        history = ConsentRecord.objects.filter(
            patient=patient, purpose=purpose, channel=ConsentRecord.Channel.SMS
        )
        latest = history.order_by("-occurred_at", "-id").first()
        if latest is None or latest.action == ConsentRecord.Action.OPT_IN:
            continue
        previous = (
            history.filter(action=ConsentRecord.Action.OPT_IN)
            .order_by("-occurred_at", "-id")
            .first()
        )
        if previous is None:
            continue
        ConsentRecord.objects.create(
            patient=patient,
            purpose=purpose,
            action=ConsentRecord.Action.OPT_IN,
            source=ConsentRecord.Source.INBOUND_KEYWORD,
            consent_text=previous.consent_text,
            evidence={
                "inbound_message_id": inbound.pk,
                "sid": inbound.provider_sid,
                "keyword": inbound.body.strip().upper(),
                "restored_from": previous.pk,
            },
        )


def inbound_sms_receive(
    *, integration: Integration, sid: str, from_: str, to: str, body: str
) -> InboundResult:
    """Handle one inbound SMS exactly once (Twilio may deliver a webhook more than once)."""
    organization = integration.organization
    action = keyword_action(body)
    reply = None
    if action == InboundMessage.Action.HELP:
        reply = messaging_policy(organization.pk).help_text_reply.replace(
            "{clinic}", organization.name
        )
    patients = list(Patient.objects.filter(organization=organization, phone=from_).order_by("id"))
    try:
        with transaction.atomic():
            inbound = InboundMessage.objects.create(
                organization=organization,
                integration=integration,
                provider_sid=sid,
                from_number=from_,
                to=to,
                body=body,
                action=action,
                patient=patients[0] if patients else None,
                needs_review=action == InboundMessage.Action.NONE and bool(REVOCATION.search(body)),
            )
            # Everyone at this number: a STOP from a shared family phone stops them all.
            for patient in patients:
                if action == InboundMessage.Action.OPT_OUT:
                    _opt_out(patient, inbound)
                elif action == InboundMessage.Action.OPT_IN:
                    _opt_in_restore(patient, inbound)
            inbound_message_record(
                organization=organization, from_=from_, to=to, body=body, provider_sid=sid
            )
    except IntegrityError:
        existing = InboundMessage.objects.get(provider_sid=sid)
        return InboundResult(existing, reply, created=False)
    return InboundResult(inbound, reply, created=True)
