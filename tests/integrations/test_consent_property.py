"""Property: whatever the consent history, nothing is ever sent without valid consent, and
every opt-out is honoured, including for messages prepared before it and still waiting.

Hypothesis generates histories of consent decisions (any purpose, action, source, with or
without consent text, some back-dated) interleaved with messages being prepared and sent.
A small model of the rules (the oracle) says, at each send, whether sending is allowed; the
real send path (policy + claim + twilio-python over HTTP to the sandbox) must agree, in both
directions: never send when the oracle says no, and do send when it says yes.
"""

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from integrations.models import OutboundMessage
from integrations.policy import CHANNEL_WIDE_SOURCES, WRITTEN_SOURCES
from integrations.sending import message_prepare, message_send
from integrations.twilio.sandbox import SandboxServer
from patients.models import ConsentRecord
from tests.conftest import sandbox_account
from tests.factories import IntegrationFactory, PatientFactory

pytestmark = pytest.mark.django_db
PURPOSES = ConsentRecord.Purpose.values
SOURCES = ConsentRecord.Source.values


@dataclass
class Decision:
    purpose: str
    action: str
    source: str
    text: str
    at: Any
    order: int


def oracle_allows(history: list[Decision], purpose: str) -> bool:
    """The rules, stated plainly: the latest decision for the purpose (by when it happened,
    then by when it was recorded) is an opt-in; marketing needs it in writing; no STOP-like
    opt-out of any purpose came after it."""
    own = [d for d in history if d.purpose == purpose]
    if not own:
        return False
    latest = max(own, key=lambda d: (d.at, d.order))
    if latest.action != "opt_in":
        return False
    if purpose == "marketing" and not (latest.text.strip() and latest.source in WRITTEN_SOURCES):
        return False
    return not any(
        d.action == "opt_out"
        and d.source in CHANNEL_WIDE_SOURCES
        and (d.at, d.order) > (latest.at, latest.order)
        for d in history
    )


consent_op = st.tuples(
    st.just("consent"),
    st.sampled_from(PURPOSES),
    st.sampled_from(["opt_in", "opt_out"]),
    st.sampled_from(SOURCES),
    st.booleans(),
    st.integers(min_value=-3, max_value=0),
)
prepare_op = st.tuples(st.just("prepare"), st.sampled_from(PURPOSES))
send_op = st.tuples(st.just("send"), st.integers(min_value=0, max_value=5))
# A history before any message, messages for both purposes waiting, more decisions while
# they wait (opt-outs among them), then sends interleaved with anything at all.
operations = st.builds(
    lambda before, during, rest: [
        *before,
        ("prepare", "transactional"),
        ("prepare", "marketing"),
        *during,
        ("send", 0),
        ("send", 1),
        *rest,
    ],
    st.lists(consent_op, min_size=1, max_size=6),
    st.lists(consent_op, max_size=4),
    st.lists(st.one_of(consent_op, prepare_op, send_op), max_size=8),
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_nothing_is_sent_without_valid_consent(
    ops: list[tuple[Any, ...]], sandbox: SandboxServer
) -> None:
    sandbox.reset()
    integration = sandbox_account(sandbox, IntegrationFactory())
    patient = PatientFactory(organization=integration.organization)
    base = timezone.now() - timedelta(hours=1)
    history: list[Decision] = []
    messages: list[OutboundMessage] = []
    sent_ids: set[int] = set()
    for step, op in enumerate(ops):
        if op[0] == "consent":
            _, purpose, action, source, with_text, back = op
            # normally "now-ish" and increasing; sometimes back-dated by hours
            at = base + timedelta(seconds=step) + timedelta(hours=back)
            text = "I agree to receive texts. Reply STOP to opt out." if with_text else ""
            ConsentRecord.objects.create(
                patient=patient,
                purpose=purpose,
                action=action,
                source=source,
                consent_text=text,
                occurred_at=at,
            )
            history.append(Decision(purpose, action, source, text, at, step))
        elif op[0] == "prepare":
            messages.append(
                message_prepare(
                    organization=integration.organization,
                    integration=integration,
                    idempotency_key=f"prop:{uuid.uuid4()}",
                    to=patient.phone,
                    from_number="+15005550006",
                    body=f"m{len(messages)} {uuid.uuid4().hex[:6]}",
                    purpose=op[1],
                    patient=patient,
                )
            )
        elif messages:
            message = messages[op[1] % len(messages)]
            if (
                message.pk in sent_ids
                or OutboundMessage.objects.get(pk=message.pk).status != "pending"
            ):
                continue  # already decided: sending again must change nothing (checked below)
            allowed = oracle_allows(history, message.purpose)
            result = message_send(message_id=message.pk)
            received = [m for m in sandbox.messages() if m["body"] == message.body]
            if allowed:
                assert result.status == "sent", (result.status, result.skip_reason)
                assert len(received) == 1
                sent_ids.add(message.pk)
            else:
                assert result.status == "skipped", result.status
                assert received == [], "sent without valid consent"
    # nothing was ever sent twice, and nothing unsent slipped out
    bodies = [m["body"] for m in sandbox.messages()]
    assert len(bodies) == len(set(bodies)) == len(sent_ids)
