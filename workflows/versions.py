"""A workflow's definition as a document, and its versions.

The document is the builder's own shape (`builder.definition_initial`, without step ids)
with the workflow's name and description: what a version keeps, what an export carries
(`workflows.transfer`) and what a restore or an import saves again. Every save goes through
`workflow_definition_save`, which records the version it made, so the admin's builder, a
restore and an import leave the same history. Runs are untouched: each pinned the
definition it started with (`engine.workflow_definition`).
"""

from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max

from patients.audit import audit_actor_name, audit_actor_user
from workflows import builder
from workflows.catalogue import EVENT_TYPES, EventType
from workflows.custom_events import event_types
from workflows.enrollment import workflow_enrollments_backfill
from workflows.models import Workflow, WorkflowVersion
from workflows.validation import ClinicSenders, ValidationReport

COMMENT_LENGTH = WorkflowVersion._meta.get_field("comment").max_length or 200


class DefinitionInvalid(ValueError):
    """A document that would not save: `lines` say what is wrong, as the admin's form says it."""

    def __init__(self, lines: list[str], report: ValidationReport | None = None) -> None:
        super().__init__("; ".join(lines))
        self.lines = lines
        self.report = report


def workflow_document(workflow: Workflow) -> dict[str, Any]:
    """The saved workflow's definition as a document: name, description and the builder's
    definition (trigger, filter, enrollment, goal, exits, steps) with no database ids."""
    definition = builder.definition_initial(workflow)
    definition["steps"] = [
        {key: value for key, value in step.items() if key != "id"} for step in definition["steps"]
    ]
    return {
        "name": workflow.name,
        "description": workflow.description,
        "definition": definition,
    }


def document_parse(
    document: Mapping[str, Any],
    *,
    senders: ClinicSenders | None,
    events: Mapping[str, EventType] = EVENT_TYPES,
) -> builder.ParsedDefinition:
    """Read and validate a document's definition exactly as the admin's save does (with
    the clinic's approved `senders` and event types `events`). Raises DefinitionInvalid
    with the form's sentences."""
    try:
        parsed = builder.definition_parse(document.get("definition"))
    except builder.DefinitionError as exc:
        raise DefinitionInvalid([f"Definition: {exc}"]) from None
    report = builder.definition_report(parsed, senders=senders, events=events)
    if not report.ok:
        raise DefinitionInvalid(builder.report_lines(report, parsed.steps), report)
    return parsed


@transaction.atomic
def workflow_definition_save(
    *,
    workflow: Workflow,
    steps: list[dict[str, Any]],
    created: bool,
    enrollment_changed: bool,
    comment: str = "",
    restored_from: int | None = None,
) -> WorkflowVersion:
    """Finish saving a workflow whose row was just saved with its parsed definition: make
    its steps these, bump its version (on a change), count its past runs under a changed
    enrollment rule, and record the version. Every save path ends here."""
    # The row lock serialises saves of one workflow: a concurrent save waits here until this
    # one commits, then numbers its version after ours. The number comes from the history,
    # not from the row's `version`: the admin's save just wrote the `version` its form had
    # read, which a concurrent save may have moved on since.
    Workflow.objects.select_for_update().filter(pk=workflow.pk).values_list("pk").get()
    builder.workflow_steps_save(workflow=workflow, steps=steps)
    if not created and enrollment_changed:
        # A rule set on a workflow that already ran counts the runs it made.
        workflow_enrollments_backfill(workflow=workflow)
    last = workflow.versions.aggregate(last=Max("number"))["last"]
    number = 1 if created else max(last or 0, workflow.version) + 1
    # Runs already started keep the definition they pinned; new runs see this version.
    Workflow.objects.filter(pk=workflow.pk).update(version=number)
    workflow.version = number
    user = audit_actor_user()
    return WorkflowVersion.objects.create(
        workflow=workflow,
        number=number,
        document=workflow_document(workflow),
        comment=comment.strip()[:COMMENT_LENGTH],
        restored_from=restored_from,
        created_by=user,
        created_by_repr=audit_actor_name(),
    )


@transaction.atomic
def workflow_document_save(
    *,
    workflow: Workflow,
    document: Mapping[str, Any],
    comment: str = "",
    restored_from: int | None = None,
) -> WorkflowVersion:
    """Save `document` as the workflow's definition (a new workflow when it has no pk;
    set its organization first), validated against its clinic's approved senders as the
    admin's save is. Its `enabled` flag is not touched (a new workflow starts disabled).
    Raises DefinitionInvalid, leaving nothing changed."""
    parsed = document_parse(
        document,
        senders=builder.approved_senders(workflow.organization),
        events=event_types(organization_id=workflow.organization_id),
    )
    created = workflow.pk is None
    before = builder.EnrollmentSettings.of(workflow)
    name = str(document.get("name") or "").strip()
    if name:
        workflow.name = name
    if not workflow.name:
        raise DefinitionInvalid(["Name: give the workflow a name"])
    if "description" in document:
        workflow.description = str(document.get("description") or "")
    workflow.trigger = parsed.trigger
    workflow.filter = parsed.filter
    builder.goal_apply(workflow, parsed.goal)
    parsed.enrollment.apply(workflow)
    try:
        # The definition's fields were validated above; these are the row's own (the name's
        # length, the enrollment rule's choices).
        workflow.full_clean(exclude=["trigger", "goal_event", "filter", "goal_filter", "exits"])
    except ValidationError as exc:
        raise DefinitionInvalid(
            [f"{name}: {' '.join(texts)}" for name, texts in exc.message_dict.items()]
        ) from None
    workflow.save()
    return workflow_definition_save(
        workflow=workflow,
        steps=_step_ids_matched(workflow, parsed.steps, created=created),
        created=created,
        enrollment_changed=parsed.enrollment != before,
        comment=comment,
        restored_from=restored_from,
    )


def _step_ids_matched(
    workflow: Workflow, steps: list[dict[str, Any]], *, created: bool
) -> list[dict[str, Any]]:
    """A document's steps (which carry no ids) matched to the workflow's by position, so a
    restore updates steps in place (the audit trail shows what changed) rather than
    deleting and recreating them all."""
    ids = [] if created else list(workflow.steps.values_list("pk", flat=True))
    return [{**step, "id": ids[i] if i < len(ids) else None} for i, step in enumerate(steps)]


def workflow_version_restore(*, version: WorkflowVersion, comment: str = "") -> WorkflowVersion:
    """Save an earlier version's definition as the workflow's new version. Validated as any
    save is (a sender no longer approved refuses it, with DefinitionInvalid)."""
    workflow = Workflow.objects.select_related("organization").get(pk=version.workflow_id)
    return workflow_document_save(
        workflow=workflow,
        document=version.document,
        comment=comment or f"Restored version {version.number}",
        restored_from=version.number,
    )
