"""The email service providers an email integration may send through, by its `esp` setting:
one module each, registered here in one line."""

from integrations.email.esps.base import Esp
from integrations.email.esps.mailgun import Mailgun
from integrations.email.esps.postmark import Postmark

ESPS: dict[str, Esp] = {esp.name: esp for esp in (Postmark(), Mailgun())}


def esp_get(name: str) -> Esp | None:
    """The ESP named `name`, or None (a setting no release of careflow offers)."""
    return ESPS.get(name)
