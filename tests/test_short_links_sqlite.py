"""`make run` keeps its data in SQLite: rewriting a text's links at the claim (again, without
a second link), following one and the workflow analytics' click counts must work there as on
PostgreSQL. Run in a `manage.py shell` against a fresh SQLite database, as
tests/test_first_contact_sqlite.py does."""

from pathlib import Path

from tests.deployments import sqlite_shell_result

SCRIPT = """
import json
from django.test import Client
from django.utils import timezone
from integrations.analytics import Period, workflow_analytics
from integrations.models import Integration, LinkClick, MessagingPolicy, OutboundMessage, ShortLink
from integrations.short_links import short_links_fields
from patients.models import Organization, Patient
from workflows.models import Event, Workflow
from datetime import timedelta
from zoneinfo import ZoneInfo

org = Organization.objects.create(name="Clinic", slug="clinic", timezone="UTC")
MessagingPolicy.objects.update_or_create(
    organization=org,
    defaults={"short_links_enabled": True, "short_link_domain": "https://go.clinic.example"},
)
integration = Integration.objects.create(organization=org, adapter="twilio", senders=[])
patient = Patient.objects.create(organization=org, first_name="A", last_name="B", phone="+14155550123")
workflow = Workflow.objects.create(organization=org, name="W", trigger="order.shipped")
message = OutboundMessage.objects.create(
    organization=org, integration=integration, idempotency_key="a", to="+14155550123",
    body="See https://clinic.example/a?b=1.", purpose="transactional", patient=patient,
    workflow=workflow, step_index=0,
)
now = timezone.now()
first = short_links_fields(message, now=now)
again = short_links_fields(message, now=now)
code = ShortLink.objects.get().code
response = Client(HTTP_HOST="localhost").get("/l/" + code, HTTP_USER_AGENT="Mozilla/5.0", secure=True)
figures = workflow_analytics(
    workflow=workflow,
    period=Period(now - timedelta(days=1), now + timedelta(days=1), ZoneInfo("UTC")),
)
print("RESULT " + json.dumps({
    "same": first["body"] == again["body"],
    "body": first["body"].replace(code, "CODE"),
    "links": ShortLink.objects.count(),
    "status": response.status_code,
    "location": response["Location"],
    "clicks": LinkClick.objects.count(),
    "events": Event.objects.filter(type="message.link_clicked").count(),
    "analytics": [figures.link_clicks, figures.link_clickers, figures.steps[0].clicks],
}))
"""


def test_short_links_work_on_sqlite(tmp_path: Path) -> None:
    assert sqlite_shell_result(tmp_path, SCRIPT) == {
        "same": True,
        "body": "See https://go.clinic.example/l/CODE.",
        "links": 1,
        "status": 302,
        "location": "https://clinic.example/a?b=1",
        "clicks": 1,
        "events": 1,
        "analytics": [1, 1, 1],
    }
