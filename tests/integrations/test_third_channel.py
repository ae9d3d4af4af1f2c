"""A third channel is one folder and one registration line: no migration, no engine edit.

The provider below ("carrier pigeon", channel "pigeon") is what a new channel's folder would
hold (an adapter, a transport, an admin form), registered the way `integrations.providers`
registers Twilio and email. Everything else must follow from the registration: the builder's
schema, save-time validation, a run that sends through the messaging core with consent on
the new channel, the messaging policy's section for it, the integration admin's form, the
patient page's consent table, and no migration of any shared table.
"""

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django import forms
from django.core.management import call_command
from django.test import Client

from integrations import channels, messaging
from integrations import forms as integration_forms
from integrations.forms import IntegrationForm
from integrations.messaging import Accepted, Transport
from integrations.models import Integration, OutboundMessage
from integrations.policy_forms import channel_fieldsets
from integrations.providers import provider_register
from integrations.sending import message_prepare_and_deliver
from patients import channels as consent_channels
from patients.models import ConsentRecord, Order, Patient
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    WorkflowFactory,
)
from workflows import adapters
from workflows.adapters import Adapter, Function, Outcome, Parameter, StepContext
from workflows.builder import builder_schema
from workflows.engine import event_dispatch, run_advance
from workflows.models import Event, Run, Step
from workflows.validation import workflow_validate

pytestmark = pytest.mark.django_db

SEND_NOTE = Function(
    name="sendNote",
    label="Send a note",
    channel="pigeon",
    sender_parameter="from",
    parameters=(
        Parameter("note", "Note", "What the pigeon carries."),
        Parameter("to", "To loft", example="{{customer.phone}}"),
        Parameter("from", "From loft"),
    ),
)


class PigeonTransport(Transport):
    channel = "pigeon"
    channel_word = "pigeon post"
    status_map = {"flying": "sent", "landed": "delivered"}
    status_rank = {"": 0, "flying": 1, "landed": 2}

    def __init__(self) -> None:
        self.carried: list[str] = []

    def send(self, message: OutboundMessage) -> Accepted:
        self.carried.append(message.body)
        return Accepted(provider_id=f"pigeon-{message.uuid}", provider_status="flying")


class PigeonAdapter(Adapter):
    name = "pigeon"
    label = "Carrier pigeon"
    functions = {SEND_NOTE.name: SEND_NOTE}

    def execute(self, *, function: str, context: StepContext) -> Outcome:
        integration = Integration.objects.get(
            organization=context.organization, adapter=self.name, enabled=True
        )
        message = message_prepare_and_deliver(
            idempotency_key=context.idempotency_key,
            first_attempt=context.attempt <= 1,
            organization=context.organization,
            integration=integration,
            channel="pigeon",
            to=context.inputs["to"],
            from_number=context.inputs["from"],
            body=context.inputs["note"],
            purpose=context.purpose,
            patient=context.patient,
            step_run_id=context.step_run_id,
            is_test=context.is_test,
        )
        if message.status == OutboundMessage.Status.SENT:
            return Outcome("succeeded", result={"message_id": message.pk})
        return Outcome("skipped", reason=message.skip_reason)

    def senders(self, organization_ids: Any) -> dict[int, list[str]]:
        lofts = Integration.objects.filter(adapter=self.name, enabled=True)
        return {i.organization_id: list(i.senders) for i in lofts}


class PigeonIntegrationForm(IntegrationForm):
    adapter_name = "pigeon"
    adapter_label = "Carrier pigeon"
    secret_fields = ("ring_code",)

    ring_code = forms.CharField(widget=forms.PasswordInput(render_value=False), required=False)
    lofts = forms.CharField(help_text="One loft per line.")

    def provider_values(
        self, cleaned: dict[str, Any], secrets: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, str], list[str]]:
        return {}, secrets, cleaned.get("lofts", "").split()


@pytest.fixture
def pigeon() -> Iterator[PigeonTransport]:
    registries: list[dict[str, Any]] = [
        adapters.REGISTRY,
        messaging.TRANSPORTS,
        integration_forms.INTEGRATION_FORMS,
        consent_channels._CHANNELS,
    ]
    saved = [dict(registry) for registry in registries]
    transport = PigeonTransport()
    provider_register(
        PigeonAdapter(), transport, PigeonIntegrationForm
    )  # the one registration line
    yield transport
    for registry, before in zip(registries, saved, strict=True):
        registry.clear()
        registry.update(before)


@pytest.fixture
def loft(pigeon: PigeonTransport) -> Integration:
    return IntegrationFactory(adapter="pigeon", name="Pigeons", senders=["loft-1"])


def _step() -> dict[str, Any]:
    return {
        "type": "adapter",
        "adapter": "pigeon",
        "function": "sendNote",
        "parameters": {"note": "Hi {{customer.firstName}}", "to": "loft-9", "from": "loft-1"},
    }


def test_no_migration_is_needed_for_it(pigeon: PigeonTransport) -> None:
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


def test_the_builder_and_validation_offer_it(loft: Integration) -> None:
    schema = builder_schema()
    offered = {(a["name"], f["name"]) for a in schema["adapters"] for f in a["functions"]}
    assert ("pigeon", "sendNote") in offered
    report = workflow_validate(trigger="order.shipped", filter={}, steps=[_step()])
    assert not report.steps, report.steps


def test_a_run_sends_through_the_core_with_consent_on_its_channel(
    loft: Integration, pigeon: PigeonTransport
) -> None:
    workflow = WorkflowFactory(organization=loft.organization, trigger="order.shipped")
    step = _step()
    Step.objects.create(
        workflow=workflow,
        position=1,
        type="adapter",
        adapter="pigeon",
        function="sendNote",
        parameters=step["parameters"],
    )
    with_consent = PatientFactory(organization=loft.organization, first_name="Ann")
    without = PatientFactory(organization=loft.organization, first_name="Bob")
    ConsentFactory(patient=with_consent, channel="pigeon")
    ConsentFactory(patient=without)  # SMS consent is not pigeon consent

    statuses = []
    for patient in (with_consent, without):
        order = OrderFactory(patient=patient, status=Order.Status.AWAITING_SHIPMENT)
        order.status = Order.Status.SHIPPED
        order.save()
        event = Event.objects.get(type="order.shipped", subject_id=str(order.pk))
        (run_id,) = event_dispatch(event_id=event.pk)
        run = run_advance(run_id=run_id)
        statuses.append(run.status if run else None)
    assert statuses == [Run.Status.SUCCEEDED, Run.Status.SKIPPED]

    assert pigeon.carried == ["Hi Ann"]
    sent, skipped = (
        OutboundMessage.objects.get(patient=with_consent),
        OutboundMessage.objects.get(patient=without),
    )
    assert (sent.channel, sent.status, sent.segments) == ("pigeon", "sent", 1)
    assert skipped.status == "skipped" and "no pigeon post consent" in skipped.skip_reason


def test_its_consent_and_rules_need_no_schema_change(pigeon: PigeonTransport) -> None:
    patient: Patient = PatientFactory()
    record = ConsentRecord(
        patient=patient, channel="pigeon", purpose="transactional", action="opt_in", source="admin"
    )
    record.full_clean()  # the channel is a valid choice: it was registered
    assert "Pigeon rules" in [title for title, _ in channel_fieldsets()]
    assert channels.registered_channels()["pigeon"] is True  # a channel that has not said
    # otherwise is held to the state rules for texts and calls


def test_its_admin_pages_come_from_its_form(loft: Integration, admin_client: Client) -> None:
    add = admin_client.get("/admin/integrations/integration/add/?adapter=pigeon")
    assert add.status_code == 200
    assert 'name="ring_code"' in add.content.decode()
    patient = PatientFactory(organization=loft.organization)
    page = admin_client.get(f"/admin/patients/patient/{patient.pk}/change/")
    assert page.status_code == 200
    assert "Consent to pigeon post" in page.content.decode()
