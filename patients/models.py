"""The CRM records that fire workflow triggers, and the clinics (organizations) that own them."""

import uuid
import zoneinfo
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from patients.phones import PhoneNumberField


def validate_timezone(value: str) -> None:
    if value and value not in zoneinfo.available_timezones():
        raise ValidationError(
            "“%(value)s” is not a time zone; use an IANA name such as America/New_York.",
            code="invalid_timezone",
            params={"value": value},
        )


class TimeStamped(models.Model):
    created_at = models.DateTimeField(default=timezone.now, editable=False, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


class Organization(TimeStamped):
    """A clinic: the tenant boundary for every record, secret and workflow."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    timezone = models.CharField(
        max_length=64, default="America/New_York", validators=[validate_timezone]
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class StaffMembership(TimeStamped):
    """Links a staff user to the one clinic whose records they may see in the admin."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="membership"
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )

    class Meta:
        ordering = ["organization", "user"]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization}"


class Patient(TimeStamped):
    """A patient; called "customer" in event payloads, as in the platform we model."""

    class Gender(models.TextChoices):
        FEMALE = "female", "Female"
        MALE = "male", "Male"
        OTHER = "other", "Other"
        UNKNOWN = "unknown", "Prefer not to say"

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="patients"
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100, blank=True)
    email = models.EmailField(blank=True)
    phone = PhoneNumberField(blank=True, help_text="Any common format; stored as E.164.")
    dob = models.DateField("date of birth", null=True, blank=True)
    gender = models.CharField(max_length=16, choices=Gender.choices, blank=True)
    timezone = models.CharField(
        max_length=64,
        blank=True,
        validators=[validate_timezone],
        help_text="IANA name; blank means: derive from the address, else the phone's area code.",
    )
    address1 = models.CharField(max_length=200, blank=True)
    address2 = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    province = models.CharField(max_length=100, blank=True)
    province_code = models.CharField(max_length=8, blank=True, help_text="e.g. FL")
    postal_code = models.CharField(max_length=20, blank=True)
    country_code = models.CharField(max_length=2, default="US")
    source = models.CharField(max_length=50, blank=True, help_text="e.g. patient-portal")
    accept_marketing = models.BooleanField(default=False)
    is_test = models.BooleanField(
        "test patient",
        default=False,
        help_text="Test patients may receive live test sends from the workflow builder.",
    )

    class Meta:
        ordering = ["last_name", "first_name", "id"]
        indexes = [models.Index(fields=["organization", "phone"])]

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class ConsentRecord(models.Model):
    """One consent decision, append-only: the current state is a selector over the history."""

    class Channel(models.TextChoices):
        SMS = "sms", "SMS"

    class Purpose(models.TextChoices):
        TRANSACTIONAL = "transactional", "Transactional / care"
        MARKETING = "marketing", "Marketing"

    class Action(models.TextChoices):
        OPT_IN = "opt_in", "Opt in"
        OPT_OUT = "opt_out", "Opt out"

    class Source(models.TextChoices):
        SIGNUP_FORM = "signup_form", "Signup form"
        CHECKOUT = "checkout", "Checkout"
        PATIENT_PORTAL = "patient_portal", "Patient portal"
        ADMIN = "admin", "Recorded by staff"
        INBOUND_KEYWORD = "inbound_keyword", "Inbound keyword (STOP/START)"
        PROVIDER_ERROR = "provider_error", "Provider error (e.g. Twilio 21610)"
        IMPORT = "import", "Import"

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="consents")
    channel = models.CharField(max_length=8, choices=Channel.choices, default=Channel.SMS)
    purpose = models.CharField(max_length=16, choices=Purpose.choices)
    action = models.CharField(max_length=8, choices=Action.choices)
    source = models.CharField(max_length=20, choices=Source.choices)
    consent_text = models.TextField(
        blank=True, help_text="The exact consent language the patient was shown."
    )
    evidence = models.JSONField(
        default=dict, blank=True, help_text="e.g. the inbound message SID or provider error code."
    )
    occurred_at = models.DateTimeField(default=timezone.now)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [models.Index(fields=["patient", "channel", "purpose", "-occurred_at", "-id"])]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.purpose} {self.channel}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Consent history is evidence: a correction is a new record, never an edit.
        if not self._state.adding:
            raise ValidationError("Consent records are append-only; record a new decision.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        raise ValidationError("Consent records are append-only and cannot be deleted.")


class Order(TimeStamped):
    class Status(models.TextChoices):
        AWAITING_PAYMENT = "awaiting_payment", "Awaiting payment"
        PROCESSING = "processing", "Processing"
        AWAITING_REQUIREMENTS = "awaiting_requirements", "Awaiting requirements"
        AWAITING_REQUISITION = "awaiting_requisition", "Awaiting requisition"
        AWAITING_SCRIPT = "awaiting_script", "Awaiting script"
        AWAITING_FULFILLMENT = "awaiting_fulfillment", "Awaiting fulfillment"
        AWAITING_SHIPMENT = "awaiting_shipment", "Awaiting shipment"
        SHIPPED = "shipped", "Shipped"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="orders")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="orders")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    number = models.CharField(max_length=40)
    status = models.CharField(
        max_length=32, choices=Status.choices, default=Status.AWAITING_PAYMENT
    )
    status_history = models.JSONField(default=list, blank=True, editable=False)
    line_items = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"name": "…", "productId": "…", "price": "49.00", "quantity": 1, '
        '"isSubscription": false}]',
    )
    shipping_address = models.JSONField(default=dict, blank=True)
    total_amount = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    discount_amount = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    coupon = models.CharField(max_length=50, blank=True)
    tracking_number = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["organization", "number"], name="order_number_per_org")
        ]

    def __str__(self) -> str:
        return f"Order {self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        changed = self.status != self._saved_status and (
            update_fields is None or "status" in update_fields
        )
        self.status_transition = (self._saved_status, self.status) if changed else None
        if changed:
            self.status_history = [
                *self.status_history,
                {"status": self.status, "at": timezone.now().isoformat()},
            ]
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, "status_history"}
        super().save(*args, **kwargs)
        self._saved_status = self.status
        self.status_transition = None

    # Status transitions are detected against the value loaded from the database, so that
    # the post_save receiver records order.<status> only for a real change.
    _saved_status: str | None = None
    status_transition: tuple[str | None, str] | None = None

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any) -> "Order":
        instance = super().from_db(db, field_names, values)
        instance._saved_status = instance.__dict__.get("status")
        return instance

    def clean(self) -> None:
        if (
            self.patient_id
            and self.organization_id
            and self.patient.organization_id != self.organization_id
        ):
            raise ValidationError({"patient": "This patient belongs to another clinic."})
