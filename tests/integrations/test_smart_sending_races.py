"""Smart sending under concurrency, on PostgreSQL with threads: marketing messages to the same
patient decided at the same instant hold the patient's lock, so exactly one goes out."""

import pytest

from integrations.models import MessagingPolicy, OutboundMessage
from integrations.policy import messaging_policy_forget
from integrations.sending import message_prepare_and_deliver
from integrations.twilio.sandbox import SandboxServer
from tests.conftest import at_once, sandbox_account
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

Status = OutboundMessage.Status


@pytest.mark.django_db(transaction=True)
def test_concurrent_marketing_sends_to_one_patient_send_exactly_one(
    sandbox: SandboxServer,
) -> None:
    integration = sandbox_account(sandbox, IntegrationFactory())
    patient = PatientFactory(organization=integration.organization, phone="+14155550123")
    ConsentFactory(patient=patient)
    ConsentFactory(
        patient=patient, purpose="marketing", consent_text="Yes, send me offers. Reply STOP."
    )
    MessagingPolicy.objects.filter(organization=integration.organization).update(
        smart_sending_hours=24
    )
    messaging_policy_forget()
    results = at_once(
        4,
        lambda n: message_prepare_and_deliver(
            organization=integration.organization,
            integration=integration,
            idempotency_key=f"run:{n}:step:0",
            first_attempt=True,
            to=patient.phone,
            from_number="+15005550006",
            body=f"Offer {n}",
            purpose="marketing",
            patient=patient,
        ),
    )
    assert sorted(m.status for m in results) == [
        Status.SENT,
        Status.SKIPPED,
        Status.SKIPPED,
        Status.SKIPPED,
    ]
    skipped = [m for m in results if m.status == Status.SKIPPED]
    assert all(m.skip_reason.startswith("smart sending: ") for m in skipped)
    assert len(sandbox.messages()) == 1
