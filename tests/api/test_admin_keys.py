"""API keys in the admin: a clinic admin creates one (shown once, on the page after the
add) and revokes it; staff of the clinic see none; support staff see every clinic's keys
but create none; no page ever shows a key again."""

import hashlib
import re
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from integrations.api.keys import api_key_issue
from integrations.models import ApiKey
from patients.roles import CLINIC_ADMIN, CLINIC_STAFF, SUPPORT_STAFF
from tests.api.conftest import key_client
from tests.factories import OrganizationFactory, StaffMembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

ADD = reverse("admin:integrations_apikey_add")
LIST = reverse("admin:integrations_apikey_changelist")


def _client(role: str, organization: Any = None) -> tuple[Client, Any]:
    if role == SUPPORT_STAFF:
        user = UserFactory()
    else:
        user = StaffMembershipFactory(organization=organization).user
    user.groups.add(Group.objects.get(name=role))
    client = Client()
    client.force_login(user)
    return client, user


def test_a_clinic_admin_creates_a_key_shown_once(clinic: Any) -> None:
    client, user = _client(CLINIC_ADMIN, clinic)
    form = client.get(ADD)
    assert form.status_code == 200
    # Their own clinic only, preselected.
    choices = list(form.context["adminform"].form.fields["organization"].queryset)
    assert choices == [clinic]

    response = client.post(
        ADD, {"organization": clinic.pk, "name": "Patient portal", "scope": "write"}
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    (token,) = re.findall(r"cfk_[A-Za-z0-9_-]{43}", response.content.decode())
    api_key = ApiKey.objects.get()
    assert api_key.key_hash == hashlib.sha256(token.encode()).hexdigest()
    assert (api_key.organization, api_key.created_by, api_key.scope) == (clinic, user, "write")
    assert key_client(token).get("/api/v1/patients/").status_code == 200

    # Never again: not in the list, the key's page, its history.
    for url in (
        LIST,
        reverse("admin:integrations_apikey_change", args=[api_key.pk]),
        reverse("admin:integrations_apikey_history", args=[api_key.pk]),
    ):
        page = client.get(url)
        assert page.status_code == 200
        body = page.content.decode()
        assert token not in body and api_key.key_hash not in body
        assert api_key.prefix in body or url != LIST


def test_a_key_is_never_edited_and_never_deleted(clinic: Any) -> None:
    client, _ = _client(CLINIC_ADMIN, clinic)
    issued = api_key_issue(organization=clinic, name="Portal", scope="read")
    url = reverse("admin:integrations_apikey_change", args=[issued.api_key.pk])
    client.post(url, {"organization": clinic.pk, "name": "Renamed", "scope": "write"})
    issued.api_key.refresh_from_db()
    assert (issued.api_key.name, issued.api_key.scope) == ("Portal", "read")
    delete = client.get(reverse("admin:integrations_apikey_delete", args=[issued.api_key.pk]))
    assert delete.status_code == 403


def test_a_clinic_admin_revokes_a_key_at_once(clinic: Any) -> None:
    client, user = _client(CLINIC_ADMIN, clinic)
    issued = api_key_issue(organization=clinic, name="Portal", scope="write")
    assert key_client(issued.token).get("/api/v1/patients/").status_code == 200

    client.post(LIST, {"action": "revoke_api_keys", "_selected_action": [issued.api_key.pk]})

    issued.api_key.refresh_from_db()
    assert issued.api_key.revoked_at is not None and issued.api_key.revoked_by == user
    assert key_client(issued.token).get("/api/v1/patients/").status_code == 401
    assert "revoked" in client.get(LIST).content.decode()


def test_a_clinic_admin_sees_and_revokes_only_their_clinics_keys(clinic: Any) -> None:
    theirs = api_key_issue(organization=OrganizationFactory(), name="Other", scope="write")
    client, _ = _client(CLINIC_ADMIN, clinic)
    assert "Other" not in client.get(LIST).content.decode()
    page = client.get(reverse("admin:integrations_apikey_change", args=[theirs.api_key.pk]))
    assert page.status_code == 302  # the admin's "does not exist"
    client.post(LIST, {"action": "revoke_api_keys", "_selected_action": [theirs.api_key.pk]})
    theirs.api_key.refresh_from_db()
    assert theirs.api_key.revoked_at is None
    # Nor creates one for another clinic.
    other = OrganizationFactory()
    response = client.post(ADD, {"organization": other.pk, "name": "x", "scope": "write"})
    assert (
        response.status_code == 200 and "organization" in response.context["adminform"].form.errors
    )
    assert not ApiKey.objects.filter(name="x").exists()


def test_clinic_staff_have_no_key_pages(clinic: Any) -> None:
    client, _ = _client(CLINIC_STAFF, clinic)
    assert client.get(LIST).status_code == 403
    assert client.get(ADD).status_code == 403


def test_support_staff_see_every_clinics_keys_and_create_none(clinic: Any) -> None:
    api_key_issue(organization=clinic, name="Sunrise portal", scope="write")
    api_key_issue(organization=OrganizationFactory(), name="Harbor portal", scope="read")
    client, _ = _client(SUPPORT_STAFF)
    listing = client.get(LIST)
    assert listing.status_code == 200
    assert (
        "Sunrise portal" in listing.content.decode() and "Harbor portal" in listing.content.decode()
    )
    assert client.get(ADD).status_code == 403
    assert "revoke_api_keys" not in listing.content.decode()  # revoking is the clinic's
