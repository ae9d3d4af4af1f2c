"""Compliant first contact: the clinic's brand prefix and opt-out wording on the first text to
a number and again every N days, and the clinic's replies to HELP and to an opt-out.

Carriers expect a text to say who sends it and how to stop them (CTIA; DOMAIN.md §5), at
least on first contact. Whether a message is that first contact is decided once, when it is
claimed for sending (integrations.sending), under a lock on the clinic and number, and the
final body is recorded in the claim itself, before the provider is called: a retried,
redelivered or reconciled send goes out (and is looked up) with exactly the body recorded.

The wording is read through `clinic_wording` and `keyword_reply`, which take a language: the
clinic's wording in that language (`MessagingPolicy.translations`), else the policy's own.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from common.db import advisory_xact_lock
from integrations.messaging import body_measure, transport_get
from integrations.models import MessagingPolicy, OutboundMessage
from integrations.policy import messaging_policy
from patients.models import Organization

Status = OutboundMessage.Status

# Messages that may have reached the recipient: one of these that carried the wording counts
# as the recipient having seen it (a refused or undelivered one did not reach them).
REACHED_STATUSES = (Status.SENDING, Status.SENT, Status.DELIVERED, Status.UNKNOWN)


@dataclass(frozen=True, slots=True)
class ClinicWording:
    """What a clinic adds to a first contact: `prefix` ("Sunrise Telehealth: ", or "") and
    `suffix` (" Reply STOP to opt out.", or ""), and how often (`every_days`; None: the first
    text to a number only)."""

    prefix: str
    suffix: str
    every_days: int | None

    def apply(self, body: str) -> str:
        """`body` with the wording, each part left out when the body already has it."""
        stripped = body.strip()
        if self.prefix and not stripped.lower().startswith(self.prefix.rstrip(": ").lower()):
            body = self.prefix + body
        if self.suffix and self.suffix.strip().lower() not in stripped.lower():
            body = body.rstrip() + self.suffix
        return body

    @property
    def when(self) -> str:
        """When it is added, as the preview says it."""
        if self.every_days:
            days = "day" if self.every_days == 1 else f"{self.every_days} days"
            return f"added to the first text to a number, and again every {days}"
        return "added to the first text to a number"


def clinic_wording(
    policy: MessagingPolicy, organization: Organization, *, language: str = ""
) -> ClinicWording | None:
    """The clinic's first-contact wording, its opt-out wording in `language` if the clinic
    worded it so (`MessagingPolicy.translations`; else the policy's own), or None when the
    clinic adds none."""
    if not policy.first_contact_enabled:
        return None
    brand = (policy.brand_name or organization.name).strip()
    prefix = f"{brand}: " if policy.brand_prefix and brand else ""
    wording = policy.text("opt_out_wording", language).strip()
    suffix = f" {wording}" if wording else ""
    if not prefix and not suffix:
        return None
    return ClinicWording(prefix, suffix, policy.first_contact_every_days)


def message_wording(message: OutboundMessage) -> ClinicWording | None:
    """The wording that may apply to `message`: its clinic's, if its channel carries it."""
    try:
        if not transport_get(message.integration.adapter).first_contact_wording:
            return None
    except LookupError:
        return None
    policy = messaging_policy(message.organization_id)
    if not policy.first_contact_enabled:  # the clinic is read only when it is needed
        return None
    return clinic_wording(policy, message.organization, language=message.language)


def first_contact_due(message: OutboundMessage, wording: ClinicWording, *, now: datetime) -> bool:
    """Whether no text that carried the wording has reached this number from this clinic
    (within the interval, if the clinic repeats it). Test messages count as any other: a
    test patient sees what a patient would."""
    carried = OutboundMessage.objects.filter(
        organization_id=message.organization_id,
        to=message.to,
        channel=message.channel,
        first_contact=True,
        status__in=REACHED_STATUSES,
    )
    if message.pk is not None:
        carried = carried.exclude(pk=message.pk)
    if wording.every_days:
        carried = carried.filter(sending_started_at__gt=now - timedelta(days=wording.every_days))
    return not carried.exists()


def first_contact_lock(message: OutboundMessage) -> None:
    """Serialise the first-contact decisions for one clinic and number until the transaction
    ends: of two first texts claimed at once (two workflows), the one claimed first carries
    the wording and the other sees it, as the provider sends them in that order."""
    advisory_xact_lock(f"first-contact:{message.organization_id}:{message.channel}:{message.to}")


def first_contact_fields(
    message: OutboundMessage,
    wording: ClinicWording | None,
    *,
    now: datetime,
    body: str | None = None,
) -> dict[str, Any]:
    """The fields a claim records for the wording: the final body and its measure, and
    `first_contact`. Nothing when it was decided before (a retry of a claimed message keeps
    the body it was claimed with) or the channel carries no wording. `body`: the message's
    body as the claim has it so far (its links shortened), if not the recorded one."""
    if message.first_contact is not None:
        return {}
    if wording is None:
        try:
            carries = transport_get(message.integration.adapter).first_contact_wording
        except LookupError:
            carries = False
        return {"first_contact": False} if carries else {}
    if not first_contact_due(message, wording, now=now):
        return {"first_contact": False}
    body = wording.apply(message.body if body is None else body)
    characters, encoding, segments = body_measure(
        message.integration.adapter, body, media=bool(message.media_url)
    )
    return {
        "first_contact": True,
        "body": body,
        "characters": characters,
        "encoding": encoding,
        "segments": segments,
    }


KeywordReply = Literal["help", "opt_out"]


def keyword_reply(
    policy: MessagingPolicy, organization: Organization, kind: KeywordReply, *, language: str = ""
) -> str:
    """The clinic's reply to HELP ("help") or its confirmation of an opt-out ("opt_out"), with
    {clinic} filled in: in `language` if the clinic worded it so, else the policy's own."""
    name = "help_text_reply" if kind == "help" else "stop_confirmation_reply"
    text = policy.text(name, language)
    brand = (policy.brand_name or organization.name).strip()
    return text.replace("{clinic}", brand)
