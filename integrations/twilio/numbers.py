"""Whom a text goes to, and whether a step's rendered numbers can be texted at all."""

from collections.abc import Mapping

from patients.models import Organization, Patient
from patients.phones import is_e164


def recipient_patient(
    organization: Organization, customer: Patient | None, to: str
) -> Patient | None:
    """The patient a message to `to` goes to: the event's customer when the number is
    theirs, otherwise the one patient of this clinic with that number."""
    if customer is not None and customer.phone == to:
        return customer
    matches = list(Patient.objects.filter(organization=organization, phone=to)[:2])
    return matches[0] if len(matches) == 1 else None


def numbers_problem(inputs: Mapping[str, str]) -> str:
    """Why a step's rendered To or From cannot be texted, or "". A {{variable}} can render to
    anything (an email, a note, a long text); unsaid here, it was "not a patient of this
    clinic" later, or a value too long for the message row."""
    for label, name in (("To Phone", "to"), ("From Phone", "from")):
        number = inputs.get(name, "").strip()
        if (number or name == "to") and not is_e164(number):
            shown = number if len(number) <= 24 else number[:23] + "…"
            return f"{label} “{shown}” is not a valid phone number"
    return ""
