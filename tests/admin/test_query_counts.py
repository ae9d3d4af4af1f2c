"""Every changelist costs the same number of queries however many rows it shows."""

from typing import Any

import pytest
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.models import OutboundMessage
from patients.models import Order
from tests.factories import (
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    StaffMembershipFactory,
    UserFactory,
    WorkflowFactory,
)
from workflows.engine import event_dispatch
from workflows.models import Event, Run, StepRun

pytestmark = pytest.mark.django_db


def _populate(integration: Any, count: int) -> None:
    """Rows in every table: patients, consents, orders, events, runs, step runs, messages."""
    org = integration.organization
    workflow = WorkflowFactory(organization=org)
    SmsStepFactory(workflow=workflow)
    for _ in range(count):
        patient = PatientFactory(organization=org)
        ConsentFactory(patient=patient)
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
