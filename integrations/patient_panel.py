"""The conversation on a patient's admin page: the texts sent to and received from the
patient, in time order, with what happened to each and the run that sent it.

Contributed to the patient page through `patients.panels` (registered in
IntegrationsConfig.ready()): the messages live here, and `patients` must not import
`integrations`.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from django.db.models import Model, Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse

from integrations.messaging import transport_get
from integrations.models import InboundMessage, OutboundMessage
from patients.models import Patient
from patients.panels import PatientPanel
from workflows.adapters import REGISTRY
from workflows.models import ReplyWait, StepRun
from workflows.replies import NO_REPLY, branch_display

# A page, not an archive: the latest texts, with links to the filtered lists for the rest.
CONVERSATION_LIMIT = 50
SENT, RECEIVED = "sent", "received"

M = TypeVar("M", bound=Model)


@dataclass(frozen=True, slots=True)
class Question:
    """What became of a text a Wait-for-reply step waited on an answer to."""

    state: str  # ReplyWait.State
    state_label: str
    deadline: datetime
    reply: str = ""
    branch: str = ""  # as pages name it ("anything else", "no reply" for the fixed ones)
    reask_reply: str = ""  # the first reply, that matched nothing and was asked again
    reason: str = ""  # why the wait was cancelled
    # What the run wrote back to the patient's records after the reply (the ledger's
    # summaries), in step order.
    writes: tuple[str, ...] = ()


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
    # A sent text a run waited on an answer to.
    question: Question | None = None
    # A received text: the run whose question it answered (or that asked again), or, for a
    # plain reply (no keyword), that no question was waiting for it.
    answered_run_id: int | None = None
    answered_label: str = ""
    unrouted: bool = False


@dataclass(frozen=True, slots=True)
class Conversation:
    entries: list[ConversationEntry]  # oldest first, as a chat reads
    truncated: bool  # older texts exist than those in `entries`
    limit: int


@dataclass(frozen=True, slots=True)
class _Waits:
    """The wait-for-reply side of a page of texts, read in two queries."""

    by_question: dict[str, ReplyWait]
    by_inbound: dict[str, ReplyWait]
    writes: dict[int, tuple[str, ...]]  # by wait id


def _sent(message: OutboundMessage, waits: _Waits) -> ConversationEntry:
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
        question=_question(wait, waits.writes)
        if (wait := waits.by_question.get(str(message.pk))) is not None
        else None,
    )


def _received(message: InboundMessage, waits: _Waits) -> ConversationEntry:
    reason = ""
    if message.needs_review:
        reason = "Needs review: it reads like a request to stop texting."
    elif message.action == InboundMessage.Action.OPT_OUT:
        reason = "Opted the patient out of all texts."
    elif message.action == InboundMessage.Action.OPT_IN:
        reason = "Restored the consent the patient had given before opting out."
    elif message.action == InboundMessage.Action.HELP:
        reason = "Answered with the clinic's HELP reply."
    wait = waits.by_inbound.get(message.provider_sid)
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
        answered_run_id=wait.run_id if wait else None,
        answered_label=_answered(wait, message.provider_sid) if wait else "",
        # Keywords (STOP, HELP, …) are never answers: only a plain reply can go unrouted.
        unrouted=wait is None and message.action == InboundMessage.Action.NONE,
    )


def _answered(wait: ReplyWait, sid: str) -> str:
    """What a received text did to the question it reached."""
    asked = f"{wait.run.workflow.name}, step {wait.index + 1}"
    if sid == wait.reask_inbound and sid != wait.inbound:
        return f"Matched no branch of {asked}: asked again"
    return f"Answer to {asked}: branch “{branch_display(wait.branch)}”"


def _waits(
    patient: Patient, outbound: list[OutboundMessage], inbound: list[InboundMessage]
) -> _Waits:
    """The waits these texts asked or answered, and what their runs wrote back after them."""
    questions = [str(m.pk) for m in outbound if m.step_run_id is not None]
    sids = [m.provider_sid for m in inbound]
    if not (questions or sids):
        return _Waits({}, {}, {})
    waits = list(
        ReplyWait.objects.filter(
            Q(question__in=questions) | Q(inbound__in=sids) | Q(reask_inbound__in=sids),
            organization_id=patient.organization_id,
        ).select_related("run__workflow")
    )
    by_question = {w.question: w for w in sorted(waits, key=lambda w: w.generation)}
    by_inbound: dict[str, ReplyWait] = {}
    for wait in waits:
        by_inbound.update({ref: wait for ref in (wait.inbound, wait.reask_inbound) if ref})
    # A write belongs to the nearest wait before it in its run: the reply that led to it.
    before: dict[int, list[ReplyWait]] = {}
    for wait in waits:
        before.setdefault(wait.run_id, []).append(wait)
    written: dict[int, list[str]] = {}
    steps = (
        StepRun.objects.filter(
            run_id__in=before, status=StepRun.Status.SUCCEEDED, result__has_key="summary"
        )
        .order_by("index")
        .only("run_id", "index", "result")
        if before
        else []
    )
    for step_run in steps:
        definition = before[step_run.run_id][0].run.definition.get("steps", [])
        if (
            step_run.index >= len(definition)
            or definition[step_run.index].get("adapter") != "records"
        ):
            continue
        earlier = [w for w in before[step_run.run_id] if w.index < step_run.index]
        if earlier:
            owner = max(earlier, key=lambda w: (w.index, w.generation))
            written.setdefault(owner.pk, []).append(str(step_run.result["summary"]))
    return _Waits(by_question, by_inbound, {k: tuple(v) for k, v in written.items()})


def _question(wait: ReplyWait, writes: dict[int, tuple[str, ...]]) -> Question:
    answered = wait.state == ReplyWait.State.ANSWERED
    return Question(
        state=wait.state,
        state_label=wait.get_state_display(),
        deadline=wait.deadline,
        reply=wait.answer if answered else "",
        branch=branch_display(
            wait.branch or (NO_REPLY if wait.state == ReplyWait.State.TIMED_OUT else "")
        ),
        reask_reply=wait.reask_reply if wait.reasked else "",
        reason=wait.reason if wait.state == ReplyWait.State.CANCELLED else "",
        writes=writes.get(wait.pk, ()),
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
    outbound: list[OutboundMessage] = []
    inbound: list[InboundMessage] = []
    if sent:
        query = OutboundMessage.objects.select_related("step_run__run__workflow", "integration")
        outbound = _latest(query.filter(patient=patient), limit + 1)
    if received:
        query_in = InboundMessage.objects.select_related("reviewed_by")
        inbound = _latest(query_in.filter(patient=patient), limit + 1)
    waits = _waits(patient, outbound, inbound)
    entries = [_sent(m, waits) for m in outbound] + [_received(m, waits) for m in inbound]
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
