"""The workflow engine's records: the event outbox, workflow definitions, and their runs."""

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KT
from django.utils import timezone

from patients.models import ConsentRecord, Organization, TimeStamped
from workflows.catalogue import CUSTOM_PREFIX, event_choices
from workflows.custom_schemas import custom_schema_problems


class Event(models.Model):
    """The outbox: written in the same transaction as the change that caused it."""

    # No index of its own: event_clinic_time starts with it.
    organization = models.ForeignKey(
        Organization, on_delete=models.PROTECT, related_name="events", db_index=False
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    type = models.CharField(max_length=64, db_index=True)
    payload = models.JSONField(default=dict)
    # What the event is about, so a resumed run can re-read the record's current data.
    subject_type = models.CharField(max_length=32, blank=True)
    subject_id = models.CharField(max_length=64, blank=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    dedupe_key = models.CharField(max_length=200, unique=True)
    dispatched_at = models.DateTimeField(null=True, blank=True)
    # When the relay last handed this event to the broker, so a backlog is not re-published
    # every few seconds while it is still queued.
    relayed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(
                fields=["created_at"],
                condition=Q(dispatched_at__isnull=True),
                name="event_undispatched",
            ),
            # A run's send-time check for its workflow's goal or exits: this patient's events
            # of these types recorded since the trigger (workflows.goals.run_ending_recorded).
            models.Index(
                KT("payload__customer__id"), "type", "created_at", name="event_patient_type"
            ),
            # A clinic's events by age: retention (integrations.retention) takes the oldest
            # a batch at a time; without it, each batch read the whole outbox.
            models.Index(fields=["organization", "created_at"], name="event_clinic_time"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.pk}"

    @property
    def customer(self) -> dict[str, Any] | None:
        """The patient the event is about, as its payload recorded them (id, names, phone):
        the admin lists runs by patient without a query per row or a column on the outbox."""
        customer = self.payload.get("customer") if isinstance(self.payload, dict) else None
        return customer if isinstance(customer, dict) else None

    @property
    def patient_name(self) -> str:
        customer = self.customer or {}
        return f"{customer.get('firstName') or ''} {customer.get('lastName') or ''}".strip()


class Workflow(TimeStamped):
    # No index of its own: the (organization, trigger, enabled) index starts with it.
    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="workflows",
        db_index=False,
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    trigger = models.CharField(max_length=64, choices=event_choices, db_index=True)
    filter = models.JSONField(
        default=dict,
        blank=True,
        help_text='Optional MongoDB-style query on the event data, e.g. {"order.status": "shipped"}.',
    )
    enabled = models.BooleanField(default=False)

    # Enrollment: when the trigger fires for a patient, whether this workflow starts a run.
    class Enrollment(models.TextChoices):
        EVERY = "every", "Every time the trigger fires"
        RECORD = "record", "Once per record (e.g. per order)"
        PATIENT = "patient", "Once per patient, ever"
        PERIOD = "period", "At most once per patient per N days"

    enrollment = models.CharField(
        max_length=16, choices=Enrollment.choices, default=Enrollment.EVERY
    )
    enrollment_days = models.PositiveIntegerField(
        "N days", null=True, blank=True, help_text="For “at most once per patient per N days”."
    )
    enrollment_exclusive = models.BooleanField(
        "not while active",
        default=False,
        help_text="Do not enroll a patient who has a run of this workflow in progress.",
    )

    # Goal: an event that means the workflow did its job. Reaching it ends the patient's
    # runs of this workflow still in progress and counts as a conversion within the window.
    class Scope(models.TextChoices):
        PATIENT = "patient", "The same patient"
        RECORD = "record", "The same record"

    goal_event = models.CharField(max_length=64, blank=True, choices=event_choices)
    goal_filter = models.JSONField(default=dict, blank=True)
    goal_scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.PATIENT)
    goal_window_hours = models.PositiveIntegerField(
        default=168, help_text="A goal reached this long after enrollment still counts."
    )
    # Exit conditions: events that end the patient's runs without counting as a conversion,
    # [{"event": "order.cancelled", "filter": {...}, "scope": "record"}, ...].
    exits = models.JSONField(default=list, blank=True)

    # Bumped on every save of the definition; runs pin the version they started with.
    version = models.PositiveIntegerField(default=1, editable=False)

    class Meta:
        ordering = ["name", "id"]
        indexes = [models.Index(fields=["organization", "trigger", "enabled"])]

    def __str__(self) -> str:
        return self.name


class Segment(TimeStamped):
    """A saved filter over a clinic's patients and their records ("has an active subscription
    to product X", "last order more than 90 days ago", "in Florida"), in the workflows' filter
    language over the segment fields (workflows.segments); broadcasts send to one."""

    # No index of its own: segment_name_unique_per_clinic starts with it.
    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="segments",
        db_index=False,
    )
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    filter = models.JSONField(
        default=dict,
        blank=True,
        help_text='MongoDB-style query on the segment fields, e.g. {"customer.provinceCode": "FL"}.',
    )

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="segment_name_unique_per_clinic"
            )
        ]

    def __str__(self) -> str:
        return self.name


# Event.type holds "custom.<name>" in 64 characters.
CUSTOM_NAME_LENGTH = 64 - len(CUSTOM_PREFIX)


class CustomEventType(TimeStamped):
    """An event type a clinic declares for itself (`custom.<name>`), with a JSON Schema for
    its `data`: its systems post events of it (workflows.custom_events), its workflows are
    triggered by it, and its data reference and builder offer its data as variables.

    The name is what workflows and recorded events refer to: it cannot change once saved,
    and a type a workflow uses cannot be deleted (archive it instead)."""

    # No index of its own: one_custom_event_type_per_name starts with it.
    organization = models.ForeignKey(
        Organization,
        on_delete=models.PROTECT,
        related_name="custom_event_types",
        db_index=False,
    )
    name = models.CharField(
        max_length=CUSTOM_NAME_LENGTH,
        validators=[
            RegexValidator(
                r"^[a-z][a-z0-9_]*\Z",
                "Use lowercase letters, digits and underscores, starting with a letter "
                "(e.g. lab_results_ready).",
            )
        ],
        help_text="The event type is custom.<name>, e.g. custom.lab_results_ready. "
        "It cannot be changed later.",
    )
    label = models.CharField(max_length=120, help_text="What people call it: “Lab results ready”.")
    description = models.TextField(blank=True, help_text="When it happens, for the builder.")
    schema = models.JSONField(
        "data schema",
        default=dict,
        blank=True,
        help_text='JSON Schema (draft 2020-12) of the event\'s data, e.g. {"type": "object", '
        '"properties": {"kitId": {"type": "string", "description": "The kit"}}, '
        '"required": ["kitId"]}.',
    )
    enabled = models.BooleanField(
        default=True, help_text="Only enabled types can be posted and chosen as triggers."
    )
    archived = models.BooleanField(
        default=False, help_text="Hidden from the builder and the data reference."
    )

    class Meta:
        ordering = ["organization", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "name"], name="one_custom_event_type_per_name"
            )
        ]

    def __str__(self) -> str:
        return self.type_name

    @property
    def type_name(self) -> str:
        return f"{CUSTOM_PREFIX}{self.name}"

    @property
    def active(self) -> bool:
        return self.enabled and not self.archived

    def workflows_using(self) -> list[Workflow]:
        """The clinic's workflows this type triggers, or ends as their goal or an exit."""
        if self.pk is None:
            return []
        name = self.type_name
        # Exits are a JSON list: read in Python, as `contains` is not in SQLite (make run).
        return [
            workflow
            for workflow in Workflow.objects.filter(organization_id=self.organization_id)
            if name in (workflow.trigger, workflow.goal_event)
            or any(isinstance(e, dict) and e.get("event") == name for e in workflow.exits or [])
        ]

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        used = self.workflows_using()
        if used:
            raise models.ProtectedError(
                f"{self.type_name} is used by {len(used)} workflow(s); archive it instead.",
                set(used),
            )
        return super().delete(*args, **kwargs)

    def clean(self) -> None:
        super().clean()
        problems = custom_schema_problems(self.schema if self.schema != {} else _EMPTY_SCHEMA)
        if problems:
            raise ValidationError({"schema": problems})

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.schema in ({}, None):
            self.schema = dict(_EMPTY_SCHEMA)
        super().save(*args, **kwargs)


# A type declared without a schema takes free-form data, as the webhook's does.
_EMPTY_SCHEMA = {"type": "object", "properties": {}}


class WorkflowVersion(models.Model):
    """A workflow's definition as one save left it (`workflows.versions.workflow_document`):
    who saved it, when, and why. Recorded by every save (the admin's, a restore, an import),
    never edited; restoring one saves its definition again as a new version."""

    # No index of its own: one_version_per_number starts with it.
    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, related_name="versions", db_index=False
    )
    number = models.PositiveIntegerField()
    document = models.JSONField()
    comment = models.CharField(max_length=200, blank=True)
    # The version this one restored, when it was a restore.
    restored_from = models.PositiveIntegerField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Who saved it, as the audit trail names them (a user, "API key …", "system").
    created_by_repr = models.CharField("by", max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="one_version_per_number")
        ]

    def __str__(self) -> str:
        return f"Version {self.number} of workflow {self.workflow_id}"


class Step(TimeStamped):
    class Type(models.TextChoices):
        CONDITION = "condition", "Condition"
        DELAY = "delay", "Delay"
        ADAPTER = "adapter", "Adapter action"
        REPLY = "reply", "Wait for reply"
        SPLIT = "split", "A/B split"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(default=1, help_text="Steps run in this order.")
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.ADAPTER)
    adapter = models.CharField(max_length=32, blank=True, default="twilio")
    function = models.CharField(max_length=64, blank=True, default="sendSMS")
    parameters = models.JSONField(default=dict, blank=True)
    purpose = models.CharField(
        max_length=16,
        choices=ConsentRecord.Purpose.choices,
        default=ConsentRecord.Purpose.TRANSACTIONAL,
        help_text="Which SMS consent the recipient must have given.",
    )
    urgent = models.BooleanField(
        "urgent transactional",
        default=False,
        help_text="Send even during quiet hours (e.g. a same-day appointment change). "
        "Recorded with every message it sends.",
    )

    class Meta:
        ordering = ["workflow", "position", "id"]

    def __str__(self) -> str:
        if self.type == self.Type.ADAPTER:
            return f"{self.position}. {self.adapter} → {self.function}"
        return f"{self.position}. {self.get_type_display()}"

    def definition(self) -> dict[str, Any]:
        """The step as pinned into a run."""
        return {
            "id": self.pk,
            "position": self.position,
            "type": self.type,
            "adapter": self.adapter,
            "function": self.function,
            "parameters": self.parameters,
            "purpose": self.purpose,
            "urgent": self.urgent,
        }


class Run(TimeStamped):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        SKIPPED = "skipped", "Skipped"
        CANCELLED = "cancelled", "Cancelled"
        # Ended early by the workflow's goal or one of its exit conditions (`exit_reason`).
        EXITED = "exited", "Ended early"

    # No index of its own: run_workflow_time starts with it.
    workflow = models.ForeignKey(
        Workflow, on_delete=models.PROTECT, related_name="runs", db_index=False
    )
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="runs")
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # The workflow definition this run started with; later edits never change it.
    definition = models.JSONField(default=dict)
    # 0-based index into definition["steps"] of the next step to run (step number - 1).
    next_index = models.PositiveIntegerField(default=0)
    due_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # When the sweeper last queued this run, so a queued backlog is not queued again and again.
    pushed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    # A live test from the builder: its messages are test messages, for test patients only.
    is_test = models.BooleanField(default=False)
    # The patient the run is for (the event's customer id; "" when the event has none):
    # enrollment rules, goals and analytics look runs up by it.
    patient_key = models.CharField(max_length=64, blank=True)
    # The branch an A/B split step sent this run down (its label), for per-variant figures.
    variant = models.CharField(max_length=80, blank=True)
    # The workflow's goal reached within its window after this run started: a conversion.
    goal_reached_at = models.DateTimeField(null=True, blank=True)
    goal_event = models.ForeignKey(
        Event, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # Why a goal or an exit condition ended the run early (status "exited").
    exit_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "event"], name="one_run_per_workflow_event")
        ]
        indexes = [
            models.Index(
                fields=["status", "due_at"],
                condition=Q(status__in=["pending", "running", "waiting"]),
                name="run_active",
            ),
            # The clinic home's "runs failed in the last 7 days", on every admin visit: only
            # failed runs are in it, and status already breaks HOT updates (run_active).
            models.Index(fields=["finished_at"], condition=Q(status="failed"), name="run_failed"),
            # A patient's runs of a workflow, newest first: enrollment rules and goals.
            models.Index(fields=["workflow", "patient_key", "-created_at"], name="run_patient"),
            # A workflow's runs of a period (analytics): an index-only scan for enrolled,
            # statuses, variants and conversions.
            models.Index(
                fields=["workflow", "created_at"],
                include=["status", "variant", "goal_reached_at", "is_test"],
                name="run_workflow_time",
            ),
        ]

    def __str__(self) -> str:
        # No patient name: a run's repr may reach logs and error reports.
        return f"{self.workflow.name} (run {self.pk})"

    @property
    def title(self) -> str:
        """What the admin calls the run: "Order shipped SMS — Maria Garcia (run 2)"."""
        patient = self.event.patient_name
        return f"{self.workflow.name} — {patient} (run {self.pk})" if patient else str(self)


class EnrollmentSkip(models.Model):
    """A trigger that fired for a workflow but did not start a run, and why (one per
    workflow and event, like runs): the builder, the dry run and analytics count them."""

    class Reason(models.TextChoices):
        RECORD = "record", "Already enrolled for this record"
        PATIENT = "patient", "Already enrolled once"
        PERIOD = "period", "Enrolled within the last N days"
        ACTIVE = "active", "A run of this workflow is in progress"

    # No index of its own: one_skip_per_workflow_event starts with it.
    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, related_name="skips", db_index=False
    )
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=16, choices=Reason.choices)
    # Human detail for the admin ("already texted 2 days ago"); no patient data.
    detail = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "event"], name="one_skip_per_workflow_event"
            )
        ]
        indexes = [models.Index(fields=["workflow", "created_at"], name="skip_workflow_time")]

    def __str__(self) -> str:
        return f"{self.workflow_id}: skipped {self.reason} (event {self.event_id})"


class Enrollment(models.Model):
    """The claim a workflow's enrollment rule is enforced with: one row per workflow and key
    ("patient:<customer id>" or "record:<subject type>:<subject id>"), naming the event whose
    run last enrolled under it. A new enrollment inserts the row, or takes it over only
    where the rule allows enrolling again (`workflows.enrollment`), in one conditional
    upsert: the unique index makes two workers claiming the same key at the same instant
    wait for each other, and the second sees the first's claim.

    The event, not the run: the claim is taken before the batch's runs are inserted (the
    run is found by the workflow and event, unique together)."""

    # No index of its own: one_enrollment_per_key starts with it.
    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, related_name="enrollments", db_index=False
    )
    key = models.CharField(max_length=200)
    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="+")
    enrolled_at = models.DateTimeField()

    class Meta:
        ordering = ["-enrolled_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "key"], name="one_enrollment_per_key")
        ]

    def __str__(self) -> str:
        # The key holds a customer id, not patient data; still, keep it out of reprs.
        return f"Enrollment {self.pk} of workflow {self.workflow_id}"


class StepRun(TimeStamped):
    Status = Run.Status  # a step moves through the same states as its run

    # No index of its own: one_step_run_per_index starts with it.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="step_runs", db_index=False)
    index = models.PositiveIntegerField(help_text="0-based index into the run's pinned steps.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    inputs = models.JSONField(default=dict, blank=True, help_text="Rendered parameters.")
    result = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    skip_reason = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Bumped when an admin retries the run from this step, so the retry gets a fresh
    # idempotency key (a message that failed stays failed; the retry is a new message).
    generation = models.PositiveIntegerField(default=0)
    due_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="one_step_run_per_index")
        ]

    def __str__(self) -> str:
        return f"Step {self.number} of run {self.run_id}"

    @property
    def number(self) -> int:
        return self.index + 1


class ReplyWait(TimeStamped):
    """A run parked at a Wait-for-reply step, as data: the question it waits on an answer
    to, until when, and how it was resolved. The state moves out of "waiting" once, by a
    conditional UPDATE (an answer, the timeout, an opt-out), so a reply and the timeout
    arriving in the same instant resolve it one way only; the run then reads it to branch.

    Replies are routed by (organization, patient phone, clinic sender): the pair the
    question went between, as the reply's From and To."""

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting"
        ANSWERED = "answered", "Answered"
        TIMED_OUT = "timed_out", "No reply in time"
        CANCELLED = "cancelled", "Cancelled"

    # No index of its own: one_reply_wait_per_step starts with it.
    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="reply_waits", db_index=False
    )
    index = models.PositiveIntegerField(help_text="0-based index of the wait step in the run.")
    # The wait step's StepRun.generation: a retried run waits afresh.
    generation = models.PositiveIntegerField(default=0)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="reply_waits"
    )
    phone = models.CharField("patient phone", max_length=32)
    sender = models.CharField("clinic sender", max_length=64)
    # The question's message (its id in the messaging app, which the engine does not import).
    question = models.CharField(max_length=64, blank=True)
    asked_at = models.DateTimeField()
    deadline = models.DateTimeField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.WAITING)
    # An unmatched first reply was answered with the clarifying text (at most once).
    reasked = models.BooleanField(default=False)
    reask_reply = models.TextField(blank=True)
    reask_inbound = models.CharField(max_length=64, blank=True)
    answer = models.TextField(blank=True)
    # The inbound message that resolved it (the provider's id): one message answers one wait.
    inbound = models.CharField(max_length=64, null=True, blank=True, unique=True)
    branch = models.CharField(max_length=80, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-asked_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "index", "generation"], name="one_reply_wait_per_step"
            )
        ]
        indexes = [
            # Routing a reply: this clinic's waiting questions to this number from this sender.
            models.Index(
                fields=["organization", "phone", "sender", "-asked_at"],
                condition=Q(state="waiting"),
                name="reply_wait_waiting",
            )
        ]

    def __str__(self) -> str:
        # No phone or answer: a repr may reach logs.
        return f"Wait at step {self.index + 1} of run {self.run_id} ({self.state})"
