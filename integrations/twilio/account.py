"""A Twilio integration's account settings, read in one place: the rest of the Twilio
folder asks `twilio_account`, never the Integration's columns."""

from dataclasses import dataclass

from integrations.models import Integration

TOLL_FREE_PREFIXES = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")
# Segments per second Twilio allows each kind of sender by default.
DEFAULT_RATES = {"long_code": 1.0, "toll_free": 3.0, "short_code": 100.0, "ten_dlc": 12.0}


@dataclass(frozen=True)
class TwilioAccount:
    account_sid: str
    auth_token: str
    messaging_service_sid: str
    sender_type: str
    segments_per_second: float | None

    def send_rate(self, sender: str) -> float:
        """Segments per second Twilio lets this sender (a number or the Messaging Service)
        send; what the throttle shapes to."""
        if self.segments_per_second:
            return float(self.segments_per_second)
        kind = self.sender_type
        if kind not in DEFAULT_RATES:  # "auto": detected from the number
            kind = "toll_free" if sender.startswith(TOLL_FREE_PREFIXES) else "long_code"
        return DEFAULT_RATES[kind]

    def masked_account_sid(self) -> str:
        """Enough to recognise the account, not enough to use it."""
        sid = self.account_sid
        return f"{sid[:6]}…{sid[-4:]}" if len(sid) > 10 else "…"

    def __repr__(self) -> str:  # never the Auth Token, in a log or a traceback
        return f"TwilioAccount({self.masked_account_sid()})"


def twilio_account(integration: Integration) -> TwilioAccount:
    return TwilioAccount(
        account_sid=integration.account_sid,
        auth_token=integration.auth_token,
        messaging_service_sid=integration.messaging_service_sid,
        sender_type=integration.sender_type,
        segments_per_second=integration.segments_per_second,
    )
