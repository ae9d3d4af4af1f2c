"""Routing a patient's reply to the run waiting for it, and ending waits on an opt-out.

The messaging side calls these inside the transaction that records the inbound message (so
a redelivered webhook, recorded once, routes once). The rule: a reply goes, by the pair
(patient phone = the reply's From, clinic sender = its To), to the waiting question with the
latest send time among this clinic's waits for that pair: the most recent question wins;
the others keep waiting. STOP and the other opt-out words, and HELP, are never answers (an
opt-out ends the number's waits here); YES and START, opt-in words, are answers from a number
that has not opted out (they change no consent then). A wait is open until it is resolved:
a reply that arrives just after the deadline, before a worker has timed the wait out, still
answers it. A reply that no question waits for is kept as an inbound message (and its
message.inbound event) as before.

Resolving a wait is one conditional UPDATE (waiting → answered), the same statement shape
as the timeout's (waiting → timed out, `engine.reply_wait_resolve`), so exactly one of a
reply and the timeout wins; the run is then made due and handed to a worker once the
transaction commits.
"""

import logging
from dataclasses import dataclass
from functools import partial

from django.db import transaction
from django.utils import timezone

from patients.phones import phone_or_raw
from workflows.engine import reply_wait_resolve, run_wake, runs_cancel
from workflows.models import ReplyWait
from workflows.replies import OTHERWISE, ReplyConfigError, branch_choose, reask_text
from workflows.tasks import run_advance

logger = logging.getLogger(__name__)

# Routing reads at most this many waiting questions for one pair (the newest first); more
# would be a workflow texting one number in a loop.
_CANDIDATES = 20


@dataclass(frozen=True, slots=True)
class ReplyRouted:
    """What became of a reply: the wait it answered (None: no question was waiting), the
    branch it took ("" while a re-ask keeps the wait open) and whether it caused a re-ask."""

    wait_id: int | None
    run_id: int | None
    branch: str = ""
    reasked: bool = False


def reply_receive(
    *, organization_id: int, phone: str, sender: str, text: str, inbound_ref: str
) -> ReplyRouted:
    """Route `text`, received from `phone` at this clinic's `sender`, to the question
    waiting for it (see the module's rule). Call inside the transaction that records the
    inbound message `inbound_ref` (its provider id), once per message."""
    now = timezone.now()
    candidates = list(
        ReplyWait.objects.filter(
            organization_id=organization_id,
            phone=phone_or_raw(phone),
            sender=phone_or_raw(sender),
            state=ReplyWait.State.WAITING,
        )
        .select_related("run")
        .order_by("-asked_at", "-id")[:_CANDIDATES]
    )
    for wait in candidates:
        steps = wait.run.definition.get("steps", [])
        params = steps[wait.index].get("parameters") or {} if wait.index < len(steps) else {}
        try:
            choice = branch_choose(params, text)
        except (ReplyConfigError, ValueError, TypeError):
            logger.error("run %s: the wait at step %s is unusable", wait.run_id, wait.index + 1)
            continue
        if choice.label == OTHERWISE and not wait.reasked and reask_text(params):
            # The first reply that matches nothing: ask once more, keep waiting.
            updated = ReplyWait.objects.filter(
                pk=wait.pk, state=ReplyWait.State.WAITING, reasked=False
            ).update(reasked=True, reask_reply=text, reask_inbound=inbound_ref, updated_at=now)
            if updated:
                _wake(wait.run_id)
                return ReplyRouted(wait.pk, wait.run_id, reasked=True)
        if reply_wait_resolve(
            wait_id=wait.pk,
            state=ReplyWait.State.ANSWERED,
            answer=text,
            inbound=inbound_ref,
            branch=choice.label,
        ):
            _wake(wait.run_id)
            return ReplyRouted(wait.pk, wait.run_id, branch=choice.label)
        # Timed out or cancelled in this instant: the next most recent question, if any.
    return ReplyRouted(None, None)


def _wake(run_id: int) -> None:
    run_wake(run_id=run_id)
    transaction.on_commit(partial(run_advance.delay, run_id))


def reply_waits_cancel(*, organization_id: int, phone: str, reason: str) -> int:
    """End every wait of this clinic for replies from `phone` (an opt-out: no more texts, so
    no re-ask, no reminder on "no reply"); their runs end "cancelled" with `reason`. Return
    how many runs were cancelled."""
    now = timezone.now()
    waits = ReplyWait.objects.filter(
        organization_id=organization_id, phone=phone_or_raw(phone), state=ReplyWait.State.WAITING
    )
    run_ids = list(waits.values_list("run_id", flat=True))
    if not run_ids:
        return 0
    waits.update(
        state=ReplyWait.State.CANCELLED, reason=reason[:200], resolved_at=now, updated_at=now
    )
    # A run a worker holds right now (a re-ask being sent) stops after its step.
    return runs_cancel(run_ids=run_ids, reason=reason)
