"""The big changelists (messages, events, runs, step runs…) stay index-bound at millions of
rows: counted exactly only up to a bound, estimated beyond; a phone number is looked up,
not searched for; events are listed by key. Real PostgreSQL, small bound."""

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.models import OutboundMessage
from patients.clinic_view import EstimatedCountPaginator
from tests.factories import (
    IntegrationFactory,
    OutboundMessageFactory,
    UserFactory,
    clinic_client,
)
from workflows.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(EstimatedCountPaginator, "EXACT_UP_TO", 5)
    return 5


def _messages(count: int, **fields: Any) -> None:
    integration = fields.pop("integration", None) or IntegrationFactory()
    OutboundMessageFactory.create_batch(count, integration=integration, **fields)


def _analyze() -> None:
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE integrations_outboundmessage")


def test_up_to_the_bound_the_count_is_exact(bound: int) -> None:
    _messages(bound)
    assert EstimatedCountPaginator(OutboundMessage.objects.all(), 100).count == bound
    assert EstimatedCountPaginator(OutboundMessage.objects.filter(to="+1"), 100).count == 0


def test_past_the_bound_the_count_is_the_planners_estimate_never_below_the_bound(
    bound: int,
) -> None:
    _messages(40)
    _messages(3, to="+14155550999")
    _analyze()
    with CaptureQueriesContext(connection) as ctx:
        count = EstimatedCountPaginator(OutboundMessage.objects.all(), 100).count
    # ANALYZE saw all 43 rows: the estimate is the table's row count, not a full COUNT(*).
    assert count == 43
    assert not any("COUNT(*)" in q["sql"] and "LIMIT" not in q["sql"] for q in ctx.captured_queries)
    assert any(q["sql"].startswith("EXPLAIN") for q in ctx.captured_queries)
    # A filter past the bound whose estimate is lower still says "more than the bound".
    filtered = OutboundMessage.objects.exclude(to="+14155550999").filter(body="Hi", segments=0)
    assert EstimatedCountPaginator(filtered, 100).count >= bound + 1
    # Within the bound, a filter is exact.
    few = OutboundMessage.objects.filter(to="+14155550999")
    assert EstimatedCountPaginator(few, 100).count == 3


def test_the_message_log_past_the_bound_lists_pages_from_the_estimate(bound: int) -> None:
    _messages(30)
    _analyze()
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    url = reverse("admin:integrations_outboundmessage_changelist")

    response = client.get(url)

    assert response.status_code == 200
    assert response.context["cl"].result_count == 30
    assert len(response.context["cl"].result_list) == 30
    # A page past the real end (an over-estimate) is an empty page, not an error.
    response = client.get(url + "?p=5")
    assert response.status_code in (200, 302)


def test_a_phone_number_search_is_an_exact_lookup_in_the_clinics_messages() -> None:
    integration = IntegrationFactory()
    org = integration.organization
    _messages(2, integration=integration, to="+14155550101")
    _messages(1, integration=integration, to="+14155550102")
    _messages(1, to="+14155550101")  # another clinic's
    client = clinic_client(org, "view_outboundmessage")
    url = reverse("admin:integrations_outboundmessage_changelist")

    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, {"q": "(415) 555-0101"})

    assert response.status_code == 200
    assert {m.to for m in response.context["cl"].result_list} == {"+14155550101"}
    assert len(response.context["cl"].result_list) == 2
    listing = [q["sql"] for q in ctx.captured_queries if "integrations_outboundmessage" in q["sql"]]
    assert listing and not any("LIKE" in sql for sql in listing)
    # A name is still searched for.
    response = client.get(url, {"q": "Nobody"})
    assert response.status_code == 200 and len(response.context["cl"].result_list) == 0


def test_events_are_listed_newest_recorded_first_by_key() -> None:
    integration = IntegrationFactory()
    org = integration.organization
    first, second = (
        Event.objects.create(organization=org, type="order.shipped", dedupe_key=f"k{n}")
        for n in range(2)
    )
    # Occurred out of order (an imported event): the list is by recording, not occurrence.
    Event.objects.filter(pk=second.pk).update(occurred_at=first.occurred_at.replace(year=2020))
    client = Client()
    client.force_login(UserFactory(is_superuser=True))

    response = client.get(reverse("admin:workflows_event_changelist"))

    assert [e.pk for e in response.context["cl"].result_list] == [second.pk, first.pk]


def test_the_event_type_filter_offers_the_clinics_types_without_reading_the_outbox() -> None:
    integration = IntegrationFactory()
    org = integration.organization
    for n, type in enumerate(["order.shipped", "order.shipped", "order.created"]):
        Event.objects.create(organization=org, type=type, dedupe_key=f"t{n}")
    client = clinic_client(org, "view_event")
    url = reverse("admin:workflows_event_changelist")

    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url, {"type": "order.shipped"})

    assert response.status_code == 200
    assert [e.type for e in response.context["cl"].result_list] == ["order.shipped"] * 2
    assert not any("DISTINCT" in q["sql"] for q in ctx.captured_queries)
    offered = [value for value, _ in response.context["cl"].filter_specs[0].lookup_choices]
    assert {"order.shipped", "order.created"} <= set(offered)  # from the catalogue
