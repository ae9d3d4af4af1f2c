"""Link clicks in a workflow's analytics: clicks and unique clickers per step and in total,
for clicks made in the period on the workflow's non-test messages; on the page, for the
clinic's staff, and never another clinic's."""

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from integrations.analytics import Period, workflow_analytics
from integrations.models import Integration, LinkClick, ShortLink
from patients.models import Patient
from tests.factories import (
    IntegrationFactory,
    PatientFactory,
    ShortLinkFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows.models import Workflow

UTC = ZoneInfo("UTC")
T0 = datetime(2026, 3, 1, tzinfo=UTC)
PERIOD = Period(T0, T0 + timedelta(days=10), UTC)
DATES = {"period": "custom", "start": "2026-03-01", "end": "2026-03-10"}


def _link(
    integration: Integration,
    workflow: Workflow | None,
    patient: Patient,
    step_index: int,
    *,
    is_test: bool = False,
) -> ShortLink:
    link: ShortLink = ShortLinkFactory(
        message__integration=integration,
        message__workflow=workflow,
        message__step_index=step_index,
        message__patient=patient,
        message__is_test=is_test,
    )
    return link


def _click(link: ShortLink, at: datetime) -> None:
    LinkClick.objects.create(link=link, clicked_at=at)


@pytest.fixture
def seeded() -> tuple[Workflow, Integration]:
    integration = IntegrationFactory()
    organization = integration.organization
    organization.timezone = "UTC"
    organization.save()
    workflow = WorkflowFactory(organization=organization)
    ann, bob, cat = (
        PatientFactory(organization=organization, phone=f"+1415555010{n}") for n in range(3)
    )
    # Step 1: Ann clicks twice, Bob once; step 2: Ann once.
    ann_1 = _link(integration, workflow, ann, 0)
    _click(ann_1, T0 + timedelta(hours=1))
    _click(ann_1, T0 + timedelta(hours=2))
    _click(_link(integration, workflow, bob, 0), T0 + timedelta(days=1))
    _click(_link(integration, workflow, ann, 1), T0 + timedelta(days=2))
    # Not counted: outside the period, a test message, another workflow.
    _click(_link(integration, workflow, cat, 0), T0 - timedelta(seconds=1))
    _click(_link(integration, workflow, cat, 0, is_test=True), T0 + timedelta(days=1))
    other = WorkflowFactory(organization=organization)
    _click(_link(integration, other, cat, 0), T0 + timedelta(days=1))
    return workflow, integration


@pytest.mark.django_db
def test_clicks_and_clickers_per_step_and_in_total(seeded: tuple[Workflow, Integration]) -> None:
    workflow, _ = seeded
    figures = workflow_analytics(workflow=workflow, period=PERIOD)
    assert (figures.link_clicks, figures.link_clickers) == (4, 2)
    steps = {step.index: (step.clicks, step.clickers) for step in figures.steps}
    assert steps == {0: (3, 2), 1: (1, 1)}


@pytest.mark.django_db
def test_the_page_shows_them_to_the_clinic_only(seeded: tuple[Workflow, Integration]) -> None:
    workflow, _ = seeded
    url = reverse("admin:workflows_workflow_analytics", args=[workflow.pk])
    page = clinic_client(workflow.organization, "view_workflow").get(url, DATES)
    assert page.status_code == 200
    text = page.content.decode()
    assert re.search(r'data-figure="link-clicks">4<', text)
    assert re.search(r'data-figure="patients-who-clicked">2<', text)
    assert "<th>Link clicks</th>" in text
    other = IntegrationFactory().organization
    assert clinic_client(other, "view_workflow").get(url, DATES).status_code in (302, 403, 404)
