"""Every provider careflow offers: one line each.

A provider is an adapter (the functions the builder offers and the engine executes) and, for a
messaging channel, the transport the messaging core sends through (integrations.messaging) and
the admin form of its integration settings (integrations.forms).
Called by `IntegrationsConfig.ready()`, so both registries are full before anything reads them:
a request, a management command, a Celery worker (each loads the apps first)."""

from integrations.email.adapter import EmailAdapter
from integrations.email.forms import EmailIntegrationForm
from integrations.email.transport import EmailTransport
from integrations.forms import IntegrationForm, integration_form_register
from integrations.messaging import Transport, transport_register
from integrations.records.adapter import RecordsAdapter
from integrations.twilio.adapter import TwilioAdapter
from integrations.twilio.forms import TwilioIntegrationForm
from integrations.twilio.transport import TwilioTransport
from integrations.webhook import WebhookAdapter
from workflows.adapters import Adapter, adapter_register


def providers_register() -> None:
    provider_register(TwilioAdapter(), TwilioTransport(), TwilioIntegrationForm)
    provider_register(EmailAdapter(), EmailTransport(), EmailIntegrationForm)
    provider_register(WebhookAdapter())
    provider_register(RecordsAdapter())


def provider_register(
    adapter: Adapter,
    transport: Transport | None = None,
    form: type[IntegrationForm] | None = None,
) -> None:
    adapter_register(adapter)
    if transport is not None:
        transport_register(adapter.name, transport)
    if form is not None:
        integration_form_register(form)
