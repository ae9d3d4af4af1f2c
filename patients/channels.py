"""The channels consent is kept by ("sms", "email", …), each with the word the consent reasons
and the patient page use. Each messaging provider's transport registers its channel when the
apps load (integrations.messaging.transport_register), so a new channel needs no migration of
the consent history: `ConsentRecord.channel`'s choices are read from here."""

_CHANNELS: dict[str, str] = {}


def consent_channel_register(channel: str, word: str) -> None:
    if channel:
        _CHANNELS.setdefault(channel, word or channel)


def consent_channels() -> dict[str, str]:
    """Channel -> its word ("SMS", "email"), in the order they were registered."""
    return dict(_CHANNELS)


def consent_channel_choices() -> list[tuple[str, str]]:
    """`ConsentRecord.channel`'s choices (a callable: Django reads them when it needs them)."""
    return list(_CHANNELS.items())


def consent_channel_word(channel: str) -> str:
    return _CHANNELS.get(channel, channel)
