"""May we message this person now? Every check runs at send time, not when the run started,
so a consent withdrawn while a message waited is honoured.

The checks, in order: consent for the message's channel and purpose → no opt-out since →
frequency caps (counted per channel) → smart sending (marketing only) → quiet hours → approved sender → valid recipient (the
last two as the provider's transport judges them). Caps and quiet hours are the rules of the
message's channel (MessagingPolicy.rules), plus the state rules for channels they bind. The first that fails decides; every check
that ran is recorded with the message, with the consent record relied on.
"""

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone

from integrations.messaging import transport_get
from integrations.models import MessagingPolicy, OutboundMessage
from integrations.quiet_hours import (
    STRICT_STATE_DAILY_LIMIT,
    STRICT_STATES,
    effective_window,
    next_allowed,
    recipient_whereabouts,
)
from patients.consent import (  # noqa: F401 — the sources are re-exported for the policy's readers
    CHANNEL_WIDE_SOURCES,
    CONSENT_HISTORY,
    WRITTEN_SOURCES,
    channel_consent_history,
    consent_verdict,
)
from patients.models import ConsentRecord
from workflows.adapters import adapter_get

Status = OutboundMessage.Status
# The checks by name, in the order send_decide makes them (a dry run lists those after the
# first failure as "not checked").
SEND_CHECKS = (
    "consent",
    "opt-out",
    "frequency cap",
    "smart sending",
    "quiet hours",
    "sender",
    "recipient",
)
# Messages that count towards caps: everything that reached, or may have reached, the
# provider.
COUNTED_STATUSES = (
    Status.SENDING,
    Status.SENT,
    Status.DELIVERED,
    Status.UNDELIVERED,
    Status.UNKNOWN,
)


def _noun(channel: str) -> str:
    """What the caps count, in a reason a clinic reads."""
    return "text(s)" if channel == "sms" else f"{channel} message(s)"


@dataclass
class SendDecision:
    allowed: bool = True
    reason: str = ""
    consent_record: ConsentRecord | None = None
    defer_until: datetime | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    rules: str = ""  # which rules the caps and quiet hours came from (ChannelRules.label)

    def passed(self, check: str, detail: str) -> None:
        self.checks.append({"check": check, "ok": True, "detail": detail})

    def failed(
        self, check: str, reason: str, *, defer_until: datetime | None = None
    ) -> "SendDecision":
        self.allowed, self.reason, self.defer_until = False, reason, defer_until
        self.checks.append({"check": check, "ok": False, "detail": reason})
        return self

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "at": now.isoformat(),
            "allowed": self.allowed,
            "reason": self.reason,
            "defer_until": self.defer_until.isoformat() if self.defer_until else None,
            "consent_record_id": self.consent_record.pk if self.consent_record else None,
            "rules": self.rules,
            "checks": self.checks,
        }


# Policies change rarely and are read for every send: each process keeps them briefly.
POLICY_CACHE_SECONDS = 5.0
_policies: dict[int, tuple[float, MessagingPolicy]] = {}


def messaging_policy(organization_id: int) -> MessagingPolicy:
    cached = _policies.get(organization_id)
    if cached is not None and time.monotonic() - cached[0] < POLICY_CACHE_SECONDS:
        return cached[1]
    policy, _ = MessagingPolicy.objects.get_or_create(organization_id=organization_id)
    _policies[organization_id] = (time.monotonic(), policy)
    return policy


def messaging_policy_forget(organization_id: int | None = None) -> None:
    """Drop cached policies (after an edit in this process, or between tests)."""
    if organization_id is None:
        _policies.clear()
    else:
        _policies.pop(organization_id, None)


def _phone_rules(message: OutboundMessage) -> bool:
    """Whether the state rules for texts and calls bind the message's channel; a message
    whose transport is not registered is held to them."""
    try:
        return transport_get(message.integration.adapter).phone_rules
    except LookupError:
        return True


def send_needs_lock(*, message: OutboundMessage) -> bool:
    """Whether a frequency cap or smart sending may apply to this send (then it must hold the
    patient's lock): a cap in the rules of the message's channel, a state's daily limit for
    texts, or smart sending for a marketing message."""
    policy = messaging_policy(message.organization_id)
    rules = policy.rules(message.channel)
    if rules.cap(message.purpose, "day") is not None or rules.cap(message.purpose, "week"):
        return True
    # Smart sending counts the patient's messages as a cap does: two marketing messages
    # decided at once must not both find the other not yet sent.
    if policy.smart_sending_hours and message.purpose == ConsentRecord.Purpose.MARKETING:
        return True
    strict = recipient_whereabouts(message.patient, message.to).states & set(STRICT_STATES)
    return bool(strict) and _phone_rules(message)


def _hours(count: int) -> str:
    return f"{count} hour{'s' if count != 1 else ''}"


def _smart_sending(
    decision: SendDecision, *, message: OutboundMessage, policy: MessagingPolicy, now: datetime
) -> bool:
    """Smart sending: a marketing message is skipped (not deferred: a promotion that waits a
    day is not the one the clinic meant to send) when this patient was sent any message, of
    any channel and purpose, in the last N hours. Counted as the caps count: messages that
    reached or may have reached the provider (COUNTED_STATUSES), by when sending started;
    test messages are not the patient's experience and do not count. The query is made only
    when the option is on and the message is marketing: the common send pays nothing."""
    hours = policy.smart_sending_hours
    if not hours:
        decision.passed("smart sending", "off")
        return True
    if message.purpose != ConsentRecord.Purpose.MARKETING:
        decision.passed("smart sending", f"only for marketing messages (within {_hours(hours)})")
        return True
    last = (
        OutboundMessage.objects.filter(
            patient=message.patient,
            status__in=COUNTED_STATUSES,
            is_test=False,
            sending_started_at__gte=now - timedelta(hours=hours),
        )
        .exclude(pk=message.pk)
        .order_by("-sending_started_at")
        .values_list("sending_started_at", flat=True)
        .first()
    )
    if last is not None:
        ago = max(1, int((now - last).total_seconds() // 60))
        since = f"{ago} minute{'s' if ago != 1 else ''}" if ago < 120 else _hours(ago // 60)
        decision.failed(
            "smart sending",
            f"smart sending: this patient was sent a message {since} ago, within the "
            f"clinic's {_hours(hours)} for marketing messages",
        )
        return False
    decision.passed("smart sending", f"no message to this patient in the last {_hours(hours)}")
    return True


def send_decide(*, message: OutboundMessage, now: datetime | None = None) -> SendDecision:
    """Decide whether `message` may go out at `now`; the first failing check gives the reason.
    A quiet-hours failure is a deferral (`defer_until`), never a refusal, unless a state's
    rules leave no hour of the clinic's window."""
    now = now or timezone.now()
    decision = SendDecision()
    patient = message.patient
    if patient is None:
        return decision.failed("consent", "recipient is not a patient of this clinic")

    # The channel's whole (short) consent history in one query (or read with the patient for
    # a batch), judged by the rule the patient's page and acceptMarketing show
    # (patients.consent).
    verdict = consent_verdict(
        channel_consent_history(patient, message.channel),
        purpose=message.purpose,
        channel=message.channel,
    )
    consent = verdict.opt_in
    if consent is None:
        return decision.failed("consent", verdict.reason)
    decision.consent_record = consent
    decision.passed(
        "consent",
        f"{message.purpose} opt-in #{consent.pk} "
        f"({consent.get_source_display()}, {consent.occurred_at:%Y-%m-%d})",
    )
    if verdict.check == "opt-out":
        return decision.failed("opt-out", verdict.reason)
    decision.passed("opt-out", "no opt-out since")

    # The channel's own rules if the clinic set them, else its default rules; every check
    # below says which applied when they are the channel's own.
    policy = messaging_policy(message.organization_id)
    rules = policy.rules(message.channel)
    decision.rules = rules.label
    which = f" ({rules.label})" if rules.own else ""
    whereabouts = recipient_whereabouts(patient, message.to)
    # The state rules, for the channels they bind (DOMAIN.md §5; Transport.phone_rules).
    strict = whereabouts.states & set(STRICT_STATES)
    if strict and not _phone_rules(message):
        strict = frozenset()

    # Caps count the messages of this channel only: texts do not use up an email cap.
    # Built only for a cap that applies: building a queryset costs more Python than the
    # rest of a send's checks, and most sends are under no cap.
    def sent() -> QuerySet[OutboundMessage]:
        return OutboundMessage.objects.filter(
            patient=patient, channel=message.channel, status__in=COUNTED_STATUSES
        ).exclude(pk=message.pk)

    for period, days in (("day", 1), ("week", 7)):
        cap = rules.cap(message.purpose, period)
        if cap is not None:
            count = (
                sent()
                .filter(purpose=message.purpose, sending_started_at__gte=now - timedelta(days=days))
                .count()
            )
            if count >= cap:
                return decision.failed(
                    "frequency cap",
                    f"frequency cap: at most {cap} {message.purpose} "
                    f"{_noun(message.channel)} per {period} for this patient{which}",
                )
    if strict:
        count = sent().filter(sending_started_at__gte=now - timedelta(days=1)).count()
        if count >= STRICT_STATE_DAILY_LIMIT:
            return decision.failed(
                "frequency cap",
                f"frequency cap: at most {STRICT_STATE_DAILY_LIMIT} texts in 24 "
                f"hours for recipients in {'/'.join(sorted(strict))}",
            )
    decision.passed("frequency cap", f"within the clinic's caps{which}")

    if not _smart_sending(decision, message=message, policy=policy, now=now):
        return decision

    window = effective_window(rules.start, rules.end, strict)
    zones = ", ".join(whereabouts.zones)
    if not rules.quiet_hours:
        # Only a channel the rules for texts and calls do not bind can have them off
        # (validate_channel_rules).
        decision.passed("quiet hours", f"off for {message.channel}{which}")
    elif message.urgent:
        decision.passed("quiet hours", "bypassed: urgent transactional step")
    else:
        allowed_at = next_allowed(now, whereabouts.zones, window)
        if allowed_at is None:  # zones whose windows never overlap: take the first zone's
            allowed_at = next_allowed(now, whereabouts.zones[:1], window)
        if allowed_at is None:
            # Even one zone has no hour: a state's rules end the day before the clinic's
            # window starts (say 20:00–21:00 for Florida). No moment is lawful, so waiting
            # would never end and sending now is what the rules forbid.
            return decision.failed(
                "quiet hours",
                f"quiet hours: the clinic's window ({rules.start:%H:%M}–{rules.end:%H:%M}) "
                f"leaves no time to send to recipients in {'/'.join(sorted(strict))}, where "
                f"texts must stop at {window.end:%H:%M}{which}",
            )
        if allowed_at > now:
            return decision.failed(
                "quiet hours",
                f"quiet hours ({window.start:%H:%M}–{window.end:%H:%M} in {zones}, from "
                f"{whereabouts.source}): deferred to {allowed_at.isoformat()}{which}",
                defer_until=allowed_at,
            )
        decision.passed(
            "quiet hours",
            f"{window.start:%H:%M}–{window.end:%H:%M} in {zones} ({whereabouts.source}){which}",
        )

    integration = message.integration
    if not integration.enabled:
        return decision.failed(
            "sender",
            f"the clinic's {adapter_get(integration.adapter).label} integration is disabled",
        )
    transport = transport_get(integration.adapter)
    ok, detail = transport.sender_check(message)
    if not ok:
        return decision.failed("sender", detail)
    decision.passed("sender", detail)

    ok, detail = transport.recipient_check(message)
    if not ok:
        return decision.failed("recipient", detail)
    if message.is_test and not patient.is_test:
        return decision.failed("recipient", "test messages only go to test patients")
    decision.passed("recipient", detail)
    return decision
