"""Workflows that travel: a clinic's workflows exported as one JSON document, and that
document imported into another clinic.

The document carries each workflow as `versions.workflow_document` makes it (the builder's
definition, no ids) and, for the person importing it, the references the workflows need
(adapters, the literal senders they send from, custom event types). The references are
informational only: the import plan works them out again from the workflows themselves,
so a forged or hand-edited "references" cannot hide a sender that would need mapping.

An import is planned first (`import_plan`: no writes) and saved only when every workflow
of the document would save, in one transaction (`workflows_import`): a partial import
would leave the clinic with half of a set of workflows made to work together, and a second
attempt would find the first half's names taken and import them again as "(imported)".
Every imported workflow is disabled, whatever it was when exported: it sends nothing
until a clinic admin has read it and enabled it.

No provider is named here: senders are found through the adapter registry
(`Function.sender_parameter`), so an email step's "from address" maps as an SMS number does.
"""

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from patients.inputs import JSONInputError, json_parse, json_problem
from patients.models import Organization, Patient
from workflows import builder
from workflows.adapters import REGISTRY
from workflows.custom_events import event_types
from workflows.models import Workflow
from workflows.validation import ClinicSenders
from workflows.versions import (
    DefinitionInvalid,
    document_parse,
    workflow_document,
    workflow_document_save,
)

FORMAT = "careflow.workflows"
SCHEMA_VERSION = 1
# An export of a clinic's workflows is a few kilobytes each; a file many times larger than
# any clinic's workflows is refused before it is parsed.
MAX_DOCUMENT_BYTES = 2_000_000
MAX_WORKFLOWS = 200
# Every workflow's definition is bounded by `builder.definition_parse` (20,000 values); the
# document as a whole by its size in bytes and this.
MAX_DOCUMENT_VALUES = 200_000
NAME_LENGTH = Workflow._meta.get_field("name").max_length or 200
# The source clinic's name as the version comment quotes it.
CLINIC_NAME_LENGTH = 80
CUSTOM_EVENT_PREFIX = "custom."
NO_TEST_PATIENTS_NOTE = (
    "A workflow stores no patient: dry-run it in the clinic it is imported into, with one "
    "of that clinic's test patients."
)


class TransferRefused(ValueError):
    """A document that is not an export careflow can import (not JSON, another format or
    schema version, wrong shapes); the message says what, for the person importing it."""


# --- export -----------------------------------------------------------------------------


def _adapter_steps(definition: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    steps = definition.get("steps")
    for step in steps if isinstance(steps, list) else ():
        if isinstance(step, Mapping) and step.get("type") == "adapter":
            yield step


def _literal_sender(step: Mapping[str, Any]) -> tuple[str, str] | None:
    """The step's adapter and its literal sender ("from"), if its function names one; a
    {{variable}} is no clinic's literal value and maps itself."""
    adapter = REGISTRY.get(str(step.get("adapter") or ""))
    function = adapter.functions.get(str(step.get("function") or "")) if adapter else None
    if adapter is None or function is None or not function.sender_parameter:
        return None
    parameters = step.get("parameters")
    value = parameters.get(function.sender_parameter) if isinstance(parameters, Mapping) else None
    literal = str(value or "").strip()
    if not literal or "{{" in literal:
        return None
    return adapter.name, literal


def _custom_events(definition: Mapping[str, Any]) -> list[str]:
    """The custom event types the definition starts on or ends on (trigger, goal, exits)."""
    goal = definition.get("goal")
    exits = definition.get("exits")
    events = [definition.get("trigger"), goal.get("event") if isinstance(goal, Mapping) else None]
    events += (
        [item.get("event") for item in exits if isinstance(item, Mapping)]
        if isinstance(exits, list)
        else []
    )
    found = [e for e in events if isinstance(e, str) and e.startswith(CUSTOM_EVENT_PREFIX)]
    return list(dict.fromkeys(found))


def _references(entries: list[dict[str, Any]]) -> dict[str, Any]:
    adapters: dict[str, dict[str, Any]] = {}
    custom: dict[str, list[str]] = {}
    for entry in entries:
        definition = entry["definition"]
        for step in _adapter_steps(definition):
            name = str(step.get("adapter") or "")
            adapter = REGISTRY.get(name)
            found = adapters.setdefault(
                name, {"label": adapter.label if adapter else name, "senders": [], "workflows": []}
            )
            if entry["name"] not in found["workflows"]:
                found["workflows"].append(entry["name"])
            sender = _literal_sender(step)
            if sender is not None and sender[1] not in found["senders"]:
                found["senders"].append(sender[1])
        for event in _custom_events(definition):
            names = custom.setdefault(event, [])
            if entry["name"] not in names:
                names.append(entry["name"])
    return {
        "adapters": adapters,
        "customEventTypes": {event: {"workflows": names} for event, names in custom.items()},
        "testPatients": NO_TEST_PATIENTS_NOTE,
    }


def workflows_export(
    *, organization: Organization, workflows: Iterable[Workflow], now: datetime | None = None
) -> dict[str, Any]:
    """The export document of these workflows of `organization`: each workflow's document
    with whether it was enabled, and what they need from the clinic importing them. No
    ids, no secrets, no patient data. Raises ValueError for another clinic's workflow."""
    entries = []
    for workflow in workflows:
        if workflow.organization_id != organization.pk:
            raise ValueError(f"workflow {workflow.uuid} is not one of {organization}'s")
        entries.append({**workflow_document(workflow), "enabledAtExport": workflow.enabled})
    return {
        "format": FORMAT,
        "schemaVersion": SCHEMA_VERSION,
        "exportedAt": (now or timezone.now()).replace(microsecond=0).isoformat(),
        "source": {"clinic": organization.name},
        "workflows": entries,
        "references": _references(entries),
    }


def export_json(document: Mapping[str, Any]) -> str:
    """The document as a file: keys sorted, so two exports of the same workflows compare
    line by line; indented for reading; characters kept as typed."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export_filename(*, organization: Organization, now: datetime | None = None) -> str:
    day = timezone.localdate(now) if now else timezone.localdate()
    return f"careflow-workflows-{organization.slug}-{day.isoformat()}.json"


# --- reading a document ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportDocument:
    """An export read and checked for shape (not yet against a clinic)."""

    source_clinic: str
    exported_at: datetime
    workflows: list[dict[str, Any]]


def document_read(raw: str | bytes | Mapping[str, Any]) -> ExportDocument:
    """Read an export (its text, or already decoded); TransferRefused says why it is not
    one careflow can import. Checks only its shape: `import_plan` checks its workflows."""
    if isinstance(raw, (str, bytes)):
        size = len(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
        if size > MAX_DOCUMENT_BYTES:
            raise TransferRefused(
                f"The file is {size:,} bytes; an export is at most {MAX_DOCUMENT_BYTES:,} "
                "bytes. Export fewer workflows at a time."
            )
        if not raw.strip():
            raise TransferRefused("The file is empty: choose or paste a workflows export.")
        try:
            decoded = json_parse(raw, max_values=MAX_DOCUMENT_VALUES)
        except JSONInputError as exc:
            raise TransferRefused(f"The file {exc}.") from None
    else:
        problem = json_problem(raw, max_values=MAX_DOCUMENT_VALUES)
        if problem:
            raise TransferRefused(f"The document {problem}.")
        decoded = raw
    if not isinstance(decoded, Mapping):
        raise TransferRefused("This is not a workflows export: it must be a JSON object.")
    if decoded.get("format") != FORMAT:
        raise TransferRefused(
            f"This is not a careflow workflows export: its “format” must be “{FORMAT}”."
        )
    version = decoded.get("schemaVersion")
    if type(version) is not int or version != SCHEMA_VERSION:
        shown = json.dumps(version)[:40]
        raise TransferRefused(
            f"This export's schemaVersion is {shown}; this careflow reads version "
            f"{SCHEMA_VERSION} only. Export it again from a careflow of this version."
        )
    source = decoded.get("source")
    clinic = source.get("clinic") if isinstance(source, Mapping) else None
    if not isinstance(clinic, str):
        raise TransferRefused("The export does not say which clinic it came from (source.clinic).")
    exported_at = _exported_at(decoded.get("exportedAt"))
    workflows = decoded.get("workflows")
    if not isinstance(workflows, list) or not workflows:
        raise TransferRefused("The export has no workflows (“workflows” must be a list of them).")
    if len(workflows) > MAX_WORKFLOWS:
        raise TransferRefused(
            f"The export has {len(workflows)} workflows; import at most {MAX_WORKFLOWS} at a time."
        )
    return ExportDocument(
        source_clinic=" ".join(clinic.split())[:CLINIC_NAME_LENGTH] or "an unnamed clinic",
        exported_at=exported_at,
        workflows=[_workflow_entry(index, entry) for index, entry in enumerate(workflows)],
    )


def _exported_at(value: Any) -> datetime:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise TransferRefused("The export's “exportedAt” is not a date and time.")
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


def _workflow_entry(index: int, entry: Any) -> dict[str, Any]:
    where = f"Workflow {index + 1} of the export"
    if not isinstance(entry, Mapping):
        raise TransferRefused(f"{where} is not an object.")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TransferRefused(f"{where} has no name (“name” must be text).")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise TransferRefused(f"{where} (“{name.strip()}”): “description” must be text.")
    if not isinstance(entry.get("definition"), Mapping):
        raise TransferRefused(f"{where} (“{name.strip()}”): “definition” must be an object.")
    enabled = entry.get("enabledAtExport", False)
    if not isinstance(enabled, bool):
        raise TransferRefused(
            f"{where} (“{name.strip()}”): “enabledAtExport” must be true or false."
        )
    return {
        "name": " ".join(name.split()),
        "description": description,
        "definition": dict(entry["definition"]),
        "enabledAtExport": enabled,
    }


# --- planning an import ---------------------------------------------------------------------

# {adapter name: {sender in the export: sender of the target clinic}}
SenderMapping = Mapping[str, Mapping[str, str]]


@dataclass(frozen=True, slots=True)
class SenderNeed:
    """A literal sender of the export (one adapter's) and what it becomes in the target:
    itself when the target has it approved (`automatic`), what the mapping chose, or ""
    while it must still be mapped to one of `choices`."""

    adapter: str
    label: str
    value: str
    target: str
    automatic: bool
    choices: tuple[str, ...]
    # Why the mapping given for it cannot be used, if it cannot.
    problem: str = ""

    @property
    def resolved(self) -> bool:
        return bool(self.target) and not self.problem


@dataclass
class WorkflowPlan:
    """One workflow of the document as it would be imported."""

    name: str
    import_name: str
    description: str
    enabled_at_export: bool
    document: dict[str, Any]
    senders: list[SenderNeed] = field(default_factory=list)
    missing_integrations: list[str] = field(default_factory=list)
    custom_event_types: list[str] = field(default_factory=list)
    # Validation of the definition with the mapping applied, as the admin's save says it.
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.problems
            and not self.missing_integrations
            and all(need.resolved for need in self.senders)
        )

    @property
    def renamed(self) -> bool:
        return self.import_name != self.name


@dataclass
class ImportPlan:
    """What importing the document into `organization` would do, and what stands in its
    way: `ok` when every workflow would be imported."""

    organization: Organization
    source_clinic: str
    exported_at: datetime
    workflows: list[WorkflowPlan]
    test_patients: list[str]

    @property
    def ok(self) -> bool:
        return all(plan.ok for plan in self.workflows)

    @property
    def comment(self) -> str:
        return f"Imported from {self.source_clinic} export of {self.exported_at.date().isoformat()}"

    def unmapped(self) -> list[SenderNeed]:
        """The senders still to map (or mapped to one the target does not have), each once,
        in a stable order: the admin's page numbers its choices by this order."""
        found: dict[tuple[str, str], SenderNeed] = {}
        for plan in self.workflows:
            for need in plan.senders:
                if not need.automatic:
                    found.setdefault((need.adapter, need.value), need)
        return [found[key] for key in sorted(found)]

    def lines(self) -> list[str]:
        """The report as sentences (the management command prints them)."""
        lines = [
            f"Import into {self.organization} from {self.source_clinic}'s export of "
            f"{self.exported_at.date().isoformat()}: {len(self.workflows)} workflow(s)."
        ]
        for plan in self.workflows:
            state = "ready" if plan.ok else "NOT READY"
            title = f"“{plan.name}”"
            if plan.renamed:
                title += f" → imported as “{plan.import_name}” (the name is taken)"
            lines.append(f"- {title}: {state}")
            for need in plan.senders:
                if need.automatic:
                    lines.append(f"    {need.label} sender {need.value}: approved here too, kept")
                elif need.resolved:
                    lines.append(f"    {need.label} sender {need.value}: mapped to {need.target}")
                else:
                    lines.append(f"    {need.label} sender {need.value}: {need.problem}")
            lines += [f"    Missing integration: {text}" for text in plan.missing_integrations]
            lines += [
                f"    Needs the custom event type {name}, which this clinic has not declared"
                for name in plan.custom_event_types
            ]
            lines += [f"    {text}" for text in plan.problems]
        if self.test_patients:
            lines.append("Test patients for a dry run here: " + ", ".join(self.test_patients))
        else:
            lines.append(
                f"{self.organization} has no test patients: add one (a patient marked as a "
                "test patient) to dry-run the imported workflows."
            )
        return lines


def _unique_names(wanted: list[str], taken: set[str]) -> list[str]:
    """Each wanted name, or "<name> (imported)", "<name> (imported 2)"… when the clinic or an
    earlier workflow of the same import has it already."""
    names = []
    used = set(taken)
    for name in wanted:
        candidate, number = name, 1
        while candidate in used:
            suffix = " (imported)" if number == 1 else f" (imported {number})"
            candidate = name[: NAME_LENGTH - len(suffix)].rstrip() + suffix
            number += 1
        used.add(candidate)
        names.append(candidate)
    return names


def _sender_needs(
    definition: Mapping[str, Any], *, senders: ClinicSenders, mapping: SenderMapping
) -> list[SenderNeed]:
    needs: dict[tuple[str, str], SenderNeed] = {}
    for step in _adapter_steps(definition):
        found = _literal_sender(step)
        if found is None or found in needs:
            continue
        adapter_name, value = found
        approved = senders.get(adapter_name)
        choices = approved.numbers if approved is not None else ()
        label = REGISTRY[adapter_name].label
        noun = _sender_noun(adapter_name)
        if value in choices:
            needs[found] = SenderNeed(adapter_name, label, value, value, True, choices)
            continue
        chosen = str(mapping.get(adapter_name, {}).get(value) or "").strip()
        problem = ""
        if not chosen:
            problem = (
                f"not {noun} here; map it to one of {', '.join(choices)}"
                if choices
                else f"not {noun} here, and this clinic has none to map it to yet"
            )
        elif chosen not in choices:
            problem = f"{chosen} is not {noun} of this clinic" + (
                f"; choose {' or '.join(choices)}" if choices else ""
            )
        needs[found] = SenderNeed(adapter_name, label, value, chosen, False, choices, problem)
    return list(needs.values())


def _sender_noun(adapter_name: str) -> str:
    adapter = REGISTRY[adapter_name]
    for function in adapter.functions.values():
        if function.sender_parameter:
            return function.sender_noun.one
    return "an approved sender"


def _mapped(definition: Mapping[str, Any], needs: list[SenderNeed]) -> dict[str, Any]:
    """The definition with each mapped literal sender replaced by its target."""
    targets = {(n.adapter, n.value): n.target for n in needs if n.resolved}
    steps = []
    for step in definition.get("steps") or []:
        found = _literal_sender(step) if isinstance(step, Mapping) else None
        if found is not None and found in targets:
            function = REGISTRY[found[0]].functions[str(step.get("function"))]
            parameters = {**step["parameters"], function.sender_parameter: targets[found]}
            step = {**step, "parameters": parameters}
        steps.append(step)
    return (
        {**definition, "steps": steps}
        if isinstance(definition.get("steps"), list)
        else dict(definition)
    )


def _missing_integrations(definition: Mapping[str, Any], organization: Organization) -> list[str]:
    problems: dict[str, str] = {}
    for step in _adapter_steps(definition):
        name = str(step.get("adapter") or "")
        if name in problems:
            continue
        adapter = REGISTRY.get(name)
        if adapter is None:
            # A forged or newer export: validation says only "choose an adapter".
            problems[name] = f"this careflow has no adapter named “{name}”"
            continue
        problem = adapter.setup_problem(organization)
        if problem:
            problems[name] = f"{adapter.label}: {problem}"
    return list(problems.values())


def _with_unresolved(senders: ClinicSenders, needs: list[SenderNeed]) -> ClinicSenders:
    """The clinic's senders, plus those still to map: each is reported once, by its own line
    in the plan, not again by validation. The import itself validates with the clinic's."""
    extra: dict[str, tuple[str, ...]] = {}
    for need in needs:
        if not need.resolved:
            extra[need.adapter] = (*extra.get(need.adapter, ()), need.value)
    return {
        name: replace(approved, numbers=approved.numbers + extra.get(name, ()))
        for name, approved in senders.items()
    }


def import_plan(
    *,
    document: ExportDocument,
    organization: Organization,
    mapping: SenderMapping | None = None,
) -> ImportPlan:
    """What importing `document` into `organization` would do, with no writes: per workflow,
    its name there, each literal sender kept (approved there too) or mapped (by `mapping`)
    or still to map, the integrations the clinic lacks, the custom event types it needs,
    and the validation of its definition with the mapping applied, exactly as a save."""
    mapping = mapping or {}
    senders = builder.approved_senders(organization)
    # The target clinic's event types: a custom trigger validates against its declaration.
    events = event_types(organization_id=organization.pk)
    taken = set(Workflow.objects.filter(organization=organization).values_list("name", flat=True))
    names = _unique_names([entry["name"][:NAME_LENGTH] for entry in document.workflows], taken)
    plans = []
    for entry, import_name in zip(document.workflows, names, strict=True):
        definition = entry["definition"]
        needs = _sender_needs(definition, senders=senders, mapping=mapping)
        mapped = {
            "name": import_name,
            "description": entry["description"],
            "definition": _mapped(definition, needs),
        }
        plan = WorkflowPlan(
            name=entry["name"],
            import_name=import_name,
            description=entry["description"],
            enabled_at_export=entry["enabledAtExport"],
            document=mapped,
            senders=needs,
            missing_integrations=_missing_integrations(definition, organization),
            custom_event_types=[name for name in _custom_events(definition) if name not in events],
        )
        try:
            document_parse(mapped, senders=_with_unresolved(senders, needs), events=events)
        except DefinitionInvalid as exc:
            plan.problems = exc.lines
        plans.append(plan)
    test_patients = Patient.objects.filter(organization=organization, is_test=True).order_by(
        "last_name", "first_name", "pk"
    )
    return ImportPlan(
        organization=organization,
        source_clinic=document.source_clinic,
        exported_at=document.exported_at,
        workflows=plans,
        test_patients=[str(patient) for patient in test_patients[:20]],
    )


class ImportUnresolved(ValueError):
    """The import was refused, nothing saved: `plan` says what must be resolved first."""

    def __init__(self, plan: ImportPlan) -> None:
        waiting = [p.name for p in plan.workflows if not p.ok]
        super().__init__(
            f"Nothing was imported: {len(waiting)} workflow(s) are not ready "
            f"({', '.join(waiting)}); see the report."
        )
        self.plan = plan


@transaction.atomic
def workflows_import(
    *,
    document: ExportDocument,
    organization: Organization,
    mapping: SenderMapping | None = None,
) -> list[Workflow]:
    """Import every workflow of `document` into `organization`, disabled, each with its first
    version commented "Imported from <clinic> export of <date>"; all of them or none. Raises
    ImportUnresolved (nothing saved) unless the plan, made again here, is ready."""
    # Two imports into one clinic at once would both find "<name> (imported)" free: the
    # clinic's row is the lock that makes them take turns.
    organization = Organization.objects.select_for_update().get(pk=organization.pk)
    plan = import_plan(document=document, organization=organization, mapping=mapping)
    if not plan.ok:
        raise ImportUnresolved(plan)
    created = []
    for item in plan.workflows:
        workflow = Workflow(organization=organization, enabled=False)
        # Validated again by the save itself: the plan and the save cannot disagree.
        workflow_document_save(workflow=workflow, document=item.document, comment=plan.comment)
        created.append(workflow)
    return created


def mapping_parse(pairs: Iterable[str], *, document: ExportDocument) -> dict[str, dict[str, str]]:
    """`OLD=NEW` pairs (the command's --map-sender) as a mapping: OLD is mapped to NEW for
    every adapter whose steps send from OLD. ValueError for a pair that is not OLD=NEW."""
    mapping: dict[str, dict[str, str]] = {}
    used: dict[str, set[str]] = {}
    for entry in document.workflows:
        for step in _adapter_steps(entry["definition"]):
            found = _literal_sender(step)
            if found is not None:
                used.setdefault(found[1], set()).add(found[0])
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise ValueError(
                f"--map-sender {pair!r}: write it as OLD=NEW, e.g. +15005550006=+15551234567"
            )
        if old.strip() not in used:
            raise ValueError(
                f"--map-sender {pair!r}: no workflow of the export sends from {old.strip()}"
            )
        for adapter in used[old.strip()]:
            mapping.setdefault(adapter, {})[old.strip()] = new.strip()
    return mapping


def organization_named(identifier: str) -> Organization:
    """The clinic a command names: by its uuid, or by its exact name. LookupError says why
    there is none (or several of that name)."""
    text = identifier.strip()
    try:
        return Organization.objects.get(uuid=uuid.UUID(text))
    except (ValueError, Organization.DoesNotExist):
        pass
    found = list(Organization.objects.filter(name=text)[:2])
    if len(found) == 1:
        return found[0]
    if found:
        raise LookupError(f"several clinics are named {text!r}: name it by its uuid")
    raise LookupError(f"no clinic has the uuid or the exact name {text!r}")
