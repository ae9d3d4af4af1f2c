"""What the API takes and gives, validated as the admin's forms validate: phones to E.164
(patients.phones), time zones, choices, storable text; unknown fields are refused, not
ignored (a misspelt field silently dropped is a lost write)."""

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import models
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from patients.channels import consent_channel_choices
from patients.inputs import validate_storable_line
from patients.models import (
    Appointment,
    Cart,
    ConsentRecord,
    Order,
    Patient,
    PatientRecord,
    Prescription,
    Requisition,
    Subscription,
)
from patients.phones import phone_to_e164

Source = ConsentRecord.Source
# The sources an API caller may claim: what the patient did on the caller's own pages. The
# others are careflow's to record (a texted STOP, a provider's refusal, a staff member).
API_CONSENT_SOURCES = (Source.SIGNUP_FORM, Source.CHECKOUT, Source.PATIENT_PORTAL, Source.IMPORT)
# How far in the future a decision's time may be: the caller's clock may run a little ahead.
CLOCK_SKEW = timedelta(minutes=5)
MAX_USER_AGENT_LENGTH = 500


class PhoneField(serializers.CharField):
    """Any common way of writing a number, stored as E.164; a clear error otherwise."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("allow_blank", True)
        kwargs.setdefault("required", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        if not value:
            return ""
        try:
            return phone_to_e164(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None


class RefusesUnknownFields(serializers.Serializer):
    """Refuses fields it does not know or may not write, naming the ones it takes."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError(
                    {
                        name: [
                            "Unknown or read-only field; the fields you may send are: "
                            + ", ".join(sorted(writable))
                            + "."
                        ]
                        for name in unknown
                    }
                )
        return super().to_internal_value(data)


class StrictModelSerializer(RefusesUnknownFields, serializers.ModelSerializer):
    """A ModelSerializer that refuses unknown fields, and one-line text that could not be
    stored or shown (control characters, line breaks)."""

    def build_standard_field(self, field_name: str, model_field: Any) -> Any:
        field_class, kwargs = super().build_standard_field(field_name, model_field)
        if type(model_field) is models.CharField and not kwargs.get("choices"):
            kwargs["validators"] = [*kwargs.get("validators", []), validate_storable_line]
        return field_class, kwargs


class ConsentSerializer(StrictModelSerializer):
    """One consent decision, appended to the patient's history (never edited)."""

    channel = serializers.ChoiceField(choices=[], default=ConsentRecord.Channel.SMS)
    source = serializers.ChoiceField(
        choices=[(source.value, source.label) for source in API_CONSENT_SOURCES],
        help_text="Where the patient decided. Opt-outs by texted keyword, provider errors "
        "and staff are recorded by careflow itself.",
    )
    consent_text = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=10_000,
        help_text="The exact consent language the patient was shown; required for a "
        "marketing opt-in.",
    )
    occurred_at = serializers.DateTimeField(
        required=False, help_text="When the patient decided; default now. Not in the future."
    )
    ip = serializers.IPAddressField(
        required=False, write_only=True, help_text="The patient's IP address, if known."
    )
    user_agent = serializers.CharField(
        required=False,
        write_only=True,
        allow_blank=True,
        max_length=MAX_USER_AGENT_LENGTH,
        validators=[validate_storable_line],
        help_text="The patient's browser (User-Agent), if known.",
    )

    class Meta:
        model = ConsentRecord
        fields = [
            "channel",
            "purpose",
            "action",
            "source",
            "consent_text",
            "occurred_at",
            "ip",
            "user_agent",
            "evidence",
            "created_at",
        ]
        read_only_fields = ["evidence", "created_at"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The registered channels (a provider adds one when the apps load).
        self.fields["channel"].choices = consent_channel_choices()

    def validate_occurred_at(self, value: Any) -> Any:
        if value > timezone.now() + CLOCK_SKEW:
            raise serializers.ValidationError("This is in the future; send when it happened.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (
            attrs.get("purpose") == ConsentRecord.Purpose.MARKETING
            and attrs.get("action") == ConsentRecord.Action.OPT_IN
            and not (attrs.get("consent_text") or "").strip()
        ):
            # patients.consent: marketing needs express written consent (the text shown,
            # from a written source: every API source is one), so an opt-in without its text
            # would be recorded yet allow no marketing message at all.
            raise serializers.ValidationError(
                {
                    "consent_text": [
                        "A marketing opt-in needs the exact consent text the patient was shown: "
                        "marketing messages need express written consent, and without its text "
                        "this opt-in would allow none."
                    ]
                }
            )
        return attrs


class PatientSerializer(StrictModelSerializer):
    phone = PhoneField(help_text="Any common format; stored and returned as E.164.")
    consents = ConsentSerializer(
        many=True,
        required=False,
        write_only=True,
        help_text="Consent decisions to record with a new patient, in the same transaction "
        "(so a customer.signup workflow's first text already sees them). Create only.",
    )

    class Meta:
        model = Patient
        # The profile (whose real change records customer.updated), then the rest.
        fields = [
            "uuid",
            *Patient.tracked_fields,
            "is_test",
            "consents",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["uuid", "created_at", "updated_at"]

    def validate_consents(self, value: list[Any]) -> list[Any]:
        if self.instance is not None:
            raise serializers.ValidationError(
                "Consent is history: append a decision with POST /api/v1/patients/{uuid}/consents/."
            )
        return value


@extend_schema_field(OpenApiTypes.UUID)
class PatientRefField(serializers.SlugRelatedField):
    """A patient by uuid, among the calling key's clinic's patients only."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(slug_field="uuid", **kwargs)

    def get_queryset(self) -> Any:
        api_key = self.context.get("api_key")
        if api_key is None:
            return Patient.objects.none()
        return Patient.objects.filter(organization_id=api_key.organization_id)

    def to_internal_value(self, data: Any) -> Any:
        try:
            return super().to_internal_value(data)
        except DjangoValidationError:  # a malformed UUID
            self.fail("invalid")


class RecordSerializer(StrictModelSerializer):
    """A patient's record (an order, an appointment…): the patient is named by uuid when it
    is created and cannot be moved to another patient."""

    patient = PatientRefField(help_text="The patient's uuid.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance is not None and not isinstance(self.instance, (list, models.QuerySet)):
            self.fields["patient"].read_only = True


def _validate_json(value: Any, kind: type, what: str) -> Any:
    if not isinstance(value, kind):
        raise serializers.ValidationError(f"Must be {what}.")
    return value


class OrderSerializer(RecordSerializer):
    status_history = serializers.JSONField(read_only=True)

    class Meta:
        model = Order
        fields = [
            "uuid",
            "patient",
            "number",
            "status",
            "status_history",
            "line_items",
            "shipping_address",
            "total_amount",
            "discount_amount",
            "coupon",
            "tracking_number",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["uuid", "created_at", "updated_at"]

    def validate_line_items(self, value: Any) -> Any:
        return _validate_json(value, list, 'a list of items ({"name": …, "price": …, …})')

    def validate_shipping_address(self, value: Any) -> Any:
        return _validate_json(value, dict, "an object")

    def validate_number(self, value: str) -> str:
        api_key = self.context["api_key"]
        taken = Order.objects.filter(organization_id=api_key.organization_id, number=value)
        if self.instance is not None:
            taken = taken.exclude(pk=self.instance.pk)
        if taken.exists():
            raise serializers.ValidationError("This clinic has an order with this number.")
        return value


def record_serializer(model: type[PatientRecord], fields: list[str]) -> type[RecordSerializer]:
    """The serializer of a patient record model with these fields of its own."""
    meta = type(
        "Meta",
        (),
        {
            "model": model,
            "fields": ["uuid", "patient", *fields, "created_at", "updated_at"],
            "read_only_fields": ["uuid", "created_at", "updated_at"],
        },
    )
    return type(f"{model.__name__}Serializer", (RecordSerializer,), {"Meta": meta})


AppointmentSerializer = record_serializer(
    Appointment,
    ["starts_at", "duration_minutes", "status", "provider_name", "location", "video_url"],
)
SubscriptionSerializer = record_serializer(
    Subscription,
    [
        "product_id",
        "product_name",
        "price",
        "interval_days",
        "status",
        "current_cycle",
        "next_cycle_date",
    ],
)
PrescriptionSerializer = record_serializer(Prescription, ["medication_name", "status"])
RequisitionSerializer = record_serializer(Requisition, ["lab_name", "test_panel", "status"])
CartSerializer = record_serializer(Cart, ["line_items", "checkout_url", "checked_out_at"])
