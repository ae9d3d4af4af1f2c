import secrets
from decimal import Decimal

import factory
from django.contrib.auth import get_user_model

from integrations.models import Integration
from patients.models import ConsentRecord, Order, Organization, Patient, StaffMembership
from workflows.models import Step, Workflow

SANDBOX_FROM = "+15005550006"  # Twilio's magic "valid sender" test number


class OrganizationFactory(factory.django.DjangoModelFactory[Organization]):
    class Meta:
        model = Organization

    name = factory.Sequence(lambda n: f"Clinic {n}")
    slug = factory.Sequence(lambda n: f"clinic-{n}")
    timezone = "America/New_York"


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

    organization = factory.SubFactory(OrganizationFactory)
    account_sid = factory.LazyFunction(lambda: "AC" + secrets.token_hex(16))
    auth_token = factory.LazyFunction(lambda: secrets.token_hex(16))
    sending_numbers = factory.LazyFunction(lambda: [SANDBOX_FROM])


class WorkflowFactory(factory.django.DjangoModelFactory[Workflow]):
    class Meta:
        model = Workflow

    organization = factory.SubFactory(OrganizationFactory)
    name = factory.Sequence(lambda n: f"Workflow {n}")
    trigger = "order.shipped"
    enabled = True


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
