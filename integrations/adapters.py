"""The adapter protocol and registry.

An adapter is a provider (Twilio, an outbound webhook, …) offering named functions, each with
a parameter schema. Python is the source of truth for that schema: the admin, validation and
the builder read it from here. Adding an adapter is one module and one `adapter_register`.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from patients.models import Organization, Patient


@dataclass(frozen=True, slots=True)
class Parameter:
    """One input of an adapter function. The engine renders it against the run's data.

    `kind` says how: "text" is one template (the whole value); "json" is a JSON object whose
    string values are each a template, rendered into a JSON document, so a value can never
    break out of its string (keys, numbers, booleans and null stay as written). `check`, if
    set, vets a literal value at save time; a templated one is the adapter's to check when
    it runs. `choices`, if set, are the only values it takes, with their labels (the
    builder shows a list to pick from)."""

    name: str
    label: str
    help: str = ""
    required: bool = True
    example: str = ""
    kind: Literal["text", "json"] = "text"
    # A save-time check of a value written without {{variables}}: the problem, or "".
    check: Callable[[str], str] | None = None
    choices: tuple[tuple[str, str], ...] = ()


SMS_CLINICAL_DATA_NOTE = "keep it out of text messages (say “your prescription is ready” instead)"


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    label: str
    parameters: tuple[Parameter, ...]
    # SMS is not a private channel: clinical details (medications, test panels) stay out.
    clinical_data_allowed: bool = False
    # What save-time validation says when a clinical variable is used anyway.
    clinical_data_note: str = SMS_CLINICAL_DATA_NOTE
    # Texts a patient: the step's consent purpose and "urgent" (quiet hours) apply at send
    # time (integrations.policy), so the builder offers them.
    messages_patient: bool = True

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)


@dataclass(frozen=True, slots=True)
class StepContext:
    """What an adapter function needs to act for one step of one run."""

    organization: "Organization"
    idempotency_key: str
    inputs: Mapping[str, str]
    purpose: str
    patient: "Patient | None" = None
    step_run_id: int | None = None
    is_test: bool = False
    urgent: bool = False
    # How many times the engine has executed this step, this time included (1 the first time).
    attempt: int = 1
    # Shared by the steps of one batch of runs (workflows.engine.RunBatch): an adapter keeps
    # here what it reads for every step alike (the clinic's integration), to read it once.
    memo: dict[Any, Any] = field(default_factory=dict)
    # Where an adapter may leave writes to the end of that batch (the engine makes them
    # before it records the steps finished); None: no batch, write at once. Only for records
    # a worker dying first may lose: Twilio's acceptance of a message, which reconciliation
    # recovers.
    at_batch_end: list[Callable[[], None]] | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of executing a step: done, skipped, failed, or try again at `retry_at`."""

    status: Literal["succeeded", "skipped", "failed", "retry"]
    result: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    retry_at: datetime | None = None


class Adapter:
    """Base class: subclasses set `name`, `label`, `functions` and implement `execute`."""

    name: str = ""
    label: str = ""
    functions: Mapping[str, Function] = {}

    def execute(self, *, function: str, context: StepContext) -> Outcome:
        """Perform `function` once for this step. Must be safe to call again with the same
        `context.idempotency_key` (a redelivered task, a retry): never act twice."""
        raise NotImplementedError
