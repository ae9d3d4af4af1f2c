"""The clinic's alert settings page (who is told, thresholds; a write-only signing secret; bad
input gets a specific form error) and the alert log (clinic-scoped, read-only, constant
queries); the filtered lists an alert links to."""

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from integrations.alerts import period_start
from integrations.models import Alert, AlertSettings, OutboundMessage
from patients.models import Organization
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.factories import (
    IntegrationFactory,
    OrganizationFactory,
    StaffMembershipFactory,
    WorkflowFactory,
)
from workflows.models import Event, Run, StepRun

pytestmark = pytest.mark.django_db
SECRET = "a-long-signing-secret-0123"
ADD_URL = "/admin/integrations/alertsettings/add/"


def _client(organization: Organization, role: str = CLINIC_ADMIN) -> Client:
    user = StaffMembershipFactory(organization=organization).user
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def _form(organization: Organization, **overrides: str) -> dict[str, str]:
    data = {
        "organization": str(organization.pk),
        "enabled": "on",
        "staff_emails": "ops@clinic.example\nlead@clinic.example",
        "webhook_url": "",
        "webhook_secret": "",
        "failure_rate_percent": "20",
        "undelivered_rate_percent": "25",
        "minimum_messages": "10",
        "period_minutes": "60",
    }
    data.update(overrides)
    return data


def _errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, "the form was expected back with errors"
    form = response.context["adminform"].form
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


def test_a_clinic_admin_sets_recipients_and_thresholds_for_their_clinic(settings: Any) -> None:
    settings.CAREFLOW_WEBHOOK_ALLOW_PRIVATE = False
    organization = OrganizationFactory()
    response = _client(organization).post(
        ADD_URL,
        _form(
            organization,
            staff_emails="ops@clinic.example, lead@clinic.example\n\nops@clinic.example",
            # A literal public address: nothing to resolve in the test.
            webhook_url="https://93.184.216.34/careflow",
            webhook_secret=SECRET,
        ),
    )

    assert response.status_code == 302, _errors(response)
    saved = AlertSettings.objects.get(organization=organization)
    assert saved.staff_emails == ["ops@clinic.example", "lead@clinic.example"]
    assert saved.webhook_secret == SECRET
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT webhook_secret FROM integrations_alertsettings WHERE id = %s", [saved.pk]
        )
        stored = cursor.fetchone()[0]
    assert SECRET not in stored  # encrypted at rest

    page = _client(organization).get(
        reverse("admin:integrations_alertsettings_change", args=[saved.pk])
    )
    assert page.status_code == 200
    assert SECRET not in page.content.decode()


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        (
            "staff_emails",
            "ops@clinic.example\nnot-an-address",
            "Not a valid email address: not-an-address.",
        ),
        (
            "webhook_url",
            "http://93.184.216.34/hook",
            "Alerts cannot be posted here: the URL must "
            "start with https:// (webhooks are only sent encrypted).",
        ),
        (
            "webhook_url",
            "https://127.0.0.1/hook",
            "Alerts cannot be posted here: 127.0.0.1 is not a public address",
        ),
        (
            "webhook_url",
            "hooks.example.com",
            "Alerts cannot be posted here: write the whole URL, starting with https://.",
        ),
        ("failure_rate_percent", "150", "Ensure this value is less than or equal to 100."),
        ("minimum_messages", "0", "Ensure this value is greater than or equal to 1."),
        ("period_minutes", "1", "Ensure this value is greater than or equal to 5."),
        ("staff_emails", "ops@clinic.example\x00", "Null characters are not allowed."),
        ("webhook_secret", "a-long-secret-\x00-with-a-nul", "Null characters are not allowed."),
    ],
)
def test_bad_input_gets_a_specific_error_and_saves_nothing(
    settings: Any, field: str, value: str, error: str
) -> None:
    settings.CAREFLOW_WEBHOOK_ALLOW_PRIVATE = False
    organization = OrganizationFactory()
    extra = {"webhook_secret": SECRET} if field == "webhook_url" else {}

    errors = _errors(
        _client(organization).post(ADD_URL, _form(organization, **{field: value}, **extra))
    )

    assert any(message.startswith(error) for message in errors[field]), errors
    assert not AlertSettings.objects.exists()


def test_a_webhook_needs_a_signing_secret_of_some_length(settings: Any) -> None:
    settings.CAREFLOW_WEBHOOK_ALLOW_PRIVATE = True  # as in development: loopback http allowed
    organization = OrganizationFactory()
    client = _client(organization)
    url = "http://127.0.0.1:9/hook"

    missing = _errors(client.post(ADD_URL, _form(organization, webhook_url=url)))
    short = _errors(client.post(ADD_URL, _form(organization, webhook_url=url, webhook_secret="x")))

    assert missing["webhook_secret"] == [
        "Set a signing secret: every alert webhook is signed with it."
    ]
    assert short["webhook_secret"] == ["Use at least 16 characters."]
    assert not AlertSettings.objects.exists()


def test_a_blank_secret_keeps_the_stored_one(settings: Any) -> None:
    settings.CAREFLOW_WEBHOOK_ALLOW_PRIVATE = True
    organization = OrganizationFactory()
    saved = AlertSettings.objects.create(
        organization=organization, webhook_url="http://127.0.0.1:9/hook", webhook_secret=SECRET
    )
    response = _client(organization).post(
        reverse("admin:integrations_alertsettings_change", args=[saved.pk]),
        _form(organization, webhook_url="http://127.0.0.1:9/hook", minimum_messages="25"),
    )

    assert response.status_code == 302, _errors(response)
    saved.refresh_from_db()
    assert saved.webhook_secret == SECRET and saved.minimum_messages == 25


def test_another_clinics_admin_can_neither_open_nor_create_this_clinics_settings() -> None:
    sunrise, other = OrganizationFactory(), OrganizationFactory()
    saved = AlertSettings.objects.create(organization=sunrise, staff_emails=["a@sunrise.example"])
    client = _client(other)

    page = client.get(reverse("admin:integrations_alertsettings_change", args=[saved.pk]))
    listing = client.get(reverse("admin:integrations_alertsettings_changelist"))
    errors = _errors(client.post(ADD_URL, _form(sunrise)))

    assert page.status_code == 302  # "not found in your clinic": back to the admin index
    assert "a@sunrise.example" not in listing.content.decode()
    assert "organization" in errors
    assert AlertSettings.objects.count() == 1


def test_who_may_open_the_settings_and_the_log() -> None:
    organization = OrganizationFactory()
    settings_url = reverse("admin:integrations_alertsettings_changelist")
    log_url = reverse("admin:integrations_alert_changelist")

    staff = _client(organization, CLINIC_STAFF)
    support = _client(OrganizationFactory(), SUPPORT_STAFF)

    assert staff.get(settings_url).status_code == 403
    assert staff.get(log_url).status_code == 200
    assert _client(organization).get(settings_url).status_code == 200
    assert support.get(settings_url).status_code == 200
    assert support.get(ADD_URL).status_code == 200
    assert Client().get(log_url).status_code == 302  # to the login page


def _alerts(organization: Organization, count: int, start: int = 0) -> None:
    for n in range(start, start + count):
        Alert.objects.create(
            organization=organization,
            condition=Alert.Condition.RUN_FAILED,
            subject=f"workflow:{n}",
            period_start=period_start(timezone.now(), 60),
            summary=f"Workflow “W{n}” (id {n}): 1 failed run(s)",
            link=f"http://127.0.0.1:8000/admin/workflows/run/?status=failed&workflow={n}",
        )


def _queries(client: Client, url: str) -> tuple[int, str]:
    client.get(url)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries), response.content.decode()


@pytest.mark.parametrize("role", [CLINIC_ADMIN, SUPPORT_STAFF])
def test_the_alert_log_is_clinic_scoped_and_costs_the_same_for_any_number(role: str) -> None:
    mine, theirs = OrganizationFactory(), OrganizationFactory()
    _alerts(theirs, 1, start=900)
    client = _client(mine, role)
    url = reverse("admin:integrations_alert_changelist")
    _alerts(mine, 2)
    few, page = _queries(client, url)
    _alerts(mine, 10, start=2)

    many, page = _queries(client, url)

    assert many == few
    assert "W11" in page
    assert ("W900" in page) is (role == SUPPORT_STAFF)


def test_the_lists_alerts_link_to_show_only_that_workflows_or_senders_messages() -> None:
    organization = OrganizationFactory()
    integration = IntegrationFactory(organization=organization)
    # A second number of the clinic (on an older integration, since switched off).
    other_number = IntegrationFactory(
        organization=organization, senders=["+15005550007"], enabled=False
    )
    alerting, quiet = (
        WorkflowFactory(organization=organization),
        WorkflowFactory(organization=organization),
    )
    for n, (workflow, sender, status) in enumerate(
        [
            (alerting, integration, "failed"),
            (alerting, integration, "delivered"),
            (quiet, other_number, "failed"),
            (quiet, other_number, "pending"),
        ]
    ):
        event = Event.objects.create(
            organization=organization, type="order.shipped", dedupe_key=f"links-{n}"
        )
        run = Run.objects.create(workflow=workflow, event=event, status="succeeded")
        OutboundMessage.objects.create(
            organization=organization,
            integration=sender,
            step_run=StepRun.objects.create(run=run, index=0, status="succeeded"),
            workflow=workflow,  # as a send step records it (the lists filter on it)
            step_index=0,
            idempotency_key=f"links-{n}",
            purpose="transactional",
            to="+14155550100",
            from_number=sender.senders[0],
            body=f"message {n}",
            status=status,
        )
    client = _client(organization, CLINIC_STAFF)
    url = reverse("admin:integrations_outboundmessage_changelist")

    by_workflow = client.get(url, {"status": "failed", "workflow": alerting.pk})
    by_sender = client.get(url, {"sender": "+15005550007", "status": "pending"})
    bad = client.get(url, {"workflow": "x"})

    assert list(by_workflow.context["cl"].result_list) == list(
        OutboundMessage.objects.filter(body="message 0")
    )
    assert list(by_sender.context["cl"].result_list) == list(
        OutboundMessage.objects.filter(body="message 3")
    )
    assert bad.status_code == 302  # an invalid filter value: Django's "?e=1" redirect
