"""Adapter integrations (per clinic, secrets encrypted), messaging policies and the message log."""

import uuid
from dataclasses import dataclass
from datetime import time
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models
from django.db.models import Q, Value
from django.utils import timezone

from common.keywords import LANGUAGE_KEYWORDS
from integrations.channels import registered_channels
from integrations.encryption import EncryptedJSONField, EncryptedTextField
from patients.languages import LANGUAGE_NAMES
from patients.models import ConsentRecord, Organization, Patient, TimeStamped


def validate_senders(value: object) -> None:
    """The shape every provider shares; what a valid sender is (an E.164 number, an email
    address) is the provider's form's to check."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Senders must be a list of texts.")


def validate_settings(value: object) -> None:
    if not isinstance(value, dict):
        raise ValidationError("Settings must be a JSON object.")


class Integration(TimeStamped):
    """A clinic's connection to an adapter's provider; entered by support staff.

    Provider-neutral: what a provider needs beyond its senders lives in `settings` (shown
    to support staff) and `secrets` (encrypted, write-only), read and validated only in
    the provider's folder (`integrations/<provider>/account.py`)."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="integrations"
    )
    # Part of the webhook URLs: unguessable, and never the database id.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100, blank=True, default="")
    # An adapter's name in the registry; no database choices, so that a provider is added
    # without a migration (the admin offers only the registered ones).
    adapter = models.CharField(max_length=32)
    senders = models.JSONField(
        "approved senders",
        default=list,
        blank=True,
        validators=[validate_senders],
        help_text="The clinic's own senders approved at the provider (numbers, addresses).",
    )
    settings = models.JSONField(
        default=dict, blank=True, validators=[validate_settings], help_text="Non-secret."
    )
    secrets = EncryptedJSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "adapter"],
                condition=Q(enabled=True),
                name="one_enabled_integration_per_adapter",
                violation_error_message="This clinic already has an enabled integration of this type.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.name or self.adapter} ({self.organization})"


# The longest media URL a message keeps (Twilio takes URLs far longer; none of ours need more).
MEDIA_URL_MAX_CHARS = 1000

# A message of a workflow (not a test) whose hourly count is not up to date.
UNCOUNTED = Q(uncounted=True, workflow__isnull=False, is_test=False)


class OutboundMessage(TimeStamped):
    """One message (an SMS, an email) we decided to send (or not), and everything that
    happened to it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent (accepted by the provider)"
        DELIVERED = "delivered", "Delivered"
        UNDELIVERED = "undelivered", "Undelivered"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"
        UNKNOWN = "unknown", "Unknown (outcome ambiguous)"

    # No index of its own: the (organization, -created_at) index starts with it.
    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="messages",
        db_index=False,
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    idempotency_key = models.CharField(max_length=200, unique=True)
    # No index of its own: the (patient, purpose, -created_at) index starts with it.
    patient = models.ForeignKey(
        Patient,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
        db_index=False,
    )
    integration = models.ForeignKey(Integration, on_delete=models.PROTECT, related_name="messages")
    step_run = models.ForeignKey(
        "workflows.StepRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
    )
    # The step run's workflow and step index, copied when the message is made (they never
    # change): per-workflow analytics count a period's messages, by step and status, from one
    # covering index instead of joining a million messages to their step runs and runs.
    workflow = models.ForeignKey(
        "workflows.Workflow",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # message_workflow_time leads with it
    )
    step_index = models.PositiveSmallIntegerField(null=True, blank=True)
    # The status and error code this message is counted under in MessageHourCount ("": not
    # yet). The roll-up moves the count when they differ; analytics add the difference of
    # the messages it has not caught up with, so its figures are exact at any moment.
    counted_status = models.CharField(max_length=16, blank=True, editable=False)
    counted_error_code = models.CharField(max_length=16, blank=True, editable=False)
    # Computed by the database, so the planner has statistics on it (nearly all false) and
    # reads the few true ones from message_uncounted; it cannot estimate a comparison of two
    # columns, and took it for "every row" at a million messages (a 350 ms scan).
    uncounted = models.GeneratedField(
        # django-stubs want an Expression; Django takes a Q here (a boolean expression).
        expression=~Q(status=models.F("counted_status"))  # type: ignore[arg-type]
        | ~Q(error_code=models.F("counted_error_code")),
        output_field=models.BooleanField(),
        db_persist=True,
    )
    purpose = models.CharField(max_length=16, choices=ConsentRecord.Purpose.choices)
    # The consent and caps channel ("sms", "email"): its transport's, checked there, not here,
    # so a new channel needs no migration.
    channel = models.CharField(max_length=16, default="sms")
    # A phone number or an email address.
    to = models.CharField(max_length=254)
    from_number = models.CharField("from", max_length=254, blank=True)
    messaging_service_sid = models.CharField(max_length=34, blank=True)
    body = models.TextField()
    # The channel's other parts (an email's "subject", "html").
    content = models.JSONField(default=dict, blank=True)
    # A picture or PDF sent with a text (an MMS): Twilio fetches it from this https URL.
    media_url = models.CharField("media URL", max_length=MEDIA_URL_MAX_CHARS, blank=True)
    # The language the body was written in: the step's variant chosen for the patient, or
    # the clinic's fallback (patients.languages). "": not recorded (before languages).
    language = models.CharField(max_length=8, blank=True, db_default="")
    # Whether the clinic's first-contact wording (brand prefix, opt-out wording) was added to
    # `body`: decided once, when the message is claimed for sending (integrations.first_contact).
    # None: not decided (not claimed yet, or a channel without the wording).
    first_contact = models.BooleanField("first-contact wording", null=True, blank=True)
    characters = models.PositiveIntegerField(default=0)
    encoding = models.CharField(max_length=8, blank=True)
    segments = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # The provider's id of the message (an SMS provider's SID, an ESP's message id).
    provider_sid = models.CharField(max_length=255, null=True, blank=True, unique=True)
    provider_status = models.CharField(max_length=16, blank=True)
    error_code = models.CharField(max_length=16, blank=True)
    error_message = models.TextField(blank=True)
    skip_reason = models.CharField(max_length=200, blank=True)
    consent_record = models.ForeignKey(
        ConsentRecord,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The consent this send relied on.",
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # The send time the sender's throttle reserved for this message, once reserved.
    slot_at = models.DateTimeField(null=True, blank=True)
    sending_started_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    # A provider need not retry a status callback we failed to take, so a message still
    # "sent" after a grace period is looked up at the provider
    # (sending.sent_messages_reconcile): when next, and how many times so far (the backoff,
    # and the point where we stop asking).
    status_check_at = models.DateTimeField(null=True, blank=True)
    status_checks = models.PositiveSmallIntegerField(default=0)
    # Failed look-ups of an ambiguous send ("unknown"): the backoff, and the point where the
    # message is left to staff (sending._message_reconcile).
    lookup_failures = models.PositiveSmallIntegerField(default=0)
    is_test = models.BooleanField(default=False)
    urgent = models.BooleanField(
        default=False, help_text="Urgent transactional: sent even during quiet hours."
    )
    # Every send-time check, in order, with its outcome: the evidence of why it was sent
    # (or not), kept with the message.
    decision = models.JSONField(default=dict, blank=True)
    # The broadcast that made it (integrations.broadcasts), if one did.
    broadcast = models.ForeignKey(
        "integrations.Broadcast",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="messages",
        db_index=False,  # message_broadcast_progress leads with it
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["patient", "purpose", "-created_at"]),
            # A broadcast's progress (one GROUP BY status, skip reason: an index-only scan) and
            # its pending messages due again (the sweep of deferred ones).
            models.Index(
                fields=["broadcast", "status"],
                include=["skip_reason", "next_attempt_at"],
                condition=Q(broadcast__isnull=False),
                name="message_broadcast_progress",
            ),
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["status", "-created_at"]),
            # Only the few messages waiting for their final status: what reconciliation scans.
            models.Index(
                fields=["status_check_at"],
                condition=Q(status="sent"),
                name="outboundmessage_sent_check",
            ),
            # A workflow's messages of a period by step, status and error code (analytics):
            # an index-only scan, the counted columns included.
            models.Index(
                fields=["workflow", "created_at"],
                include=["step_index", "status", "error_code", "is_test"],
                condition=Q(workflow__isnull=False),
                name="message_workflow_time",
            ),
            # The messages the hourly roll-up has not counted as they are now: new ones, and
            # those whose status changed since (few: the roll-up runs every minute).
            models.Index(
                fields=["workflow", "created_at"],
                condition=UNCOUNTED,
                name="message_uncounted",
            ),
            # The latest message to a number before its opt-out (analytics' attribution), and
            # the message log's search for a phone number, in one clinic or (support staff)
            # in all: the number first, so a search without the clinic reads this too.
            models.Index(fields=["to", "organization", "-created_at"], name="message_phone_time"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.pk} ({self.status})"

    @property
    def kind(self) -> str:
        """How the log names it: "MMS" for a text with media, else the channel ("SMS")."""
        return "MMS" if self.media_url else self.channel.upper()


class MessageHourCount(models.Model):
    """How many of a workflow's messages made in one hour (UTC) have each step, status and
    error code: what analytics reads instead of a million messages. Kept by
    integrations.analytics.message_counts_roll_up (beat, every minute); a message's
    counted_status says where it is counted. Test messages are never counted."""

    workflow = models.ForeignKey(
        "workflows.Workflow", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    hour = models.DateTimeField()
    step_index = models.IntegerField(help_text="-1: the message named no step.")
    status = models.CharField(max_length=16)
    error_code = models.CharField(max_length=16, blank=True)
    count = models.IntegerField(default=0)

    class Meta:
        ordering = ["workflow", "hour"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "hour", "step_index", "status", "error_code"],
                name="one_message_count_per_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} {self.hour:%Y-%m-%d %H}h step {self.step_index} {self.status}"


# What a channel's own rules say (MessagingPolicy.channel_rules[channel]); the caps as on the
# policy: a count, or None for no cap.
CAP_FIELDS = (
    "transactional_per_day",
    "transactional_per_week",
    "marketing_per_day",
    "marketing_per_week",
)
RULE_KEYS = ("quiet_hours", *CAP_FIELDS)


@dataclass(frozen=True, slots=True)
class ChannelRules:
    """The rules a message of one channel is sent under: the channel's own if the clinic set
    them, else the clinic's default rules (the policy's own fields)."""

    channel: str
    own: bool  # the channel's own rules (False: the clinic's default rules)
    quiet_hours: bool  # whether the clinic's window applies to this channel
    start: time
    end: time
    caps: dict[str, int | None]

    @property
    def label(self) -> str:
        """How decision records name the rules that applied."""
        return f"the clinic's {self.channel} rules" if self.own else "the clinic's default rules"

    def cap(self, purpose: str, window: str) -> int | None:
        return self.caps.get(f"{purpose}_per_{window}")


def validate_channel_rules(value: object) -> None:
    """{channel: {"quiet_hours": bool, "<purpose>_per_<day|week>": count or null}} for
    registered channels only."""
    if not isinstance(value, dict):
        raise ValidationError("Channel rules must be a JSON object.")
    channels = registered_channels()
    errors = []
    for channel, rules in value.items():
        if channel not in channels:
            errors.append(
                f"There is no channel “{channel}” (known: {', '.join(sorted(channels))})."
            )
            continue
        if not isinstance(rules, dict) or set(rules) != set(RULE_KEYS):
            errors.append(f"The {channel} rules must give {', '.join(RULE_KEYS)}.")
            continue
        if not isinstance(rules["quiet_hours"], bool):
            errors.append(f"{channel}: quiet_hours must be true or false.")
        elif not rules["quiet_hours"] and channels[channel]:
            errors.append(
                f"Quiet hours cannot be switched off for {channel}: the rules for texts and "
                "calls bind it."
            )
        for name in CAP_FIELDS:
            cap = rules[name]
            if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 0):
                errors.append(f"{channel}: {name} must be blank or a whole number ≥ 0.")
    if errors:
        raise ValidationError(errors)


SMART_SENDING_MAX_HOURS = 168  # a week
FIRST_CONTACT_MAX_DAYS = 366
BRAND_NAME_MAX_CHARS = 40
OPT_OUT_WORDING_MAX_CHARS = 80
STOP_CONFIRMATION_DEFAULT = (
    "{clinic}: you are unsubscribed and will receive no more texts from this number. "
    "Reply START to resubscribe."
)


def validate_brand_name(value: str) -> None:
    """A name carriers can read as the sender: no template braces (it is not rendered), no
    line breaks (it starts the text)."""
    if any(ch in value for ch in "{}\r\n"):
        raise ValidationError("The brand name cannot contain braces or line breaks.")


def validate_opt_out_wording(value: str) -> None:
    """Carriers expect the opt-out keyword itself in the wording (CTIA: "Reply STOP …")."""
    if value.strip() and "STOP" not in value.upper():
        raise ValidationError(
            "The opt-out wording must name the keyword STOP (“Reply STOP to opt out.”)."
        )
    if any(ch in value for ch in "{}"):
        raise ValidationError("The opt-out wording cannot contain braces.")


def validate_keyword_reply(value: str) -> None:
    if not value.strip():
        raise ValidationError("A keyword reply cannot be blank: the patient must be answered.")


SHORT_LINK_MAX_DAYS = 365
# HIPAA's audit controls keep, for each send, the trigger, the consent relied on, the
# decision and the outcome for 6 years (DOMAIN.md §5): the message log, runs and events are
# that record, so no clinic's retention may be shorter. 6 × 365 days plus two leap days.
RETENTION_FLOOR_DAYS = 6 * 365 + 2
SHORT_LINK_DEFAULT_DAYS = 30


def validate_short_link_domain(value: str) -> None:
    """An origin only (https://go.sunrise.example): short links are <origin>/l/<code>, and a
    path, query or plain http would make them longer or unsafe to follow."""
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise ValidationError("Use an https:// address, e.g. https://go.sunrise.example.")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValidationError(
            "Only the scheme and the domain (e.g. https://go.sunrise.example): no path, query "
            "or login."
        )


# The policy's texts a clinic may word per language (`MessagingPolicy.translations`), with
# their longest length (the field's own).
TRANSLATED_TEXTS: dict[str, int] = {
    "help_text_reply": 320,
    "stop_confirmation_reply": 320,
    "opt_out_wording": OPT_OUT_WORDING_MAX_CHARS,
}


def validate_translations(value: object) -> None:
    """{"es": {"opt_out_wording": "Responda PARAR para cancelar.", ...}}: listed languages,
    the texts of TRANSLATED_TEXTS, each checked as its English field is, except that the
    opt-out wording may name the language's own opt-out keyword instead of STOP."""
    if not isinstance(value, dict):
        raise ValidationError(
            'Must be an object by language, e.g. {"es": {"help_text_reply": "…"}}.'
        )
    for code, texts in value.items():
        if code not in LANGUAGE_NAMES:
            raise ValidationError(
                f"“{code}” is not a language careflow knows; use one of: "
                f"{', '.join(LANGUAGE_NAMES)}."
            )
        name = LANGUAGE_NAMES[code]
        if not isinstance(texts, dict):
            raise ValidationError(
                f'The {name} texts must be an object, e.g. {{"help_text_reply": "…"}}.'
            )
        for field, text in texts.items():
            if field not in TRANSLATED_TEXTS:
                raise ValidationError(
                    f"{name}: “{field}” cannot be translated; use {', '.join(TRANSLATED_TEXTS)}."
                )
            if not isinstance(text, str):
                raise ValidationError(f"{name} {field} must be text.")
            if len(text) > TRANSLATED_TEXTS[field]:
                raise ValidationError(
                    f"{name} {field} is {len(text)} characters; at most {TRANSLATED_TEXTS[field]}."
                )
            if field == "opt_out_wording" and text.strip():
                words = ("STOP", *LANGUAGE_KEYWORDS.get(code, {}).get("opt_out", ()))
                if not any(word in text.upper() for word in words):
                    raise ValidationError(
                        f"The {name} opt-out wording must name an opt-out keyword: "
                        f"{' or '.join(words[:3])}."
                    )
                if any(ch in text for ch in "{}"):
                    raise ValidationError(f"The {name} opt-out wording cannot contain braces.")


class MessagingPolicy(TimeStamped):
    """A clinic's messaging rules: quiet hours, frequency caps and the HELP reply.

    The quiet hours and caps here are the clinic's default rules: they apply to every channel
    without rules of its own in `channel_rules` (so a new channel needs no column and no
    migration). Stricter state rules (Florida and Oklahoma: 08:00–20:00, at most 3 texts in 24
    hours) apply on top of any channel's rules to the channels they govern, texts and calls
    (DOMAIN.md §5; `Transport.phone_rules`); see integrations.quiet_hours.
    """

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="messaging_policy"
    )
    quiet_hours_start = models.TimeField(
        "sending allowed from",
        default=time(8, 0),
        help_text="Earliest local time of the recipient at which texts may go out.",
    )
    quiet_hours_end = models.TimeField(
        "sending allowed until",
        default=time(21, 0),
        help_text="Texts due later wait until the next morning.",
    )
    transactional_per_day = models.PositiveIntegerField(
        null=True, blank=True, help_text="Blank: no cap. Rolling 24 hours, per patient."
    )
    transactional_per_week = models.PositiveIntegerField(
        null=True, blank=True, help_text="Blank: no cap. Rolling 7 days, per patient."
    )
    marketing_per_day = models.PositiveIntegerField(null=True, blank=True, default=1)
    marketing_per_week = models.PositiveIntegerField(null=True, blank=True, default=3)
    channel_rules = models.JSONField(
        default=dict,
        blank=True,
        validators=[validate_channel_rules],
        help_text="Rules of a channel that does not follow the default rules above.",
    )
    # Smart sending: a marketing message is skipped when the patient was sent any message
    # (any channel, any purpose; test messages aside) in the last N hours. Null or 0: off.
    smart_sending_hours = models.PositiveSmallIntegerField(
        "smart sending (hours)",
        null=True,
        blank=True,
        validators=[MaxValueValidator(SMART_SENDING_MAX_HOURS)],
        help_text="Skip a marketing message if this patient received any message in the last "
        f"N hours (1 to {SMART_SENDING_MAX_HOURS}). Blank or 0: off. Transactional messages "
        "are never skipped by it.",
    )
    help_text_reply = models.CharField(
        "HELP reply",
        max_length=320,
        default="{clinic}: for help call us or reply STOP to opt out. Msg & data rates may apply.",
        help_text="Sent when a patient texts HELP or INFO. {clinic} is replaced by the clinic name.",
    )
    stop_confirmation_reply = models.CharField(
        "opt-out confirmation",
        max_length=320,
        default=STOP_CONFIRMATION_DEFAULT,
        validators=[validate_keyword_reply],
        help_text="Sent once when a patient opts out with words the provider does not confirm "
        "itself (“STOP!”, “OPT OUT”). {clinic} is replaced by the clinic name.",
    )
    # First contact (carriers' rules: a text must say who sends it and how to stop them).
    # Added at send time to the texts of channels whose transport says so
    # (Transport.first_contact_wording), never to email, which has its own unsubscribe rules.
    first_contact_enabled = models.BooleanField(
        "identify the clinic on first contact",
        default=False,
        help_text="Add the brand prefix and the opt-out wording below to the first text to a "
        "number, and again every N days if set.",
    )
    brand_name = models.CharField(
        max_length=BRAND_NAME_MAX_CHARS,
        blank=True,
        validators=[validate_brand_name],
        help_text="As registered with the carriers (e.g. “Sunrise Telehealth”). Blank: the "
        "clinic's name.",
    )
    brand_prefix = models.BooleanField(
        "start with the brand name",
        default=True,
        help_text="“Sunrise Telehealth: …” (left out when the text already starts with it).",
    )
    opt_out_wording = models.CharField(
        "opt-out wording",
        max_length=OPT_OUT_WORDING_MAX_CHARS,
        blank=True,
        default="Reply STOP to opt out.",
        validators=[validate_opt_out_wording],
        help_text="Added at the end (left out when the text already says it). Blank: none.",
    )
    # The texts above in other languages (TRANSLATED_TEXTS), used for a patient or a keyword in
    # that language; a text not given here is sent as above.
    translations = models.JSONField(
        "in other languages",
        default=dict,
        db_default=Value({}, output_field=models.JSONField()),
        blank=True,
        validators=[validate_translations],
        help_text="The HELP reply, opt-out confirmation and opt-out wording by language, e.g. "
        '{"es": {"help_text_reply": "{clinic}: para ayuda llámenos. Responda PARAR para '
        'cancelar.", "opt_out_wording": "Responda PARAR para cancelar."}}. '
        "Left out: the text above.",
    )
    first_contact_every_days = models.PositiveSmallIntegerField(
        "again every (days)",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(FIRST_CONTACT_MAX_DAYS)],
        help_text="Add them again when the last text to the number that carried them is this "
        f"many days old (1 to {FIRST_CONTACT_MAX_DAYS}). Blank: the first text only.",
    )
    # Short links (integrations.short_links): the http(s) links in a text are replaced when it
    # is sent by short links served by careflow (on the clinic's own domain when it points one
    # at careflow), so a long link costs few characters and a click is recorded.
    short_links_enabled = models.BooleanField(
        "shorten links",
        default=False,
        help_text="Replace the links in a text, when it is sent, by short links that record "
        "clicks (each text gets its own). Email links are left as written.",
    )
    short_link_domain = models.URLField(
        "short link domain",
        blank=True,
        max_length=100,
        validators=[validate_short_link_domain],
        help_text="e.g. https://go.sunrise.example, pointed (DNS) at careflow and listed in "
        "its ALLOWED_HOSTS. Blank: careflow's own address (CAREFLOW_PUBLIC_URL).",
    )
    short_link_days = models.PositiveSmallIntegerField(
        "short links work for (days)",
        default=SHORT_LINK_DEFAULT_DAYS,
        validators=[MinValueValidator(1), MaxValueValidator(SHORT_LINK_MAX_DAYS)],
        help_text=f"After this many days (1 to {SHORT_LINK_MAX_DAYS}) a short link shows a "
        "“link expired” page instead of the original link.",
    )

    # How long this clinic's events, runs, step runs and messages are kept
    # (integrations.retention, the careflow_retention command); consent records and opt-outs
    # are never deleted by it. Blank: the installation's CAREFLOW_RETENTION_DAYS.
    retention_days = models.PositiveIntegerField(
        "keep message history for (days)",
        null=True,
        blank=True,
        validators=[MinValueValidator(RETENTION_FLOOR_DAYS)],
        help_text=f"Messages, runs and events older than this are deleted by the retention "
        f"job. At least {RETENTION_FLOOR_DAYS} days (6 years, HIPAA). Blank: the "
        "installation's default.",
    )

    class Meta:
        verbose_name_plural = "messaging policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(retention_days__gte=RETENTION_FLOOR_DAYS)
                | Q(retention_days__isnull=True),
                name="retention_at_least_six_years",
                violation_error_message=f"Keep message history at least {RETENTION_FLOOR_DAYS} "
                "days (6 years).",
            ),
            models.CheckConstraint(
                condition=Q(quiet_hours_start__lt=models.F("quiet_hours_end")),
                name="quiet_hours_start_before_end",
                violation_error_message="“Sending allowed from” must be before “until”.",
            ),
            models.CheckConstraint(
                condition=Q(smart_sending_hours__lte=SMART_SENDING_MAX_HOURS),
                name="smart_sending_at_most_a_week",
                violation_error_message=f"Smart sending looks back at most "
                f"{SMART_SENDING_MAX_HOURS} hours (a week).",
            ),
        ]

    def __str__(self) -> str:
        return f"Messaging policy of {self.organization}"

    def text(self, name: str, language: str = "") -> str:
        """One of TRANSLATED_TEXTS in `language` if the clinic worded it so, else its own."""
        translated = (self.translations or {}).get(language) if language else None
        if isinstance(translated, dict):
            text = translated.get(name)
            if isinstance(text, str) and text.strip():
                return text
        value: str = getattr(self, name)
        return value

    def cap(self, purpose: str, window: str) -> int | None:
        value: int | None = getattr(self, f"{purpose}_per_{window}")
        return value

    def rules(self, channel: str) -> ChannelRules:
        """The rules `channel`'s messages go under. Rules stored for a channel count only
        when complete and valid (forms validate them when saved); rules that are not (written
        around a form, or for a channel no longer registered) fall back to the default rules
        the clinic set for every channel, never to no rules."""
        own: Any = (self.channel_rules or {}).get(channel)
        if own is not None:  # no rules of its own: nothing to validate (read for every send)
            try:
                validate_channel_rules({channel: own})
            except ValidationError:
                own = None
        if not own:
            return ChannelRules(
                channel,
                False,
                True,
                self.quiet_hours_start,
                self.quiet_hours_end,
                {name: getattr(self, name) for name in CAP_FIELDS},
            )
        return ChannelRules(
            channel,
            True,
            own["quiet_hours"],
            self.quiet_hours_start,
            self.quiet_hours_end,
            {name: own[name] for name in CAP_FIELDS},
        )


class InboundMessage(TimeStamped):
    """An SMS a patient sent to a clinic number, and what careflow did about it."""

    class Action(models.TextChoices):
        OPT_OUT = "opt_out", "Opt-out keyword"
        OPT_IN = "opt_in", "Opt-in keyword"
        HELP = "help", "Help keyword"
        NONE = "none", "Free text"

    # No index of its own: the (organization, needs_review, -created_at) index starts with it.
    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="inbound_messages",
        db_index=False,
    )
    integration = models.ForeignKey(
        Integration, on_delete=models.PROTECT, related_name="inbound_messages"
    )
    provider_sid = models.CharField(max_length=34, unique=True)
    from_number = models.CharField("from", max_length=32)
    to = models.CharField(max_length=32)
    body = models.TextField(blank=True)
    patient = models.ForeignKey(
        Patient, null=True, blank=True, on_delete=models.SET_NULL, related_name="inbound_messages"
    )
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.NONE)
    needs_review = models.BooleanField(
        default=False,
        help_text="Free text that reads like a request to stop texting: staff should decide.",
    )
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        # Marking reviewed is the one change a read-only role may make (clinic staff).
        permissions = [("review_inboundmessage", "Can mark inbound messages as reviewed")]
        indexes = [models.Index(fields=["organization", "needs_review", "-created_at"])]

    def __str__(self) -> str:
        return f"Inbound SMS {self.pk} ({self.get_action_display()})"


def validate_staff_emails(value: object) -> None:
    """A list of email addresses; each one checked, so a typo is named, not bounced later."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Staff emails must be a list of addresses.")
    bad = []
    for address in value:
        try:
            validate_email(address)
        except ValidationError:
            bad.append(address)
    if bad:
        raise ValidationError(
            "Not a valid email address: %(addresses)s.",
            code="invalid_email",
            params={"addresses": ", ".join(bad)},
        )


class AlertSettings(TimeStamped):
    """Who a clinic tells when something breaks (integrations.alerts), and when it counts as
    broken. One per clinic; without it (or with no recipient) the clinic gets no alerts."""

    organization = models.OneToOneField(
        Organization, on_delete=models.CASCADE, related_name="alert_settings"
    )
    enabled = models.BooleanField(default=True)
    staff_emails = models.JSONField(
        default=list, blank=True, validators=[validate_staff_emails], help_text="Addresses."
    )
    webhook_url = models.CharField("webhook URL", max_length=500, blank=True)
    # The key of the HMAC-SHA256 signature on every webhook POST; write-only in the form.
    webhook_secret = EncryptedTextField("webhook signing secret", blank=True, default="")
    failure_rate_percent = models.PositiveSmallIntegerField(
        "failure rate (%)",
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Alert when more than this share of a workflow's messages in the last hour "
        "failed.",
    )
    undelivered_rate_percent = models.PositiveSmallIntegerField(
        "undelivered rate (%)",
        default=20,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Alert when more than this share of a workflow's messages in the last hour "
        "was not delivered.",
    )
    minimum_messages = models.PositiveIntegerField(
        "minimum messages",
        default=10,
        validators=[MinValueValidator(1)],
        help_text="Rates are judged only on at least this many messages in the hour "
        "(1 failure of 1 message is no trend).",
    )
    period_minutes = models.PositiveIntegerField(
        "one alert per condition every (minutes)",
        default=60,
        validators=[MinValueValidator(5), MaxValueValidator(7 * 24 * 60)],
    )

    class Meta:
        verbose_name = "alert settings"
        verbose_name_plural = "alert settings"
        constraints = [
            models.CheckConstraint(
                condition=Q(failure_rate_percent__gte=1, failure_rate_percent__lte=100)
                & Q(undelivered_rate_percent__gte=1, undelivered_rate_percent__lte=100),
                name="alert_rates_are_percentages",
            ),
            models.CheckConstraint(
                condition=Q(minimum_messages__gte=1) & Q(period_minutes__gte=5),
                name="alert_volume_and_period_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"Alert settings of {self.organization}"

    @property
    def has_recipient(self) -> bool:
        return bool(self.staff_emails or self.webhook_url)


class Alert(models.Model):
    """One alert: a condition about one subject (a workflow, a sender, an integration) in
    one de-duplication period. The unique constraint is the "no alert storm" guarantee: the
    row is claimed before anything is sent, so two beat ticks or two workers that see the
    same condition in the same period create one alert, and only its creator queues the
    delivery. No patient data: counts, ids and workflow names only."""

    class Condition(models.TextChoices):
        RUN_FAILED = "run_failed", "A run failed"
        FAILURE_RATE = "failure_rate", "Failure rate over threshold"
        UNDELIVERED_RATE = "undelivered_rate", "Undelivered rate over threshold"
        QUEUE_WINDOW = "queue_window", "Sender queue beyond the provider's window"
        CREDENTIALS = "credentials", "Credentials rejected"
        UNCONFIRMED = "unconfirmed", "Sends that could not be confirmed"

    # No index of its own: alert_clinic_time starts with it.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="alerts", db_index=False
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    condition = models.CharField(max_length=32, choices=Condition.choices)
    # "workflow:<id>", "sender:<integration id>:<sender>", "integration:<id>".
    subject = models.CharField(max_length=300)
    period_start = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    summary = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)
    link = models.CharField(max_length=1000, blank=True)
    delivered_email = models.BooleanField(default=False)
    delivered_webhook = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When delivery is next tried (or a claimed attempt's lease ends); null: nothing left to do.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "condition", "subject", "period_start"],
                name="one_alert_per_condition_period",
            )
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="alert_clinic_time"),
            # Only alerts still to deliver: what every beat tick sweeps.
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(next_attempt_at__isnull=False),
                name="alert_delivery_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_condition_display()} ({self.subject})"


class ApiKey(models.Model):
    """A clinic's key to the HTTP API (`integrations.api`): shown once when issued, kept as
    its SHA-256 only. The key is 256 random bits, so a fast unsalted hash is right (as
    GitHub's tokens are): there is nothing to brute-force. Revoked, never edited or deleted:
    the audit trail names the key that made each change."""

    class Scope(models.TextChoices):
        READ = "read", "Read"
        WRITE = "write", "Read and write"

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="api_keys"
    )
    name = models.CharField(max_length=100, help_text="What uses this key, e.g. “Patient portal”.")
    scope = models.CharField(max_length=8, choices=Scope.choices, default=Scope.READ)
    # The first characters of the key, shown for recognition ("cfk_ab12…"); not enough to use it.
    prefix = models.CharField(max_length=16, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Written at most once a minute per key (integrations.api.keys), not on every request.
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """The outcome of one API write made under an Idempotency-Key, written in the same
    transaction as the write: a retry after a crash finds the whole outcome or nothing, and
    a second request with the key waits on the unique index, then replays the first's."""

    # No index of its own: one_outcome_per_idempotency_key starts with it.
    organization = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        related_name="idempotency_records",
        db_index=False,
    )
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    # SHA-256 of method, path and body: the same key with another request is refused.
    fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField()
    response_body = models.JSONField(default=dict, blank=True)
    api_key = models.ForeignKey(ApiKey, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "key"], name="one_outcome_per_idempotency_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.key})"


class ShortLink(models.Model):
    """One link of one sent message, as a short code (integrations.short_links). The code is
    random (secrets) and says nothing about the patient or the message; the original URL is
    the one the clinic wrote, after the template was rendered."""

    code = models.CharField(max_length=16, unique=True)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    # No index of its own: one_short_link_per_url starts with it.
    message = models.ForeignKey(
        OutboundMessage,
        on_delete=models.CASCADE,
        related_name="short_links",
        db_index=False,
    )
    url = models.TextField("original URL")
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A retried claim of the message finds the same link for the same URL.
            models.UniqueConstraint(fields=["message", "url"], name="one_short_link_per_url"),
        ]

    def __str__(self) -> str:
        return self.code


class LinkClick(models.Model):
    """A click on a short link. No IP address and no raw user agent are kept: only a short
    hash of the user agent, enough to tell repeated clicks from one device apart from others
    without identifying anyone."""

    link = models.ForeignKey(ShortLink, on_delete=models.CASCADE, related_name="clicks")
    clicked_at = models.DateTimeField(default=timezone.now, db_index=True)
    agent_hash = models.CharField(max_length=16, blank=True)

    class Meta:
        ordering = ["-clicked_at", "-id"]

    def __str__(self) -> str:
        return f"{self.link_id} at {self.clicked_at:%Y-%m-%d %H:%M}"


class Broadcast(TimeStamped):
    """One message sent to every member of a segment, now or at a scheduled time, through the
    same send-time checks, throttle and exactly-once path as a workflow's messages
    (integrations.broadcasts). Its message is an adapter function's parameters, as a workflow
    step holds them (variants per language included); the recipient is always the member."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        SCHEDULED = "scheduled", "Scheduled"
        SENDING = "sending", "Sending"
        CANCELLED = "cancelled", "Cancelled"
        COMPLETED = "completed", "Completed"

    # No index of its own: broadcast_name_unique_per_clinic starts with it.
    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="broadcasts",
        db_index=False,
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    segment = models.ForeignKey(
        "workflows.Segment", on_delete=models.PROTECT, related_name="broadcasts"
    )
    # The adapter's function that sends it ("twilio.sendSMS", "email.sendEmail").
    function = models.CharField("channel", max_length=64)
    integration = models.ForeignKey(
        Integration, on_delete=models.PROTECT, related_name="broadcasts"
    )
    purpose = models.CharField(
        max_length=16,
        choices=ConsentRecord.Purpose.choices,
        default=ConsentRecord.Purpose.MARKETING,
        help_text="The consent each recipient must have given (a recall may be care).",
    )
    # The function's parameters but the recipient, and their "variants" by language.
    parameters = models.JSONField(default=dict, blank=True)
    scheduled_at = models.DateTimeField(
        null=True, blank=True, help_text="When to start sending; blank: as soon as it is sent."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    # The last member (patient pk) whose message has been made: production resumes after it.
    cursor = models.BigIntegerField(default=0, editable=False)
    # Members found when sending started (the confirmation showed this many).
    recipients = models.PositiveIntegerField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    started_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When production last ran (a beat sweep restarts one that stopped: a lost task).
    advanced_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When the last member's message was made.
    produced_at = models.DateTimeField(null=True, blank=True, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True, editable=False)
    cancelled_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The beat sweep's due broadcasts: only the few scheduled or sending.
            models.Index(
                fields=["scheduled_at"],
                condition=Q(status__in=["scheduled", "sending"]),
                name="broadcast_due",
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["draft", "scheduled", "sending", "cancelled", "completed"]),
                name="broadcast_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status="scheduled") | Q(scheduled_at__isnull=False),
                name="broadcast_scheduled_has_time",
                violation_error_message="A scheduled broadcast needs its time.",
            ),
            models.CheckConstraint(
                condition=~Q(status="sending") | Q(started_at__isnull=False),
                name="broadcast_sending_started",
            ),
            models.CheckConstraint(
                condition=~Q(status="cancelled") | Q(cancelled_at__isnull=False),
                name="broadcast_cancelled_has_time",
            ),
            models.CheckConstraint(
                condition=~Q(status="completed") | Q(finished_at__isnull=False),
                name="broadcast_completed_has_time",
            ),
            models.UniqueConstraint(
                fields=["organization", "name"], name="broadcast_name_unique_per_clinic"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def adapter_name(self) -> str:
        return self.function.partition(".")[0]

    @property
    def function_name(self) -> str:
        return self.function.partition(".")[2]
