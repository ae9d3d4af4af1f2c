"""Every provider careflow offers, registered at app loading: one line per provider."""

from integrations.messaging import transport_register
from integrations.twilio.transport import TwilioTransport


def providers_register() -> None:
    transport_register("twilio", TwilioTransport())
