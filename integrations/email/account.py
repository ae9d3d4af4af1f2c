"""An email integration's settings and secrets, read in one place.

The integration row is provider-neutral (issue 15, section 3): `settings` holds the non-secret
values, `secrets` (encrypted at rest, write-only in forms) a JSON object, `senders` the
clinic's verified sender addresses. Nothing else in careflow reads them for email.

    settings: {"esp": "postmark", "message_stream": "outbound", "send_rate": 10}
    secrets:  {"server_token": "...", "webhook_secret": "..."}

    settings: {"esp": "mailgun", "mailgun_domain": "mg.clinic.example",
               "mailgun_region": "us"}
    secrets:  {"mailgun_api_key": "...", "mailgun_webhook_signing_key": "..."}

Which keys an ESP keeps is its own module's business (`integrations.email.esps`); an
integration saved before the `esp` setting existed is Postmark's.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The user name of the HTTP basic auth Postmark's webhooks carry (the secret is the password).
WEBHOOK_USER = "postmark"


@dataclass(frozen=True)
class EmailAccount:
    esp: str
    server_token: str = field(repr=False)
    # "user:password" our webhook endpoint expects; "" refuses every webhook.
    webhook_auth: str = field(repr=False)
    message_stream: str
    senders: tuple[str, ...]
    # Messages per second this integration may send; None: unthrottled.
    send_rate: float | None
    # Every setting and secret as stored, for the ESPs that keep more than Postmark's three.
    settings: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    def sender_allowed(self, address: str) -> bool:
        return address.strip().lower() in (sender.lower() for sender in self.senders)


def _object(raw: Any) -> dict[str, Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw) if raw.strip() else {}
        except ValueError:
            return {}
    return dict(raw) if isinstance(raw, dict) else {}


def email_account(integration: Any) -> EmailAccount:
    """The email values of `integration` (an Integration with adapter "email")."""
    settings = _object(getattr(integration, "settings", None))
    secrets = _object(getattr(integration, "secrets", None))
    webhook_secret = str(secrets.get("webhook_secret") or "")
    rate = settings.get("send_rate")
    return EmailAccount(
        esp=str(settings.get("esp") or "postmark"),
        server_token=str(secrets.get("server_token") or ""),
        webhook_auth=f"{WEBHOOK_USER}:{webhook_secret}" if webhook_secret else "",
        message_stream=str(settings.get("message_stream") or "outbound"),
        senders=tuple(str(s) for s in (getattr(integration, "senders", None) or [])),
        send_rate=float(rate) if isinstance(rate, int | float) and rate > 0 else None,
        settings=settings,
        secrets={str(name): str(value) for name, value in secrets.items()},
    )
