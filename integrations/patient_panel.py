"""The conversation on a patient's admin page: the texts sent to and received from the
patient, in time order, with what happened to each and the run that sent it.

Contributed to the patient page through `patients.panels` (registered in
IntegrationsConfig.ready()): the messages live here, and `patients` must not import
`integrations`.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse

from integrations.messaging import transport_get
from integrations.models import InboundMessage, OutboundMessage
from patients.models import Patient
from patients.panels import PatientPanel
from workflows.adapters import REGISTRY

# A page, not an archive: the latest texts, with links to the filtered lists for the rest.
CONVERSATION_LIMIT = 50
SENT, RECEIVED = "sent", "received"

M = TypeVar("M", bound=Model)


@dataclass(frozen=True, slots=True)
class ConversationEntry:
    direction: str  # SENT (to the patient) or RECEIVED (from the patient)
    pk: int
    at: datetime
    body: str
    number: str  # the patient's number the text went to or came from
    status: str
    status_label: str
    # Why it was not sent, what went wrong, or what careflow made of a received text.
    reason: str = ""
    flagged: bool = False
    # When a deferred text is due, or when a sent one was delivered.
    waiting_until: datetime | None = None
    delivered_at: datetime | None = None
    reviewed_by: str = ""
    reviewed_at: datetime | None = None
    run_id: int | None = None
    run_label: str = ""


@dataclass(frozen=True, slots=True)
class Conversation:
    entries: list[ConversationEntry]  # oldest first, as a chat reads
    truncated: bool  # older texts exist than those in `entries`
    limit: int


def _sent(message: OutboundMessage) -> ConversationEntry:
    reason = ""
    if message.skip_reason:
        reason = message.skip_reason
    elif message.error_code:
        adapter = message.integration.adapter
        try:
            explained = transport_get(adapter).explain_error(message.error_code)
        except LookupError:  # a provider no longer offered
            explained = ""
        label = REGISTRY[adapter].label if adapter in REGISTRY else adapter
        reason = f"{label} error {message.error_code}: {explained or message.error_message}"
    step_run = message.step_run
    return ConversationEntry(
        direction=SENT,
        pk=message.pk,
        at=message.created_at,
        body=message.body,
        number=message.to,
        status=message.status,
        status_label=message.get_status_display(),
        reason=reason,
        flagged=message.status
        in (OutboundMessage.Status.FAILED, OutboundMessage.Status.UNDELIVERED),
        waiting_until=message.next_attempt_at
        if message.status == OutboundMessage.Status.PENDING
        else None,
        delivered_at=message.delivered_at,
        run_id=step_run.run_id if step_run is not None else None,
        run_label=f"{step_run.run.workflow.name}, step {step_run.number}"
        if step_run is not None
        else "",
    )


def _received(message: InboundMessage) -> ConversationEntry:
    reason = ""
    if message.needs_review:
        reason = "Needs review: it reads like a request to stop texting."
    elif message.action == InboundMessage.Action.OPT_OUT:
        reason = "Opted the patient out of all texts."
    elif message.action == InboundMessage.Action.OPT_IN:
        reason = "Restored the consent the patient had given before opting out."
    elif message.action == InboundMessage.Action.HELP:
        reason = "Answered with the clinic's HELP reply."
    return ConversationEntry(
        direction=RECEIVED,
        pk=message.pk,
        at=message.created_at,
        body=message.body,
        number=message.from_number,
        status=message.action,
        status_label=message.get_action_display(),
        reason=reason,
        flagged=message.needs_review,
        reviewed_by=str(message.reviewed_by) if message.reviewed_by else "",
        reviewed_at=message.reviewed_at,
    )


def _latest(messages: QuerySet[M], count: int) -> list[M]:
    return list(messages.order_by("-created_at", "-id")[:count])


def patient_conversation(
    *, patient: Patient, sent: bool = True, received: bool = True, limit: int | None = None
) -> Conversation:
    """The latest `limit` (default CONVERSATION_LIMIT) texts sent to and received from this
    patient, oldest first: two queries whatever their number. Texts belong to a patient by
    their patient link, not by phone number: patients sharing a phone (a family) each see
    only their own."""
    limit = limit or CONVERSATION_LIMIT
    # One text more than shown from each direction: if it is there, older texts exist.
    entries: list[ConversationEntry] = []
    if sent:
        outbound = OutboundMessage.objects.select_related("step_run__run__workflow", "integration")
        entries += [_sent(m) for m in _latest(outbound.filter(patient=patient), limit + 1)]
    if received:
        inbound = InboundMessage.objects.select_related("reviewed_by")
        entries += [_received(m) for m in _latest(inbound.filter(patient=patient), limit + 1)]
    entries.sort(key=lambda e: (e.at, e.direction, e.pk))
    return Conversation(entries=entries[-limit:], truncated=len(entries) > limit, limit=limit)


def _list_url(model: type[Any], patient: Patient) -> str:
    opts = model._meta
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return f"{changelist}?patient__id__exact={patient.pk}"


def conversation_panel(request: HttpRequest, patient: Patient) -> dict[str, Any] | None:
    """The panel's context; None when the user may see neither direction's messages."""
    user: Any = request.user
    sent = user.has_perm("integrations.view_outboundmessage")
    received = user.has_perm("integrations.view_inboundmessage")
    if not (sent or received):
        return None
    return {
        "conversation": patient_conversation(patient=patient, sent=sent, received=received),
        "sent_url": _list_url(OutboundMessage, patient) if sent else "",
        "received_url": _list_url(InboundMessage, patient) if received else "",
        "runs_visible": user.has_perm("workflows.view_run"),
    }


PANEL = PatientPanel(
    name="conversation",
    template="admin/patients/patient/conversation_panel.html",
    context=conversation_panel,
    order=20,
)
