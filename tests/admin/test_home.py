"""The clinic home (the admin index): today's messages by outcome in the clinic's time zone,
inbound messages waiting for review, runs failed in the last 7 days; each count a link to
the list showing exactly the rows it counted, and never another clinic's."""

from datetime import datetime, timedelta
from itertools import count
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.home import home_summary
from integrations.models import InboundMessage, OutboundMessage
from patients.clinic_view import clinic_days
from patients.models import Organization
from tests.factories import (
    OrganizationFactory,
    PatientFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
    clinic_integration,
)
from workflows.models import Event, Run

pytestmark = pytest.mark.django_db

# Far from UTC on both sides, so "today" of the clinic is not UTC's today.
EAST, WEST = "Pacific/Kiritimati", "Pacific/Pago_Pago"  # UTC+14, UTC-11
VIEW = ["view_outboundmessage", "view_inboundmessage", "view_run"]
_keys = count()

# Per clinic: statuses of messages created today (clinic time) …
TODAY = ["sent", "sent", "delivered", "delivered", "delivered", "undelivered", "failed"]
TODAY += ["skipped", "skipped", "pending", "unknown"]
EXPECTED = {"sent": 6, "delivered": 3, "failed": 2, "skipped": 2}


def _message(org: Organization, status: str, created_at: datetime) -> OutboundMessage:
    integration = clinic_integration(org)
    message = OutboundMessage.objects.create(
        organization=org,
        integration=integration,
        patient=PatientFactory(organization=org),
        idempotency_key=f"home:{next(_keys)}",
        purpose="transactional",
        to="+14155550100",
        body="hi",
        status=status,
    )
    # created_at is not editable: set it as the history would have it.
    OutboundMessage.objects.filter(pk=message.pk).update(created_at=created_at)
    return message


def _inbound(org: Organization, *, needs_review: bool) -> InboundMessage:
    integration = clinic_integration(org)
    return InboundMessage.objects.create(
        organization=org,
        integration=integration,
        provider_sid=f"SM{next(_keys):032x}",
        from_number="+14155550100",
        to="+15005550006",
        body="please stop texting me",
        needs_review=needs_review,
    )


def _run(org: Organization, status: str, finished_at: datetime | None) -> Run:
    workflow = org.workflows.first() or WorkflowFactory(organization=org)
    event = Event.objects.create(
        organization=org, type="order.shipped", dedupe_key=f"home:{next(_keys)}"
    )
    return Run.objects.create(
        workflow=workflow, event=event, status=status, finished_at=finished_at
    )


def _clinic(zone: str) -> dict[str, Any]:
    """A clinic with a day of messaging around its own midnight; returns the ids that each
    count must select."""
    org = OrganizationFactory(timezone=zone)
    start, _ = clinic_days(zone=zone, days=1)
    ids: dict[str, set[int]] = {key: set() for key in [*EXPECTED, "review", "failed_runs"]}
    for status in TODAY:
        message = _message(org, status, start + timedelta(minutes=1))
        for key, statuses in {
            "sent": ("sent", "delivered", "undelivered"),
            "delivered": ("delivered",),
            "failed": ("failed", "undelivered"),
            "skipped": ("skipped",),
        }.items():
            if status in statuses:
                ids[key].add(message.pk)
    # A minute before the clinic's midnight: yesterday, whatever day it is in UTC.
    for status in ("sent", "delivered", "failed", "skipped"):
        _message(org, status, start - timedelta(minutes=1))
    for _ in range(2):
        ids["review"].add(_inbound(org, needs_review=True).pk)
    _inbound(org, needs_review=False)
    week_start, _ = clinic_days(zone=zone, days=7)
    ids["failed_runs"].add(_run(org, "failed", week_start + timedelta(minutes=1)).pk)
    ids["failed_runs"].add(_run(org, "failed", start + timedelta(minutes=2)).pk)
    _run(org, "failed", week_start - timedelta(minutes=1))  # the 8th day back
    _run(org, "succeeded", start + timedelta(minutes=1))
    _run(org, "waiting", None)
    return {"org": org, "ids": ids}


def _tiles(response: Any) -> dict[str, Any]:
    home = response.context["home"]
    return {tile.key: tile for tile in [*home.messages, *home.attention]}


def _listed(client: Client, url: str) -> set[int]:
    response = client.get(url)
    assert response.status_code == 200, url
    changelist = response.context["cl"]
    assert changelist.result_count == len(changelist.result_list), url  # one page
    return {row.pk for row in changelist.result_list}


def test_a_clinic_sees_its_own_day_and_each_count_links_to_exactly_those_rows() -> None:
    east, west = _clinic(EAST), _clinic(WEST)
    client = clinic_client(east["org"], *VIEW)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    tiles = _tiles(response)
    assert {key: tiles[key].count for key in EXPECTED} == EXPECTED
    assert tiles["review"].count == 2 and tiles["failed_runs"].count == 2
    for key, tile in tiles.items():
        listed = _listed(client, tile.url)
        assert listed == east["ids"][key], key
        assert not listed & west["ids"][key], key  # never another clinic's rows
    assert response.context["home"].zone == EAST


def test_the_page_shows_the_counts_with_the_apps_and_the_data_reference() -> None:
    east = _clinic(EAST)
    html = clinic_client(east["org"], *VIEW).get(reverse("admin:index")).content.decode()
    assert f"({EAST})" in html
    assert '<span class="cf-home-count">6</span>' in html  # sent
    assert "Inbound messages waiting for review" in html
    assert "Runs failed in the last 7 days" in html
    assert f'href="{reverse("careflow-reference")}"' in html
    assert 'id="content-main"' in html and "app-integrations" in html  # the app list stays
    assert " onclick=" not in html.lower()


def test_support_staff_see_every_clinic_each_in_its_own_time_zone() -> None:
    east, west = _clinic(EAST), _clinic(WEST)
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    response = client.get(reverse("admin:index"))
    tiles = _tiles(response)
    assert response.context["home"].zone == ""
    assert {key: tiles[key].count for key in EXPECTED} == {k: 2 * v for k, v in EXPECTED.items()}
    for key, tile in tiles.items():
        assert tile.count == len(east["ids"][key] | west["ids"][key]), key
        assert _listed(client, tile.url) == east["ids"][key] | west["ids"][key], key


def test_a_count_the_user_may_not_see_is_left_out() -> None:
    east = _clinic(EAST)
    client = clinic_client(east["org"], "view_outboundmessage")
    tiles = _tiles(client.get(reverse("admin:index")))
    assert set(tiles) == set(EXPECTED)
    nothing = clinic_client(east["org"])
    response = nothing.get(reverse("admin:index"))
    assert response.status_code == 200 and response.context["home"] is None


def test_a_user_of_no_clinic_counts_nothing() -> None:
    _clinic(EAST)
    user = UserFactory()
    user.user_permissions.set(Permission.objects.filter(codename__in=VIEW))
    client = Client()
    client.force_login(user)
    tiles = _tiles(client.get(reverse("admin:index")))
    assert tiles and all(tile.count == 0 for tile in tiles.values())


def test_anonymous_users_are_sent_to_the_login(client: Client) -> None:
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def _queries(client: Client) -> int:
    client.get(reverse("admin:index"))  # warm per-process caches (content types)
    with CaptureQueriesContext(connection) as context:
        assert client.get(reverse("admin:index")).status_code == 200
    return len(context.captured_queries)


def test_query_count_is_constant() -> None:
    east = _clinic(EAST)
    client = clinic_client(east["org"], *VIEW)
    few = _queries(client)
    for _ in range(3):
        _clinic(WEST)
        start, _ = clinic_days(zone=EAST, days=1)
        for status in TODAY:
            _message(east["org"], status, start + timedelta(minutes=5))
        _run(east["org"], "failed", start + timedelta(minutes=5))
        _inbound(east["org"], needs_review=True)
    assert _queries(client) == few
    # session, user, membership, zone, three counts, and the admin's own permission checks
    assert few <= 10


def test_the_summary_is_computed_in_three_queries() -> None:
    east = _clinic(EAST)
    with CaptureQueriesContext(connection) as context:
        home = home_summary(
            messages=OutboundMessage.objects.filter(organization=east["org"]),
            inbound=InboundMessage.objects.filter(organization=east["org"]),
            runs=Run.objects.filter(workflow__organization=east["org"]),
            zones=[EAST],
        )
    assert len(context.captured_queries) == 3
    assert [tile.count for tile in home.messages] == list(EXPECTED.values())


@pytest.mark.parametrize(
    "query",
    ["created=yesterday", "outcome=lost", "created=", "outcome=today&created=sent"],
)
def test_unknown_filter_values_do_not_break_the_message_list(query: str) -> None:
    east = _clinic(EAST)
    response = clinic_client(east["org"], *VIEW).get(
        reverse("admin:integrations_outboundmessage_changelist") + "?" + query
    )
    assert response.status_code == 200


@pytest.mark.parametrize("query", ["finished=never", "workflow=abc", "finished=7d&workflow=1"])
def test_unknown_filter_values_do_not_break_the_run_list(query: str) -> None:
    east = _clinic(EAST)
    response = clinic_client(east["org"], *VIEW).get(
        reverse("admin:workflows_run_changelist") + "?" + query
    )
    assert response.status_code in (200, 302)  # 302: the admin's own "?e=1" for a bad lookup
