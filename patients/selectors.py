"""Reads over patient records."""

from patients.models import ConsentRecord, Patient


def consent_current(
    *, patient: Patient, purpose: str, channel: str = ConsentRecord.Channel.SMS
) -> ConsentRecord | None:
    """The patient's latest consent decision for this channel and purpose, if any.

    The answer is the newest record by when it happened (ties broken by insertion order),
    so a later opt-out always wins over an earlier opt-in and vice versa.
    """
    return (
        ConsentRecord.objects.filter(patient=patient, channel=channel, purpose=purpose)
        .order_by("-occurred_at", "-id")
        .first()
    )


def consent_active_opt_in(
    *, patient: Patient, purpose: str, channel: str = ConsentRecord.Channel.SMS
) -> ConsentRecord | None:
    """The opt-in a send may rely on: the latest decision, if it is an opt-in."""
    latest = consent_current(patient=patient, purpose=purpose, channel=channel)
    if latest is not None and latest.action == ConsentRecord.Action.OPT_IN:
        return latest
    return None
