"""Every adapter careflow offers: one line each in `_register_all`.

Import adapters from here (not from integrations.adapters) so the registry is complete
whenever it is read, whatever the order in which apps and admin modules load.
"""

from integrations.adapters import Adapter
from integrations.forms import integration_form_register
from integrations.twilio.adapter import TwilioAdapter
from integrations.twilio.forms import TwilioIntegrationForm
from integrations.webhook import WebhookAdapter

REGISTRY: dict[str, Adapter] = {}


def adapter_register(adapter: Adapter) -> Adapter:
    REGISTRY[adapter.name] = adapter
    return adapter


def adapter_get(name: str) -> Adapter:
    try:
        return REGISTRY[name]
    except KeyError:
        raise LookupError(f"no adapter named {name!r}") from None


def _register_all() -> None:
    adapter_register(TwilioAdapter())
    integration_form_register(TwilioIntegrationForm)
    adapter_register(WebhookAdapter())


_register_all()
