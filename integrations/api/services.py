"""What the API's writes do beyond saving a serializer: consent decisions with their
evidence, and a signup's consent seen by its customer.signup event. Views call these inside
`ApiView.write` (one transaction, audited as the key's)."""

from typing import Any

from django.utils import timezone

from integrations.models import ApiKey
from patients.models import ConsentRecord, Patient
from patients.payloads import customer_event_payload
from patients.receivers import signup_dedupe_key
from patients.recording import event_recorded
from workflows.models import Event


def consent_record(*, patient: Patient, decision: dict[str, Any], api_key: ApiKey) -> ConsentRecord:
    """Append one validated decision (ConsentSerializer's data) to the patient's history.

    IP and user agent go into the record's `evidence` (its proof of the decision, as the
    inbound message SID is for a texted STOP), with the prefix of the key that recorded it:
    no new columns, and the admin shows them with the rest of the proof."""
    fields = dict(decision)
    evidence: dict[str, Any] = {"api_key": api_key.prefix}
    for name in ("ip", "user_agent"):
        value = fields.pop(name, "")
        if value:
            evidence[name] = value
    fields.setdefault("occurred_at", timezone.now())
    return ConsentRecord.objects.create(patient=patient, evidence=evidence, **fields)


def patient_signup_consents_record(
    *, patient: Patient, decisions: list[dict[str, Any]], api_key: ApiKey
) -> list[ConsentRecord]:
    """Record the decisions sent with a patient just created, in its transaction.

    The customer.signup event was written with the patient, before these, so its
    customer.acceptMarketing said no: it is written again here (it is dispatched after
    commit, so no workflow has read it yet)."""
    records = [
        consent_record(patient=patient, decision=decision, api_key=api_key)
        for decision in decisions
    ]
    if records:
        signup = event_recorded(signup_dedupe_key(patient.pk))
        Event.objects.filter(pk=signup.pk).update(payload=customer_event_payload(patient))
    return records
