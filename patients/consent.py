"""May a text for this purpose rely on the patient's consent? The rule over the append-only
consent history, in one place: the send-time policy (`integrations.policy`) asks it before
every send, the patient's admin page shows its answer, and the payload's
`customer.acceptMarketing` is its answer for marketing. Each reads the history its own way
(a batch's prefetch, one query, a subquery in the outbox INSERT); the rule is this module's.

The rule: the latest decision for the purpose (by when it happened, then by when it was
recorded) must be an opt-in; marketing needs it in writing (the consent text shown, from a
source that can carry a written consent); and no STOP-like opt-out (an inbound keyword, or
Twilio's 21610), recorded under any purpose, may have come after it.
"""

import functools
from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connections, router
from django.db.models import Exists, OuterRef, Prefetch, Q, Subquery

from patients.channels import consent_channel_word
from patients.models import ConsentRecord, Patient

Action, Purpose, Source = ConsentRecord.Action, ConsentRecord.Purpose, ConsentRecord.Source

# Opt-outs that stop every purpose: the patient texted STOP, or Twilio refused with 21610.
CHANNEL_WIDE_SOURCES = (Source.INBOUND_KEYWORD, Source.PROVIDER_ERROR)
# Sources by which a patient can give express written consent (needed for marketing).
WRITTEN_SOURCES = {
    Source.SIGNUP_FORM,
    Source.CHECKOUT,
    Source.PATIENT_PORTAL,
    Source.ADMIN,
    Source.IMPORT,
    Source.INBOUND_KEYWORD,
}
# Where a patient read for a batch of sends (or a page) carries its consent history, every
# channel's: the readers pick their channel's records from it.
CONSENT_HISTORY = "consent_history"


@dataclass(frozen=True, slots=True)
class ConsentVerdict:
    """What the history says for one purpose. `check` and `reason` name the send-time check
    that refuses and why, in the words the message log records; both empty when a text
    may rely on `opt_in`."""

    purpose: str
    latest: ConsentRecord | None
    opt_in: ConsentRecord | None
    opt_out: ConsentRecord | None
    check: str
    reason: str

    @property
    def allowed(self) -> bool:
        return not self.check


def _newest(records: Iterable[ConsentRecord]) -> ConsentRecord | None:
    return max(records, key=lambda r: (r.occurred_at, r.pk), default=None)


def _channel_word(channel: str) -> str:
    """How the reasons name a channel ("no email consent")."""
    return consent_channel_word(channel)


def opted_out_reason(record: ConsentRecord) -> str:
    return (
        f"opted out of {record.purpose} {_channel_word(record.channel)} on "
        f"{record.occurred_at:%Y-%m-%d} ({record.get_source_display()})"
    )


def consent_verdict(
    history: Iterable[ConsentRecord], *, purpose: str, channel: str = ""
) -> ConsentVerdict:
    """The verdict of a patient's consent history on one channel (all purposes) for
    `purpose`. `channel` names it in the reasons; blank: the history's own (SMS when
    there is none)."""
    history = list(history)
    channel = channel or next((r.channel for r in history), ConsentRecord.Channel.SMS)
    latest = _newest(r for r in history if r.purpose == purpose)
    if latest is None:
        return ConsentVerdict(
            purpose, None, None, None, "consent", f"no {_channel_word(channel)} consent"
        )
    if latest.action != Action.OPT_IN:
        return ConsentVerdict(purpose, latest, None, None, "consent", opted_out_reason(latest))
    if purpose == Purpose.MARKETING and not (
        latest.consent_text.strip() and latest.source in WRITTEN_SOURCES
    ):
        return ConsentVerdict(
            purpose,
            latest,
            None,
            None,
            "consent",
            "marketing needs express written consent (the consent text shown must be recorded)",
        )
    # STOP (or Twilio's 21610) means stop everything: a channel-wide opt-out recorded under
    # any purpose after this opt-in wins, even if its own purpose's record were missing.
    opt_out = _newest(
        r
        for r in history
        if r.action == Action.OPT_OUT
        and r.source in CHANNEL_WIDE_SOURCES
        and (r.occurred_at, r.pk) > (latest.occurred_at, latest.pk)
    )
    if opt_out is not None:
        return ConsentVerdict(
            purpose, latest, latest, opt_out, "opt-out", opted_out_reason(opt_out)
        )
    return ConsentVerdict(purpose, latest, latest, None, "", "")


def keyword_opt_out(history: Iterable[ConsentRecord]) -> ConsentRecord | None:
    """The STOP-like opt-out (keyword, or Twilio's 21610) in force: the latest one, unless
    an opt-in of any purpose came after it. While it is in force no purpose's verdict
    allows a text (each purpose's latest decision is either an opt-out, or an opt-in it
    overrides)."""
    history = list(history)
    opt_out = _newest(
        r for r in history if r.action == Action.OPT_OUT and r.source in CHANNEL_WIDE_SOURCES
    )
    if opt_out is None:
        return None
    opt_in = _newest(r for r in history if r.action == Action.OPT_IN)
    if opt_in is not None and (opt_in.occurred_at, opt_in.pk) > (opt_out.occurred_at, opt_out.pk):
        return None
    return opt_out


def consent_history_prefetch() -> Prefetch:
    """For a read of the patients a batch of messages goes to: their consent histories, every
    channel, in one query, which the send-time policy then uses instead of a query per
    message. Read when the batch starts (within a second of each send), not when the message
    was created."""
    return Prefetch("consents", queryset=ConsentRecord.objects.order_by(), to_attr=CONSENT_HISTORY)


def channel_consent_history(patient: Patient, channel: str) -> list[ConsentRecord]:
    """The patient's consent history on one channel: from what was read with the patient
    (`CONSENT_HISTORY`, for a batch), else in one query."""
    history: list[ConsentRecord] | None = getattr(patient, CONSENT_HISTORY, None)
    if history is None:
        return list(ConsentRecord.objects.filter(patient=patient, channel=channel).order_by())
    return [record for record in history if record.channel == channel]


def sms_consent_history(patient: Patient) -> list[ConsentRecord]:
    """The patient's SMS consent history (see `channel_consent_history`)."""
    return channel_consent_history(patient, ConsentRecord.Channel.SMS)


# Where a patient read with its query (`consent_allowed_sql` as an annotation) carries
# whether a marketing text may rely on its consent.
MARKETING_ALLOWED = "marketing_consent_allowed"


def patient_accepts_marketing(patient: Patient) -> bool:
    """`customer.acceptMarketing`: whether a marketing text could rely on the patient's
    consent now (quiet hours, caps and the like aside)."""
    known = patient.__dict__.get(MARKETING_ALLOWED)
    if known is not None:
        return bool(known)
    return consent_verdict(sms_consent_history(patient), purpose=Purpose.MARKETING).allowed


@functools.cache
def _whitespace_class() -> str:
    # What str.strip() removes, as regular-expression escapes (\\uXXXX) that PostgreSQL and
    # Python's re (SQLite's REGEXP) both read: a consent text of nothing but (any Unicode)
    # whitespace is no written consent, in SQL as in Python.
    spaces = (c for c in map(chr, range(0x110000)) if c.isspace())
    return "".join(f"\\u{ord(c):04x}" for c in spaces)


def consent_allowed_sql(*, purpose: str, patient_id: str) -> str:
    """`consent_verdict(…).allowed` as a PostgreSQL boolean expression, for the patient
    whose id is the SQL `patient_id` (a column of the enclosing query). A scalar subquery
    on the history's index: the outbox INSERT builds `customer.acceptMarketing` with it
    in its single statement. The constants are this module's, not caller input."""
    meta = ConsentRecord._meta
    quote = connections[router.db_for_read(ConsentRecord)].ops.quote_name
    table = quote(meta.db_table)
    columns = {field.name: field.column for field in meta.concrete_fields}

    def col(alias: str, name: str) -> str:
        return f"{alias}.{quote(columns[name])}"

    def literals(values: Iterable[str]) -> str:
        return ", ".join(f"'{value}'" for value in sorted(values))

    written = "TRUE"
    if purpose == Purpose.MARKETING:
        spaces = _whitespace_class().replace("\\", "\\\\")  # an E'' literal reads \\ as \
        written = (
            f"({col('c', 'source')} IN ({literals(WRITTEN_SOURCES)})"
            f" AND {col('c', 'consent_text')} ~ E'[^{spaces}]')"
        )
    later_opt_out = (
        f"SELECT 1 FROM {table} o WHERE {col('o', 'patient')} = {col('c', 'patient')}"  # noqa: S608 — names and constants of this module
        f" AND {col('o', 'channel')} = '{ConsentRecord.Channel.SMS}'"
        f" AND {col('o', 'action')} = '{Action.OPT_OUT}'"
        f" AND {col('o', 'source')} IN ({literals(CHANNEL_WIDE_SOURCES)})"
        f" AND ({col('o', 'occurred_at')}, {col('o', 'id')})"
        f" > ({col('c', 'occurred_at')}, {col('c', 'id')})"
    )
    latest = (
        f"SELECT {col('c', 'action')} = '{Action.OPT_IN}' AND {written}"  # noqa: S608 — as above
        f" AND NOT EXISTS ({later_opt_out})"
        f" FROM {table} c WHERE {col('c', 'patient')} = {patient_id}"
        f" AND {col('c', 'channel')} = '{ConsentRecord.Channel.SMS}'"
        f" AND {col('c', 'purpose')} = '{purpose}'"
        f" ORDER BY {col('c', 'occurred_at')} DESC, {col('c', 'id')} DESC LIMIT 1"
    )
    return f"COALESCE(({latest}), FALSE)"


def consent_allowed_q(*, purpose: str) -> Q:
    """`consent_verdict(…).allowed` on the SMS channel as a condition on Patient, for a
    filter over many patients (segments) on any database: the patient's latest decision
    for `purpose` is an opt-in (for marketing, written, with its text recorded) and no
    STOP-like opt-out came after it. The same rule as `consent_allowed_sql`, which the
    outbox's single INSERT needs as raw PostgreSQL."""
    sms = ConsentRecord.Channel.SMS
    latest = ConsentRecord.objects.filter(
        patient=OuterRef(OuterRef("pk")), channel=sms, purpose=purpose
    ).order_by("-occurred_at", "-id")
    later_opt_out = ConsentRecord.objects.filter(
        Q(occurred_at__gt=OuterRef("occurred_at"))
        | Q(occurred_at=OuterRef("occurred_at"), pk__gt=OuterRef("pk")),
        patient=OuterRef("patient"),
        channel=sms,
        action=Action.OPT_OUT,
        source__in=CHANNEL_WIDE_SOURCES,
    )
    relied_on = ConsentRecord.objects.filter(
        pk=Subquery(latest.values("pk")[:1]), action=Action.OPT_IN
    ).filter(~Exists(later_opt_out))
    if purpose == Purpose.MARKETING:
        relied_on = relied_on.filter(
            source__in=WRITTEN_SOURCES, consent_text__regex=f"[^{_whitespace_class()}]"
        )
    return Q(Exists(relied_on))
