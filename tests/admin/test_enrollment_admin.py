"""Enrollment rules in the admin: set in the builder's definition and saved with the workflow,
refused with a clear error when they do not make sense (nothing saved, never a 500), said by
the dry run, and skipped enrollments counted on the workflow's page and listed, clinic by
clinic."""

import json
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from patients.models import Order
from tests.factories import (
    IntegrationFactory,
    OrderFactory,
    PatientFactory,
    SmsStepFactory,
    UserFactory,
    WorkflowFactory,
    clinic_client,
)
from workflows.engine import event_dispatch
from workflows.models import Enrollment, EnrollmentSkip, Event, Workflow

pytestmark = pytest.mark.django_db

SMS = {
    "type": "adapter",
    "adapter": "twilio",
    "function": "sendSMS",
    "parameters": {
        "message": "Hi {{customer.firstName}}",
        "to": "{{customer.phone}}",
        "from": "+15005550006",
    },
    "purpose": "transactional",
}


@pytest.fixture
def org() -> Any:
    return IntegrationFactory(senders=["+15005550006"]).organization


@pytest.fixture
def client_() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True))
    return client


def _post(org: Any, enrollment: Any) -> dict[str, Any]:
    definition: dict[str, Any] = {"trigger": "order.shipped", "filter": "", "steps": [SMS]}
    if enrollment is not None:
        definition["enrollment"] = enrollment
    return {
        "organization": org.pk,
        "name": "Shipped",
        "description": "",
        "definition": json.dumps(definition),
    }


def test_the_rule_is_saved_from_the_definition_and_shown_back(client_: Client, org: Any) -> None:
    add = reverse("admin:workflows_workflow_add")
    enrollment = {"rule": "period", "days": 30, "exclusive": True}
    response = client_.post(add, _post(org, enrollment))
    assert response.status_code == 302, response.content.decode()[:2000]
    workflow = Workflow.objects.get()
    assert (workflow.enrollment, workflow.enrollment_days, workflow.enrollment_exclusive) == (
        "period",
        30,
        True,
    )
    page = client_.get(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
    assert page.context["builder"]["definition"]["enrollment"] == enrollment
    # The builder's choices are the model's.
    rules = page.context["builder"]["schema"]["enrollment"]["rules"]
    assert rules == [list(choice) for choice in Workflow.Enrollment.choices]
    assert "3. How often a patient enrolls" in page.content.decode()


def test_a_definition_without_enrollment_means_every_time(client_: Client, org: Any) -> None:
    workflow = WorkflowFactory(organization=org, enrollment="patient", enrollment_exclusive=True)
    SmsStepFactory(workflow=workflow)
    url = reverse("admin:workflows_workflow_change", args=[workflow.pk])
    assert client_.post(url, _post(org, None)).status_code == 302
    workflow.refresh_from_db()
    assert (workflow.enrollment, workflow.enrollment_days, workflow.enrollment_exclusive) == (
        "every",
        None,
        False,
    )


@pytest.mark.parametrize(
    ("enrollment", "error"),
    [
        ({"rule": "period", "days": None}, "say after how many days a patient may enroll again"),
        ({"rule": "period", "days": ""}, "say after how many days a patient may enroll again"),
        ({"rule": "period", "days": 0}, "the number of days must be between 1 and 3650"),
        ({"rule": "period", "days": "4000"}, "the number of days must be between 1 and 3650"),
        ({"rule": "period", "days": "two"}, "the number of days must be a whole number"),
        ({"rule": "period", "days": 2.5}, "the number of days must be a whole number"),
        (
            {"rule": "record", "days": 7},
            "a number of days only goes with “at most once per patient per N days”",
        ),
        ({"rule": "weekly"}, "unknown enrollment rule 'weekly': choose one of the list"),
        ({"rule": "every", "exclusive": "yes"}, "“not while active” must be true or false"),
        ("period", "the enrollment settings must be an object"),
    ],
)
def test_settings_that_make_no_sense_are_refused_and_nothing_is_saved(
    client_: Client, org: Any, enrollment: Any, error: str
) -> None:
    response = client_.post(reverse("admin:workflows_workflow_add"), _post(org, enrollment))
    assert response.status_code == 200
    text = response.content.decode().replace("&#x27;", "'")
    assert f"Enrollment: {error}" in text
    assert not Workflow.objects.exists()
    # The builder's own check says the same, on the enrollment section.
    check = client_.post(
        reverse("admin:workflows_workflow_builder_validate"),
        json.dumps({"definition": json.loads(_post(org, enrollment)["definition"])}),
        content_type="application/json",
    )
    assert check.status_code == 200
    assert check.json()["ok"] is False and check.json()["enrollment"] == [error]


def _ship(patient: Any) -> Event:
    order = OrderFactory(
        patient=patient, organization=patient.organization, status=Order.Status.AWAITING_SHIPMENT
    )
    order.status = Order.Status.SHIPPED
    order.save()
    return Event.objects.get(type="order.shipped", subject_id=str(order.pk))


def _dry_run(client: Client, workflow: Workflow, patient: Any, enrollment: Any) -> str:
    definition = {
        "trigger": "order.shipped",
        "filter": "",
        "steps": [SMS],
        "enrollment": enrollment,
    }
    response = client.post(
        reverse("admin:workflows_workflow_builder_dry_run", args=[workflow.pk]),
        json.dumps({"definition": definition, "patient": patient.pk}),
        content_type="application/json",
    )
    assert response.status_code == 200
    return " ".join(response.content.decode().split())


def test_the_dry_run_says_whether_the_patient_would_enroll(client_: Client, org: Any) -> None:
    workflow = WorkflowFactory(organization=org, enrollment="period", enrollment_days=30)
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=org, is_test=True)
    other = PatientFactory(organization=org, is_test=True)
    (run_id,) = event_dispatch(event_id=_ship(patient).pk)
    Enrollment.objects.update(enrolled_at=timezone.now() - timedelta(days=2))
    period = {"rule": "period", "days": 30, "exclusive": False}
    text = _dry_run(client_, workflow, patient, period)
    assert (
        f"✗ Would not enroll: enrolled 2 days ago (run {run_id}); at most once per 30 days" in text
    )
    assert "It would not enroll now" in text
    assert "✓ Would enroll (at most once per patient per n days)" in _dry_run(
        client_, workflow, other, period
    )
    # The rule on the page, unsaved, against the enrollments so far.
    assert "✓ Would enroll" in _dry_run(client_, workflow, patient, {**period, "days": 1})
    assert "✓ Would enroll: every time the trigger fires" in _dry_run(
        client_, workflow, patient, {"rule": "every", "days": None, "exclusive": False}
    )
    assert EnrollmentSkip.objects.count() == 0  # a dry run records nothing


def _skip(workflow: Workflow, reason: str, n: int) -> EnrollmentSkip:
    patient = PatientFactory(organization=workflow.organization, first_name=f"Skipped{n}")
    event = Event.objects.create(
        organization=workflow.organization,
        type="order.shipped",
        dedupe_key=f"skip:{workflow.pk}:{n}",
        payload={"customer": {"id": str(patient.uuid), "firstName": patient.first_name}},
    )
    return EnrollmentSkip.objects.create(
        workflow=workflow, event=event, reason=reason, detail=f"enrolled {n} days ago (run 1)"
    )


def test_the_workflow_page_counts_skips_by_reason_and_links_to_them(
    client_: Client, org: Any
) -> None:
    workflow = WorkflowFactory(organization=org, enrollment="period", enrollment_days=30)
    other = WorkflowFactory(organization=org)
    for n, reason in enumerate(["period", "period", "active", "period"]):
        _skip(workflow, reason, n)
    _skip(other, "record", 9)
    response = client_.get(reverse("admin:workflows_workflow_change", args=[workflow.pk]))
    counts = response.context["skip_counts"]
    assert [(c["reason"], c["count"]) for c in counts] == [("period", 3), ("active", 1)]
    assert counts[0]["label"] == "Enrolled within the last N days"
    changelist = reverse("admin:workflows_enrollmentskip_changelist")
    assert counts[0]["url"] == f"{changelist}?workflow={workflow.pk}&reason=period"
    listed = client_.get(counts[0]["url"])
    assert listed.status_code == 200
    assert sorted(s.detail for s in listed.context["cl"].result_list) == [
        "enrolled 0 days ago (run 1)",
        "enrolled 1 days ago (run 1)",
        "enrolled 3 days ago (run 1)",
    ]


def test_a_clinic_sees_only_its_own_skips() -> None:
    mine = WorkflowFactory()
    theirs = WorkflowFactory()
    own = _skip(mine, "patient", 1)
    foreign = _skip(theirs, "patient", 2)
    client = clinic_client(mine.organization, "view_enrollmentskip")
    listed = client.get(reverse("admin:workflows_enrollmentskip_changelist"))
    assert listed.status_code == 200
    assert [s.pk for s in listed.context["cl"].result_list] == [own.pk]
    assert "Skipped2" not in listed.content.decode()
    assert (
        client.get(reverse("admin:workflows_enrollmentskip_change", args=[own.pk])).status_code
        == 200
    )
    answer = client.get(reverse("admin:workflows_enrollmentskip_change", args=[foreign.pk]))
    assert answer.status_code == 302 and answer.url == reverse("admin:index")
    # Filtering by another clinic's workflow finds nothing of it either.
    filtered = client.get(
        reverse("admin:workflows_enrollmentskip_changelist") + f"?workflow={theirs.pk}"
    )
    assert list(filtered.context["cl"].result_list) == []


def test_who_may_open_the_skips() -> None:
    workflow = WorkflowFactory()
    skip = _skip(workflow, "active", 1)
    url = reverse("admin:workflows_enrollmentskip_changelist")
    assert clinic_client(workflow.organization, "view_run").get(url).status_code == 403
    reader = clinic_client(workflow.organization, "view_enrollmentskip")
    assert reader.get(url).status_code == 200
    # Evidence: nobody adds, edits or deletes a skip by hand.
    assert reader.get(reverse("admin:workflows_enrollmentskip_add")).status_code == 403
    change = reverse("admin:workflows_enrollmentskip_change", args=[skip.pk])
    assert reader.post(change, {"reason": "patient"}).status_code == 403
    skip.refresh_from_db()
    assert skip.reason == "active"


def _queries(client: Client, url: str) -> int:
    client.get(url)  # warm per-process caches
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries)


def test_the_skips_list_costs_the_same_queries_however_many_rows() -> None:
    workflow = WorkflowFactory()
    client = clinic_client(workflow.organization, "view_enrollmentskip")
    url = reverse("admin:workflows_enrollmentskip_changelist") + f"?workflow={workflow.pk}"
    _skip(workflow, "period", 0)
    few = _queries(client, url)
    for n in range(1, 12):
        _skip(workflow, ["period", "active", "patient"][n % 3], n)
    assert _queries(client, url) == few


def test_setting_a_rule_on_a_workflow_that_ran_counts_its_runs(client_: Client, org: Any) -> None:
    workflow = WorkflowFactory(organization=org)
    SmsStepFactory(workflow=workflow)
    patient = PatientFactory(organization=org)
    event_dispatch(event_id=_ship(patient).pk)
    url = reverse("admin:workflows_workflow_change", args=[workflow.pk])
    response = client_.post(url, _post(org, {"rule": "patient", "days": None, "exclusive": False}))
    assert response.status_code == 302
    assert Enrollment.objects.filter(workflow=workflow, key=f"patient:{patient.uuid}").exists()
    assert event_dispatch(event_id=_ship(patient).pk) == []
    assert EnrollmentSkip.objects.get().reason == "patient"
