"""The data reference in the admin: /admin/careflow/reference/ and one page per trigger."""

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.factories import StaffMembershipFactory, UserFactory
from workflows import catalogue
from workflows.catalogue import CATALOGUE, EVENT_TYPES, EventType, Field, schema_variables

pytestmark = pytest.mark.django_db

INDEX = "/admin/careflow/reference/"


def _page(name: str) -> str:
    return f"/admin/careflow/reference/{name}/"


@pytest.fixture
def staff_client(client: Client) -> Client:
    # A clinic's staff user with no model permissions at all: the reference is for any staff.
    client.force_login(StaffMembershipFactory().user)
    return client


def test_urls_are_the_documented_ones() -> None:
    assert reverse("careflow-reference") == INDEX
    assert reverse("careflow-reference-event", args=["order.shipped"]) == _page("order.shipped")


def test_staff_see_every_trigger_grouped_by_category(staff_client: Client) -> None:
    response = staff_client.get(INDEX)
    assert response.status_code == 200
    assert "admin/base_site.html" in [t.name for t in response.templates]
    html = response.content.decode()
    for event in CATALOGUE:
        assert f'href="{_page(event.name)}"' in html, event.name
    for category in {event.category for event in CATALOGUE}:
        assert f"<caption>{category}</caption>" in html
    assert '<div class="breadcrumbs">' in html


@pytest.mark.parametrize("name", list(EVENT_TYPES))
def test_every_trigger_has_a_page_with_its_variables(staff_client: Client, name: str) -> None:
    response = staff_client.get(_page(name))
    assert response.status_code == 200
    html = response.content.decode()
    assert f"<h1>{name}</h1>" in html
    for path, _ in schema_variables(name):
        assert "{{" + path + "}}" in html, path
    assert f'href="{INDEX}"' in html  # breadcrumbs back to the index


def test_trigger_page_shows_type_description_example_and_flags(staff_client: Client) -> None:
    html = staff_client.get(_page("prescription.fulfilled")).content.decode()
    assert "Medication name. Clinical: keep it out of SMS bodies." in html
    assert "&quot;Atorvastatin 10 mg&quot;" in html
    assert "<strong>clinical</strong>" in html
    html = staff_client.get(_page("message.inbound")).content.decode()
    assert "<em>may be null</em>" in html
    html = staff_client.get(_page("webhook.event")).content.decode()
    assert "(free-form)" in html


def test_anonymous_users_are_sent_to_the_login(client: Client) -> None:
    for url in (INDEX, _page("order.shipped"), INDEX + "?format=json"):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


def test_non_staff_users_are_sent_to_the_login(client: Client) -> None:
    client.force_login(UserFactory(is_staff=False))
    assert client.get(INDEX).status_code == 302
    assert client.get(_page("order.shipped")).status_code == 302


@pytest.mark.parametrize("name", ["order.teleported", "order", "<script>", "ORDER.SHIPPED"])
def test_unknown_trigger_is_404(staff_client: Client, name: str) -> None:
    assert staff_client.get(_page(name)).status_code == 404


def test_index_as_json(staff_client: Client) -> None:
    response = staff_client.get(INDEX, {"format": "json"})
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    data = response.json()
    names = [event["name"] for category in data["categories"] for event in category["events"]]
    assert sorted(names) == sorted(EVENT_TYPES)
    order = next(c for c in data["categories"] if c["name"] == "Order")
    shipped = next(e for e in order["events"] if e["name"] == "order.shipped")
    assert shipped == {
        "name": "order.shipped",
        "category": "Order",
        "description": EVENT_TYPES["order.shipped"].description,
        "subject": "order",
        "url": _page("order.shipped"),
    }


def test_trigger_as_json_for_the_builder(staff_client: Client) -> None:
    data = staff_client.get(_page("message.inbound"), {"format": "json"}).json()
    assert data["name"] == "message.inbound" and data["subject"] == "customer"
    variables = {v["path"]: v for v in data["variables"]}
    assert [v["path"] for v in data["variables"]] == [
        path for path, _ in schema_variables("message.inbound")
    ]
    assert variables["message.body"] == {
        "path": "message.body",
        "type": "string",
        "description": "The text the patient sent.",
        "example": "Can I move my appointment to Friday?",
        "nullable": False,
        "sensitive": False,
        "freeForm": False,
    }
    # Below a null-able customer, every variable may be null too.
    assert variables["customer.phone"]["nullable"] is True
    assert variables["message.customer.firstName"]["nullable"] is True
    fields = {f["path"]: f for f in data["fields"]}
    assert fields["customer"]["type"] == "object" and fields["customer"]["nullable"] is True


def test_webhook_data_is_marked_free_form_in_json(staff_client: Client) -> None:
    data = staff_client.get(_page("webhook.event"), {"format": "json"}).json()
    fields = {f["path"]: f for f in data["fields"]}
    assert fields["webhook.data"]["freeForm"] is True
    assert "webhook.data" not in {v["path"] for v in data["variables"]}


def test_output_is_escaped(staff_client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    hostile = EventType(
        "test.hostile",
        "<b>Cat</b>",
        "<script>alert(1)</script>",
        {"x": Field("string", "<img src=x onerror=alert(1)>", "</code><script>")},
        "customer",
    )
    monkeypatch.setitem(catalogue.EVENT_TYPES, hostile.name, hostile)
    html = staff_client.get(_page("test.hostile")).content.decode()
    assert "<script>alert(1)" not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_pages_carry_no_inline_javascript(staff_client: Client) -> None:
    for url in (INDEX, _page("order.shipped")):
        html = staff_client.get(url).content.decode().lower()
        assert " onclick=" not in html and " onload=" not in html
        assert "javascript:" not in html


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as context:
        assert client.get(url).status_code == 200
    return len(context.captured_queries)


def test_query_count_is_constant(staff_client: Client) -> None:
    staff_client.get(INDEX)  # warm per-process caches (content types, permissions)
    counts = {name: _queries(staff_client, _page(name)) for name in EVENT_TYPES}
    index = _queries(staff_client, INDEX)
    assert len(set(counts.values())) == 1, counts
    assert index == next(iter(counts.values()))
    # Only what the admin's chrome needs (session, user, membership, permissions).
    assert index <= 6
    assert _queries(staff_client, INDEX + "?format=json") <= index


def test_query_count_does_not_grow_with_data(staff_client: Client, django_db_blocker: Any) -> None:
    from tests.factories import OrderFactory, SubscriptionFactory

    before = _queries(staff_client, _page("order.shipped"))
    for _ in range(5):
        OrderFactory()
        SubscriptionFactory()
    assert _queries(staff_client, _page("order.shipped")) == before


def test_trigger_descriptions_show_the_configured_lead_times(
    staff_client: Client, settings: Any
) -> None:
    html = staff_client.get(INDEX).content.decode()
    assert "starts soon (24 hours before; again if rescheduled)." in html
    assert "renews soon (7 days before its next cycle date; once per cycle)." in html
    page = staff_client.get(_page("appointment.reminder")).content.decode()
    assert "24 hours before" in page
    # Read when shown: a changed setting shows at once, in words people use.
    settings.CAREFLOW_APPOINTMENT_REMINDER_HOURS = 1.5
    settings.CAREFLOW_RENEWAL_LEAD_DAYS = 1
    data = staff_client.get(INDEX, {"format": "json"}).json()
    described = {e["name"]: e["description"] for c in data["categories"] for e in c["events"]}
    assert "(90 minutes before;" in described["appointment.reminder"]
    assert "(1 day before its next cycle date;" in described["subscription.upcoming_renewal"]


def test_no_page_names_an_environment_variable_or_a_placeholder(staff_client: Client) -> None:
    for url in [INDEX, INDEX + "?format=json", *(_page(name) for name in EVENT_TYPES)]:
        text = staff_client.get(url).content.decode()
        assert "CAREFLOW_" not in text, url
    for event in CATALOGUE:
        assert "{" not in event.description and "CAREFLOW_" not in event.description, event.name


def test_the_reference_says_dates_are_shown_in_the_recipients_zone(staff_client: Client) -> None:
    for url in (INDEX, _page("appointment.booked")):
        html = staff_client.get(url).content.decode()
        assert "recipient&#x27;s time zone" in html and "never moved to another day" in html
        assert "recipient's time zone" in staff_client.get(url, {"format": "json"}).json()["dates"]


# --- a clinic's custom event types ----------------------------------------------------------


def test_a_clinics_custom_types_are_in_its_reference_and_never_in_anothers(client: Client) -> None:
    from tests.factories import CustomEventTypeFactory

    custom = CustomEventTypeFactory()
    name = custom.type_name
    client.force_login(StaffMembershipFactory(organization=custom.organization).user)
    index = client.get(INDEX, {"format": "json"}).json()
    found = {e["name"]: e for c in index["categories"] for e in c["events"]}
    assert found[name]["category"] == "Custom" and found[name]["url"] == _page(name)
    page = client.get(_page(name), {"format": "json"}).json()
    variables = {v["path"]: v for v in page["variables"]}
    assert variables["data.kitId"]["example"] == "KIT-2291"
    assert variables["data.readyAt"]["type"] == "datetime"
    assert variables["data.readyAt"]["nullable"] is True  # not required
    assert "customer.firstName" in variables
    assert name in client.get(INDEX).content.decode()
    # another clinic's staff: neither in the index nor as a page
    client.force_login(StaffMembershipFactory().user)
    index = client.get(INDEX, {"format": "json"}).json()
    assert name not in {e["name"] for c in index["categories"] for e in c["events"]}
    assert client.get(_page(name)).status_code == 404
    assert client.get(_page(name), {"organization": custom.organization_id}).status_code == 404


def test_support_staff_name_the_clinic_whose_custom_types_they_read(client: Client) -> None:
    from tests.factories import CustomEventTypeFactory

    custom = CustomEventTypeFactory()
    client.force_login(UserFactory(is_superuser=True))
    assert client.get(_page(custom.type_name)).status_code == 404
    page = client.get(_page(custom.type_name), {"organization": custom.organization_id})
    assert page.status_code == 200
    index = client.get(INDEX, {"organization": custom.organization_id, "format": "json"}).json()
    found = {e["name"]: e for c in index["categories"] for e in c["events"]}
    assert found[custom.type_name]["url"] == (
        f"{_page(custom.type_name)}?organization={custom.organization_id}"
    )


def test_archived_custom_types_are_not_listed_but_keep_their_page(client: Client) -> None:
    from tests.factories import CustomEventTypeFactory

    custom = CustomEventTypeFactory(archived=True)
    client.force_login(StaffMembershipFactory(organization=custom.organization).user)
    index = client.get(INDEX, {"format": "json"}).json()
    assert custom.type_name not in {e["name"] for c in index["categories"] for e in c["events"]}
    assert client.get(_page(custom.type_name)).status_code == 200
