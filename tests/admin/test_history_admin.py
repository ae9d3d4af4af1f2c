"""Run history and the message log: runs per workflow with status filters, a run's timeline
step by step with each message and its send decision, and Twilio errors explained."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.models import LinkClick, OutboundMessage
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.factories import (
    IntegrationFactory,
    OrganizationFactory,
    PatientFactory,
    ShortLinkFactory,
    StaffMembershipFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
    clinic_integration,
)
from workflows.models import Event, ReplyWait, Run, StepRun

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
    integration = clinic_integration(organization)
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
    client = clinic_client(org, "view_run")
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


def test_the_run_timeline_shows_a_wait_its_deadline_and_the_reply_and_branch(
    superuser: Client,
) -> None:
    run = _run(WorkflowFactory(), status="succeeded")
    asked = datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    StepRun.objects.create(run=run, index=1, status="succeeded", result={"branch": "Confirm"})
    ReplyWait.objects.create(
        run=run,
        index=1,
        organization=run.workflow.organization,
        phone="+14155550100",
        sender="+15005550006",
        asked_at=asked,
        deadline=asked + timedelta(hours=24),
        state="answered",
        reasked=True,
        reask_reply="huh?",
        answer="C <b>",
        branch="Confirm",
        resolved_at=asked + timedelta(minutes=5),
    )
    page = superuser.get(reverse("admin:workflows_run_change", args=[run.pk])).content.decode()
    timeline = page[page.index('class="cf-timeline"') :]
    facts = timeline[timeline.index("cf-reply-wait") :]
    assert "<dt>Reply</dt><dd>Answered</dd>" in facts
    assert "<dt>Waits until</dt>" in facts
    assert "<dt>First reply (asked again)</dt><dd>“huh?”</dd>" in facts
    assert "<dt>Answer</dt><dd>“C &lt;b&gt;”</dd>" in facts  # the patient's text, escaped
    assert "<dt>Branch</dt><dd>Confirm</dd>" in facts


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


# --- lists people scan: who, what, when (in the clinic's time), and no internal keys -------

CHICAGO_MORNING = datetime(2026, 12, 6, 15, 14, tzinfo=UTC)  # 9:14 AM CST
PROVIDER_SID = "SM" + "ab" * 16


def _shipped(patient: Any, number: str) -> Run:
    """A real run: the patient's order ships, the event is recorded and dispatched."""
    from patients.models import Order
    from tests.factories import OrderFactory, SmsStepFactory
    from workflows.engine import event_dispatch

    workflow = patient.organization.workflows.filter(name="Order shipped SMS").first()
    if workflow is None:
        workflow = WorkflowFactory(organization=patient.organization, name="Order shipped SMS")
        SmsStepFactory(workflow=workflow)
    order = OrderFactory(patient=patient, number=number)
    order.status = Order.Status.SHIPPED
    order.save()
    event = Event.objects.get(
        organization=patient.organization, type="order.shipped", payload__order__number=number
    )
    (run_id,) = event_dispatch(event_id=event.pk)
    return Run.objects.get(pk=run_id)


@pytest.fixture
def maria() -> Any:
    org = OrganizationFactory(timezone="America/Chicago")
    return PatientFactory(
        organization=org, first_name="Maria", last_name="Garcia", phone="+14155550101"
    )


def test_the_run_list_names_the_patient_and_the_trigger(superuser: Client, maria: Any) -> None:
    run = _shipped(maria, "10077")
    Run.objects.filter(pk=run.pk).update(created_at=CHICAGO_MORNING)
    response = superuser.get(reverse("admin:workflows_run_changelist"))
    html = response.content.decode()
    assert '<td class="field-patient">Maria Garcia</td>' in html
    assert '<td class="field-trigger">order.shipped</td>' in html
    assert "Dec 6, 2026, 9:14 AM CST" in html


@pytest.mark.parametrize(
    "term", ["Maria", "garcia", "Maria Garcia", "+14155550101", "(415) 555-0101", "10077"]
)
def test_runs_are_found_by_patient_name_phone_and_order_number(maria: Any, term: str) -> None:
    mine = _shipped(maria, "10077")
    other = PatientFactory(organization=maria.organization, first_name="Noah", last_name="Kim")
    _shipped(other, "10078")
    # Another clinic's Maria Garcia with the same phone and order number: never found.
    twin = PatientFactory(first_name="Maria", last_name="Garcia", phone="+14155550101")
    _shipped(twin, "10077")
    client = clinic_client(maria.organization, "view_run")
    response = client.get(reverse("admin:workflows_run_changelist"), {"q": term})
    assert response.status_code == 200
    assert [run.pk for run in response.context["cl"].result_list] == [mine.pk]


def test_a_search_that_matches_nothing_lists_nothing(superuser: Client, maria: Any) -> None:
    _shipped(maria, "10077")
    for term in ("Zelda", "555-0199", "99999", "{}", "%"):
        response = superuser.get(reverse("admin:workflows_run_changelist"), {"q": term})
        assert response.status_code == 200 and not response.context["cl"].result_list, term


def test_the_run_page_is_titled_with_workflow_and_patient(superuser: Client, maria: Any) -> None:
    run = _shipped(maria, "10077")
    html = superuser.get(reverse("admin:workflows_run_change", args=[run.pk])).content.decode()
    title = f"Order shipped SMS — Maria Garcia (run {run.pk})"
    assert f"<title>{title} |" in html and f"<h2>{title}</h2>" in html
    assert f'href="{reverse("admin:patients_patient_change", args=[maria.pk])}">Maria Garcia<' in (
        html
    )
    # The model's own name for it stays free of patient data (logs, error reports).
    assert str(run) == f"Order shipped SMS (run {run.pk})"


def test_a_run_without_a_patient_is_titled_by_its_workflow(superuser: Client) -> None:
    workflow = WorkflowFactory(name="Inbound triage")
    event = Event.objects.create(
        organization=workflow.organization,
        type="message.inbound",
        dedupe_key="x",
        payload={"customer": None, "message": {"body": "hi"}},
    )
    run = Run.objects.create(workflow=workflow, event=event, definition={"steps": []})
    response = superuser.get(reverse("admin:workflows_run_change", args=[run.pk]))
    assert f"<h2>Inbound triage (run {run.pk})</h2>" in response.content.decode()
    listing = superuser.get(reverse("admin:workflows_run_changelist")).content.decode()
    assert '<td class="field-patient">-</td>' in listing


def _logged_message(maria: Any) -> OutboundMessage:
    run = _shipped(maria, "10077")
    step_run = StepRun.objects.create(run=run, index=0, status="succeeded")
    message = _message(
        run,
        step_run,
        status="delivered",
        provider_sid=PROVIDER_SID,
        provider_status="delivered",
        decision={**DECISION, "allowed": True},
    )
    OutboundMessage.objects.filter(pk=message.pk).update(
        created_at=CHICAGO_MORNING,
        sent_at=CHICAGO_MORNING + timedelta(seconds=2),
        delivered_at=CHICAGO_MORNING + timedelta(minutes=1),
    )
    return message


def test_message_times_are_the_clinics(superuser: Client, maria: Any) -> None:
    message = _logged_message(maria)
    listing = superuser.get(reverse("admin:integrations_outboundmessage_changelist"))
    assert ">Dec 6, 2026, 9:14 AM CST</a></th>" in listing.content.decode()  # the first column
    page = superuser.get(
        reverse("admin:integrations_outboundmessage_change", args=[message.pk])
    ).content.decode()
    assert "Dec 6, 2026, 9:15 AM CST" in page  # delivered
    assert "Decided Mar 1, 2026, 8:00 AM CST: send" in page  # the decision's stored UTC time
    assert "2026-03-01T14:00:00" not in page.split("Technical details")[0]


def test_internal_keys_are_for_support_staff_only(superuser: Client, maria: Any) -> None:
    message = _logged_message(maria)
    internals = [message.idempotency_key, PROVIDER_SID, "2026-03-01T14:00:00"]
    change = reverse("admin:integrations_outboundmessage_change", args=[message.pk])
    run_page = reverse("admin:workflows_run_change", args=[message.step_run.run_id])
    clinic = clinic_client(maria.organization, "view_outboundmessage", "view_run")
    for url in (change, run_page, reverse("admin:integrations_outboundmessage_changelist")):
        response = clinic.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert "Technical details" not in html, url
        for internal in internals:
            assert internal not in html, (url, internal)
    page = clinic.get(change).content.decode()
    assert "Delivered" in page and "Dec 6, 2026, 9:15 AM CST" in page  # what a clinic needs
    support = superuser.get(change).content.decode()
    assert "Technical details" in support
    for internal in internals:
        assert internal in support, internal
    assert PROVIDER_SID in superuser.get(run_page).content.decode()


def test_messages_are_found_by_patient_name_and_phone(superuser: Client, maria: Any) -> None:
    message = _logged_message(maria)
    url = reverse("admin:integrations_outboundmessage_changelist")
    for term in ("+14155550100", "(415) 555-0100", message.patient.first_name):
        found = superuser.get(url, {"q": term}).context["cl"].result_list
        assert [m.pk for m in found] == [message.pk], term


def test_inbound_messages_show_the_clinics_time(superuser: Client, maria: Any) -> None:
    from integrations.models import InboundMessage

    inbound = InboundMessage.objects.create(
        organization=maria.organization,
        integration=IntegrationFactory(organization=maria.organization),
        provider_sid="SM" + "cd" * 16,
        from_number=maria.phone,
        to="+15005550006",
        body="STOP",
        patient=maria,
    )
    InboundMessage.objects.filter(pk=inbound.pk).update(created_at=CHICAGO_MORNING)
    html = superuser.get(reverse("admin:integrations_inboundmessage_changelist")).content.decode()
    assert '<th class="field-received"><a href=' in html
    assert ">Dec 6, 2026, 9:14 AM CST</a></th>" in html


def test_the_event_list_names_the_patient_in_the_clinics_time(
    superuser: Client, maria: Any
) -> None:
    run = _shipped(maria, "10077")
    Event.objects.filter(pk=run.event_id).update(occurred_at=CHICAGO_MORNING)
    html = superuser.get(reverse("admin:workflows_event_changelist")).content.decode()
    assert '<td class="field-patient">Maria Garcia</td>' in html
    assert "Dec 6, 2026, 9:14 AM CST" in html
    page = superuser.get(reverse("admin:workflows_event_change", args=[run.event_id]))
    assert page.status_code == 200 and "Technical details" in page.content.decode()


def test_step_runs_name_their_run_and_patient(superuser: Client, maria: Any) -> None:
    run = _shipped(maria, "10077")
    StepRun.objects.create(run=run, index=0, status="succeeded")
    html = superuser.get(reverse("admin:workflows_steprun_changelist")).content.decode()
    assert f"Order shipped SMS (run {run.pk})" in html and "Maria Garcia" in html


def test_support_staff_find_a_message_by_its_keys(superuser: Client, maria: Any) -> None:
    message = _logged_message(maria)
    url = reverse("admin:integrations_outboundmessage_changelist")
    for term in (message.idempotency_key, PROVIDER_SID):
        assert [m.pk for m in superuser.get(url, {"q": term}).context["cl"].result_list] == [
            message.pk
        ]
    clinic = clinic_client(maria.organization, "view_outboundmessage")
    assert not clinic.get(url, {"q": PROVIDER_SID}).context["cl"].result_list


def test_the_message_log_shows_an_emails_channel_and_subject_and_filters_by_channel(
    superuser: Client,
) -> None:
    workflow = WorkflowFactory()
    organization = workflow.organization
    run = _run(workflow)
    step_run = StepRun.objects.create(run=run, index=0, status="succeeded")
    _message(run, step_run, status="delivered")  # an SMS
    email_integration = IntegrationFactory(
        organization=organization,
        adapter="email",
        name="Email",
        senders=["care@clinic.example"],
        settings={"esp": "postmark"},
        secrets={"server_token": "t", "webhook_secret": "w" * 16},
    )
    email = OutboundMessage.objects.create(
        organization=organization,
        integration=email_integration,
        step_run=step_run,
        patient=PatientFactory(organization=organization),
        idempotency_key="email-1",
        purpose="transactional",
        channel="email",
        content={"subject": "Your <order> shipped", "html": "<p>On its way</p>"},
        to="ann@example.com",
        from_number="care@clinic.example",
        body="Plain text body",
        status="failed",
        error_code="406",
    )
    url = reverse("admin:integrations_outboundmessage_changelist")
    page = superuser.get(url).content.decode()
    assert "Your &lt;order&gt; shipped" in page and "<order>" not in page
    # the email's error code is explained by the email provider, not Twilio
    assert "406: the recipient is inactive in Postmark" in page
    with CaptureQueriesContext(connection) as queries:
        only_email = superuser.get(url + "?channel=email").context["cl"].result_list
    assert [m.pk for m in only_email] == [email.pk]
    # The channel filter offers the registered channels, not a DISTINCT over the whole log.
    assert not [q for q in queries.captured_queries if "DISTINCT" in q["sql"]]
    assert 'href="?channel=sms"' in page and 'href="?channel=email"' in page
    assert [m.channel for m in superuser.get(url + "?channel=sms").context["cl"].result_list] == [
        "sms"
    ]
    detail = superuser.get(
        reverse("admin:integrations_outboundmessage_change", args=[email.pk])
    ).content.decode()
    assert "Subject (email)" in detail and "Your &lt;order&gt; shipped" in detail
    assert "&lt;p&gt;On its way&lt;/p&gt;" in detail  # the HTML as source, never rendered


# --- the message log: an MMS and the first-contact wording ------------------------------------


def _mms(organization: Any, **fields: Any) -> OutboundMessage:
    integration = IntegrationFactory(organization=organization)
    values = {
        "organization": organization,
        "integration": integration,
        "idempotency_key": f"mms-{organization.pk}",
        "to": "+14155550123",
        "body": "Sunrise Telehealth: your instructions. Reply STOP to opt out.",
        "media_url": 'https://cdn.example.com/a"><script>x</script>.pdf',
        "purpose": "transactional",
        "status": OutboundMessage.Status.SENT,
        "segments": 1,
        "first_contact": True,
        **fields,
    }
    return OutboundMessage.objects.create(**values)


def test_the_log_shows_an_mms_billed_as_one_mms_with_its_media_as_a_link() -> None:
    clinic = OrganizationFactory()
    message = _mms(clinic)
    client = clinic_client(clinic, "view_outboundmessage")
    listing = client.get(reverse("admin:integrations_outboundmessage_changelist")).content.decode()
    assert '<td class="field-kind">MMS</td>' in listing
    assert '<td class="field-billed_as">1 MMS</td>' in listing
    page = client.get(
        reverse("admin:integrations_outboundmessage_change", args=[message.pk])
    ).content.decode()
    assert "added to this message (the clinic&#x27;s brand prefix and opt-out wording)" in page
    assert 'rel="noopener noreferrer"' in page
    assert "<script>x</script>" not in page and "&lt;script&gt;" in page
    assert '<img src="https://cdn.example.com' not in page  # never loaded by the page


def test_an_sms_is_billed_by_its_segments() -> None:
    clinic = OrganizationFactory()
    _mms(clinic, media_url="", segments=3, first_contact=False)
    listing = (
        clinic_client(clinic, "view_outboundmessage")
        .get(reverse("admin:integrations_outboundmessage_changelist"))
        .content.decode()
    )
    assert '<td class="field-kind">SMS</td>' in listing
    assert '<td class="field-billed_as">3 segments</td>' in listing


def test_another_clinic_cannot_see_the_mms() -> None:
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    message = _mms(theirs)
    client = clinic_client(mine, "view_outboundmessage")
    response = client.get(reverse("admin:integrations_outboundmessage_change", args=[message.pk]))
    assert response.status_code in (302, 404)
    listing = client.get(reverse("admin:integrations_outboundmessage_changelist")).content.decode()
    assert "cdn.example.com" not in listing


# --- the message log: short links and their clicks ---------------------------------------------


def test_the_message_page_lists_its_short_links_and_clicks() -> None:
    clinic = OrganizationFactory()
    message = _mms(clinic, media_url="", body="Book: https://go.sunrise.example/l/AbCdEf1234")
    link = ShortLinkFactory(
        code="AbCdEf1234", message=message, url="https://sunrise.example/book?a=<b>"
    )
    LinkClick.objects.create(link=link)
    LinkClick.objects.create(link=link)
    url = reverse("admin:integrations_outboundmessage_change", args=[message.pk])
    for role in (CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF):
        user = StaffMembershipFactory(organization=clinic).user
        user.groups.add(Group.objects.get(name=role))
        client = Client()
        client.force_login(user)
        page = client.get(url).content.decode()
        assert "AbCdEf1234 → https://sunrise.example/book?a=&lt;b&gt;: 2 clicks" in page, role
    other = clinic_client(OrganizationFactory(), "view_outboundmessage")
    assert other.get(url).status_code in (302, 404)
