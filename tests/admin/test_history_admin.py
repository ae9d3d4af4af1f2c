"""Run history and the message log: runs per workflow with status filters, a run's timeline
step by step with each message and its send decision, and Twilio errors explained."""

from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from integrations.models import OutboundMessage
from tests.factories import (
    IntegrationFactory,
    OrganizationFactory,
    PatientFactory,
    StaffMembershipFactory,
    UserFactory,
    WorkflowFactory,
)
from workflows.models import Event, Run, StepRun

pytestmark = pytest.mark.django_db

DECISION = {
    "at": "2026-03-01T14:00:00+00:00",
    "allowed": False,
    "reason": "no SMS consent",
    "defer_until": None,
    "checks": [{"check": "consent", "ok": False, "detail": "no SMS consent"}],
}


@pytest.fixture
def superuser() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


def _run(workflow: Any, *, status: str = "succeeded", key: str = "e1") -> Run:
    event = Event.objects.create(
        organization=workflow.organization, type="order.shipped", dedupe_key=key
    )
    steps = [
        {
            "type": "adapter",
            "adapter": "twilio",
            "function": "sendSMS",
            "parameters": {"to": "{{customer.phone}}", "message": "Hi"},
        },
        {"type": "delay", "parameters": {"kind": "duration", "seconds": "86400"}},
    ]
    return Run.objects.create(
        workflow=workflow, event=event, status=status, definition={"version": 3, "steps": steps}
    )


def _message(run: Run, step_run: StepRun, **fields: Any) -> OutboundMessage:
    organization = run.workflow.organization
    integration = organization.integrations.first() or IntegrationFactory(organization=organization)
    return OutboundMessage.objects.create(
        organization=run.workflow.organization,
        integration=integration,
        step_run=step_run,
        patient=PatientFactory(organization=run.workflow.organization),
        idempotency_key=f"k{step_run.pk}{fields.get('status', '')}",
        purpose="transactional",
        to="+14155550100",
        body="Hi <Ann>",
        **fields,
    )


def test_the_workflow_links_to_its_runs_and_the_changelist_filters_by_workflow(
    superuser: Client,
) -> None:
    workflow = WorkflowFactory(name="Shipped")
    other = WorkflowFactory(name="Other")
    mine, theirs = _run(workflow, key="a"), _run(other, key="b")
    _run(workflow, status="failed", key="c")
    page = superuser.get(
        reverse("admin:workflows_workflow_change", args=[workflow.pk])
    ).content.decode()
    runs_url = reverse("admin:workflows_run_changelist") + f"?workflow={workflow.pk}"
    assert f'href="{runs_url}"' in page
    response = superuser.get(runs_url)
    shown = {run.pk for run in response.context["cl"].result_list}
    assert mine.pk in shown and theirs.pk not in shown and len(shown) == 2
    failed = superuser.get(runs_url + "&status__exact=failed").context["cl"].result_list
    assert [run.status for run in failed] == ["failed"]


def test_the_workflow_filter_lists_only_the_clinics_workflows() -> None:
    org = OrganizationFactory()
    WorkflowFactory(organization=org, name="Ours")
    WorkflowFactory(name="Someone else's")
    user = StaffMembershipFactory(organization=org).user
    user.user_permissions.set(Permission.objects.filter(codename="view_run"))
    client = Client()
    client.force_login(user)
    page = client.get(reverse("admin:workflows_run_changelist")).content.decode()
    assert "Ours" in page and "Someone else" not in page


def test_the_run_timeline_shows_each_step_with_its_messages_and_decisions(
    superuser: Client,
) -> None:
    run = _run(WorkflowFactory(), status="waiting")
    run.next_index = 1
    run.save()
    step_run = StepRun.objects.create(
        run=run,
        index=0,
        status="skipped",
        skip_reason="no SMS consent",
        inputs={"to": "+14155550100", "message": "Hi <Ann>"},
        result={"status": "skipped"},
    )
    _message(run, step_run, status="skipped", skip_reason="no SMS consent", decision=DECISION)
    _message(
        run, step_run, status="failed", error_code="30007", decision={**DECISION, "allowed": True}
    )
    page = superuser.get(reverse("admin:workflows_run_change", args=[run.pk])).content.decode()
    timeline = page[page.index('class="cf-timeline"') :]
    assert "Twilio → Send SMS" in timeline and "Skipped because" in timeline
    assert "Hi &lt;Ann&gt;" in timeline and "<Ann>" not in timeline  # rendered inputs, escaped
    assert "do not send (no SMS consent)" in timeline
    assert '<th scope="row">consent</th><td>✗ failed</td>' in timeline
    assert "– not checked" in timeline  # the checks never reached after the refusal
    assert "Twilio error 30007: The carrier filtered the message as spam" in timeline
    assert "Delay" in timeline and ">next<" in timeline  # step 2, not run yet
    assert "Workflow version" in page and ">3<" in page


def test_the_message_log_shows_delivery_and_explains_twilio_errors(superuser: Client) -> None:
    run = _run(WorkflowFactory())
    step_run = StepRun.objects.create(run=run, index=0, status="failed")
    message = _message(
        run,
        step_run,
        status="undelivered",
        error_code="30003",
        provider_status="undelivered",
        decision=DECISION,
    )
    listing = superuser.get(
        reverse("admin:integrations_outboundmessage_changelist")
    ).content.decode()
    assert 'class="cf-badge cf-status-undelivered"' in listing
    assert "30003: Unreachable handset: the phone is off or out of coverage." in listing
    assert f"Run {run.pk}, step 1" in listing
    detail = superuser.get(reverse("admin:integrations_outboundmessage_change", args=[message.pk]))
    page = detail.content.decode()
    assert "Unreachable handset" in page
    assert "do not send (no SMS consent)" in page
    assert reverse("admin:workflows_run_change", args=[run.pk]) in page
