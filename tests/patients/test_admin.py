"""Admin for the trigger records, the organization's webhook token action, renewals, and the
patient page (current consent per purpose and the conversation)."""

import hashlib
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from integrations.models import InboundMessage, OutboundMessage
from integrations.twilio.keywords import inbound_sms_receive
from patients.models import (
    ConsentRecord,
    Lead,
    Order,
    Organization,
    Patient,
    PatientNote,
    StaffMembership,
    Subscription,
    Task,
)
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.factories import (
    AppointmentFactory,
    CartFactory,
    ConsentFactory,
    IntegrationFactory,
    LeadFactory,
    OrganizationFactory,
    PatientFactory,
    PatientNoteFactory,
    PrescriptionFactory,
    QuestionnaireSubmissionFactory,
    RequisitionFactory,
    StaffMembershipFactory,
    SubscriptionFactory,
    TaskFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
    clinic_integration,
)
from workflows.models import Event, Run, StepRun

pytestmark = pytest.mark.django_db

RECORDS = [
    "subscription",
    "appointment",
    "cart",
    "questionnairesubmission",
    "prescription",
    "requisition",
    "lead",
    "task",
    "patientnote",
]


def _populate(organization: Organization, count: int) -> None:
    for _ in range(count):
        patient = PatientFactory(organization=organization)
        SubscriptionFactory(patient=patient)
        AppointmentFactory(patient=patient)
        CartFactory(patient=patient, checked_out_at=timezone.now())
        QuestionnaireSubmissionFactory(patient=patient)
        PrescriptionFactory(patient=patient)
        RequisitionFactory(patient=patient)
        LeadFactory(
            organization=organization, status=Lead.Status.CONVERTED, converted_patient=patient
        )
        TaskFactory(organization=organization, patient=patient)
        PatientNoteFactory(patient=patient)


def _queries(client: Client, url: str) -> int:
    client.get(url)  # warm per-process caches
    with CaptureQueriesContext(connection) as context:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(context.captured_queries)


def _superuser_client() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


@pytest.mark.parametrize("model", [*RECORDS, "organization"])
def test_changelist_query_count_is_constant(model: str) -> None:
    organization = OrganizationFactory()
    client = _superuser_client()
    url = reverse(f"admin:patients_{model}_changelist")
    _populate(organization, 2)
    few = _queries(client, url)
    _populate(organization, 8)
    _populate(OrganizationFactory(), 2)
    assert _queries(client, url) == few, f"{model} makes a query per row"


@pytest.mark.parametrize("model", RECORDS)
def test_add_and_change_pages_render(model: str) -> None:
    _populate(OrganizationFactory(), 1)
    client = _superuser_client()
    assert client.get(reverse(f"admin:patients_{model}_add")).status_code == 200
    record = client.get(reverse(f"admin:patients_{model}_changelist")).context["cl"].result_list[0]
    assert client.get(reverse(f"admin:patients_{model}_change", args=[record.pk])).status_code == (
        200
    )


@pytest.mark.parametrize("model", RECORDS)
def test_clinic_staff_see_only_their_clinics_records(model: str) -> None:
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    _populate(mine, 1)
    _populate(theirs, 2)
    client = clinic_client(mine, f"view_{model}")
    response = client.get(reverse(f"admin:patients_{model}_changelist"))
    assert response.status_code == 200
    shown = list(response.context["cl"].queryset)
    assert len(shown) == 1
    assert all(record.organization_id == mine.pk for record in shown)


def test_staff_adding_a_subscription_cannot_pick_another_clinics_patient() -> None:
    mine = OrganizationFactory()
    stranger = PatientFactory()
    client = clinic_client(mine, "add_subscription", "view_subscription")
    response = client.post(
        reverse("admin:patients_subscription_add"),
        {
            "organization": mine.pk,
            "patient": stranger.pk,
            "product_id": "p1",
            "product_name": "Vitamin D",
            "price": "10.00",
            "interval_days": 30,
            "status": "active",
            "current_cycle": 1,
        },
    )
    assert response.status_code == 200  # the form again, with an error
    assert "patient" in response.context["adminform"].form.errors
    assert not Subscription.objects.exists()


def test_staff_adding_a_task_records_task_created() -> None:
    from workflows.models import Event

    mine = OrganizationFactory()
    client = clinic_client(mine, "add_task", "view_task")
    response = client.post(
        reverse("admin:patients_task_add"),
        {"organization": mine.pk, "title": "Call back", "status": "open"},
    )
    assert response.status_code == 302
    task = Task.objects.get()
    assert Event.objects.get(type="task.created").subject_id == str(task.pk)


def test_staff_adding_a_note_are_its_author_and_it_shows_on_the_patient_page() -> None:
    mine = OrganizationFactory()
    patient = PatientFactory(organization=mine)
    client = clinic_client(mine, "add_patientnote", "view_patientnote", "view_patient")
    response = client.post(
        reverse("admin:patients_patientnote_add"),
        {"organization": mine.pk, "patient": patient.pk, "text": "Prefers mornings."},
    )
    assert response.status_code == 302
    note = PatientNote.objects.get()
    assert note.written_by == str(StaffMembership.objects.get(organization=mine).user)
    html = _patient_page(client, patient)
    assert "Notes for staff" in html and "Prefers mornings." in html
    # a role that may not see notes gets no panel
    assert "Notes for staff" not in _patient_page(clinic_client(mine, "view_patient"), patient)


def test_a_converted_lead_without_a_patient_is_refused_in_the_form() -> None:
    mine = OrganizationFactory()
    client = clinic_client(mine, "add_lead", "view_lead")
    response = client.post(
        reverse("admin:patients_lead_add"),
        {"organization": mine.pk, "first_name": "Sam", "status": "converted"},
    )
    assert response.status_code == 200
    assert "A converted lead needs the patient it became." in response.content.decode()
    assert not Lead.objects.exists()


# --- webhook token -------------------------------------------------------------------------


def _issue(client: Client, *organizations: Organization) -> Any:
    return client.post(
        reverse("admin:patients_organization_changelist"),
        {"action": "issue_webhook_token", "_selected_action": [o.pk for o in organizations]},
    )


def test_issuing_a_token_shows_it_once_and_stores_only_its_hash() -> None:
    organization = OrganizationFactory()
    response = _issue(_superuser_client(), organization)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    token = response.context["token"]
    html = response.content.decode()
    assert token in html and "shown only this once" in html
    endpoint = f"http://testserver/webhooks/events/{organization.uuid}/"
    assert endpoint in html
    organization.refresh_from_db()
    assert organization.webhook_token_hash == hashlib.sha256(token.encode()).hexdigest()
    # Never in the change page afterwards.
    change = _superuser_client().get(
        reverse("admin:patients_organization_change", args=[organization.pk])
    )
    assert token not in change.content.decode()
    assert organization.webhook_token_hash not in change.content.decode()
    assert f"/webhooks/events/{organization.uuid}/" in change.content.decode()


def test_issuing_rotates_the_token() -> None:
    organization = OrganizationFactory()
    client = _superuser_client()
    first = _issue(client, organization).context["token"]
    second = _issue(client, organization).context["token"]
    assert first != second
    organization.refresh_from_db()
    assert organization.webhook_token_hash == hashlib.sha256(second.encode()).hexdigest()


def test_issuing_needs_exactly_one_organization() -> None:
    a, b = OrganizationFactory(), OrganizationFactory()
    response = _issue(_superuser_client(), a, b)
    assert response.status_code == 302
    assert not Organization.objects.exclude(webhook_token_hash="").exists()


def test_clinic_staff_issue_a_token_only_for_their_own_clinic() -> None:
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    client = clinic_client(mine, "view_organization", "change_organization")
    _issue(client, theirs)
    theirs.refresh_from_db()
    assert theirs.webhook_token_hash == ""
    assert _issue(client, mine).status_code == 200


def test_staff_without_change_permission_cannot_issue() -> None:
    mine = OrganizationFactory()
    client = clinic_client(mine, "view_organization")
    _issue(client, mine)
    mine.refresh_from_db()
    assert mine.webhook_token_hash == ""


# --- renew action ----------------------------------------------------------------------------


def test_renew_action_renews_active_and_explains_the_rest() -> None:
    active = SubscriptionFactory()
    paused = SubscriptionFactory(status=Subscription.Status.PAUSED)
    client = _superuser_client()
    response = client.post(
        reverse("admin:patients_subscription_changelist"),
        {"action": "renew", "_selected_action": [active.pk, paused.pk]},
        follow=True,
    )
    messages = [str(m) for m in response.context["messages"]]
    assert "Renewed 1 subscription(s)." in messages
    assert any("Only active subscriptions renew" in m for m in messages)
    assert Order.objects.filter(subscription=active).count() == 1
    assert not Order.objects.filter(subscription=paused).exists()


# --- the patient page: consent and conversation ---------------------------------------------


MARKETING_TEXT = "Yes, send me offers by text. Reply STOP to opt out."


def _patient_page(client: Client, patient: Patient) -> str:
    response = client.get(reverse("admin:patients_patient_change", args=[patient.pk]))
    assert response.status_code == 200
    return response.content.decode()


def _consent_row(html: str, purpose: str) -> str:
    match = re.search(
        rf'<tr class="cf-consent-(\w+)" data-purpose="{purpose}">(.*?)</tr>', html, re.S
    )
    assert match, f"no consent row for {purpose}"
    return match.group(1) + " " + re.sub(r"\s+", " ", match.group(2))


def _chat(html: str) -> list[str]:
    """The conversation's texts as rendered, in page order, each squeezed to one line."""
    items = re.findall(
        r'<li class="cf-chat-(?:sent|received)[^"]*" data-direction="\w+">(.*?)</li>', html, re.S
    )
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", item)).strip() for item in items]


def _stamp(record: Any, at: datetime, field: str = "created_at") -> None:
    type(record).objects.filter(pk=record.pk).update(**{field: at})


def _sent(patient: Patient, body: str, *, at: datetime, **fields: Any) -> OutboundMessage:
    organization = patient.organization
    integration = clinic_integration(organization)
    message = OutboundMessage.objects.create(
        organization=organization,
        integration=integration,
        patient=patient,
        idempotency_key=f"test:{uuid.uuid4()}",
        purpose="transactional",
        to=patient.phone,
        from_number="+15005550006",
        body=body,
        **fields,
    )
    _stamp(message, at)
    return message


def _received(patient: Patient, body: str, *, at: datetime, **fields: Any) -> InboundMessage:
    organization = patient.organization
    integration = clinic_integration(organization)
    message = InboundMessage.objects.create(
        organization=organization,
        integration=integration,
        provider_sid="SM" + uuid.uuid4().hex,
        from_number=patient.phone,
        to="+15005550006",
        body=body,
        patient=patient,
        **fields,
    )
    _stamp(message, at)
    return message


def _step_run(patient: Patient, workflow_name: str) -> StepRun:
    workflow = WorkflowFactory(organization=patient.organization, name=workflow_name)
    event = Event.objects.create(
        organization=patient.organization, type="order.shipped", dedupe_key=f"e:{workflow.pk}"
    )
    run = Run.objects.create(workflow=workflow, event=event, status="succeeded")
    return StepRun.objects.create(run=run, index=1, status="succeeded")


def test_the_patient_page_shows_the_current_consent_per_purpose_from_the_history() -> None:
    organization = OrganizationFactory(timezone="America/Los_Angeles")
    patient = PatientFactory(organization=organization)
    staff = UserFactory(username="front-desk")
    ConsentFactory(
        patient=patient,
        occurred_at=datetime(2025, 3, 1, 17, 0, tzinfo=UTC),
        source=ConsentRecord.Source.CHECKOUT,
    )
    ConsentFactory(
        patient=patient,
        action=ConsentRecord.Action.OPT_OUT,
        source=ConsentRecord.Source.ADMIN,
        consent_text="",
        recorded_by=staff,
        occurred_at=datetime(2025, 3, 3, 22, 5, tzinfo=UTC),
    )
    html = _patient_page(_superuser_client(), patient)
    transactional = _consent_row(html, "transactional")
    assert transactional.startswith("opted_out ")
    assert "Opted out" in transactional
    # In the clinic's zone, with who recorded it, in words a clinic reads.
    assert "Mar 3, 2025, 2:05 PM PST" in transactional
    assert "Recorded by staff, recorded by front-desk" in transactional
    assert "✗ not sent: opted out of transactional SMS on 2025-03-03 (Recorded by staff)" in (
        transactional
    )
    marketing = _consent_row(html, "marketing")
    assert marketing.startswith("never_asked ") and "Never asked" in marketing
    assert "✗ not sent: no SMS consent" in marketing
    assert "Not opted out by keyword" in html
    assert "2 decisions" in html
    # The history below the panel reads in the clinic's zone too (22:05 UTC).
    assert "2:05 p.m." in html and "10:05 p.m." not in html


def test_an_opt_in_shows_since_when_and_its_text_and_may_be_sent() -> None:
    patient = PatientFactory(organization=OrganizationFactory(timezone="America/New_York"))
    ConsentFactory(
        patient=patient,
        purpose=ConsentRecord.Purpose.MARKETING,
        source=ConsentRecord.Source.PATIENT_PORTAL,
        consent_text=MARKETING_TEXT,
        occurred_at=datetime(2025, 7, 4, 13, 30, tzinfo=UTC),
    )
    marketing = _consent_row(_patient_page(_superuser_client(), patient), "marketing")
    assert marketing.startswith("opted_in ")
    assert "Jul 4, 2025, 9:30 AM EDT" in marketing
    assert "Patient portal" in marketing and MARKETING_TEXT in marketing
    assert "✓ may be sent" in marketing


def test_a_marketing_opt_in_without_its_text_is_shown_as_not_enough() -> None:
    patient = PatientFactory()
    ConsentFactory(patient=patient, purpose=ConsentRecord.Purpose.MARKETING, consent_text=" \n")
    marketing = _consent_row(_patient_page(_superuser_client(), patient), "marketing")
    assert marketing.startswith("opted_in ")
    assert "✗ not sent: marketing needs express written consent" in marketing


def test_a_stop_shows_the_number_opted_out_by_keyword_until_start() -> None:
    organization = OrganizationFactory(timezone="America/Chicago")
    integration = IntegrationFactory(organization=organization)
    patient = PatientFactory(organization=organization, phone="+14155550177")
    ConsentFactory(patient=patient, occurred_at=timezone.now() - timedelta(days=9))
    ConsentFactory(
        patient=patient,
        purpose=ConsentRecord.Purpose.MARKETING,
        consent_text=MARKETING_TEXT,
        occurred_at=timezone.now() - timedelta(days=9),
    )
    client = _superuser_client()
    inbound_sms_receive(
        integration=integration,
        sid="SM" + "1" * 32,
        from_=patient.phone,
        to="+15005550006",
        body="Stop",
    )
    html = _patient_page(client, patient)
    assert "Opted out by keyword" in html and "the patient texted “STOP”" in html
    for purpose in ("transactional", "marketing"):
        row = _consent_row(html, purpose)
        assert row.startswith("opted_out ") and "Inbound keyword (STOP/START)" in row, row

    inbound_sms_receive(
        integration=integration,
        sid="SM" + "2" * 32,
        from_=patient.phone,
        to="+15005550006",
        body="START",
    )
    html = _patient_page(client, patient)
    assert "Not opted out by keyword" in html
    for purpose in ("transactional", "marketing"):
        assert _consent_row(html, purpose).startswith("opted_in "), purpose


def test_a_stop_after_an_opt_in_of_another_purpose_overrides_it_on_the_page() -> None:
    # A STOP recorded by hand under one purpose stops every purpose, as at send time.
    patient = PatientFactory()
    ConsentFactory(patient=patient, occurred_at=timezone.now() - timedelta(days=2))
    ConsentFactory(
        patient=patient,
        purpose=ConsentRecord.Purpose.MARKETING,
        action=ConsentRecord.Action.OPT_OUT,
        source=ConsentRecord.Source.PROVIDER_ERROR,
        consent_text="",
        evidence={"error_code": 21610},
    )
    html = _patient_page(_superuser_client(), patient)
    transactional = _consent_row(html, "transactional")
    assert transactional.startswith("opted_out ")
    assert "Provider error (e.g. Twilio 21610)" in transactional
    assert "Opted out by the carrier" in html


def test_the_conversation_shows_both_directions_in_time_order_with_status_reason_and_run() -> None:
    organization = OrganizationFactory(timezone="America/Los_Angeles")
    patient = PatientFactory(organization=organization)
    base = datetime(2025, 3, 3, 20, 0, tzinfo=UTC)
    step_run = _step_run(patient, "Order shipped SMS")
    _sent(patient, "Your order shipped", at=base, step_run=step_run, status="delivered")
    _received(patient, "Thanks! When will it arrive?", at=base + timedelta(minutes=5))
    _sent(
        patient,
        "Try our new vitamins",
        at=base + timedelta(minutes=10),
        status="skipped",
        skip_reason="no SMS consent",
    )
    _received(
        patient,
        "please don't text me anymore",
        at=base + timedelta(minutes=15),
        needs_review=True,
    )
    _sent(
        patient,
        "Your refill is ready",
        at=base + timedelta(minutes=20),
        status="undelivered",
        error_code="30007",
    )
    html = _patient_page(_superuser_client(), patient)
    chat = _chat(html)
    assert [line.split(" · ")[0] for line in chat] == [
        f"Sent to {patient.phone}",
        f"Received from {patient.phone}",
        f"Sent to {patient.phone}",
        f"Received from {patient.phone}",
        f"Sent to {patient.phone}",
    ]
    assert "Mar 3, 2025, 12:00 PM PST" in chat[0] and "Delivered" in chat[0]
    assert "Sent by Order shipped SMS, step 2" in chat[0]
    assert f'href="{reverse("admin:workflows_run_change", args=[step_run.run_id])}"' in html
    assert "Free text" in chat[1] and "When will it arrive?" in chat[1]
    assert "Skipped" in chat[2] and "no SMS consent" in chat[2]
    assert "Needs review" in chat[3]
    assert "Twilio error 30007: The carrier filtered the message as spam" in chat[4]
    assert "Mar 3, 2025, 12:20 PM PST" in chat[4]
    assert "newest at the bottom" in html


def test_the_conversation_shows_only_this_patients_texts_even_on_a_shared_phone() -> None:
    organization = OrganizationFactory()
    parent = PatientFactory(organization=organization, phone="+14155550123")
    child = PatientFactory(organization=organization, phone="+14155550123")
    stranger = PatientFactory()  # another clinic
    now = timezone.now()
    _sent(parent, "For the parent", at=now)
    _received(parent, "From the parent", at=now)
    _sent(child, "For the child", at=now)
    _sent(stranger, "For someone else", at=now)
    html = _patient_page(_superuser_client(), child)
    assert "For the child" in html
    assert "For the parent" not in html and "From the parent" not in html
    assert "For someone else" not in html


def test_the_conversation_is_bounded_and_links_to_the_full_lists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("integrations.patient_panel.CONVERSATION_LIMIT", 3)
    patient = PatientFactory()
    other = PatientFactory(organization=patient.organization)
    base = timezone.now() - timedelta(hours=1)
    for n in range(4):
        _sent(patient, f"Outbound {n}", at=base + timedelta(minutes=2 * n))
        _received(patient, f"Inbound {n}", at=base + timedelta(minutes=2 * n + 1))
    _sent(other, "Not theirs", at=base)
    client = _superuser_client()
    html = _patient_page(client, patient)
    shown = [re.search(r"(Outbound|Inbound) \d", line).group(0) for line in _chat(html)]
    assert shown == ["Inbound 2", "Outbound 3", "Inbound 3"]  # the latest three, oldest first
    assert "the latest 3 are shown" in html
    for model, expected in ((OutboundMessage, 4), (InboundMessage, 4)):
        url = reverse(f"admin:integrations_{model._meta.model_name}_changelist")
        link = f"{url}?patient__id__exact={patient.pk}"
        assert f'href="{link}"' in html
        response = client.get(link)
        assert response.status_code == 200
        shown = list(response.context["cl"].queryset)
        assert len(shown) == expected and {m.patient_id for m in shown} == {patient.pk}


def test_the_patient_page_costs_a_constant_number_of_queries() -> None:
    patient = PatientFactory()
    ConsentFactory(patient=patient)
    base = timezone.now() - timedelta(days=1)

    def texts(count: int) -> None:
        for n in range(count):
            step_run = _step_run(patient, f"Workflow {uuid.uuid4()}")
            _sent(patient, f"Out {n}", at=base, step_run=step_run)
            _received(patient, f"In {n}", at=base, reviewed_by=UserFactory(), reviewed_at=base)
            ConsentFactory(patient=patient, recorded_by=UserFactory())

    client = _superuser_client()
    url = reverse("admin:patients_patient_change", args=[patient.pk])
    texts(2)
    few = _queries(client, url)
    texts(8)
    assert _queries(client, url) == few


def test_clinic_staff_see_the_panels_of_their_patients_only() -> None:
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    stranger = PatientFactory(organization=theirs, first_name="Stranger")
    _sent(stranger, "A private text", at=timezone.now())
    client = clinic_client(mine, "view_patient", "view_outboundmessage", "view_inboundmessage")
    response = client.get(reverse("admin:patients_patient_change", args=[stranger.pk]))
    assert response.status_code == 302  # "does not exist", as for any other clinic's record
    assert "A private text" not in response.content.decode()
    own = PatientFactory(organization=mine)
    _sent(own, "Our own text", at=timezone.now())
    html = _patient_page(client, own)
    assert "Our own text" in html and "Consent to texts" in html
    assert "A private text" not in html


def test_without_message_permissions_the_conversation_is_not_shown() -> None:
    organization = OrganizationFactory()
    patient = PatientFactory(organization=organization)
    _sent(patient, "Hidden from this role", at=timezone.now())
    html = _patient_page(clinic_client(organization, "view_patient"), patient)
    assert "Consent to texts" in html
    assert "Conversation" not in html and "Hidden from this role" not in html
    # nor a link to record consent the user may not add
    assert reverse("admin:patients_consentrecord_add") not in html


def test_there_is_no_accept_marketing_checkbox_beside_the_history() -> None:
    patient = PatientFactory()
    client = _superuser_client()
    html = _patient_page(client, patient)
    assert "accept_marketing" not in html and "Accept marketing" not in html
    assert f"{reverse('admin:patients_consentrecord_add')}?patient={patient.pk}" in html


def test_the_add_page_has_no_panels() -> None:
    response = _superuser_client().get(reverse("admin:patients_patient_add"))
    assert response.status_code == 200
    assert "Consent to texts" not in response.content.decode()


def _email_consent_row(html: str, purpose: str) -> str:
    match = re.search(
        rf'<tr class="cf-consent-(\w+)" data-channel="email" data-purpose="{purpose}">(.*?)</tr>',
        html,
        re.S,
    )
    assert match, f"no email consent row for {purpose}"
    return match.group(1) + " " + re.sub(r"\s+", " ", match.group(2))


def test_the_patient_page_shows_email_consent_beside_the_texts() -> None:
    patient = PatientFactory(email="ann@example.com")
    ConsentFactory(patient=patient)  # texts: transactional opt-in
    ConsentFactory(patient=patient, channel="email", purpose="marketing")
    ConsentFactory(
        patient=patient,
        channel="email",
        action=ConsentRecord.Action.OPT_OUT,
        source=ConsentRecord.Source.PROVIDER_EVENT,
        consent_text="",
    )
    html = _patient_page(_superuser_client(), patient)
    assert "Consent to email" in html
    assert _consent_row(html, "transactional").startswith("opted_in ")  # texts unaffected
    transactional = _email_consent_row(html, "transactional")
    assert transactional.startswith("opted_out ")
    assert "✗ not sent: opted out of transactional email on" in transactional
    marketing = _email_consent_row(html, "marketing")
    assert marketing.startswith("opted_in ") and "✓ may be sent" in marketing
    assert "No email address on file" not in html


def test_staff_record_an_email_consent_and_the_list_filters_by_channel() -> None:
    patient = PatientFactory()
    client = _superuser_client()
    response = client.post(
        reverse("admin:patients_consentrecord_add"),
        {
            "patient": patient.pk,
            "channel": "email",
            "purpose": "marketing",
            "action": "opt_in",
            "source": "admin",
            "consent_text": "I agree to receive marketing emails.",
            "occurred_at_0": "2026-03-01",
            "occurred_at_1": "10:00:00",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    record = ConsentRecord.objects.get(patient=patient)
    assert (record.channel, record.purpose, record.action) == ("email", "marketing", "opt_in")
    html = _patient_page(client, patient)
    assert _email_consent_row(html, "marketing").startswith("opted_in ")
    assert _consent_row(html, "marketing").startswith("never_asked ")
    ConsentFactory(patient=patient)  # an SMS one
    url = reverse("admin:patients_consentrecord_changelist")
    emails = client.get(url + "?channel__exact=email").context["cl"].result_list
    assert [r.channel for r in emails] == ["email"]


@pytest.mark.parametrize("role", [CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF])
def test_the_patient_page_shows_the_preferred_language_to_each_role(role: str) -> None:
    patient = PatientFactory(language="es")
    user = StaffMembershipFactory(organization=patient.organization).user
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    page = _patient_page(client, patient)
    assert "Preferred language" in page
    if role == CLINIC_ADMIN:  # changes patients: a list to choose from
        assert re.search(r'<option value="es" selected>Spanish</option>', page)
    else:  # views them: the language as text
        assert 'name="language"' not in page and "Spanish" in page
