"""The messaging core's view of a provider: one Transport per adapter, registered by name.

`integrations.sending` (claim → decide → throttle → send → accepted / refused / ambiguous →
reconcile) talks to providers only through this protocol, so exactly-once, policy and
throttling hold for every channel and no provider is named outside its own folder.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from integrations.channels import senders_source_register
from patients.channels import consent_channel_register

if TYPE_CHECKING:
    from integrations.models import OutboundMessage


@dataclass(frozen=True)
class Accepted:
    """The provider took the message."""

    provider_id: str  # the provider's message id (<= 255 characters)
    provider_status: str  # the provider's status word ("queued", "sent", ...)
    units: int = 0  # the provider's count of billable units (SMS segments); 0: not said


class Refused(Exception):
    """The provider said no before accepting: nothing was sent. `retryable`: asking again
    later may succeed; `opted_out`: the recipient refuses this sender."""

    def __init__(
        self, code: str, message: str, *, retryable: bool = False, opted_out: bool = False
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.opted_out = opted_out


class Ambiguous(Exception):
    """The provider may or may not have accepted it (no answer after the request went
    out): the message must be looked up before anything is sent again."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class LookupRefused(Ambiguous):
    """The provider refuses to look messages up for these credentials (e.g. Twilio's test
    credentials, 403): asking again will not tell."""


@dataclass(frozen=True)
class Found:
    """What a lookup found at the provider. `accepted_at`: when the provider accepted it;
    `reported_at`: when it reached `provider_status` (None: not said); `sender`: the sender
    the provider used ("" when not said)."""

    provider_id: str
    provider_status: str
    error_code: str = ""
    error_message: str = ""
    accepted_at: datetime | None = None
    reported_at: datetime | None = None
    sender: str = ""


class Transport:
    """One per provider. The base class's answers are the neutral ones."""

    channel: str = ""  # "sms", "email": the consent and caps channel
    channel_word: str = ""  # how consent reasons and pages name it ("SMS", "email")
    # False: an ambiguous send stays "unknown" for staff to decide; it is never resent.
    can_lookup: bool = True
    status_map: Mapping[str, str] = {}  # provider status -> OutboundMessage.Status value
    # The order of provider statuses: a late report never moves a message backwards.
    status_rank: Mapping[str, int] = {}
    # Whether the rules for texts and calls bind this channel: the state laws' quiet hours and
    # daily limits (DOMAIN.md §5: "no texts before 8:00 or after 21:00 …; Florida and Oklahoma:
    # 8:00–20:00 and at most 3 per 24 h") are about texts and calls, not email. True unless a
    # channel says otherwise: a channel that has not said is held to the stricter rules. With
    # it, a clinic cannot switch the channel's quiet hours off either.
    phone_rules: bool = True
    # Whether the clinic's first-contact wording (brand prefix, opt-out wording) is added to
    # this channel's messages (integrations.first_contact): carriers' rules for texts. Email has
    # its own unsubscribe rules.
    first_contact_wording: bool = False
    # Whether the clinic's short links (integrations.short_links) replace the links in this
    # channel's messages: a link costs a text characters; in an email it costs nothing, and
    # mail scanners follow links, which would record clicks nobody made.
    short_links: bool = False
    # Error codes (as recorded on a message) meaning the provider refused our credentials:
    # failure alerts watch for them (integrations.alerts).
    credentials_error_codes: frozenset[str] = frozenset()

    def send(self, message: "OutboundMessage") -> Accepted:
        """Hand the message to the provider; raises Refused or Ambiguous."""
        raise NotImplementedError

    def send_timeout(self) -> float:
        """Seconds a send may wait for the provider's answer; a claim twice as old (plus a
        margin) belongs to a worker that stopped."""
        return 30.0

    def lookup(self, message: "OutboundMessage", *, since: datetime) -> Found | None:
        """The provider's copy of the message (by its id when it has one, else of an attempt
        made after `since`); None when provably not there. Raises Ambiguous when it cannot
        tell, LookupRefused when it never will."""
        raise Ambiguous("lookup", "this provider cannot look messages up")

    def throttle(self, message: "OutboundMessage") -> tuple[str, float] | None:
        """(throttle key, units per second) for the message's sender; None: unthrottled."""
        return None

    def measure(self, body: str, *, media: bool = False) -> tuple[int, str, int]:
        """(characters, encoding, segments) of a body (sent with `media`, for a channel that
        carries it), as the message row records them; for a channel without segments, one."""
        return len(body), "", 1

    def units(self, message: "OutboundMessage") -> int:
        """What the message costs the sender's throughput (SMS segments; 1 for an email)."""
        return 1

    def provider_id_valid(self, provider_id: str) -> bool:
        """Whether a report's message id can be one of this provider's."""
        return 0 < len(provider_id) <= 255

    def sender_check(self, message: "OutboundMessage") -> tuple[bool, str]:
        """(ok, what the send-time "sender" check records) for the message's sender."""
        senders = getattr(message.integration, "senders", None) or []
        if message.from_number in senders:
            return True, message.from_number
        return False, f"sender {message.from_number} is not an approved sender for this clinic"

    def recipient_check(self, message: "OutboundMessage") -> tuple[bool, str]:
        """(ok, what the send-time "recipient" check records) for the message's recipient."""
        if message.to:
            return True, "has a recipient"
        return False, "the message has no recipient"

    def explain_error(self, code: str) -> str:
        """A provider error code in words a clinic admin can act on ("" when unknown)."""
        return ""

    def deploy_problems(self) -> list[tuple[str, str]]:
        """(problem, hint) for each setting that would fail this provider in production:
        `manage.py check --deploy` reports them."""
        return []


TRANSPORTS: dict[str, Transport] = {}
# The messaging policy's model reads the channels from here, without importing this module.
senders_source_register(TRANSPORTS)


def transport_register(adapter_name: str, transport: Transport) -> None:
    TRANSPORTS[adapter_name] = transport
    consent_channel_register(transport.channel, transport.channel_word)


def body_measure(adapter_name: str, body: str, *, media: bool = False) -> tuple[int, str, int]:
    """(characters, encoding, segments) of a body as `adapter_name`'s transport counts it. A
    transport is asked about media only with media: one without it need not take the
    keyword."""
    transport = transport_get(adapter_name)
    return transport.measure(body, media=True) if media else transport.measure(body)


def transport_get(adapter_name: str) -> Transport:
    try:
        return TRANSPORTS[adapter_name]
    except KeyError:
        raise LookupError(f"no messaging transport is registered for {adapter_name!r}") from None
