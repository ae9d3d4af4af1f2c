"""The adapter protocol and registry.

An adapter is a provider (Twilio, an outbound webhook, …) offering named functions, each with
a parameter schema. Python is the source of truth for that schema: the admin, validation and
the builder read it from here. Adding an adapter is one module and one `adapter_register`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from patients.models import Organization, Patient


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    label: str
    help: str = ""
    required: bool = True
    example: str = ""


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    label: str
    parameters: tuple[Parameter, ...]
    # SMS is not a private channel: clinical details (medications, test panels) stay out.
    clinical_data_allowed: bool = False


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
