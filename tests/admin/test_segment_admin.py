"""The segment admin: building and saving a filter, its errors, the live count and the
sample of members, for each role, and never across clinics."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils.html import escape

from patients.models import Organization
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.factories import (
    OrderFactory,
    OrganizationFactory,
    PatientFactory,
    StaffMembershipFactory,
    SubscriptionFactory,
    UserFactory,
)
from workflows.models import Segment

pytestmark = pytest.mark.django_db

ADD = reverse("admin:workflows_segment_add")
COUNT_NEW = reverse("admin:workflows_segment_count_new")


def _client(role: str, organization: Organization | None = None, **extra: Any) -> Client:
    if organization is None:
        user = UserFactory()
    else:
        user = StaffMembershipFactory(organization=organization).user
    user.groups.add(Group.objects.get(name=role))
    client = Client(**extra)
    client.force_login(user)
    return client


def _count(client: Client, url: str, body: Any) -> tuple[int, dict[str, Any]]:
    response = client.post(url, data=json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


@pytest.fixture
def clinics() -> dict[str, Any]:
    mine, theirs = OrganizationFactory(name="Sunrise"), OrganizationFactory(name="Elsewhere")
    florida = [
        PatientFactory(organization=mine, first_name=name, province_code="FL")
        for name in ("Ana", "Bea")
    ]
    PatientFactory(organization=mine, first_name="Cy", province_code="NY")
    PatientFactory(organization=theirs, first_name="Theirs", province_code="FL")
    SubscriptionFactory(patient=florida[0], status="active", product_name="Zinc")
    OrderFactory(patient=florida[1])
    return {
        "mine": mine,
        "theirs": theirs,
        "segment": Segment.objects.create(
            organization=mine, name="Florida", filter={"customer.provinceCode": "FL"}
        ),
        "their_segment": Segment.objects.create(
            organization=theirs, name="Theirs", filter={"customer.provinceCode": "FL"}
        ),
    }


def _form(organization: Organization, **fields: Any) -> dict[str, Any]:
    return {"organization": organization.pk, "name": "Zinc", "description": "", **fields}


def test_a_clinic_admin_saves_a_segment_built_as_json(clinics: dict[str, Any]) -> None:
    client = _client(CLINIC_ADMIN, clinics["mine"])
    query = {"subscriptions": {"$elemMatch": {"status": "active", "product.name": "Zinc"}}}
    response = client.post(ADD, _form(clinics["mine"], filter=json.dumps(query)))
    assert response.status_code == 302, response.content.decode()[:2000]
    segment = Segment.objects.get(name="Zinc")
    assert segment.filter == query
    assert segment.organization == clinics["mine"]


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ('{"customer.provinceCod": "FL"}', 'did you mean "customer.provinceCode"?'),
        ('{"customer.city": {"$regex": "^Tam"}}', 'customer.city: "$regex" is not available'),
        ('{"customer.city": ', "The filter is not valid JSON"),
        ('{"orders": 2}', "orders: is a group of fields"),
        ('{"subscriptions": "active"}', "use $elemMatch"),
        ('{"customer.dob": {"$lt": "1990"}}', 'a full date such as "2026-01-31"'),
        ('{"$or": "x"}', '"$or" needs a non-empty list'),
        ('{"customer.city": "\\u0000"}', "invisible control character (U+0000)"),
        ('{"customer.city": "\\ud800"}', "customer.city"),
        ("[" * 5000 + "]" * 5000, "is nested more than"),
        ('{"$and": [' * 25 + '{"customer.city": "x"}' + "]}" * 25, "nested more than"),
    ],
)
def test_a_filter_that_cannot_be_used_is_a_clear_form_error(
    clinics: dict[str, Any], typed: str, message: str
) -> None:
    client = _client(CLINIC_ADMIN, clinics["mine"])
    response = client.post(ADD, _form(clinics["mine"], filter=typed))
    assert response.status_code == 200
    assert escape(message) in response.content.decode()
    assert not Segment.objects.filter(name="Zinc").exists()
    # and the live count gives the same reason
    status, answer = _count(client, COUNT_NEW, {"filter": typed})
    assert status == 400
    assert message.replace('"', "") in answer["error"].replace('"', "")


def test_the_live_count_counts_the_clinics_patients_the_filter_chooses(
    clinics: dict[str, Any],
) -> None:
    client = _client(CLINIC_ADMIN, clinics["mine"])
    assert _count(client, COUNT_NEW, {"filter": '{"customer.provinceCode": "FL"}'}) == (
        200,
        {"count": 2},
    )
    assert _count(client, COUNT_NEW, {"filter": ""}) == (200, {"count": 3})
    assert _count(client, COUNT_NEW, {"filter": {"orders.count": {"$gte": 1}}}) == (
        200,
        {"count": 1},
    )
    # Naming another clinic changes nothing for a clinic's staff: it is always their own.
    body = {"filter": "", "organization": clinics["theirs"].pk}
    assert _count(client, COUNT_NEW, body) == (200, {"count": 3})
    url = reverse("admin:workflows_segment_count", args=[clinics["segment"].pk])
    assert _count(client, url, {"filter": '{"customer.provinceCode": "NY"}'}) == (
        200,
        {"count": 1},
    )


def test_the_count_endpoint_refuses_another_clinics_segment(clinics: dict[str, Any]) -> None:
    client = _client(CLINIC_ADMIN, clinics["mine"])
    url = reverse("admin:workflows_segment_count", args=[clinics["their_segment"].pk])
    response = client.post(url, data="{}", content_type="application/json")
    assert response.status_code == 404
    change = reverse("admin:workflows_segment_change", args=[clinics["their_segment"].pk])
    assert client.get(change).status_code == 302  # "doesn't exist", as for any record


def test_the_count_endpoint_is_post_only_and_csrf_checked(clinics: dict[str, Any]) -> None:
    client = _client(CLINIC_ADMIN, clinics["mine"], enforce_csrf_checks=True)
    assert client.get(COUNT_NEW).status_code == 405
    response = client.post(COUNT_NEW, data="{}", content_type="application/json")
    assert response.status_code == 403  # no CSRF token
    status, answer = _count(_client(CLINIC_ADMIN, clinics["mine"]), COUNT_NEW, [1])
    assert (status, answer) == (400, {"error": "The request body must be a JSON object."})


def test_support_staff_count_in_the_clinic_they_choose(clinics: dict[str, Any]) -> None:
    client = _client(SUPPORT_STAFF)
    url = reverse("admin:workflows_segment_count", args=[clinics["their_segment"].pk])
    assert _count(client, url, {"filter": ""}) == (200, {"count": 1})
    assert client.get(reverse("admin:workflows_segment_changelist")).status_code == 200
    # Support staff look, they do not build: no add page, so no count for one.
    assert client.post(COUNT_NEW, data="{}", content_type="application/json").status_code == 403


def test_a_superuser_chooses_the_clinic_on_the_add_page(clinics: dict[str, Any]) -> None:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    assert _count(client, COUNT_NEW, {"filter": ""})[0] == 400
    body = {"filter": '{"customer.provinceCode": "FL"}', "organization": clinics["theirs"].pk}
    assert _count(client, COUNT_NEW, body) == (200, {"count": 1})
    body["organization"] = "9" * 30
    assert _count(client, COUNT_NEW, body) == (
        400,
        {"error": "Choose a clinic to count its patients."},
    )


def test_clinic_staff_view_segments_but_cannot_change_them(clinics: dict[str, Any]) -> None:
    client = _client(CLINIC_STAFF, clinics["mine"])
    segment = clinics["segment"]
    change = reverse("admin:workflows_segment_change", args=[segment.pk])
    page = client.get(change)
    assert page.status_code == 200
    assert client.get(ADD).status_code == 403
    response = client.post(change, _form(clinics["mine"], name="Renamed", filter=""))
    assert response.status_code == 403
    segment.refresh_from_db()
    assert segment.name == "Florida"
    url = reverse("admin:workflows_segment_count", args=[segment.pk])
    assert _count(client, url, {"filter": ""}) == (200, {"count": 3})


def test_the_change_page_shows_the_builder_and_a_sample_of_members(
    clinics: dict[str, Any],
) -> None:
    client = _client(CLINIC_ADMIN, clinics["mine"])
    page = client.get(reverse("admin:workflows_segment_change", args=[clinics["segment"].pk]))
    html = page.content.decode()
    assert page.status_code == 200
    config = page.context["segment_builder"]
    assert "customer.provinceCode" in {f["path"] for f in config["fields"]}
    assert 'id="careflow-segment-config"' in html
    names = [m["name"] for m in page.context["segment_sample"]["members"]]
    assert sorted(names) == ["Ana Lee", "Bea Lee"]
    assert "Theirs" not in html
    assert " onclick=" not in html and " onchange=" not in html


def test_the_list_says_what_each_segment_chooses(clinics: dict[str, Any]) -> None:
    Segment.objects.create(organization=clinics["mine"], name="Everyone")
    client = _client(CLINIC_ADMIN, clinics["mine"])
    html = client.get(reverse("admin:workflows_segment_changelist")).content.decode()
    assert "customer.provinceCode is “FL”" in html
    assert "Every patient" in html
    assert "Theirs" not in html


def test_a_segment_stays_in_its_clinic(clinics: dict[str, Any]) -> None:
    client = _client(CLINIC_ADMIN, clinics["mine"])
    segment = clinics["segment"]
    change = reverse("admin:workflows_segment_change", args=[segment.pk])
    form = _form(clinics["theirs"], name="Florida", filter='{"customer.provinceCode": "GA"}')
    assert client.post(change, form).status_code == 302
    segment.refresh_from_db()
    assert segment.organization == clinics["mine"]
    assert segment.filter == {"customer.provinceCode": "GA"}


def test_a_name_taken_in_the_clinic_is_a_form_error_on_add_and_on_change(
    clinics: dict[str, Any],
) -> None:
    client = _client(CLINIC_ADMIN, clinics["mine"])
    response = client.post(ADD, _form(clinics["mine"], name="Florida", filter=""))
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    other = Segment.objects.create(organization=clinics["mine"], name="Georgia")
    change = reverse("admin:workflows_segment_change", args=[other.pk])
    response = client.post(change, _form(clinics["mine"], name="Florida", filter=""))
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    other.refresh_from_db()
    assert other.name == "Georgia"
    # the same name in another clinic is that clinic's business
    assert Segment.objects.filter(name="Theirs").count() == 1
    response = client.post(ADD, _form(clinics["mine"], name="Theirs", filter=""))
    assert response.status_code == 302
