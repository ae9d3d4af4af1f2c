"""The audit trail records who changed which workflow, step, integration, consent record,
messaging policy or patient record a workflow may write, with before/after values, and never
a secret."""

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from patients.audit import audit_actor
from patients.models import AuditEntry, Order
from tests.factories import (
    AppointmentFactory,
    ConsentFactory,
    IntegrationFactory,
    OrderFactory,
    SmsStepFactory,
    StaffMembershipFactory,
    UserFactory,
    WorkflowFactory,
)
from workflows.models import Event

pytestmark = pytest.mark.django_db


def test_changes_outside_a_request_are_recorded_as_system() -> None:
    workflow = WorkflowFactory(name="Before")
    workflow.name = "After"
    workflow.save()
    entry = AuditEntry.objects.filter(model="workflows.Workflow", action="updated").get()
    assert entry.changes == {"name": ["Before", "After"]}
    assert entry.actor is None and entry.actor_repr == "system"
    assert entry.organization_id == workflow.organization_id


def test_a_named_actor_is_recorded_inside_its_block_only() -> None:
    appointment = AppointmentFactory(location="Main St")
    with audit_actor("workflow “Reminder” run 12"):
        appointment.location = "2nd floor"
        appointment.save()
    appointment.location = "3rd floor"
    appointment.save()
    named, after = AuditEntry.objects.filter(
        model="patients.Appointment", action="updated"
    ).order_by("id")
    assert (named.actor_repr, named.actor) == ("workflow “Reminder” run 12", None)
    assert named.changes == {"location": ["Main St", "2nd floor"]}
    assert after.actor_repr == "system"
    created = AuditEntry.objects.get(model="patients.Appointment", action="created")
    assert created.organization_id == appointment.organization_id


def test_saving_without_changes_records_nothing() -> None:
    workflow = WorkflowFactory()
    workflow.save()
    assert not AuditEntry.objects.filter(action="updated").exists()


def test_secrets_are_masked_but_their_change_is_recorded() -> None:
    integration = IntegrationFactory(auth_token="first-secret")
    created = AuditEntry.objects.get(model="integrations.Integration", action="created")
    assert created.changes["auth_token"] == [None, "••••••"]
    integration.secrets = {"auth_token": "second-secret"}
    integration.save()
    updated = AuditEntry.objects.get(model="integrations.Integration", action="updated")
    assert updated.changes == {"auth_token": ["••••••", "•••••• (changed)"]}
    assert "secret" not in str(list(AuditEntry.objects.values_list("changes", flat=True)))


def test_steps_consents_and_deletions_are_recorded() -> None:
    step = SmsStepFactory()
    ConsentFactory()
    step.delete()
    assert set(AuditEntry.objects.values_list("model", "action")) >= {
        ("workflows.Step", "created"),
        ("patients.ConsentRecord", "created"),
        ("workflows.Step", "deleted"),
    }


def test_admin_changes_name_the_user_and_the_trail_is_read_only_and_scoped() -> None:
    membership = StaffMembershipFactory(user=UserFactory(is_superuser=True))
    workflow = WorkflowFactory(organization=membership.organization, name="Mine")
    client = Client()
    client.force_login(membership.user)
    client.post(
        reverse("admin:workflows_workflow_changelist"),
        {"action": "disable_workflows", "_selected_action": [workflow.pk]},
    )
    entry = AuditEntry.objects.filter(model="workflows.Workflow", action="updated").get()
    assert entry.actor == membership.user
    assert entry.changes["enabled"] == [True, False]
    page = client.get(reverse("admin:patients_auditentry_changelist")).content.decode()
    assert "Mine" in page
    assert client.get(reverse("admin:patients_auditentry_add")).status_code == 403

    other_staff = StaffMembershipFactory()
    other_staff.user.user_permissions.add(Permission.objects.get(codename="view_auditentry"))
    other = Client()
    other.force_login(other_staff.user)
    page = other.get(reverse("admin:patients_auditentry_changelist")).content.decode()
    assert "Mine" not in page


def test_an_order_change_that_records_an_event_writes_its_entry_with_the_event() -> None:
    order = Order.objects.get(pk=OrderFactory().pk)
    order.status = Order.Status.SHIPPED
    with CaptureQueriesContext(connection) as queries:
        order.save()
    # The UPDATE (which reads the row it replaces), then one statement for the audit entry,
    # the event and its NOTIFY: no read and no INSERT of the audit trail's own.
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["UPDATE", "WITH"]
    entry = AuditEntry.objects.get(model="patients.Order", action="updated")
    assert entry.object_id == str(order.pk) and entry.actor_repr == "system"
    assert entry.organization_id == order.organization_id
    assert entry.changes["status"] == ["processing", "shipped"]
    assert set(entry.changes) == {"status", "status_history"}
    assert Event.objects.filter(type="order.shipped", subject_id=str(order.pk)).count() == 1


def test_a_save_that_records_no_event_still_writes_its_entry() -> None:
    order = Order.objects.get(pk=OrderFactory().pk)
    order.tracking_number = "1Z999"
    events = Event.objects.count()
    order.save()
    entry = AuditEntry.objects.get(model="patients.Order", action="updated")
    assert entry.changes == {"tracking_number": ["", "1Z999"]}
    assert Event.objects.count() == events
    order.save()  # nothing changed: nothing recorded
    assert AuditEntry.objects.filter(model="patients.Order", action="updated").count() == 1


def test_a_stale_copy_overwriting_a_later_change_shows_it_in_the_trail() -> None:
    # Given two copies of an order, and one saving a change first
    first = Order.objects.get(pk=OrderFactory().pk)
    stale = Order.objects.get(pk=first.pk)
    first.coupon = "SPRING"
    first.save()
    # When both copies save the same status change (a racing duplicate)
    for copy in (first, stale):
        copy.status = Order.Status.SHIPPED
        with audit_actor(f"copy {id(copy)}"):
            copy.save()
    # Then one event, but every save's entry, the stale one showing the coupon it reverted
    assert Event.objects.filter(type="order.shipped", subject_id=str(first.pk)).count() == 1
    entries = AuditEntry.objects.filter(model="patients.Order", action="updated").order_by("id")
    assert [e.changes.get("coupon") for e in entries] == [["", "SPRING"], None, ["SPRING", ""]]
    assert entries[2].actor_repr == f"copy {id(stale)}"
    assert entries[2].changes["status_history"][0] != entries[2].changes["status_history"][1]
