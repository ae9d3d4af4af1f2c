"""The CRM records that fire workflow triggers, and the clinics (organizations) that own them."""

import uuid
import zoneinfo
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q, Value
from django.utils import timezone

from common.db import ReplacedRowReturned
from patients.channels import consent_channel_choices
from patients.languages import (
    DEFAULT_LANGUAGE,
    LANGUAGES,
    validate_language,
    validate_languages,
)
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


class ChangeTracked(models.Model):
    """Remembers the `tracked_fields` as loaded from the database, so that a save can tell
    which of them really changed (`saved_changes`) and receivers record events only then.

    A real change bumps the integer field named by `version_field`; event dedupe keys include
    it, so two stale copies saving the same change collapse into one event while A→B→A→B
    still records each change. An instance built by hand with an existing pk (not loaded)
    has nothing to compare against and reports no changes; deferred fields likewise.
    """

    tracked_fields: ClassVar[tuple[str, ...]] = ()
    version_field: ClassVar[str] = ""

    # None for an instance not loaded from (or saved to) the database: nothing to compare.
    _loaded: dict[str, Any] | None = None
    saved_changes: tuple[str, ...] = ()

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        changes = self.tracked_changes(update_fields)
        if changes and self.version_field:
            setattr(self, self.version_field, getattr(self, self.version_field) + 1)
            if update_fields is not None:
                kwargs["update_fields"] = {*update_fields, self.version_field}
        self.saved_changes = changes
        super().save(*args, **kwargs)
        saved = self._tracked_values()
        if update_fields is not None and self._loaded is not None:
            # Only what was written is now the database's value; a change left out of
            # update_fields is still pending.
            saved = {**self._loaded, **{k: v for k, v in saved.items() if k in update_fields}}
        self._loaded = saved

    def refresh_from_db(self, *args: Any, **kwargs: Any) -> None:
        super().refresh_from_db(*args, **kwargs)
        fields = kwargs.get("fields")
        refreshed = self._tracked_values()
        if fields is not None:
            refreshed = {name: value for name, value in refreshed.items() if name in fields}
        self._loaded = {**(self._loaded or {}), **refreshed}

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any) -> Any:
        instance = super().from_db(db, field_names, values)
        instance._loaded = instance._tracked_values()
        return instance

    def _tracked_values(self) -> dict[str, Any]:
        # Deferred fields are not in __dict__; their changes cannot be seen, so none are claimed.
        return {name: self.__dict__[name] for name in self.tracked_fields if name in self.__dict__}

    def tracked_changes(self, update_fields: Iterable[str] | None = None) -> tuple[str, ...]:
        """The tracked fields whose value differs from the one loaded (and would be saved)."""
        if self._loaded is None:
            return ()
        saving = None if update_fields is None else set(update_fields)
        return tuple(
            name
            for name, loaded in self._loaded.items()
            if (saving is None or name in saving) and self.__dict__.get(name) != loaded
        )


class Organization(TimeStamped):
    """A clinic: the tenant boundary for every record, secret and workflow."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=80, unique=True)
    # Part of the custom-event webhook URL: unguessable, and never the database id.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    timezone = models.CharField(
        max_length=64, default="America/New_York", validators=[validate_timezone]
    )
    # SHA-256 of the custom-event webhook's bearer token; the token itself is shown once
    # when issued and never stored. The token is 256 random bits, so no salt or slow hash.
    webhook_token_hash = models.CharField(max_length=64, blank=True, editable=False)
    webhook_token_issued_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The languages message variants are sent in and keywords recognised in; the fallback
    # is the language of a message's own text, sent to anyone else.
    # Database defaults too: the rows an older version of the code inserts (a migration's
    # historical models, a deploy's old workers) get the column's default.
    languages = models.JSONField(
        "enabled languages",
        default=list,
        db_default=Value([], output_field=models.JSONField()),
        blank=True,
        validators=[validate_languages],
        help_text='Language codes, e.g. ["es", "vi"]: patients who prefer one of these get a '
        "message's variant in it, and its keywords (PARAR, AYUDA…) are recognised.",
    )
    fallback_language = models.CharField(
        max_length=8,
        choices=LANGUAGES,
        default=DEFAULT_LANGUAGE,
        db_default=DEFAULT_LANGUAGE,
        validators=[validate_language],
        help_text="The language messages are written in; sent when there is no variant in "
        "the patient's language.",
    )

    class Meta:
        ordering = ["name"]
        # Support staff work across clinics without being superusers (patients.tenancy).
        permissions = [("view_all_organizations", "Can see and act on every clinic's records")]

    def __str__(self) -> str:
        return self.name

    @property
    def enabled_languages(self) -> tuple[str, ...]:
        """The fallback first, then the other enabled languages."""
        others = [code for code in self.languages or () if code != self.fallback_language]
        return (self.fallback_language, *others)


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


class Patient(ChangeTracked, TimeStamped, ReplacedRowReturned):
    """A patient; called "customer" in event payloads, as in the platform we model."""

    # The profile: a real change of any of these records customer.updated.
    tracked_fields = (
        "first_name",
        "last_name",
        "email",
        "phone",
        "dob",
        "gender",
        "timezone",
        "language",
        "address1",
        "address2",
        "city",
        "province",
        "province_code",
        "postal_code",
        "country_code",
        "source",
    )
    version_field = "profile_version"

    class Gender(models.TextChoices):
        FEMALE = "female", "Female"
        MALE = "male", "Male"
        OTHER = "other", "Other"
        UNKNOWN = "unknown", "Prefer not to say"

    # No index of its own: the (organization, phone) index starts with it.
    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="patients",
        db_index=False,
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
    language = models.CharField(
        "preferred language",
        max_length=8,
        choices=LANGUAGES,
        blank=True,
        db_default="",
        validators=[validate_language],
        help_text="Messages with a variant in this language (and enabled by the clinic) are "
        "sent in it; blank: the clinic's fallback language.",
    )
    address1 = models.CharField(max_length=200, blank=True)
    address2 = models.CharField(max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    province = models.CharField(max_length=100, blank=True)
    province_code = models.CharField(max_length=8, blank=True, help_text="e.g. FL")
    postal_code = models.CharField(max_length=20, blank=True)
    country_code = models.CharField(max_length=2, default="US")
    source = models.CharField(max_length=50, blank=True, help_text="e.g. patient-portal")
    # No consent flag here: consent is the append-only ConsentRecord history, and anything
    # shown elsewhere (the patient page, customer.acceptMarketing) is derived from it.
    is_test = models.BooleanField(
        "test patient",
        default=False,
        help_text="Test patients may receive live test sends from the workflow builder.",
    )
    profile_version = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["last_name", "first_name", "id"]
        indexes = [models.Index(fields=["organization", "phone"])]

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()


class ConsentRecord(ReplacedRowReturned):
    """One consent decision, append-only: the current state is a selector over the history."""

    class Channel(models.TextChoices):
        SMS = "sms", "SMS"
        EMAIL = "email", "Email"

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
        PROVIDER_EVENT = "provider_event", "Provider event (e.g. hard bounce, spam complaint)"
        IMPORT = "import", "Import"

    # No index of its own: the consent history index (patient, channel, purpose, …) starts with it.
    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, related_name="consents", db_index=False
    )
    # Choices from the registered channels (patients.channels): a new channel, no migration.
    channel = models.CharField(max_length=16, choices=consent_channel_choices, default=Channel.SMS)
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


class Order(TimeStamped, ReplacedRowReturned):
    class Status(models.TextChoices):
        AWAITING_PAYMENT = "awaiting_payment", "Awaiting payment"
        PROCESSING = "processing", "Processing"
        AWAITING_REQUIREMENTS = "awaiting_requirements", "Awaiting requirements"
        AWAITING_REQUISITION = "awaiting_requisition", "Awaiting requisition"
        AWAITING_SCRIPT = "awaiting_script", "Awaiting script"
        AWAITING_FULFILLMENT = "awaiting_fulfillment", "Awaiting fulfillment"
        AWAITING_SHIPMENT = "awaiting_shipment", "Awaiting shipment"
        SHIPPED = "shipped", "Shipped"

    # No index of its own: order_number_per_org starts with it.
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
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
    # Set on orders created by a subscription renewal (they record order.subscription_cycle).
    subscription = models.ForeignKey(
        "Subscription",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="orders",
    )

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
        subscription = self.subscription if self.subscription_id else None
        if (
            subscription is not None
            and self.patient_id
            and subscription.patient_id != self.patient_id
        ):
            raise ValidationError({"subscription": "This subscription belongs to another patient."})


class PatientRecord(ChangeTracked, TimeStamped):
    """A record about one patient. `organization` is copied from the patient when left unset,
    and kept alongside for tenant scoping without a join."""

    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="%(class)ss"
    )
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="%(class)ss")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)

    tracked_fields: ClassVar[tuple[str, ...]] = ("status",)
    version_field: ClassVar[str] = "status_version"

    class Meta:
        abstract = True
        ordering = ["-created_at", "-id"]

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.organization_id and self.patient_id:
            self.organization_id = self.patient.organization_id
        super().save(*args, **kwargs)

    def clean(self) -> None:
        if not self.organization_id and self.patient_id:
            self.organization_id = self.patient.organization_id
        if (
            self.patient_id
            and self.organization_id
            and self.patient.organization_id != self.organization_id
        ):
            raise ValidationError({"patient": "This patient belongs to another clinic."})


class Subscription(PatientRecord, ReplacedRowReturned):
    class Status(models.TextChoices):
        CREATED = "created", "Created"
        ACTIVE = "active", "Active"
        PAUSED = "paused", "Paused"
        CANCELLED = "cancelled", "Cancelled"

    product_id = models.CharField(max_length=64)
    product_name = models.CharField(max_length=200)
    price = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0"))
    interval_days = models.PositiveIntegerField(default=30, validators=[MinValueValidator(1)])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    current_cycle = models.PositiveIntegerField(
        default=1, validators=[MinValueValidator(1)], help_text="The first cycle is 1."
    )
    next_cycle_date = models.DateField(
        "renewal date", null=True, blank=True, help_text="When the next cycle starts."
    )
    status_version = models.PositiveIntegerField(default=0, editable=False)
    # The cycle whose upcoming-renewal event the scan recorded (claimed by conditional UPDATE).
    renewal_notice_cycle = models.PositiveIntegerField(null=True, blank=True, editable=False)

    class Meta(PatientRecord.Meta):
        indexes = [
            # The renewal scan reads active subscriptions by date, every minute.
            models.Index(
                fields=["next_cycle_date"],
                condition=Q(status="active"),
                name="subscription_renewal_due",
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(current_cycle__gte=1), name="subscription_cycle_positive"
            ),
            models.CheckConstraint(
                condition=Q(interval_days__gte=1), name="subscription_interval_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.product_name


class Appointment(PatientRecord, ReplacedRowReturned):
    class Status(models.TextChoices):
        BOOKED = "booked", "Booked"
        CONFIRMED = "confirmed", "Confirmed"
        CANCELLED = "cancelled", "Cancelled"
        COMPLETED = "completed", "Completed"
        NO_SHOW = "no_show", "No-show"
        # The patient asked for another time (e.g. replied "R" to a reminder); staff follow up.
        RESCHEDULE_REQUESTED = "reschedule_requested", "Reschedule requested"

    starts_at = models.DateTimeField()
    duration_minutes = models.PositiveIntegerField(default=30)
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.BOOKED)
    provider_name = models.CharField(max_length=200, blank=True)
    location = models.CharField(max_length=300, blank=True, help_text="For in-person visits.")
    video_url = models.URLField(max_length=500, blank=True, help_text="For video visits.")
    status_version = models.PositiveIntegerField(default=0, editable=False)
    # The start time the reminder scan recorded a reminder for; a reschedule differs from it.
    reminder_starts_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta(PatientRecord.Meta):
        ordering = ["-starts_at", "-id"]
        indexes = [
            models.Index(
                fields=["starts_at"],
                condition=Q(status__in=["booked", "confirmed"]),
                name="appointment_upcoming",
            )
        ]

    def __str__(self) -> str:
        return f"Appointment {self.starts_at:%Y-%m-%d %H:%M}"


class Cart(PatientRecord, ReplacedRowReturned):
    line_items = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"name": "…", "productId": "…", "price": "49.00", "quantity": 1, '
        '"isSubscription": false}]',
    )
    checkout_url = models.URLField(max_length=500, blank=True)
    checked_out_at = models.DateTimeField(
        null=True, blank=True, help_text="When the patient started checkout."
    )

    tracked_fields = ("checked_out_at",)
    version_field = ""

    def __str__(self) -> str:
        return f"Cart {self.pk}"


class QuestionnaireSubmission(PatientRecord):
    questionnaire_name = models.CharField(max_length=200)
    # Clinical content: stays in the database and the admin, never in an event payload.
    answers = models.JSONField(default=dict, blank=True)
    submitted_at = models.DateTimeField(default=timezone.now)

    tracked_fields = ()
    version_field = ""

    class Meta(PatientRecord.Meta):
        ordering = ["-submitted_at", "-id"]

    def __str__(self) -> str:
        return self.questionnaire_name


class Prescription(PatientRecord, ReplacedRowReturned):
    class Status(models.TextChoices):
        CREATED = "created", "Created"
        FULFILLED = "fulfilled", "Fulfilled"

    medication_name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    status_version = models.PositiveIntegerField(default=0, editable=False)

    def __str__(self) -> str:
        return self.medication_name


class Requisition(PatientRecord, ReplacedRowReturned):
    class Status(models.TextChoices):
        CREATED = "created", "Created"
        SUBMITTED = "submitted", "Sent to the lab"
        COLLECTED = "collected", "Sample collected"
        RESULTED = "resulted", "Results in"
        CANCELLED = "cancelled", "Cancelled"

    lab_name = models.CharField(max_length=200)
    test_panel = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    status_version = models.PositiveIntegerField(default=0, editable=False)

    def __str__(self) -> str:
        return f"{self.lab_name} requisition"


class Lead(ChangeTracked, TimeStamped):
    """A prospective patient; `converted_patient` is set when they become one."""

    class Status(models.TextChoices):
        CREATED = "created", "Created"
        CONVERTED = "converted", "Converted"
        LOST = "lost", "Lost"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="leads")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100, blank=True)
    email = models.EmailField(blank=True)
    phone = PhoneNumberField(blank=True, help_text="Any common format; stored as E.164.")
    source = models.CharField(max_length=50, blank=True, help_text="e.g. facebook-ad")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CREATED)
    converted_patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, null=True, blank=True, related_name="leads"
    )
    status_version = models.PositiveIntegerField(default=0, editable=False)

    tracked_fields = ("status",)
    version_field = "status_version"

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="converted") | Q(converted_patient__isnull=False),
                name="converted_lead_has_patient",
                violation_error_message="A converted lead needs the patient it became.",
            )
        ]

    def __str__(self) -> str:
        return f"{self.first_name} {self.last_name}".strip()

    def clean(self) -> None:
        patient = self.converted_patient if self.converted_patient_id else None
        if (
            patient is not None
            and self.organization_id
            and patient.organization_id != self.organization_id
        ):
            raise ValidationError({"converted_patient": "This patient belongs to another clinic."})


class Task(ChangeTracked, TimeStamped, ReplacedRowReturned):
    """A to-do for clinic staff, optionally about one patient."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        COMPLETED = "completed", "Completed"
        CANCELLED = "cancelled", "Cancelled"

    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="tasks")
    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, null=True, blank=True, related_name="tasks"
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    due_at = models.DateTimeField(null=True, blank=True)
    status_version = models.PositiveIntegerField(default=0, editable=False)

    tracked_fields = ("status",)
    version_field = "status_version"

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.title

    def save(self, *args: Any, **kwargs: Any) -> None:
        patient = self.patient if self.patient_id else None
        if not self.organization_id and patient is not None:
            self.organization_id = patient.organization_id
        super().save(*args, **kwargs)

    def clean(self) -> None:
        patient = self.patient if self.patient_id else None
        if (
            patient is not None
            and self.organization_id
            and patient.organization_id != self.organization_id
        ):
            raise ValidationError({"patient": "This patient belongs to another clinic."})


class PatientNote(PatientRecord, ReplacedRowReturned):
    """A note for the clinic's staff about one patient, written by staff or by a workflow (an
    "Update record" step). Shown on the patient's page; it fires no trigger."""

    text = models.TextField(max_length=4000)
    # Who wrote it, as the audit trail names its actors ("alice", "workflow “…” run 12").
    written_by = models.CharField(max_length=150, blank=True, editable=False)

    tracked_fields = ()
    version_field = ""

    def __str__(self) -> str:
        return f"Note {self.created_at:%Y-%m-%d %H:%M}"


class RecordWrite(models.Model):
    """One write to a patient's records made for an outside actor (a workflow step), keyed
    by that actor's idempotency key: written in the same transaction as the write itself, so
    a retried or redelivered step finds its row and returns the first outcome instead of
    writing again, and two workers running the same step write once (the second waits on
    the unique key, then reads the first one's row)."""

    idempotency_key = models.CharField(max_length=200, unique=True)
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="record_writes"
    )
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="record_writes")
    # The function that wrote ("setAppointmentStatus", …) and the record it wrote to.
    action = models.CharField(max_length=40)
    model = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    # The outcome returned to every later attempt of the same step.
    result = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} {self.model} {self.object_id}"


class AuditEntry(models.Model):
    """Who changed what, when, with the values before and after (secrets masked).

    Written by patients.audit from model signals, so every path that changes an audited
    record (admin, builder, services) leaves a trace. Never edited.
    """

    class Action(models.TextChoices):
        CREATED = "created", "Created"
        UPDATED = "updated", "Updated"
        DELETED = "deleted", "Deleted"

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_repr = models.CharField("by", max_length=150, blank=True)
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_entries"
    )
    action = models.CharField(max_length=8, choices=Action.choices)
    # No index of its own: the (model, object_id, -at) index starts with it.
    model = models.CharField(max_length=64, db_index=False)
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField("object", max_length=200)
    changes = models.JSONField(default=dict, help_text="field: [before, after]")

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit trail"
        indexes = [models.Index(fields=["model", "object_id", "-at"])]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.model} {self.object_repr}"
