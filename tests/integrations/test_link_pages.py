"""GET /l/<code>: a redirect to the original link that records the click (and the event
message.link_clicked), a plain 404 for anything that is not a code of ours, a plain 410 for an
expired link; HEAD and link-preview fetchers are sent on without a click."""

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from integrations.models import LinkClick, ShortLink
from integrations.short_links import CLICK_EVENT, agent_hash
from tests.factories import (
    IntegrationFactory,
    PatientFactory,
    ShortLinkFactory,
    StaffMembershipFactory,
    UserFactory,
)
from workflows.models import Event

TARGET = "https://sunrise.example/book?slot=42"
PHONE_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)


def _link(code: str = "AbCdEf1234", *, patient: bool = True, **fields: Any) -> ShortLink:
    integration = IntegrationFactory()
    organization = integration.organization
    link: ShortLink = ShortLinkFactory(
        code=code,
        url=TARGET,
        message__integration=integration,
        message__patient=PatientFactory(organization=organization) if patient else None,
        message__body=f"Book: https://go.sunrise.example/l/{code}",
        **fields,
    )
    return link


@pytest.mark.django_db
def test_a_click_redirects_and_is_recorded_with_its_event(client: Client) -> None:
    link = _link()
    response = client.get(f"/l/{link.code}", HTTP_USER_AGENT=PHONE_AGENT)
    assert response.status_code == 302
    assert response["Location"] == TARGET
    assert response["Cache-Control"] == "no-store"
    click = LinkClick.objects.get()
    assert click.link == link
    # Neither the agent nor any address is kept: a short salted hash of the agent only.
    assert click.agent_hash == agent_hash(PHONE_AGENT) and len(click.agent_hash) == 16
    assert PHONE_AGENT not in str(LinkClick.objects.values().get())
    event = Event.objects.get(type=CLICK_EVENT)
    patient = link.message.patient
    assert patient is not None
    assert (event.organization_id, event.subject_type, event.subject_id) == (
        link.organization_id,
        "customer",
        str(patient.pk),
    )
    assert event.payload["link"]["url"] == TARGET
    assert event.payload["message"] == {"id": str(link.message.uuid)}
    assert event.payload["customer"]["id"] == str(patient.uuid)


@pytest.mark.django_db
def test_each_click_counts_once(client: Client) -> None:
    link = _link()
    client.get(f"/l/{link.code}", HTTP_USER_AGENT=PHONE_AGENT)
    client.get(f"/l/{link.code}", HTTP_USER_AGENT=PHONE_AGENT)
    assert LinkClick.objects.count() == 2
    assert Event.objects.filter(type=CLICK_EVENT).count() == 2


@pytest.mark.django_db
def test_a_message_without_a_patient_records_the_click_only(client: Client) -> None:
    link = _link(patient=False)
    assert client.get(f"/l/{link.code}").status_code == 302
    assert LinkClick.objects.count() == 1
    assert not Event.objects.filter(type=CLICK_EVENT).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "agent",
    [
        "facebookexternalhit/1.1 Facebot Twitterbot/1.0",  # iMessage's preview
        "WhatsApp/2.23.20.0 A",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "TelegramBot (like TwitterBot)",
        "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    ],
)
def test_link_previews_are_sent_on_without_a_click(client: Client, agent: str) -> None:
    link = _link()
    response = client.get(f"/l/{link.code}", HTTP_USER_AGENT=agent)
    assert (response.status_code, response["Location"]) == (302, TARGET)
    assert not LinkClick.objects.exists()
    assert not Event.objects.filter(type=CLICK_EVENT).exists()


@pytest.mark.django_db
def test_head_is_sent_on_without_a_click(client: Client) -> None:
    link = _link()
    response = client.head(f"/l/{link.code}", HTTP_USER_AGENT=PHONE_AGENT)
    assert (response.status_code, response["Location"]) == (302, TARGET)
    assert not LinkClick.objects.exists()


@pytest.mark.django_db
def test_other_methods_are_refused(client: Client) -> None:
    link = _link()
    assert client.post(f"/l/{link.code}").status_code == 405
    assert not LinkClick.objects.exists()


@pytest.mark.django_db
def test_an_expired_link_says_so(client: Client) -> None:
    link = _link(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get(f"/l/{link.code}", HTTP_USER_AGENT=PHONE_AGENT)
    assert response.status_code == 410
    assert "This link has expired" in response.content.decode()
    assert TARGET not in response.content.decode()
    assert not LinkClick.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/l/ZZZZZZZZZZ",  # well formed, not ours
        "/l/abc",
        "/l/AbCdEf12345",  # one character too many
        "/l/AbCdEf1234/",
        "/l/AbCdEf1234/extra",
        "/l/..%2F..%2Fetc%2Fpasswd",
        "/l/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "/l/'%20OR%201=1--",
        "/l/%00%00%00%00%00%00%00%00%00%00",
        "/l/%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9%C3%A9",
        "/l/" + "A" * 5000,
    ],
)
def test_anything_else_is_a_plain_not_found(client: Client, path: str) -> None:
    _link()
    response = client.get(path)
    assert response.status_code == 404
    body = response.content.decode()
    assert "Link not found" in body and "<script>" not in body
    assert TARGET not in body
    assert not LinkClick.objects.exists()


@pytest.mark.django_db
def test_the_code_is_case_sensitive(client: Client) -> None:
    _link("AbCdEf1234")
    assert client.get("/l/abcdef1234").status_code == 404


@pytest.mark.django_db
def test_a_second_clinics_staff_following_it_is_just_a_redirect(client: Client) -> None:
    """The link page is public and the same for everyone: a clinic's staff signed in get the
    redirect, nothing of the link's clinic (no admin data), and the click is counted."""
    link = _link()
    other = IntegrationFactory().organization
    user = UserFactory(is_staff=True)
    StaffMembershipFactory(user=user, organization=other)
    client.force_login(user)
    response = client.get(f"/l/{link.code}", HTTP_USER_AGENT=PHONE_AGENT)
    assert (response.status_code, response["Location"]) == (302, TARGET)
    assert LinkClick.objects.count() == 1
