"""A clinic's Twilio account as careflow reads it: the one place that knows which of an
Integration's generic `settings` / `secrets` hold Twilio's values, and what valid values are."""

import re
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from integrations.models import Integration
from patients.phones import phone_to_e164

ADAPTER = "twilio"

validate_account_sid = RegexValidator(
    r"^AC[0-9a-f]{32}\Z",
    "An Account SID is “AC” followed by 32 hexadecimal characters (0-9, a-f), "
    "as shown on the Twilio Console dashboard.",
    code="invalid_account_sid",
)
validate_messaging_service_sid = RegexValidator(
    r"^MG[0-9a-f]{32}\Z",
    "A Messaging Service SID is “MG” followed by 32 hexadecimal characters.",
    code="invalid_messaging_service_sid",
)

SENDER_TYPES = (
    ("auto", "Detect from the number (long code or toll-free)"),
    ("long_code", "Long code (1 segment/s)"),
    ("toll_free", "Toll-free (3 segments/s)"),
    ("ten_dlc", "10DLC (rate by trust tier)"),
    ("short_code", "Short code (100 segments/s)"),
)
TOLL_FREE_PREFIXES = ("+1800", "+1833", "+1844", "+1855", "+1866", "+1877", "+1888")
DEFAULT_RATES = {"long_code": 1.0, "toll_free": 3.0, "short_code": 100.0, "ten_dlc": 12.0}
RATE_MIN, RATE_MAX = 0.01, 1000.0


def twilio_sid_normal(value: str) -> str:
    """A Twilio SID (upper-case prefix + 32 hex digits) as careflow stores it: Twilio's own
    pattern allows hex of either case (`^AC[0-9a-fA-F]{32}$`), its API and Console write it
    in lower case, and SIDs are compared as text, so the hex is lowered. Anything else is
    returned stripped, for the validators to explain."""
    text = (value or "").strip()
    if re.fullmatch(r"[A-Z]{2}[0-9a-fA-F]{32}", text):
        return text[:2] + text[2:].lower()
    return text


def validate_sending_numbers(value: object) -> None:
    """Twilio's senders: numbers written in E.164 form."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError("Sending numbers must be a list of phone numbers.")
    for number in value:
        if phone_to_e164(number) != number:
            raise ValidationError(
                "“%(number)s” must be written in E.164 form (%(e164)s).",
                params={"number": number, "e164": phone_to_e164(number)},
            )


@dataclass(frozen=True)
class TwilioAccount:
    account_sid: str
    # Not in repr: a dataclass's repr lands in logs and error pages.
    auth_token: str = field(repr=False)
    messaging_service_sid: str = ""
    sender_type: str = "auto"
    segments_per_second: float | None = None

    def send_rate(self, sender: str) -> float:
        """Segments per second Twilio lets this sender (a number or the Messaging Service)
        send; what the throttle shapes to."""
        if self.segments_per_second:
            return float(self.segments_per_second)
        kind = self.sender_type
        if kind not in DEFAULT_RATES:  # "auto", or a value no longer offered
            kind = "toll_free" if sender.startswith(TOLL_FREE_PREFIXES) else "long_code"
        return DEFAULT_RATES[kind]

    def masked_account_sid(self) -> str:
        """Enough to recognise the account, not enough to use it."""
        sid = self.account_sid
        return f"{sid[:6]}…{sid[-4:]}" if len(sid) > 10 else "…"


def _rate(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def twilio_account(integration: Integration) -> TwilioAccount:
    """The Twilio values of an integration (missing ones read as empty: an integration saved
    through the admin always has them, and Twilio refuses an empty credential loudly)."""
    settings = integration.settings or {}
    return TwilioAccount(
        account_sid=str(settings.get("account_sid", "")),
        auth_token=str((integration.secrets or {}).get("auth_token", "")),
        messaging_service_sid=str(settings.get("messaging_service_sid", "")),
        sender_type=str(settings.get("sender_type", "auto")),
        segments_per_second=_rate(settings.get("segments_per_second")),
    )


def twilio_settings(
    *,
    account_sid: str,
    messaging_service_sid: str = "",
    sender_type: str = "auto",
    segments_per_second: float | None = None,
) -> dict[str, Any]:
    """An Integration's `settings` for these Twilio values, SIDs in their stored form."""
    return {
        "account_sid": twilio_sid_normal(account_sid),
        "messaging_service_sid": twilio_sid_normal(messaging_service_sid),
        "sender_type": sender_type,
        "segments_per_second": segments_per_second,
    }


def twilio_settings_validate(settings: dict[str, Any], senders: object = None) -> None:
    """Raise ValidationError (keyed by setting; the senders as "sending_numbers") unless
    `settings` (and `senders`, when given) are a valid Twilio integration's."""
    errors: dict[str, list[ValidationError]] = {}

    def check(name: str, run: Any) -> None:
        try:
            run()
        except ValidationError as exc:
            errors.setdefault(name, []).append(exc)

    check("account_sid", lambda: validate_account_sid(settings.get("account_sid", "")))
    if settings.get("messaging_service_sid"):
        check(
            "messaging_service_sid",
            lambda: validate_messaging_service_sid(settings["messaging_service_sid"]),
        )
    if settings.get("sender_type", "auto") not in dict(SENDER_TYPES):
        errors["sender_type"] = [ValidationError("Pick a sender type from the list.")]
    rate = settings.get("segments_per_second")
    if rate is not None and not (
        isinstance(rate, int | float) and RATE_MIN <= float(rate) <= RATE_MAX
    ):
        errors["segments_per_second"] = [
            ValidationError(f"Between {RATE_MIN:g} and {RATE_MAX:g} segments per second.")
        ]
    if senders is not None:
        check("sending_numbers", lambda: validate_sending_numbers(senders))
    if errors:
        raise ValidationError(errors)
