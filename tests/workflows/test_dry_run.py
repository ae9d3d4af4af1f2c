"""Test mode: a dry run reports what would happen and changes nothing; a live test sends,
but only to test patients."""

from datetime import UTC, datetime, time
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from integrations.models import MessagingPolicy, OutboundMessage
from patients.models import Order
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    WorkflowFactory,
)
from workflows import dry_run
from workflows.dry_run import workflow_dry_run, workflow_live_test
from workflows.models import Event, Run

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup() -> dict[str, Any]:
    integration = IntegrationFactory()
    org = integration.organization
    workflow = WorkflowFactory(
        organization=org,
        trigger="order.shipped",
        enabled=False,
        filter={"order.totalAmount": {"$gte": 40}},
    )
    patient = PatientFactory(
        organization=org,
        first_name="Tess",
        phone="+14155550177",
        is_test=True,
        timezone="America/Chicago",
    )
    return {"org": org, "workflow": workflow, "patient": patient}


def test_payload_comes_from_the_patients_latest_record(setup: dict[str, Any]) -> None:
    OrderFactory(patient=setup["patient"], number="OLD")
    OrderFactory(patient=setup["patient"], number="NEW")
    payload, source = dry_run.dry_run_payload(trigger="order.shipped", patient=setup["patient"])
    assert payload["order"]["number"] == "NEW"
    assert payload["customer"]["firstName"] == "Tess"
    assert "latest order record" in source


def test_payload_falls_back_to_examples_with_the_patients_own_data(setup: dict[str, Any]) -> None:
    payload, source = dry_run.dry_run_payload(
        trigger="subscription.upcoming_renewal", patient=setup["patient"]
    )
    assert payload["customer"]["phone"] == "+14155550177"
    assert payload["subscription"]["product"]["name"]  # from the data reference's example
    assert "no subscription record" in source


def test_dry_run_walks_conditions_and_decides_without_side_effects(setup: dict[str, Any]) -> None:
    workflow, patient = setup["workflow"], setup["patient"]
    ConsentFactory(patient=patient)
    OrderFactory(patient=patient, number="T-1", total_amount=55)
    SmsStepFactory(
        workflow=workflow,
        position=1,
        type="condition",
        adapter="",
        function="",
        parameters={"query": {"order.number": "T-1"}},
    )
    SmsStepFactory(
        workflow=workflow,
        position=2,
        parameters={
            "message": "Hi {{customer.firstName}} 😀",
            "to": "{{customer.phone}}",
            "from": "+15005550006",
        },
    )
    events_before = Event.objects.count()
    report = workflow_dry_run(workflow=workflow, patient=patient)
    assert report.filter_matches is True
    condition, sms = report.steps
    assert (condition.outcome, condition.detail) == ("continue", "the condition is true: continue")
    assert sms.outcome == "send"
    assert sms.message == {
        "to": "+14155550177",
        "from": "+15005550006",
        "body": "Hi Tess 😀",
        "characters": 9,
        "encoding": "UCS-2",
        "segments": 1,
    }
    assert [c["check"] for c in sms.decision["checks"]] == [
        "consent",
        "opt-out",
        "frequency cap",
        "smart sending",
        "quiet hours",
        "sender",
        "recipient",
    ]
    assert Event.objects.count() == events_before
    assert not Run.objects.exists() and not OutboundMessage.objects.exists()


def test_dry_run_reports_no_consent_and_a_false_condition(setup: dict[str, Any]) -> None:
    workflow, patient = setup["workflow"], setup["patient"]
    OrderFactory(patient=patient, total_amount=10)
    SmsStepFactory(workflow=workflow, position=1)
    report = workflow_dry_run(workflow=workflow, patient=patient)
    assert report.filter_matches is False
    assert report.filter_detail == "the filter does not match"
    (sms,) = report.steps
    assert (sms.outcome, sms.detail) == ("skip", "would not send: no SMS consent")
    condition_definition = {
        "trigger": "order.shipped",
        "filter": {},
        "steps": [
            {"type": "condition", "parameters": {"query": {"order.number": "nope"}}},
            {"type": "adapter", "adapter": "twilio", "function": "sendSMS", "parameters": {}},
        ],
    }
    report = workflow_dry_run(workflow=workflow, patient=patient, definition=condition_definition)
    assert [s.outcome for s in report.steps] == ["end"]


def test_dry_run_defers_for_quiet_hours_after_a_delay(setup: dict[str, Any]) -> None:
    workflow, patient = setup["workflow"], setup["patient"]
    MessagingPolicy.objects.filter(organization=setup["org"]).update(
        quiet_hours_start=time(8, 0), quiet_hours_end=time(21, 0)
    )
    ConsentFactory(patient=patient)
    definition = {
        "trigger": "order.shipped",
        "filter": {},
        "steps": [
            {"type": "delay", "parameters": {"kind": "until_time", "time": "22:30"}},
            {
                "type": "adapter",
                "adapter": "twilio",
                "function": "sendSMS",
                "parameters": {
                    "message": "late",
                    "to": "{{customer.phone}}",
                    "from": "+15005550006",
                },
            },
        ],
    }
    noon_chicago = datetime(2026, 6, 1, 17, 0, tzinfo=UTC)
    report = workflow_dry_run(
        workflow=workflow, patient=patient, definition=definition, now=noon_chicago
    )
    delay, sms = report.steps
    assert delay.outcome == "wait" and "2026-06-01T22:30:00-05:00" in delay.detail
    assert sms.outcome == "defer"
    assert "deferred to 2026-06-02T08:00:00-05:00" in sms.detail


def test_dry_run_reports_template_errors_on_their_step(setup: dict[str, Any]) -> None:
    definition = {
        "trigger": "order.shipped",
        "filter": {},
        "steps": [
            {
                "type": "adapter",
                "adapter": "twilio",
                "function": "sendSMS",
                "parameters": {
                    "message": "Hi {{customer.nickname}}",
                    "to": "{{customer.phone}}",
                    "from": "+15005550006",
                },
            }
        ],
    }
    (step,) = workflow_dry_run(
        workflow=setup["workflow"], patient=setup["patient"], definition=definition
    ).steps
    assert step.outcome == "error"
    assert "customer.nickname is not in this event's data" in step.detail


def test_live_test_refuses_patients_who_are_not_test_patients(setup: dict[str, Any]) -> None:
    real = PatientFactory(organization=setup["org"], is_test=False)
    with pytest.raises(ValidationError, match="only run for test patients"):
        workflow_live_test(workflow=setup["workflow"], patient=real)
    other_clinic = PatientFactory(is_test=True)
    with pytest.raises(ValidationError, match="another clinic"):
        workflow_live_test(workflow=setup["workflow"], patient=other_clinic)
    assert not Run.objects.exists()


def test_live_test_creates_a_test_run_that_no_other_workflow_sees(setup: dict[str, Any]) -> None:
    other = WorkflowFactory(organization=setup["org"], trigger="order.shipped", enabled=True)
    run = workflow_live_test(workflow=setup["workflow"], patient=setup["patient"])
    assert run.is_test and run.workflow == setup["workflow"]
    assert run.event.dispatched_at is not None  # the relay will never pick it up
    assert not Run.objects.filter(workflow=other).exists()
    assert Order.objects.count() == 0


def test_a_webhook_step_shows_its_rendered_body_and_posts_nothing(
    setup: dict[str, Any], webhook_receiver: Any
) -> None:
    setup["patient"].first_name = 'Tess "T"'
    setup["patient"].save()
    OrderFactory(patient=setup["patient"], number="W-7", total_amount=50)
    SmsStepFactory(
        workflow=setup["workflow"],
        adapter="webhook",
        function="postJSON",
        parameters={
            "url": f"{webhook_receiver.url}/hook",
            "body": '{"order": "{{order.number}}", "who": "{{customer.firstName}}"}',
        },
    )
    report = workflow_dry_run(workflow=setup["workflow"], patient=setup["patient"])
    (step,) = report.steps
    assert (step.title, step.outcome) == ("Outbound webhook → Post JSON", "send")
    assert step.inputs["body"] == '{"order": "W-7", "who": "Tess \\"T\\""}'
    assert webhook_receiver.requests == []


def test_a_delay_until_a_time_uses_the_address_state_when_the_patient_has_no_zone(
    setup: dict[str, Any],
) -> None:
    """Patient → address state → clinic, as the date filter: 09:00 is Chicago's 09:00 for a
    patient in Illinois of a New York clinic (it was New York's before)."""
    workflow, patient = setup["workflow"], setup["patient"]
    setup["org"].timezone = "America/New_York"
    setup["org"].save()
    patient.timezone, patient.province_code = "", "IL"
    patient.save()
    definition = {
        "trigger": "order.shipped",
        "filter": {},
        "steps": [{"type": "delay", "parameters": {"kind": "until_time", "time": "09:00"}}],
    }
    (delay,) = workflow_dry_run(
        workflow=workflow,
        patient=patient,
        definition=definition,
        now=datetime(2026, 6, 1, 12, 0, tzinfo=UTC),
    ).steps
    assert "2026-06-01T09:00:00-05:00" in delay.detail  # not New York's 09:00 (-04:00)


# --- a wait for a reply, answered with a simulated reply ------------------------------------


def _sms(message: str) -> dict[str, Any]:
    return {
        "type": "adapter",
        "adapter": "twilio",
        "function": "sendSMS",
        "parameters": {"message": message, "to": "{{customer.phone}}", "from": "+15005550006"},
        "purpose": "transactional",
    }


# Step 1 asks; step 2 waits a day: C → 3, X → 4, anything else (re-asked once) → 5, no reply
# → 5; step 3 and 5 are branches of one step, step 4 has a delay and an SMS.
CONFIRMATION = {
    "trigger": "order.shipped",
    "filter": {},
    "steps": [
        _sms("Reply C to confirm or X to cancel"),
        {
            "type": "reply",
            "parameters": {
                "kind": "duration",
                "seconds": "86400",
                "branches": [
                    {"label": "Confirm", "match": "keywords", "keywords": ["c"], "goto": "next"},
                    {"label": "Cancel", "match": "keywords", "keywords": ["x"], "goto": 4},
                ],
                "otherwise": {"goto": 6, "reask": "Sorry, reply C or X."},
                "no_reply": {"goto": 6},
            },
        },
        _sms("You said {{history.2.result.reply}} ({{history.2.result.branch}})"),
        {"type": "delay", "parameters": {"kind": "duration", "seconds": "3600"}},
        _sms("Cancelled"),
        _sms("Second reminder"),
    ],
}


@pytest.mark.parametrize(
    ("reply", "branch", "path", "then"),
    [
        ("c.", "Confirm", [1, 2, 3], "step 3, then the run ends"),
        ("X 👍", "Cancel", [1, 2, 4, 5], "steps 4 to 5, then the run ends"),
        (None, "no reply", [1, 2, 6], "step 6, then the run ends"),
    ],
)
def test_a_simulated_reply_takes_its_branch_and_runs_only_that_branchs_steps(
    setup: dict[str, Any], reply: str | None, branch: str, path: list[int], then: str
) -> None:
    ConsentFactory(patient=setup["patient"])
    report = workflow_dry_run(
        workflow=setup["workflow"], patient=setup["patient"], definition=CONFIRMATION, reply=reply
    )
    assert [s.number for s in report.steps] == path
    wait = report.steps[1]
    assert (wait.type, wait.outcome) == ("reply", "branch")
    assert wait.branch == {"label": branch, "reply": reply, "reask": "", "steps": path[2:]}
    assert f"takes the “{branch}” branch: {then}" in wait.detail
    assert "waits for a reply to step 1's message until" in wait.detail
    assert not OutboundMessage.objects.exists() and not Run.objects.exists()


def test_an_unmatched_reply_is_re_asked_once_then_takes_anything_else(
    setup: dict[str, Any],
) -> None:
    ConsentFactory(patient=setup["patient"])
    report = workflow_dry_run(
        workflow=setup["workflow"], patient=setup["patient"], definition=CONFIRMATION, reply="maybe"
    )
    wait = report.steps[1]
    assert wait.branch == {
        "label": "anything else",
        "reply": "maybe",
        "reask": "Sorry, reply C or X.",
        "steps": [6],
    }
    assert "after re-asking once with “Sorry, reply C or X.”" in wait.detail


def test_later_steps_read_the_reply_and_its_branch_from_history(setup: dict[str, Any]) -> None:
    ConsentFactory(patient=setup["patient"])
    report = workflow_dry_run(
        workflow=setup["workflow"], patient=setup["patient"], definition=CONFIRMATION, reply="C"
    )
    assert report.steps[2].message is not None
    assert report.steps[2].message["body"] == "You said C (Confirm)"


def test_no_reply_moves_the_clock_to_the_timeout(setup: dict[str, Any]) -> None:
    """A reply is taken as it comes; without one, the next send is decided at the timeout
    (here: after the clinic's sending hours)."""
    ConsentFactory(patient=setup["patient"])
    MessagingPolicy.objects.filter(organization=setup["org"]).update(
        quiet_hours_start=time(8, 0), quiet_hours_end=time(21, 0)
    )
    wait = CONFIRMATION["steps"][1]
    until_late = {
        **wait,
        "parameters": {**wait["parameters"], "kind": "until_time", "time": "22:30"},
    }
    definition = {
        **CONFIRMATION,
        "steps": [*CONFIRMATION["steps"][:1], until_late, *CONFIRMATION["steps"][2:]],
    }
    noon_chicago = datetime(2026, 6, 1, 17, 0, tzinfo=UTC)
    answered, timed_out = (
        workflow_dry_run(
            workflow=setup["workflow"],
            patient=setup["patient"],
            definition=definition,
            reply=reply,
            now=noon_chicago,
        )
        for reply in ("c", None)
    )
    assert [(s.number, s.outcome) for s in answered.steps] == [
        (1, "send"),
        (2, "branch"),
        (3, "send"),
    ]
    assert [(s.number, s.outcome) for s in timed_out.steps] == [
        (1, "send"),
        (2, "branch"),
        (6, "defer"),
    ]
    assert timed_out.steps[1].detail == (
        "waits for a reply to step 1's message until 2026-06-01T22:30-05:00; no reply by then "
        "takes the “no reply” branch: step 6, then the run ends"
    )


def test_a_wait_whose_question_would_not_be_sent_does_not_wait(setup: dict[str, Any]) -> None:
    """No SMS consent: the question is skipped, so the engine has nothing to wait for and the
    run ends there; the dry run says so."""
    report = workflow_dry_run(
        workflow=setup["workflow"], patient=setup["patient"], definition=CONFIRMATION, reply="c"
    )
    assert [(s.number, s.outcome) for s in report.steps] == [(1, "skip"), (2, "skip")]
    assert report.steps[1].detail == (
        "would not wait: no text was sent for this wait to take a reply to"
    )
    assert report.steps[1].branch is None


def test_dry_run_shows_the_variant_in_the_test_patients_language(setup: dict[str, Any]) -> None:
    workflow, patient, org = setup["workflow"], setup["patient"], setup["org"]
    org.languages = ["es"]
    org.save()
    patient.language = "es"
    patient.save()
    ConsentFactory(patient=patient)
    OrderFactory(patient=patient, total_amount=55)
    SmsStepFactory(
        workflow=workflow,
        parameters={
            "message": "Hi {{customer.firstName}}",
            "to": "{{customer.phone}}",
            "from": "+15005550006",
            "variants": {"es": {"message": "Hola {{customer.firstName}}"}},
        },
    )
    (sms,) = workflow_dry_run(workflow=workflow, patient=patient).steps
    assert sms.outcome == "send" and sms.detail.endswith("(in Spanish)")
    assert sms.message is not None and sms.message["body"] == "Hola Tess"
    patient.language = "vi"  # no Vietnamese variant: the fallback
    patient.save()
    (sms,) = workflow_dry_run(workflow=workflow, patient=patient).steps
    assert sms.message is not None and sms.message["body"] == "Hi Tess"
    assert sms.detail.endswith("(in English)")
