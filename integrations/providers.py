"""Every provider careflow offers: one `adapter_register` line each.

Called by `IntegrationsConfig.ready()`, so the registry (workflows.adapters.REGISTRY) is full
before anything reads it: a request, a management command, a Celery worker (each loads the
apps first)."""

from integrations.twilio.adapter import TwilioAdapter
from integrations.webhook import WebhookAdapter
from workflows.adapters import adapter_register


def providers_register() -> None:
    adapter_register(TwilioAdapter())
    adapter_register(WebhookAdapter())
