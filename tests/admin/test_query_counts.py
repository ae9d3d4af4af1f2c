"""Every changelist costs the same number of queries however many rows it shows."""

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.api.keys import api_key_issue, api_key_revoke
from integrations.models import OutboundMessage
from patients.models import Order
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    OrganizationFactory,
    PatientFactory,
    PatientNoteFactory,
    SmsStepFactory,
    StaffMembershipFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows.engine import event_dispatch
from workflows.models import Event, Run, Segment, StepRun

pytestmark = pytest.mark.django_db


def _populate(integration: Any, count: int) -> None:
    """Rows in every table: patients, consents, notes, orders, events, runs, step runs,
    messages, segments, API keys."""
    org = integration.organization
    workflow = WorkflowFactory(organization=org)
    SmsStepFactory(workflow=workflow)
    for _ in range(count):
        patient = PatientFactory(organization=org)
        ConsentFactory(patient=patient)
        PatientNoteFactory(patient=patient)
        order = OrderFactory(patient=patient)
        order.status = Order.Status.SHIPPED
        order.save()
    for event in Event.objects.filter(dispatched_at__isnull=True):
        for run_id in event_dispatch(event_id=event.pk):
            step_run = StepRun.objects.create(run_id=run_id, index=0, status="succeeded")
            OutboundMessage.objects.create(
                organization=org,
                integration=integration,
                step_run=step_run,
                patient=PatientFactory(organization=org),
                idempotency_key=f"run:{run_id}",
                purpose="transactional",
                to="+14155550100",
                body="hi",
            )
    StaffMembershipFactory(organization=org)
    for n in range(count):
        Segment.objects.create(
            organization=org,
            name=f"Segment {Segment.objects.count()}",
            filter={"customer.provinceCode": "FL", "orders.daysSinceLast": {"$gt": 90}},
        )
        issued = api_key_issue(organization=org, name=f"Key {n}", scope="write")
        api_key_revoke(api_key=issued.api_key, revoked_by=UserFactory())


def _changelists() -> list[str]:
    return [
        f"admin:{m._meta.app_label}_{m._meta.model_name}_changelist" for m in admin.site._registry
    ]


def _queries(client: Client, url: str) -> int:
    client.get(url)  # warm per-process caches (content types, permissions)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(ctx.captured_queries)


@pytest.mark.parametrize("changelist", _changelists())
def test_changelist_query_count_is_constant(changelist: str) -> None:
    integration = IntegrationFactory()
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    url = reverse(changelist)
    _populate(integration, 2)
    few = _queries(client, url)
    _populate(integration, 8)
    assert Run.objects.count() >= 10
    assert _queries(client, url) == few, f"{changelist} makes a query per row"


def test_run_change_page_query_count_is_constant() -> None:
    integration = IntegrationFactory()
    _populate(integration, 1)
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    run = Run.objects.get()
    url = reverse("admin:workflows_run_change", args=[run.pk])
    few = _queries(client, url)
    for index in range(1, 6):
        StepRun.objects.create(run=run, index=index, status="succeeded")
    assert _queries(client, url) == few


def test_builder_page_query_count_is_constant() -> None:
    integration = IntegrationFactory()
    org = integration.organization
    workflow = WorkflowFactory(organization=org)
    SmsStepFactory(workflow=workflow)
    PatientFactory(organization=org, is_test=True)
    client = clinic_client(org, "view_workflow", "add_workflow", "change_workflow")
    change = reverse("admin:workflows_workflow_change", args=[workflow.pk])
    add = reverse("admin:workflows_workflow_add")
    few = _queries(client, change), _queries(client, add)
    for position in range(2, 8):
        SmsStepFactory(workflow=workflow, position=position)
        PatientFactory(organization=org, is_test=True)
    IntegrationFactory(organization=OrganizationFactory())
    _populate(integration, 3)  # runs waiting or not, events, messages
    assert workflow.steps.count() == 7
    assert (_queries(client, change), _queries(client, add)) == few


def test_run_timeline_query_count_is_constant() -> None:
    integration = IntegrationFactory()
    _populate(integration, 1)
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    run = Run.objects.get()
    url = reverse("admin:workflows_run_change", args=[run.pk])
    few = _queries(client, url)
    step = run.definition["steps"][0]
    run.definition = {**run.definition, "steps": [step] * 6}
    run.save()
    for index in range(1, 6):
        step_run = StepRun.objects.create(run=run, index=index, status="succeeded")
        for n in range(2):
            OutboundMessage.objects.create(
                organization=integration.organization,
                integration=integration,
                step_run=step_run,
                patient=PatientFactory(organization=integration.organization),
                idempotency_key=f"t:{index}:{n}",
                purpose="transactional",
                to="+14155550100",
                body="hi",
                error_code="30007",
                decision={
                    "allowed": True,
                    "checks": [{"check": "consent", "ok": True, "detail": "x"}],
                },
            )
    response = client.get(url)
    assert response.content.decode().count('class="cf-sms"') == 11
    assert _queries(client, url) == few


@pytest.mark.parametrize(
    ("changelist", "query"),
    [
        ("admin:integrations_outboundmessage_changelist", "?created=today&outcome=sent"),
        ("admin:integrations_outboundmessage_changelist", "?created=7d&q=Pat"),
        ("admin:integrations_outboundmessage_changelist", "?q=(415)%20555-0100"),
        # Where failure alerts link: a workflow's failed messages, a sender's queue.
        ("admin:integrations_outboundmessage_changelist", "?status=failed&workflow=1"),
        ("admin:integrations_outboundmessage_changelist", "?sender=%2B15005550006&status=pending"),
        ("admin:workflows_run_changelist", "?status=failed&workflow=1"),
        ("admin:workflows_run_changelist", "?status__exact=succeeded&finished=7d"),
        ("admin:workflows_run_changelist", "?q=Lee"),
        ("admin:workflows_run_changelist", "?q=(415)%20555-0100"),
        ("admin:integrations_inboundmessage_changelist", "?needs_review__exact=1"),
    ],
)
@pytest.mark.parametrize("role", ["superuser", "clinic"])
def test_filtered_changelists_query_count_is_constant(
    changelist: str, query: str, role: str
) -> None:
    """The clinic home's links and the searches cost the same however many rows they show,
    for support staff (every clinic, each in its own zone) and for a clinic."""
    integration = IntegrationFactory()
    OrganizationFactory(timezone="Pacific/Kiritimati")  # a second zone for support staff
    _populate(integration, 2)
    client = Client()
    if role == "superuser":
        client.force_login(UserFactory(is_superuser=True))
    else:
        user = StaffMembershipFactory(organization=integration.organization).user
        user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
        client.force_login(user)
    url = reverse(changelist) + query
    few = _queries(client, url)
    _populate(integration, 8)
    assert _queries(client, url) == few, f"{url} makes a query per row"
