"""Retention (integrations.retention, `manage.py careflow_retention`) on PostgreSQL: what is
past a clinic's age goes, with its dependents; what is newer, in flight, or compliance
evidence stays; batches are short transactions that never wait on, nor block, other work."""

import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from integrations import retention
from integrations.models import (
    RETENTION_FLOOR_DAYS,
    InboundMessage,
    LinkClick,
    MessagingPolicy,
    OutboundMessage,
    ShortLink,
)
from patients.models import AuditEntry, ConsentRecord, Organization
from tests.factories import (
    ConsentFactory,
    OrganizationFactory,
    OutboundMessageFactory,
    PatientFactory,
    ShortLinkFactory,
    WorkflowFactory,
    clinic_integration,
)
from workflows.models import Enrollment, EnrollmentSkip, Event, ReplyWait, Run, StepRun, Workflow

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_worker")]

NOW = timezone.now()
FLOOR = timedelta(days=RETENTION_FLOOR_DAYS)
PHONE = "+14155550123"


@dataclass
class History:
    """One trigger's records: its event, run, step run and message."""

    event: Event
    run: Run
    step: StepRun
    message: OutboundMessage

    def exists(self) -> dict[str, bool]:
        return {
            "event": Event.objects.filter(pk=self.event.pk).exists(),
            "run": Run.objects.filter(pk=self.run.pk).exists(),
            "step": StepRun.objects.filter(pk=self.step.pk).exists(),
            "message": OutboundMessage.objects.filter(pk=self.message.pk).exists(),
        }

    @property
    def gone(self) -> bool:
        return not any(self.exists().values())

    @property
    def kept(self) -> bool:
        return all(self.exists().values())


def _aged(model: Any, pk: int, at: datetime) -> None:
    model.objects.filter(pk=pk).update(created_at=at)


def _history(
    workflow: Workflow,
    at: datetime,
    *,
    run_status: str = Run.Status.SUCCEEDED,
    message_status: str = OutboundMessage.Status.DELIVERED,
    status_checks: int = 0,
    counted: bool = True,
) -> History:
    org = workflow.organization
    event = Event.objects.create(
        organization=org,
        type="order.shipped",
        payload={"customer": {"id": 1, "firstName": "Maria", "phone": PHONE}},
        dedupe_key=f"test:{uuid.uuid4()}",
        dispatched_at=at,
    )
    run = Run.objects.create(workflow=workflow, event=event, status=run_status)
    step = StepRun.objects.create(run=run, index=0, status=StepRun.Status.SUCCEEDED)
    message = OutboundMessageFactory(
        integration=clinic_integration(org),
        organization=org,
        step_run=step,
        workflow=workflow,
        step_index=0,
        to=PHONE,
        body="Hi Maria, your order has shipped",
        status=message_status,
        counted_status=message_status if counted else "",
        status_checks=status_checks,
    )
    for model, pk in ((Event, event.pk), (Run, run.pk), (StepRun, step.pk)):
        _aged(model, pk, at)
    _aged(OutboundMessage, message.pk, at)
    return History(event, run, step, message)


@pytest.fixture
def workflow() -> Workflow:
    return WorkflowFactory()


def test_rows_just_past_the_age_go_with_their_dependents_and_rows_just_newer_stay(
    workflow: Workflow,
) -> None:
    older = _history(workflow, NOW - FLOOR - timedelta(seconds=1))
    newer = _history(workflow, NOW - FLOOR + timedelta(seconds=1))
    link = ShortLinkFactory(message=older.message)
    LinkClick.objects.create(link=link)
    ReplyWait.objects.create(
        run=older.run,
        index=0,
        organization=workflow.organization,
        phone=PHONE,
        sender="+15005550006",
        asked_at=NOW - FLOOR,
        deadline=NOW - FLOOR,
        state=ReplyWait.State.ANSWERED,
    )

    (result,) = retention.retention_apply(now=NOW)

    assert older.gone
    assert not ShortLink.objects.exists() and not LinkClick.objects.exists()
    assert not ReplyWait.objects.exists()
    assert newer.kept
    assert result.counts == {
        "messages": 1,
        "runs": 1,
        "step runs": 1,
        "enrollment skips": 0,
        "events": 1,
    }


def test_what_is_in_flight_stays_however_old_and_its_run_and_event_with_it(
    workflow: Workflow,
) -> None:
    old = NOW - FLOOR - timedelta(days=30)
    Status = OutboundMessage.Status
    in_flight = [
        _history(workflow, old, message_status=Status.PENDING),
        _history(workflow, old, message_status=Status.SENDING),
        _history(workflow, old, message_status=Status.UNKNOWN),
        # Still being looked up at the provider (reconciliation asks up to 8 times).
        _history(workflow, old, message_status=Status.SENT, status_checks=3),
        # Not yet counted by the analytics' hourly roll-up: its count would be lost.
        _history(workflow, old, message_status=Status.FAILED, counted=False),
        # The run is still waiting (a long delay), so its event stays too.
        _history(workflow, old, run_status=Run.Status.WAITING),
        _history(workflow, old, run_status=Run.Status.RUNNING),
    ]
    settled_sent = _history(workflow, old, message_status=Status.SENT, status_checks=8)
    pending_event = Event.objects.create(
        organization=workflow.organization, type="order.shipped", dedupe_key="pending"
    )
    _aged(Event, pending_event.pk, old)

    retention.retention_apply(now=NOW)

    assert [h.exists() for h in in_flight if not h.kept] == []
    assert Event.objects.filter(pk=pending_event.pk).exists()
    assert settled_sent.gone


def test_consent_opt_outs_inbound_messages_and_enrollment_claims_are_kept(
    workflow: Workflow,
) -> None:
    old = NOW - FLOOR - timedelta(days=400)
    patient = PatientFactory(organization=workflow.organization)
    consent = ConsentFactory(patient=patient)
    opt_out = ConsentFactory(patient=patient, action=ConsentRecord.Action.OPT_OUT)
    ConsentRecord.objects.filter(pk__in=[consent.pk, opt_out.pk]).update(created_at=old)
    stop = InboundMessage.objects.create(
        organization=workflow.organization,
        integration=clinic_integration(workflow.organization),
        provider_sid="SM" + "1" * 32,
        from_number=PHONE,
        to="+15005550006",
        body="STOP",
        action=InboundMessage.Action.OPT_OUT,
    )
    InboundMessage.objects.filter(pk=stop.pk).update(created_at=old)
    claimed = _history(workflow, old)
    # "Once per patient, ever": the claim names the event of the run that enrolled.
    Enrollment.objects.create(
        workflow=workflow, key="patient:1", event=claimed.event, enrolled_at=old
    )
    skipped = _history(workflow, old)
    skip = EnrollmentSkip.objects.create(
        workflow=workflow, event=skipped.event, reason=EnrollmentSkip.Reason.PATIENT
    )
    EnrollmentSkip.objects.filter(pk=skip.pk).update(created_at=old)

    retention.retention_apply(now=NOW)

    assert ConsentRecord.objects.filter(pk__in=[consent.pk, opt_out.pk]).count() == 2
    assert InboundMessage.objects.filter(pk=stop.pk).exists()
    # The claim's event stays (its run and message go); the skip went, and its event with it.
    assert claimed.exists() == {"event": True, "run": False, "step": False, "message": False}
    assert not EnrollmentSkip.objects.exists()
    assert skipped.gone


def test_each_clinic_by_its_own_policy_and_the_clinic_option_takes_one() -> None:
    long_keeper, default_clinic, third = (
        WorkflowFactory(),
        WorkflowFactory(),
        WorkflowFactory(),
    )
    MessagingPolicy.objects.filter(organization=long_keeper.organization).update(
        retention_days=RETENTION_FLOOR_DAYS + 365
    )
    age = NOW - FLOOR - timedelta(days=100)
    kept_by_policy = _history(long_keeper, age)
    past_its_age = _history(long_keeper, age - timedelta(days=365))
    past_default = _history(default_clinic, age)
    untouched = _history(third, age)

    out = StringIO()
    call_command("careflow_retention", "--clinic", long_keeper.organization.slug, stdout=out)
    call_command("careflow_retention", "--clinic", str(default_clinic.organization.pk), stdout=out)

    assert kept_by_policy.kept
    assert past_its_age.gone
    assert past_default.gone
    assert untouched.kept  # not named
    with pytest.raises(CommandError, match="No clinic"):
        call_command("careflow_retention", "--clinic", "no-such-clinic")


def test_batches_smaller_than_the_rows_progress_without_patient_data_and_leave_an_audit_entry(
    workflow: Workflow,
) -> None:
    histories = [_history(workflow, NOW - FLOOR - timedelta(days=i + 1)) for i in range(5)]
    out = StringIO()

    call_command("careflow_retention", "--batch-size", "2", stdout=out)

    assert all(h.gone for h in histories)
    text = out.getvalue()
    # 5 messages in batches of 2 (3 batches), then 5 runs (3), then 5 events (3).
    assert text.count(": batch ") == 9
    assert "batch 9: 1 events" in text
    assert "5 messages, 5 runs, 5 step runs, 0 enrollment skips, 5 events" in text
    assert "Maria" not in text and PHONE not in text
    entry = AuditEntry.objects.get(model=retention.AUDIT_MODEL)
    assert entry.organization_id == workflow.organization_id
    assert entry.action == AuditEntry.Action.DELETED
    assert entry.changes["messages"] == [5, 0] and entry.changes["events"] == [5, 0]


def test_a_dry_run_counts_and_deletes_nothing(workflow: Workflow) -> None:
    histories = [_history(workflow, NOW - FLOOR - timedelta(days=3)) for _ in range(3)]
    in_flight = _history(
        workflow, NOW - FLOOR - timedelta(days=3), message_status=OutboundMessage.Status.PENDING
    )
    out = StringIO()

    call_command("careflow_retention", "--dry-run", stdout=out)

    assert all(h.kept for h in [*histories, in_flight])
    assert "would delete 3 messages, 3 runs, 3 step runs, 0 enrollment skips, 3 events" in (
        out.getvalue()
    )
    assert not AuditEntry.objects.filter(model=retention.AUDIT_MODEL).exists()


def test_retention_shorter_than_six_years_is_refused(workflow: Workflow, settings: Any) -> None:
    settings.CAREFLOW_RETENTION_DAYS = 30
    history = _history(workflow, NOW - timedelta(days=365))
    with pytest.raises(CommandError, match="6 years"):
        call_command("careflow_retention")
    assert history.kept
    with pytest.raises(IntegrityError), transaction.atomic():
        MessagingPolicy.objects.filter(organization=workflow.organization).update(
            retention_days=RETENTION_FLOOR_DAYS - 1
        )


def test_a_row_another_transaction_holds_is_skipped_and_inserts_meanwhile_are_not_blocked(
    workflow: Workflow,
) -> None:
    old = NOW - FLOOR - timedelta(days=10)
    held = _history(workflow, old)
    others = [_history(workflow, old) for _ in range(3)]
    integration = clinic_integration(workflow.organization)
    holding, held_now, release = threading.Event(), threading.Event(), threading.Event()
    inserted: list[int] = []
    errors: list[BaseException] = []

    def worker_holding_a_message() -> None:
        # A status callback updating an old message, mid-transaction.
        try:
            with transaction.atomic():
                OutboundMessage.objects.select_for_update().get(pk=held.message.pk)
                holding.set()
                release.wait(30)
        finally:
            connection.close()

    def insert_while_a_batch_is_open() -> None:
        try:
            with connection.cursor() as cursor:
                # Fail instead of waiting, should retention hold anything an insert needs.
                cursor.execute("SET lock_timeout = '2s'")
            with transaction.atomic():
                event = Event.objects.create(
                    organization=workflow.organization, type="order.shipped", dedupe_key="new"
                )
                message = OutboundMessageFactory(
                    integration=integration, organization=workflow.organization, to=PHONE
                )
            inserted.extend([event.pk, message.pk])
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    holder = threading.Thread(target=worker_holding_a_message)
    holder.start()
    assert holding.wait(10)
    delete_messages = retention._delete_messages

    def delete_with_an_insert_meanwhile(ids: list[int]) -> dict[str, int]:
        # Inside the batch's transaction, its rows locked: another session inserts.
        counts = delete_messages(ids)
        inserter = threading.Thread(target=insert_while_a_batch_is_open)
        inserter.start()
        inserter.join(20)
        held_now.set()
        return counts

    retention._delete_messages = delete_with_an_insert_meanwhile  # type: ignore[assignment]
    try:
        (result,) = retention.retention_apply(now=NOW)
    finally:
        retention._delete_messages = delete_messages  # type: ignore[assignment]
        release.set()
        holder.join(10)

    assert held_now.is_set() and errors == [] and len(inserted) == 2
    assert all(h.gone for h in others)
    # Skipped, not waited for: the next pass takes it.
    assert held.kept
    assert result.counts["messages"] == 3
    retention.retention_apply(now=NOW)
    assert held.gone


def test_every_table_referring_to_deleted_rows_is_handled() -> None:
    """A new model pointing at an event, run, step run or message must be handled by
    retention (kept as a reason to keep, or deleted with it): this lists them."""
    referring = {
        model: sorted(
            f"{rel.related_model._meta.label}.{rel.field.name}"
            for rel in model._meta.get_fields(include_hidden=True)
            if rel.auto_created and not rel.concrete
        )
        for model in (Event, Run, StepRun, OutboundMessage, ShortLink)
    }
    assert referring == {
        Event: [
            "workflows.Enrollment.event",
            "workflows.EnrollmentSkip.event",
            "workflows.Run.event",
            "workflows.Run.goal_event",
        ],
        Run: ["workflows.ReplyWait.run", "workflows.StepRun.run"],
        StepRun: ["integrations.OutboundMessage.step_run"],
        OutboundMessage: ["integrations.ShortLink.message"],
        ShortLink: ["integrations.LinkClick.link"],
    }


def test_clinics_without_a_policy_row_take_the_installation_default() -> None:
    org = OrganizationFactory(messaging_policy=None)
    workflow = WorkflowFactory(organization=org)
    assert not MessagingPolicy.objects.filter(organization=org).exists()
    history = _history(workflow, NOW - FLOOR - timedelta(days=1))

    (result,) = retention.retention_apply(now=NOW, organization_id=org.pk)

    assert history.gone and result.days == RETENTION_FLOOR_DAYS
    assert Organization.objects.filter(pk=org.pk).exists()


def test_the_beat_task_applies_retention_and_says_how_many_rows_went(
    workflow: Workflow,
) -> None:
    from integrations.tasks import retention_apply

    _history(workflow, timezone.now() - FLOOR - timedelta(days=1))

    # Called as beat's task would be, in this process: the service does the work.
    assert retention_apply() == 4
