"""The messaging channels the registered providers send on ("sms", "email", …), each with
whether the rules for texts and calls bind it: read from the transports that
`integrations.messaging` registers, for the messaging policy's model and forms, which sit
below the transports (the transports' module names the message model)."""

from collections.abc import Mapping
from typing import Protocol


class Sender(Protocol):
    """What this module reads of a transport (integrations.messaging.Transport)."""

    channel: str
    # Whether Florida's and Oklahoma's rules for texts and calls apply to its channel.
    phone_rules: bool


# The messaging core's live registry of transports by adapter (integrations.messaging).
_SENDERS: list[Mapping[str, Sender]] = []


def senders_source_register(senders: Mapping[str, Sender]) -> None:
    _SENDERS.append(senders)


def registered_channels() -> dict[str, bool]:
    """Each channel with whether the phone rules bind it: they do if any of its transports
    says so."""
    channels: dict[str, bool] = {}
    for sender in (sender for source in _SENDERS for sender in source.values()):
        if sender.channel:
            channels[sender.channel] = channels.get(sender.channel, False) or sender.phone_rules
    return channels
