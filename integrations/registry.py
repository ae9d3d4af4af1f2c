"""Every adapter careflow offers: one line each."""

from integrations.adapters import adapter_register
from integrations.twilio.adapter import TwilioAdapter

adapter_register(TwilioAdapter())
