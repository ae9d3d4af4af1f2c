"""Adapter integrations (per clinic, secrets encrypted) and the outbound message log."""

import uuid

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
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


def validate_sending_numbers(value: object) -> None:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Sending numbers must be a list of phone numbers.")
    for number in value:
        if phone_to_e164(number) != number:
            raise ValidationError(
                "“%(number)s” must be written in E.164 form (%(e164)s).",
                params={"number": number, "e164": phone_to_e164(number)},
            )


class Integration(TimeStamped):
    """A clinic's connection to an adapter's provider; entered by support staff."""

    class Adapter(models.TextChoices):
        TWILIO = "twilio", "Twilio"

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

    def masked_account_sid(self) -> str:
        """Enough to recognise the account, not enough to use it."""
        sid = self.account_sid
        return f"{sid[:6]}…{sid[-4:]}" if len(sid) > 10 else "…"


class OutboundMessage(TimeStamped):
    """One SMS we decided to send (or not), and everything that happened to it."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent (accepted by Twilio)"
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
    to = models.CharField(max_length=32)
    from_number = models.CharField("from", max_length=32, blank=True)
    messaging_service_sid = models.CharField(max_length=34, blank=True)
    body = models.TextField()
    characters = models.PositiveIntegerField(default=0)
    encoding = models.CharField(max_length=8, blank=True)
    segments = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    provider_sid = models.CharField(max_length=34, null=True, blank=True, unique=True)
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
    sending_started_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    is_test = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["organization", "-created_at"]),
            models.Index(fields=["status", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"SMS {self.pk} ({self.status})"
