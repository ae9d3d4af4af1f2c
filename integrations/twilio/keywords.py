"""Inbound SMS: opt-out/opt-in/help keywords, staff review of free-text revocations, and
the message.inbound event.

Keywords match the whole message, as Twilio's do, but after `common.keywords.keyword_normalize`
(the one normalisation, shared with the answers a Wait-for-reply step branches on).
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import IntegrityError, transaction

from common.keywords import keyword_normalize, keyword_read
from integrations.first_contact import keyword_reply
from integrations.models import InboundMessage, Integration
from integrations.policy import messaging_policy
from patients.models import ConsentRecord, Organization, Patient
from patients.services import inbound_message_record
from workflows.conversations import reply_receive, reply_waits_cancel

# What Twilio itself blocks and confirms on a long code: the exact word, trimmed, any case
# (Twilio's Advanced Opt-Out guide; the wording of that confirmation is set in Twilio's
# console). For any other opt-out careflow recognises, Twilio sends nothing, so careflow sends
# the one confirmation the FCC rule allows, in the clinic's wording
# (MessagingPolicy.stop_confirmation_reply).
TWILIO_OPT_OUT_KEYWORDS = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
)
# Free text that may be a request to stop, by "any reasonable means": a person decides.
REVOCATION = re.compile(
    r"\b(stop|unsubscribe|revoke|opt[\s-]*out|remove me|take me off|leave me alone|"
    r"(do not|don'?t|dont|never) (text|message|sms|contact|send)|no more (texts?|messages?|sms))\b",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class KeywordMatch:
    action: str
    keyword: str  # the listed keyword matched, e.g. "OPT OUT"; "" for free text
    language: str = ""  # the keyword's language, e.g. "es" for PARAR; "" for free text


def keyword_match(body: str, *, languages: Iterable[str] = ()) -> KeywordMatch:
    """Which keyword `body` is, once normalised: the whole message must be the keyword, in
    English or one of `languages` (the clinic's enabled ones)."""
    family, keyword, language = keyword_read(body, languages=languages)
    # The families are named as the actions are ("opt_out", "opt_in", "help").
    return KeywordMatch(family or InboundMessage.Action.NONE, keyword, language)


def reply_language(match: KeywordMatch, patients: list[Patient], organization: Organization) -> str:
    """The language to answer a keyword in: the keyword's own when it is not English (who
    texts PARAR reads Spanish), else the patient's preferred language if the clinic enables
    it, else "" (the clinic's own wording)."""
    if match.language and match.language != "en":
        return match.language
    wanted = patients[0].language if patients else ""
    return wanted if wanted in organization.enabled_languages else ""


def keyword_action(body: str) -> str:
    return keyword_match(body).action


def reads_like_revocation(body: str) -> bool:
    """Free text a person should read: it may be a request to stop by other words."""
    return bool(REVOCATION.search(keyword_normalize(body)))


def twilio_handles_opt_out(body: str) -> bool:
    """Whether Twilio itself treats `body` as an opt-out (and blocks and confirms it)."""
    return body.strip().upper() in TWILIO_OPT_OUT_KEYWORDS


@dataclass(frozen=True, slots=True)
class InboundResult:
    message: InboundMessage
    reply: str | None
    created: bool


def _opt_out(patient: Patient, inbound: InboundMessage, keyword: str) -> None:
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
                "keyword": keyword,
            },
        )


def _opt_in_restore(patient: Patient, inbound: InboundMessage, keyword: str) -> None:
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
                "keyword": keyword,
                "restored_from": previous.pk,
            },
        )


def _already_opted_out(organization_id: int, from_: str) -> bool:
    """Whether this number's latest opt-out or opt-in keyword here was an opt-out."""
    latest = (
        InboundMessage.objects.filter(
            organization_id=organization_id,
            from_number=from_,
            action__in=[InboundMessage.Action.OPT_OUT, InboundMessage.Action.OPT_IN],
        )
        .order_by("-created_at", "-id")
        .values_list("action", flat=True)
        .first()
    )
    return latest == InboundMessage.Action.OPT_OUT


def inbound_sms_receive(
    *, integration: Integration, sid: str, from_: str, to: str, body: str
) -> InboundResult:
    """Handle one inbound SMS exactly once (Twilio may deliver a webhook more than once).

    An opt-out Twilio does not itself recognise ("STOP!", "OPT OUT", "ＳＴＯＰ") gets no reply
    from Twilio, so careflow confirms it once, as the FCC rule allows; a repeat while the
    number is already opted out gets no further text.

    Free text (and an opt-in word from a number that has not opted out) is offered to the
    question waiting for this number's reply (workflows.conversations); an opt-out ends the
    number's waits in this clinic. Both happen in the transaction that records the message,
    so a redelivered webhook (its MessageSid already recorded) routes nothing twice."""
    organization = integration.organization
    match = keyword_match(body, languages=organization.enabled_languages)
    # PostgreSQL's text and jsonb cannot hold NUL. Twilio does not send one, but a signed
    # request must not fail (and its STOP be lost): the text is kept, U+FFFD where NUL was.
    body, from_, to = (value.replace("\x00", "\ufffd") for value in (body, from_, to))
    action = match.action
    reply = None
    patients = list(Patient.objects.filter(organization=organization, phone=from_).order_by("id"))
    language = reply_language(match, patients, organization)
    if action == InboundMessage.Action.HELP:
        reply = keyword_reply(
            messaging_policy(organization.pk), organization, "help", language=language
        )
    elif (
        action == InboundMessage.Action.OPT_OUT
        and not twilio_handles_opt_out(body)
        and not _already_opted_out(organization.pk, from_)
    ):
        reply = keyword_reply(
            messaging_policy(organization.pk), organization, "opt_out", language=language
        )
    # YES (or START) from a number that has not opted out changes no consent: it is an
    # answer ("reply YES to confirm"). From an opted-out number it is only the opt-in.
    answer = action == InboundMessage.Action.NONE or (
        action == InboundMessage.Action.OPT_IN and not _already_opted_out(organization.pk, from_)
    )
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
                needs_review=action == InboundMessage.Action.NONE and reads_like_revocation(body),
            )
            # Everyone at this number: a STOP from a shared family phone stops them all.
            for patient in patients:
                if action == InboundMessage.Action.OPT_OUT:
                    _opt_out(patient, inbound, match.keyword)
                elif action == InboundMessage.Action.OPT_IN:
                    _opt_in_restore(patient, inbound, match.keyword)
            if action == InboundMessage.Action.OPT_OUT:
                reply_waits_cancel(
                    organization_id=organization.pk,
                    phone=from_,
                    reason=f"the patient opted out ({match.keyword})",
                )
            elif answer:
                reply_receive(
                    organization_id=organization.pk,
                    phone=from_,
                    sender=to,
                    text=body,
                    inbound_ref=sid,
                )
            inbound_message_record(
                organization=organization, from_=from_, to=to, body=body, provider_sid=sid
            )
    except IntegrityError:
        existing = InboundMessage.objects.get(provider_sid=sid)
        return InboundResult(existing, reply, created=False)
    return InboundResult(inbound, reply, created=True)
