"""The broadcasts' admin: drafts with save-time checks and the preview, the confirmation with
the recipient count, live progress, cancelling, and who may do what in which clinic."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import localize

from integrations.broadcasts import broadcast_advance
from integrations.models import Broadcast, Integration, OutboundMessage
from patients.models import ConsentRecord, Organization
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.factories import (
    SANDBOX_FROM,
    ConsentFactory,
    IntegrationFactory,
    PatientFactory,
    StaffMembershipFactory,
    UserFactory,
)
from workflows.models import Segment

pytestmark = pytest.mark.django_db
State = Broadcast.Status
ADD_URL = "/admin/integrations/broadcast/add/"


def _client(organization: Organization, role: str = CLINIC_ADMIN) -> Client:
    user = StaffMembershipFactory(organization=organization).user
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client


def _support() -> Client:
    user = UserFactory()
    user.groups.add(Group.objects.get(name=SUPPORT_STAFF))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def clinic() -> Organization:
    integration: Integration = IntegrationFactory()
    return integration.organization


def _segment(clinic: Organization, name: str = "Everyone") -> Segment:
    return Segment.objects.get_or_create(organization=clinic, name=name)[0]


def _form(clinic: Organization, **overrides: Any) -> dict[str, Any]:
    data = {
        "organization": str(clinic.pk),
        "name": "Flu shots",
        "segment": str(_segment(clinic).pk),
        "function": "twilio.sendSMS",
        "purpose": "marketing",
        "scheduled_at_0": "",
        "scheduled_at_1": "",
        "sender": SANDBOX_FROM,
        "subject": "",
        "text": "Hi {{customer.firstName}}, flu shots are in: book at example.com",
        "media_url": "",
        "variants": "",
    }
    data.update(overrides)
    return data


def _errors(response: Any) -> dict[str, list[str]]:
    assert response.status_code == 200, "the form was expected back with errors"
    form = response.context["adminform"].form
    return {name: [str(e) for e in errors] for name, errors in form.errors.items()}


def _draft(clinic: Organization, **parameters: Any) -> Broadcast:
    return Broadcast.objects.create(
        organization=clinic,
        name=f"Draft {Broadcast.objects.count()}",
        segment=_segment(clinic),
        function="twilio.sendSMS",
        integration=clinic.integrations.get(),
        purpose="marketing",
        parameters={"message": "Hi {{customer.firstName}}", "from": SANDBOX_FROM, **parameters},
    )


def test_a_clinic_admin_writes_a_draft_and_sees_its_preview_per_language(
    clinic: Organization,
) -> None:
    for _ in range(3):
        PatientFactory(organization=clinic)
    client = _client(clinic)
    variants = json.dumps({"es": {"message": "Hola {{customer.firstName}}, ¿vacunación?"}})
    response = client.post(ADD_URL, _form(clinic, variants=variants, _continue="1"))
    assert response.status_code == 302, _errors(response)
    broadcast = Broadcast.objects.get()
    assert broadcast.status == State.DRAFT and broadcast.created_by is not None
    assert broadcast.parameters["from"] == SANDBOX_FROM
    assert broadcast.parameters["variants"]["es"]["message"].startswith("Hola")

    page = client.get(response["Location"]).content.decode()
    assert "3 recipients now in “Everyone”" in page
    assert "UCS-2" in page  # the Spanish variant's “¿” is not GSM-7
    assert "Send now…" in page


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"sender": "+15550001111"}, "sender", "not an approved sending number"),
        ({"text": "Hi {{customer.frstName}}"}, "text", "did you mean"),
        ({"text": "Hi {{customer.firstName"}, "text", "{{"),
        ({"media_url": "http://example.com/a.png"}, "media_url", "https"),
        ({"variants": '{"xx": {"message": "hi"}}'}, "variants", "not a language"),
        ({"variants": '{"es": {"from": "+1"}}'}, "variants", "cannot set"),
        ({"function": "email.sendEmail"}, "function", "no enabled integration"),
    ],
)
def test_bad_input_gets_a_specific_error_and_saves_nothing(
    clinic: Organization, overrides: dict[str, str], field: str, words: str
) -> None:
    errors = _errors(_client(clinic).post(ADD_URL, _form(clinic, **overrides)))
    assert words in " ".join(errors.get(field, [])), errors
    assert not Broadcast.objects.exists()


def test_another_clinics_segment_cannot_be_chosen(clinic: Organization) -> None:
    other = IntegrationFactory().organization
    errors = _errors(_client(clinic).post(ADD_URL, _form(clinic, segment=_segment(other).pk)))
    assert "segment" in errors
    assert not Broadcast.objects.exists()


def test_send_confirms_the_recipient_count_then_starts(clinic: Organization) -> None:
    for _ in range(4):
        PatientFactory(organization=clinic)
    PatientFactory(organization=IntegrationFactory().organization)  # not a member
    broadcast = _draft(clinic)
    client = _client(clinic)
    url = reverse("admin:integrations_broadcast_send", args=[broadcast.pk])

    page = client.get(url).content.decode()
    assert "4 patients" in page and "Yes, send it now" in page
    broadcast.refresh_from_db()
    assert broadcast.status == State.DRAFT  # looking is not sending

    response = client.post(url)
    assert response.status_code == 302
    broadcast.refresh_from_db()
    assert (broadcast.status, broadcast.recipients) == (State.SENDING, 4)
    # A second POST (a double click) starts nothing again.
    assert client.post(url).status_code == 302
    page = client.get(response["Location"]).content.decode()
    assert "Cancel the broadcast" in page and 'name="text"' not in page  # read-only now


def test_a_draft_with_a_problem_is_not_sent(clinic: Organization) -> None:
    broadcast = _draft(clinic, **{"from": "+15550001111"})
    url = reverse("admin:integrations_broadcast_send", args=[broadcast.pk])
    response = _client(clinic).post(url)
    assert response.status_code == 200
    assert "cannot be sent yet" in response.content.decode()
    broadcast.refresh_from_db()
    assert broadcast.status == State.DRAFT


def test_progress_counts_by_status_and_reason_and_cancel_stops_it(
    clinic: Organization, settings: Any
) -> None:
    settings.CAREFLOW_BROADCAST_BATCH = 2
    consented = PatientFactory(organization=clinic)
    ConsentFactory(patient=consented, purpose=ConsentRecord.Purpose.MARKETING)
    for _ in range(4):
        PatientFactory(organization=clinic)
    broadcast = _draft(clinic)
    client = _client(clinic)
    client.post(reverse("admin:integrations_broadcast_send", args=[broadcast.pk]))
    broadcast_advance(broadcast_id=broadcast.pk)
    progress_url = reverse("admin:integrations_broadcast_progress", args=[broadcast.pk])
    progress = client.get(progress_url).json()
    assert (progress["status"], progress["recipients"], progress["made"]) == ("sending", 5, 2)
    assert progress["queued"] == 2 and progress["done"] is False
    assert progress["startedAt"] and progress["endedAt"] is None

    cancel_url = reverse("admin:integrations_broadcast_cancel", args=[broadcast.pk])
    assert client.get(cancel_url).status_code == 405  # only a POST cancels
    assert client.post(cancel_url).status_code == 302
    progress = client.get(progress_url).json()
    assert progress["status"] == "cancelled" and progress["done"] is True
    broadcast.refresh_from_db()
    assert broadcast.cancelled_at is not None
    assert progress["endedAt"] == localize(timezone.localtime(broadcast.cancelled_at))
    assert progress["skippedByReason"] == {"broadcast cancelled": 2}
    assert OutboundMessage.objects.filter(broadcast=broadcast).count() == 2


def test_once_started_status_and_times_are_only_in_the_live_panel(clinic: Organization) -> None:
    """A static copy of the status or of when it ended would contradict the live panel as
    soon as the broadcast moved on ("Completed" above, "Finished at: -" below)."""
    broadcast = _draft(clinic)
    client = _client(clinic)
    change = reverse("admin:integrations_broadcast_change", args=[broadcast.pk])
    draft = client.get(change).content.decode()
    assert "Status:" in draft and 'id="broadcast-progress"' not in draft

    client.post(reverse("admin:integrations_broadcast_send", args=[broadcast.pk]))
    page = client.get(change).content.decode()
    assert 'id="broadcast-progress"' in page
    assert 'data-count="statusLabel"' in page and 'data-count="endedAt"' in page
    for static in ("Status:", "Recipients:", "Started at:", "Finished at:", "Cancelled at:"):
        assert static not in page, static


def test_clinic_staff_see_but_cannot_send_or_cancel(clinic: Organization) -> None:
    broadcast = _draft(clinic)
    staff = _client(clinic, CLINIC_STAFF)
    change = reverse("admin:integrations_broadcast_change", args=[broadcast.pk])
    page = staff.get(change)
    assert page.status_code == 200 and "Send now…" not in page.content.decode()
    assert staff.get(ADD_URL).status_code == 403
    for name in ("send", "cancel"):
        url = reverse(f"admin:integrations_broadcast_{name}", args=[broadcast.pk])
        assert staff.post(url).status_code == 403
    progress = reverse("admin:integrations_broadcast_progress", args=[broadcast.pk])
    assert staff.get(progress).status_code == 200
    broadcast.refresh_from_db()
    assert broadcast.status == State.DRAFT


def test_another_clinic_gets_404_everywhere_and_support_sees_every_clinic(
    clinic: Organization,
) -> None:
    broadcast = _draft(clinic)
    other = _client(IntegrationFactory().organization)
    change = reverse("admin:integrations_broadcast_change", args=[broadcast.pk])
    # The admin's own answer for an object the user cannot find: back to the index.
    assert other.get(change)["Location"] == reverse("admin:index")
    for name in ("send", "cancel", "progress"):
        url = reverse(f"admin:integrations_broadcast_{name}", args=[broadcast.pk])
        assert other.get(url).status_code == 404, name
        assert other.post(url).status_code == 404, name
    listing = other.get(reverse("admin:integrations_broadcast_changelist")).content.decode()
    assert broadcast.name not in listing
    broadcast.refresh_from_db()
    assert broadcast.status == State.DRAFT

    support = _support()
    listing = support.get(reverse("admin:integrations_broadcast_changelist")).content.decode()
    assert broadcast.name in listing
    progress = reverse("admin:integrations_broadcast_progress", args=[broadcast.pk])
    assert support.get(progress).status_code == 200
    # Support staff read every clinic's broadcasts; they send none.
    assert (
        support.post(reverse("admin:integrations_broadcast_send", args=[broadcast.pk])).status_code
        == 403
    )


@pytest.mark.parametrize("role", [CLINIC_ADMIN, SUPPORT_STAFF])
def test_the_list_costs_the_same_for_any_number(clinic: Organization, role: str) -> None:
    client = _client(clinic, role) if role != SUPPORT_STAFF else _support()
    url = reverse("admin:integrations_broadcast_changelist")
    _draft(clinic)
    client.get(url)
    with CaptureQueriesContext(connection) as few:
        assert client.get(url).status_code == 200
    for _ in range(8):
        _draft(clinic)
    with CaptureQueriesContext(connection) as many:
        assert client.get(url).status_code == 200
    assert len(many.captured_queries) == len(few.captured_queries)
