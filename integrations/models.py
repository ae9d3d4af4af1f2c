"""Adapter integrations (per clinic, secrets encrypted), messaging policies and the message log."""

import re
import uuid
from datetime import time
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from integrations.encryption import EncryptedTextField
from patients.models import ConsentRecord, Organization, Patient, TimeStamped
from patients.phones import phone_to_e164

validate_account_sid = RegexValidator(
    r"^AC[0-9a-f]{32}\Z",
    "An Account SID is “AC” followed by 32 hexadecimal characters (0-9, a-f), "
    "as shown on the Twilio Console dashboard.",
    code="invalid_account_sid",
)
validate_messaging_service_sid = RegexValidator(
    r"^MG[0-9a-f]{32}\Z",
    "A Messaging Service SID is “MG” followed by 32 hexadecimal characters.",
    code="invalid_messaging_service_sid",
)


def twilio_sid_normal(value: str) -> str:
    """A Twilio SID (upper-case prefix + 32 hex digits) as careflow stores it: Twilio's own
    pattern allows hex of either case (`^AC[0-9a-fA-F]{32}$`), its API and Console write it
    in lower case, and SIDs are compared as text, so the hex is lowered. Anything else is
    returned stripped, for the validators to explain."""
    text = (value or "").strip()
    if re.fullmatch(r"[A-Z]{2}[0-9a-fA-F]{32}", text):
        return text[:2] + text[2:].lower()
    return text


def validate_sending_numbers(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Sending numbers must be a list of phone numbers.")
    for number in value:
        if phone_to_e164(number) != number:
            raise ValidationError(
                "“%(number)s” must be written in E.164 form (%(e164)s).",
                params={"number": number, "e164": phone_to_e164(number)},
            )


TOLL_FREE_PREFIXES = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")
DEFAULT_RATES = {"long_code": 1.0, "toll_free": 3.0, "short_code": 100.0, "ten_dlc": 12.0}


class Integration(TimeStamped):
    """A clinic's connection to an adapter's provider; entered by support staff."""

    class Adapter(models.TextChoices):
        TWILIO = "twilio", "Twilio"

    class SenderType(models.TextChoices):
        AUTO = "auto", "Detect from the number (long code or toll-free)"
        LONG_CODE = "long_code", "Long code (1 segment/s)"
        TOLL_FREE = "toll_free", "Toll-free (3 segments/s)"
        TEN_DLC = "ten_dlc", "10DLC (rate by trust tier)"
        SHORT_CODE = "short_code", "Short code (100 segments/s)"

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="integrations"
    )
    # Part of the webhook URLs: unguessable, and never the database id.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=100, default="Twilio")
    adapter = models.CharField(max_length=32, choices=Adapter.choices, default=Adapter.TWILIO)
    account_sid = models.CharField("Account SID", max_length=34, validators=[validate_account_sid])
    auth_token = EncryptedTextField("Auth Token")
    sending_numbers = models.JSONField(
        "approved sending numbers",
        default=list,
        validators=[validate_sending_numbers],
        help_text="E.164 numbers approved for this clinic (10DLC/toll-free registration done).",
    )
    messaging_service_sid = models.CharField(
        "Messaging Service SID",
        max_length=34,
        blank=True,
        validators=[validate_messaging_service_sid],
    )
    sender_type = models.CharField(
        max_length=16,
        choices=SenderType.choices,
        default=SenderType.AUTO,
        help_text="Sets the default sending rate Twilio allows.",
    )
    segments_per_second = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.01), MaxValueValidator(1000)],
        help_text="Override, e.g. your 10DLC tier's rate. Blank: long code 1/s, toll-free 3/s, "
        "short code 100/s, 10DLC 12/s.",
    )
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
        return f"{self.name} ({self.organization})"

    def send_rate(self, sender: str) -> float:
        """Segments per second Twilio lets this sender (a number or the Messaging Service)
        send; what the throttle shapes to."""
        if self.segments_per_second:
            return float(self.segments_per_second)
        kind = self.sender_type
        if kind == self.SenderType.AUTO:
            kind = "toll_free" if sender.startswith(TOLL_FREE_PREFIXES) else "long_code"
        return DEFAULT_RATES[kind]

    def clean_fields(self, exclude: Any = None) -> None:
        # Before the validators, which hold the stored (normal) form.
        self.account_sid = twilio_sid_normal(self.account_sid)
        self.messaging_service_sid = twilio_sid_normal(self.messaging_service_sid)
        super().clean_fields(exclude)

    def masked_account_sid(self) -> str:
        """Enough to recognise the account, not enough to use it."""
        sid = self.account_sid
        return f"{sid[:6]}…{sid[-4:]}" if len(sid) > 10 else "…"


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

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="messages"
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    idempotency_key = models.CharField(max_length=200, unique=True)
    patient = models.ForeignKey(
        Patient, null=True, blank=True, on_delete=models.SET_NULL, related_name="messages"
    )
    integration = models.ForeignKey(Integration, on_delete=models.PROTECT, related_name="messages")
    step_run = models.ForeignKey(
        "workflows.StepRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="messages",
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
    is_test = models.BooleanField(default=False)
    urgent = models.BooleanField(
        default=False, help_text="Urgent transactional: sent even during quiet hours."
    )
    # Every send-time check, in order, with its outcome: the evidence of why it was sent
    # (or not), kept with the message.
    decision = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["patient", "purpose", "-created_at"]),
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["status", "-created_at"]),
            # Only the few messages waiting for their final status: what reconciliation scans.
            models.Index(
                fields=["status_check_at"],
                condition=Q(status="sent"),
                name="outboundmessage_sent_check",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel.upper()} {self.pk} ({self.status})"


class MessagingPolicy(TimeStamped):
    """A clinic's messaging rules: quiet hours, frequency caps and the HELP reply.

    Stricter state rules (Florida and Oklahoma: 08:00–20:00, at most 3 texts in 24 hours)
    always apply on top of these; see integrations.quiet_hours.
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
    help_text_reply = models.CharField(
        "HELP reply",
        max_length=320,
        default="{clinic}: for help call us or reply STOP to opt out. Msg & data rates may apply.",
        help_text="Sent when a patient texts HELP or INFO. {clinic} is replaced by the clinic name.",
    )

    class Meta:
        verbose_name_plural = "messaging policies"
        constraints = [
            models.CheckConstraint(
                condition=Q(quiet_hours_start__lt=models.F("quiet_hours_end")),
                name="quiet_hours_start_before_end",
                violation_error_message="“Sending allowed from” must be before “until”.",
            )
        ]

    def __str__(self) -> str:
        return f"Messaging policy of {self.organization}"

    def cap(self, purpose: str, window: str) -> int | None:
        value: int | None = getattr(self, f"{purpose}_per_{window}")
        return value


class InboundMessage(TimeStamped):
    """An SMS a patient sent to a clinic number, and what careflow did about it."""

    class Action(models.TextChoices):
        OPT_OUT = "opt_out", "Opt-out keyword"
        OPT_IN = "opt_in", "Opt-in keyword"
        HELP = "help", "Help keyword"
        NONE = "none", "Free text"

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="inbound_messages"
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
