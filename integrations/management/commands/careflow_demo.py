"""Demo data: a clinic, its staff, consented patients, a sandbox Twilio integration and an
email integration, the integration guide's order-shipped workflow and a welcome email on
signup. Safe to run again: it only adds what is missing."""

import secrets
from datetime import time
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from integrations.models import Integration, MessagingPolicy
from integrations.twilio.account import ADAPTER, twilio_account, twilio_settings
from patients.models import ConsentRecord, Order, Organization, Patient, StaffMembership
from patients.roles import ROLES
from workflows.models import Event, Workflow
from workflows.versions import workflow_document_save

DEMO_ACCOUNT_SID = "AC" + "de" * 16
DEMO_FROM = "+15005550006"
DEMO_EMAIL_FROM = "care@sunrise.example"
EMAIL_CONSENT_TEXT = (
    "By checking this box I agree to receive emails from Sunrise Telehealth about my care and "
    "orders. Every email has a link to stop them."
)
CONSENT_TEXT = (
    "By checking this box I agree to receive text messages from Sunrise Telehealth about my "
    "care and orders. Message frequency varies. Msg & data rates may apply. Reply STOP to "
    "opt out, HELP for help."
)

WELCOME_EMAIL = {
    "subject": 'Welcome to Sunrise Telehealth, {{customer.firstName | default:"there"}}',
    "body": 'Hi {{customer.firstName | default:"there"}},\n\nWelcome to Sunrise Telehealth. '
    "Your care team will be in touch about your first visit.\n\nSunrise Telehealth",
    "html": '<p>Hi {{customer.firstName | default:"there"}},</p><p>Welcome to Sunrise '
    "Telehealth. Your care team will be in touch about your first visit.</p>",
    "to": "{{customer.email}}",
    "from": DEMO_EMAIL_FROM,
}


class Command(BaseCommand):
    help = "Create the demo clinic, users, patients, integration and workflow."

    @transaction.atomic
    def handle(self, *args: Any, **options: Any) -> None:
        clinic, _ = Organization.objects.get_or_create(
            slug="sunrise", defaults={"name": "Sunrise Telehealth", "timezone": "America/Chicago"}
        )
        Organization.objects.get_or_create(
            slug="harbor", defaults={"name": "Harbor Pharmacy", "timezone": "America/New_York"}
        )
        # Demo only: quiet hours open all day, so the README walk-through works at any hour.
        # Real clinics keep the default 08:00–21:00 (change it under Messaging policies).
        MessagingPolicy.objects.get_or_create(
            organization=clinic,
            defaults={"quiet_hours_start": time(0, 0), "quiet_hours_end": time(23, 59)},
        )
        integration = Integration.objects.filter(organization=clinic, adapter=ADAPTER).first()
        if integration is None:
            integration = Integration.objects.create(
                organization=clinic,
                name="Twilio (sandbox)",
                adapter=ADAPTER,
                settings=twilio_settings(account_sid=DEMO_ACCOUNT_SID),
                secrets={"auth_token": secrets.token_hex(16)},
                senders=[DEMO_FROM],
            )
        if not Integration.objects.filter(organization=clinic, adapter="email").exists():
            # `make run` writes emails to files (CAREFLOW_EMAIL_DELIVERY=file): the token is
            # the sandbox ESP's, never a real one.
            Integration.objects.create(
                organization=clinic,
                name="Email (sandbox)",
                adapter="email",
                settings={"esp": "postmark", "message_stream": "outbound"},
                secrets={
                    "server_token": secrets.token_hex(16),
                    "webhook_secret": secrets.token_urlsafe(24),
                },
                senders=[DEMO_EMAIL_FROM],
            )
        patients = [
            ("Maria", "Garcia", "+14155550101", "America/Chicago", True),
            ("James", "Wilson", "+14155550102", "America/New_York", True),
            ("Test", "Patient", "+14155550199", "America/Chicago", True),
            ("Noah", "Kim", "+14155550103", "America/Los_Angeles", False),
        ]
        seeded: list[int] = []
        for first, last, phone, tz, consented in patients:
            patient, created = Patient.objects.get_or_create(
                organization=clinic,
                phone=phone,
                defaults={
                    "first_name": first,
                    "last_name": last,
                    "timezone": tz,
                    "email": f"{first.lower()}@example.com",
                    "is_test": first == "Test",
                    "source": "patient-portal",
                },
            )
            if created:
                seeded.append(patient.pk)
            if created and consented:
                ConsentRecord.objects.create(
                    patient=patient,
                    purpose=ConsentRecord.Purpose.TRANSACTIONAL,
                    action=ConsentRecord.Action.OPT_IN,
                    source=ConsentRecord.Source.SIGNUP_FORM,
                    consent_text=CONSENT_TEXT,
                )
            if consented and not patient.consents.filter(channel="email").exists():
                ConsentRecord.objects.create(
                    patient=patient,
                    channel=ConsentRecord.Channel.EMAIL,
                    purpose=ConsentRecord.Purpose.TRANSACTIONAL,
                    action=ConsentRecord.Action.OPT_IN,
                    source=ConsentRecord.Source.SIGNUP_FORM,
                    consent_text=EMAIL_CONSENT_TEXT,
                )
            if created:
                Order.objects.create(
                    organization=clinic,
                    patient=patient,
                    number=f"SR-{1000 + patient.pk}",
                    status=Order.Status.AWAITING_SHIPMENT,
                    total_amount=Decimal("89.00"),
                    line_items=[
                        {
                            "name": "Vitamin D3 2000 IU",
                            "productId": "vd3",
                            "price": "89.00",
                            "quantity": 1,
                            "isSubscription": True,
                        }
                    ],
                )
        _demo_workflow(
            clinic,
            name="Order shipped SMS",
            description="The integration guide's example: text the patient when their order ships.",
            trigger="order.shipped",
            step={
                "type": "adapter",
                "adapter": "twilio",
                "function": "sendSMS",
                "parameters": {
                    "message": 'Hi {{customer.firstName | default:"there"}}, your order '
                    "{{order.number}} has shipped! Tracking: "
                    '{{order.trackingNumber | default:"coming soon"}}',
                    "to": "{{customer.phone}}",
                    "from": DEMO_FROM,
                },
            },
        )
        # The demo's patients are seeded, not signing up now: their signup events are marked
        # handled, so the welcome email goes to patients added later (and the README's
        # walk-through starts with an empty message log).
        Event.objects.filter(
            dedupe_key__in=[f"customer.signup:{pk}" for pk in seeded], dispatched_at__isnull=True
        ).update(dispatched_at=timezone.now())
        _demo_workflow(
            clinic,
            name="Welcome email",
            description="Email a new patient a welcome (the email channel's example).",
            trigger="customer.signup",
            step={
                "type": "adapter",
                "adapter": "email",
                "function": "sendEmail",
                "parameters": WELCOME_EMAIL,
            },
        )
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo data ready: {clinic.name}, {Patient.objects.filter(organization=clinic).count()} "
                f"patients, integration {twilio_account(integration).masked_account_sid()}."
            )
        )


def _demo_workflow(
    clinic: Organization, *, name: str, description: str, trigger: str, step: dict[str, Any]
) -> None:
    """Add the demo workflow, enabled, through the same save as the builder's (so it is
    validated and its version history starts), unless the clinic has it already."""
    if Workflow.objects.filter(organization=clinic, name=name).exists():
        return
    workflow_document_save(
        workflow=Workflow(organization=clinic, enabled=True),
        document={
            "name": name,
            "description": description,
            "definition": {"trigger": trigger, "steps": [step]},
        },
        comment="Demo data",
    )


def demo_user(
    username: str,
    *,
    superuser: bool = False,
    role: str | None = None,
    organization: Organization | None = None,
) -> str:
    """Create (or reset) a demo login with one role (a group of `patients.roles`, created by
    the migrations) and, for a clinic role, its clinic; return its new random password."""
    if role is not None and role not in ROLES:
        raise ValueError(f"No role named {role!r}; the roles are {sorted(ROLES)}.")
    password = secrets.token_urlsafe(9)
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.is_staff, user.is_superuser = True, superuser
    user.set_password(password)
    user.save()
    user.groups.set([Group.objects.get(name=role)] if role else [])
    if organization is not None:
        StaffMembership.objects.update_or_create(user=user, defaults={"organization": organization})
    else:
        StaffMembership.objects.filter(user=user).delete()
    return password
