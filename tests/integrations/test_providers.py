"""integrations.providers: one registry line per provider, run when the app is ready."""

from integrations.providers import providers_register
from integrations.twilio.adapter import TwilioAdapter
from integrations.webhook import WebhookAdapter
from workflows.adapters import REGISTRY


def test_every_provider_is_registered_once_by_name() -> None:
    before = dict(REGISTRY)
    try:
        providers_register()  # again: the same names, replaced, nothing added
        assert set(REGISTRY) == set(before)
        assert isinstance(REGISTRY["twilio"], TwilioAdapter)
        assert isinstance(REGISTRY["webhook"], WebhookAdapter)
    finally:
        REGISTRY.clear()
        REGISTRY.update(before)
