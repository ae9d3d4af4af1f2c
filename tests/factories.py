import secrets
from datetime import time, timedelta
from decimal import Decimal
from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from integrations.models import Integration, MessagingPolicy, OutboundMessage, ShortLink
from integrations.twilio.account import ADAPTER, twilio_settings
from patients.models import ConsentRecord, Order, Organization, Patient, StaffMembership
from workflows.models import CustomEventType, Event, Run, Step, StepRun, Workflow

SANDBOX_FROM = "+15005550006"  # Twilio's magic "valid sender" test number


class OrganizationFactory(factory.django.DjangoModelFactory[Organization]):
    class Meta:
        model = Organization
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Clinic {n}")
    slug = factory.Sequence(lambda n: f"clinic-{n}")
    timezone = "America/New_York"
    # Quiet hours open all day, so tests do not depend on the hour they run at; tests of
    # quiet hours set the window and pin "now" themselves.
    messaging_policy = factory.RelatedFactory(
        "tests.factories.MessagingPolicyFactory", factory_related_name="organization"
    )


class MessagingPolicyFactory(factory.django.DjangoModelFactory[MessagingPolicy]):
    class Meta:
        model = MessagingPolicy

    organization = factory.SubFactory(OrganizationFactory, messaging_policy=None)
    quiet_hours_start = time(0, 0)
    quiet_hours_end = time.max
    marketing_per_day = None
    marketing_per_week = None


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()

    username = factory.Sequence(lambda n: f"user{n}")
    is_staff = True
    password = factory.django.Password("pw")


class StaffMembershipFactory(factory.django.DjangoModelFactory[StaffMembership]):
    class Meta:
        model = StaffMembership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)


def clinic_client(organization: Organization, *codenames: str) -> Client:
    """A client logged in as a staff user of this clinic holding these permissions (codenames,
    e.g. "view_patient"), and no others."""
    permissions = list(Permission.objects.filter(codename__in=codenames))
    # A misspelt codename fails here instead of leaving the user quietly without it.
    assert len(permissions) == len(set(codenames)), f"not one permission each: {codenames}"
    user = StaffMembershipFactory(organization=organization).user
    user.user_permissions.set(permissions)
    client = Client()
    client.force_login(user)
    return client


class PatientFactory(factory.django.DjangoModelFactory[Patient]):
    class Meta:
        model = Patient

    organization = factory.SubFactory(OrganizationFactory)
    first_name = factory.Sequence(lambda n: f"Pat{n}")
    last_name = "Lee"
    email = factory.LazyAttribute(lambda p: f"{p.first_name.lower()}@example.com")
    phone = factory.Sequence(lambda n: f"+1415555{n % 10000:04d}")
    timezone = "America/New_York"


class ConsentFactory(factory.django.DjangoModelFactory[ConsentRecord]):
    class Meta:
        model = ConsentRecord

    patient = factory.SubFactory(PatientFactory)
    purpose = ConsentRecord.Purpose.TRANSACTIONAL
    action = ConsentRecord.Action.OPT_IN
    source = ConsentRecord.Source.SIGNUP_FORM
    consent_text = "I agree to receive texts about my care and orders. Reply STOP to opt out."


class OrderFactory(factory.django.DjangoModelFactory[Order]):
    class Meta:
        model = Order

    patient = factory.SubFactory(PatientFactory)
    organization = factory.LazyAttribute(lambda o: o.patient.organization)
    number = factory.Sequence(lambda n: f"10{n:04d}")
    status = Order.Status.PROCESSING
    total_amount = Decimal("49.00")
    line_items = factory.LazyFunction(
        lambda: [
            {
                "name": "Vitamin D",
                "productId": "p1",
                "price": "49.00",
                "quantity": 1,
                "isSubscription": False,
            }
        ]
    )


class IntegrationFactory(factory.django.DjangoModelFactory[Integration]):
    class Meta:
        model = Integration

    class Params:
        # A Twilio integration's values, as support staff enter them.
        account_sid = factory.LazyFunction(lambda: "AC" + secrets.token_hex(16))
        auth_token = factory.LazyFunction(lambda: secrets.token_hex(16))
        messaging_service_sid = ""
        sender_type = "auto"
        # Fast enough that the throttle never delays a test; throttle tests set their own rate.
        segments_per_second = 1000.0

    organization = factory.SubFactory(OrganizationFactory)
    name = "Twilio"
    adapter = ADAPTER
    senders = factory.LazyFunction(lambda: [SANDBOX_FROM])
    settings = factory.LazyAttribute(
        lambda o: twilio_settings(
            account_sid=o.account_sid,
            messaging_service_sid=o.messaging_service_sid,
            sender_type=o.sender_type,
            segments_per_second=o.segments_per_second,
        )
    )
    secrets = factory.LazyAttribute(lambda o: {"auth_token": o.auth_token})


def clinic_integration(organization: Organization) -> Integration:
    """The clinic's integration; one is made if it has none yet."""
    return organization.integrations.first() or IntegrationFactory(organization=organization)


class OutboundMessageFactory(factory.django.DjangoModelFactory[OutboundMessage]):
    class Meta:
        model = OutboundMessage

    integration = factory.SubFactory(IntegrationFactory)
    organization = factory.LazyAttribute(lambda o: o.integration.organization)
    idempotency_key = factory.Sequence(lambda n: f"factory:{n}")
    to = "+14155550123"
    body = "Hi"
    purpose = "transactional"


class ShortLinkFactory(factory.django.DjangoModelFactory[ShortLink]):
    """A text's short link (integrations.short_links), working for a day."""

    class Meta:
        model = ShortLink

    message = factory.SubFactory(OutboundMessageFactory)
    organization = factory.LazyAttribute(lambda o: o.message.organization)
    code = factory.Sequence(lambda n: f"Code{n:06d}")
    url = "https://sunrise.example/book"
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=1))


class WorkflowFactory(factory.django.DjangoModelFactory[Workflow]):
    class Meta:
        model = Workflow

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Workflow {n}")
    trigger = "order.shipped"
    enabled = True


def step_run_create(workflow: Workflow) -> StepRun:
    """The first step run of a new run of `workflow` (for a message sent by a step)."""
    event = Event.objects.create(
        organization=workflow.organization,
        type=workflow.trigger,
        dedupe_key=f"step-run:{secrets.token_hex(8)}",
    )
    return StepRun.objects.create(run=Run.objects.create(workflow=workflow, event=event), index=0)


class CustomEventTypeFactory(factory.django.DjangoModelFactory[CustomEventType]):
    """A clinic's custom event type `custom.lab_results_ready`: a kit id (required) and
    when the results came in."""

    class Meta:
        model = CustomEventType

    organization = factory.SubFactory(OrganizationFactory)
    name = "lab_results_ready"
    label = "Lab results ready"
    description = "The lab posted the patient's results."
    schema = factory.LazyFunction(
        lambda: {
            "type": "object",
            "properties": {
                "kitId": {
                    "type": "string",
                    "description": "The test kit's id.",
                    "examples": ["KIT-2291"],
                },
                "readyAt": {"type": "string", "format": "date-time"},
                "panels": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["kitId"],
        }
    )


class SmsStepFactory(factory.django.DjangoModelFactory[Step]):
    class Meta:
        model = Step

    workflow = factory.SubFactory(WorkflowFactory)
    position = 1
    adapter = "twilio"
    function = "sendSMS"
    parameters = factory.LazyFunction(
        lambda: {
            "message": "Hi {{customer.firstName}}, order {{order.number}} has shipped!",
            "to": "{{customer.phone}}",
            "from": SANDBOX_FROM,
        }
    )


def sms_step_definition(message: str, sender: str = SANDBOX_FROM) -> dict[str, Any]:
    """A Twilio SMS step as the builder posts it and a workflow version keeps it."""
    return {
        "type": "adapter",
        "adapter": "twilio",
        "function": "sendSMS",
        "parameters": {"message": message, "to": "{{customer.phone}}", "from": sender},
        "purpose": "transactional",
        "urgent": False,
    }


# --- the records that fire triggers (appended: the imports above belong to other factories) ---


from patients import models as records  # noqa: E402


def _same_organization(record: object) -> Organization:
    return record.patient.organization  # type: ignore[attr-defined]


class SubscriptionFactory(factory.django.DjangoModelFactory[records.Subscription]):
    class Meta:
        model = records.Subscription

    patient = factory.SubFactory(PatientFactory)
    organization = factory.LazyAttribute(_same_organization)
    product_id = factory.Sequence(lambda n: f"prod_{n}")
    product_name = "Vitamin D 2000 IU"
    price = Decimal("49.00")
    interval_days = 30
    status = records.Subscription.Status.ACTIVE
    current_cycle = 1
    next_cycle_date = factory.LazyFunction(lambda: timezone.localdate() + timedelta(days=20))


class AppointmentFactory(factory.django.DjangoModelFactory[records.Appointment]):
    class Meta:
        model = records.Appointment

    patient = factory.SubFactory(PatientFactory)
    organization = factory.LazyAttribute(_same_organization)
    starts_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=3))
    status = records.Appointment.Status.BOOKED
    provider_name = "Dr. Maria Gomez"
    video_url = "https://meet.example.com/r/8fd2"


class CartFactory(factory.django.DjangoModelFactory[records.Cart]):
    class Meta:
        model = records.Cart

    patient = factory.SubFactory(PatientFactory)
    organization = factory.LazyAttribute(_same_organization)
    checkout_url = factory.Sequence(lambda n: f"https://shop.example.com/checkout/{n}")
    line_items = factory.LazyFunction(
        lambda: [
            {
                "name": "Vitamin D",
                "productId": "p1",
                "price": "49.00",
                "quantity": 1,
                "isSubscription": True,
            }
        ]
    )


class QuestionnaireSubmissionFactory(
    factory.django.DjangoModelFactory[records.QuestionnaireSubmission]
):
    class Meta:
        model = records.QuestionnaireSubmission

    patient = factory.SubFactory(PatientFactory)
    organization = factory.LazyAttribute(_same_organization)
    questionnaire_name = "Intake questionnaire"
    answers = factory.LazyFunction(lambda: {"symptoms": "chest pain", "smoker": True})


class PrescriptionFactory(factory.django.DjangoModelFactory[records.Prescription]):
    class Meta:
        model = records.Prescription

    patient = factory.SubFactory(PatientFactory)
    organization = factory.LazyAttribute(_same_organization)
    medication_name = "Atorvastatin 10 mg"


class RequisitionFactory(factory.django.DjangoModelFactory[records.Requisition]):
    class Meta:
        model = records.Requisition

    patient = factory.SubFactory(PatientFactory)
    organization = factory.LazyAttribute(_same_organization)
    lab_name = "Quest Diagnostics"
    test_panel = "Lipid panel"


class LeadFactory(factory.django.DjangoModelFactory[records.Lead]):
    class Meta:
        model = records.Lead

    organization = factory.SubFactory(OrganizationFactory)
    first_name = factory.Sequence(lambda n: f"Lead{n}")
    last_name = "Rivera"
    email = factory.LazyAttribute(lambda lead: f"{lead.first_name.lower()}@example.com")
    phone = factory.Sequence(lambda n: f"+1415556{n % 10000:04d}")
    source = "facebook-ad"


class TaskFactory(factory.django.DjangoModelFactory[records.Task]):
    class Meta:
        model = records.Task

    organization = factory.SubFactory(OrganizationFactory)
    title = factory.Sequence(lambda n: f"Call patient {n}")
    due_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=1))


class PatientNoteFactory(factory.django.DjangoModelFactory[records.PatientNote]):
    class Meta:
        model = records.PatientNote

    patient = factory.SubFactory(PatientFactory)
    organization = factory.LazyAttribute(_same_organization)
    text = "Prefers a call after 5 pm."
    written_by = "staff"


def patient_in_branch(
    organization: Organization, split: dict[str, object], *, seed: str, label: str, phone: str
) -> Patient:
    """A consenting patient whose A/B bucket under `split` (and `seed`) is branch `label`:
    patients are made until one falls there (their uuids decide)."""
    from workflows.splits import split_choose

    for n in range(64):
        patient = PatientFactory(organization=organization, first_name=f"P{n}", phone=phone)
        if split_choose(split, seed=seed, key=str(patient.uuid)).label == label:
            ConsentFactory(patient=patient)
            return patient
        patient.delete()
    raise AssertionError(f"no patient fell into {label}")
