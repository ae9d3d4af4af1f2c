"""Smart sending: a marketing message is skipped when the patient was sent any message in the
clinic's last N hours; transactional messages, test messages and a policy without it are
untouched, and the common send pays no query for it."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from integrations.models import MessagingPolicy, OutboundMessage
from integrations.policy import messaging_policy, messaging_policy_forget, send_decide
from integrations.policy_forms import policy_form_class
from tests.factories import ConsentFactory, IntegrationFactory, PatientFactory

pytestmark = pytest.mark.django_db
NOON_NY = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)
MARKETING_TEXT = "Yes, send me offers. Reply STOP to opt out."


@pytest.fixture
def clinic() -> dict[str, Any]:
    integration = IntegrationFactory()
    patient = PatientFactory(
        organization=integration.organization, phone="+12125550123", timezone="America/New_York"
    )
    ConsentFactory(patient=patient)
    ConsentFactory(patient=patient, purpose="marketing", consent_text=MARKETING_TEXT)
    return {"integration": integration, "org": integration.organization, "patient": patient}


def _message(clinic: dict[str, Any], purpose: str = "marketing", **fields: Any) -> OutboundMessage:
    values = {
        "organization": clinic["org"],
        "integration": clinic["integration"],
        "patient": clinic["patient"],
        "purpose": purpose,
        "to": clinic["patient"].phone,
        "from_number": "+15005550006",
        "body": "offer",
        "idempotency_key": f"new:{purpose}:{sorted(fields.items())}",
    }
    return OutboundMessage(**{**values, **fields})


def _sent(clinic: dict[str, Any], hours_ago: float, **fields: Any) -> OutboundMessage:
    values = {
        "purpose": "transactional",
        "status": "delivered",
        "sending_started_at": NOON_NY - timedelta(hours=hours_ago),
        "idempotency_key": f"old:{hours_ago}:{sorted(fields.items())}",
    }
    message = _message(clinic, **{**values, **fields})
    message.save()
    return message


def _smart(clinic: dict[str, Any], hours: int | None) -> None:
    MessagingPolicy.objects.update_or_create(
        organization=clinic["org"], defaults={"smart_sending_hours": hours}
    )


def _check(decision: Any) -> dict[str, Any]:
    (check,) = [c for c in decision.checks if c["check"] == "smart sending"]
    return dict(check)


def test_a_marketing_message_within_n_hours_of_any_message_is_refused_with_the_reason(
    clinic: dict[str, Any],
) -> None:
    _smart(clinic, 24)
    _sent(clinic, 3)
    decision = send_decide(message=_message(clinic), now=NOON_NY)
    assert not decision.allowed and decision.defer_until is None  # skipped, not deferred
    assert decision.reason == (
        "smart sending: this patient was sent a message 3 hours ago, within the clinic's "
        "24 hours for marketing messages"
    )
    assert _check(decision)["ok"] is False
    # The checks after it never ran; the ones before it passed.
    names = [c["check"] for c in decision.checks]
    assert names == ["consent", "opt-out", "frequency cap", "smart sending"]


def test_a_message_older_than_n_hours_does_not_hold_marketing_back(clinic: dict[str, Any]) -> None:
    _smart(clinic, 24)
    _sent(clinic, 25)
    decision = send_decide(message=_message(clinic), now=NOON_NY)
    assert decision.allowed
    assert _check(decision) == {
        "check": "smart sending",
        "ok": True,
        "detail": "no message to this patient in the last 24 hours",
    }


def test_messages_of_any_channel_count_but_only_ones_that_went_out(
    clinic: dict[str, Any],
) -> None:
    _smart(clinic, 48)
    for status in ("pending", "skipped", "failed"):
        _sent(clinic, 1, status=status)
    assert send_decide(message=_message(clinic), now=NOON_NY).allowed
    _sent(clinic, 30, channel="email", status="sent")
    decision = send_decide(message=_message(clinic), now=NOON_NY)
    assert "sent a message 30 hours ago" in decision.reason


def test_test_messages_do_not_count(clinic: dict[str, Any]) -> None:
    _smart(clinic, 24)
    _sent(clinic, 1, is_test=True)
    assert send_decide(message=_message(clinic), now=NOON_NY).allowed


def test_transactional_messages_are_never_skipped_by_it(clinic: dict[str, Any]) -> None:
    _smart(clinic, 168)
    _sent(clinic, 0.5)
    decision = send_decide(message=_message(clinic, purpose="transactional"), now=NOON_NY)
    assert decision.allowed
    assert _check(decision)["detail"] == "only for marketing messages (within 168 hours)"


@pytest.mark.parametrize("hours", [None, 0])
def test_off_by_default_and_at_zero(clinic: dict[str, Any], hours: int | None) -> None:
    assert MessagingPolicy(organization=clinic["org"]).smart_sending_hours is None
    if hours is not None:
        _smart(clinic, hours)
    _sent(clinic, 0.1)
    decision = send_decide(message=_message(clinic), now=NOON_NY)
    assert decision.allowed and _check(decision)["detail"] == "off"


def test_the_send_path_pays_no_query_unless_it_is_on_and_the_message_is_marketing(
    clinic: dict[str, Any],
) -> None:
    def queries(message: OutboundMessage) -> int:
        messaging_policy(clinic["org"].pk)  # cached, as on a warm worker
        with CaptureQueriesContext(connection) as captured:
            send_decide(message=message, now=NOON_NY)
        return sum("integrations_outboundmessage" in q["sql"] for q in captured.captured_queries)

    # The test clinic has no caps: nothing of the patient's history is read.
    assert (queries(_message(clinic)), queries(_message(clinic, purpose="transactional"))) == (0, 0)
    _smart(clinic, 24)
    messaging_policy_forget()
    assert (queries(_message(clinic)), queries(_message(clinic, purpose="transactional"))) == (1, 0)


def test_the_database_refuses_more_than_a_week(clinic: dict[str, Any]) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        _smart(clinic, 169)


def _form(org: Any, hours: str) -> Any:
    policy, _ = MessagingPolicy.objects.get_or_create(organization=org)
    data = {
        "organization": org.pk,
        "quiet_hours_start": "08:00",
        "quiet_hours_end": "21:00",
        "marketing_per_day": "1",
        "marketing_per_week": "3",
        "smart_sending_hours": hours,
        "help_text_reply": "{clinic}: call us.",
    }
    return policy_form_class()(data=data, instance=policy)


@pytest.mark.parametrize("hours", ["169", "-1", "1000"])
def test_the_form_refuses_an_n_out_of_range_with_one_clear_message(
    clinic: dict[str, Any], hours: str
) -> None:
    form = _form(clinic["org"], hours)
    assert not form.is_valid()
    assert form.errors["smart_sending_hours"] == [
        "Smart sending looks back 1 to 168 hours (a week); leave it blank to turn it off."
    ]


def test_the_form_refuses_a_non_number(clinic: dict[str, Any]) -> None:
    form = _form(clinic["org"], "a day")
    assert not form.is_valid()
    assert form.errors["smart_sending_hours"] == ["Enter a whole number."]


@pytest.mark.parametrize(("hours", "stored"), [("24", 24), ("168", 168), ("0", None), ("", None)])
def test_the_form_saves_n_and_zero_means_off(
    clinic: dict[str, Any], hours: str, stored: int | None
) -> None:
    form = _form(clinic["org"], hours)
    assert form.is_valid(), form.errors
    assert form.save().smart_sending_hours == stored


def test_the_dry_run_explains_the_skip_in_its_decision_table(clinic: dict[str, Any]) -> None:
    from django.utils import timezone

    from tests.factories import SmsStepFactory, WorkflowFactory
    from workflows.dry_run import workflow_dry_run

    _smart(clinic, 24)
    workflow = WorkflowFactory(organization=clinic["org"], trigger="order.shipped")
    SmsStepFactory(workflow=workflow, purpose="marketing")
    _sent(clinic, -1, sending_started_at=timezone.now() - timedelta(hours=2))
    (step,) = workflow_dry_run(workflow=workflow, patient=clinic["patient"]).steps
    assert step.outcome == "skip"
    rows = {c["check"]: c for c in step.checks}
    assert rows["smart sending"]["state"] == "failed"
    assert rows["smart sending"]["detail"].startswith(
        "smart sending: this patient was sent a message 2 hours ago"
    )
    assert rows["quiet hours"]["state"] == "skipped"  # never reached
