"""Stand-ins for the agreed provider-boundary interfaces (issue 15) while they are written on
other branches; the merge deletes this module and points its importers at the real ones:
`workflows.adapters` (Parameter, Function, StepContext, Outcome, Adapter, DryRunResult) and
`integrations.messaging` (Accepted, Refused, Ambiguous, Found, Transport).
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from integrations.adapters import Adapter as _Adapter
from integrations.adapters import Outcome, Parameter, StepContext

if TYPE_CHECKING:
    from integrations.models import OutboundMessage
    from patients.models import Organization, Patient

__all__ = [
    "Accepted",
    "Adapter",
    "Ambiguous",
    "DryRunResult",
    "Found",
    "Function",
    "Outcome",
    "Parameter",
    "Refused",
    "StepContext",
    "Transport",
]


@dataclass(frozen=True, slots=True)
class Function:
    name: str
    label: str
    parameters: tuple[Parameter, ...]
    clinical_data_allowed: bool = False
    clinical_data_note: str = ""
    messages_patient: bool = True
    sender_parameter: str = ""
    preview_parameter: str = ""
    channel: str = ""

    def parameter(self, name: str) -> Parameter | None:
        return next((p for p in self.parameters if p.name == name), None)


@dataclass(frozen=True)
class DryRunResult:
    outcome: str
    detail: str
    preview: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None


class Adapter(_Adapter):
    functions: Mapping[str, Function] = {}  # type: ignore[assignment]

    def setup_problem(self, organization: "Organization") -> str:
        return ""

    def senders(self, organization_ids: Iterable[int] | None) -> dict[int, list[str]]:
        return {}

    def preview(self, function: str, text: str) -> dict[str, Any]:
        return {}

    def dry_run(
        self,
        function: str,
        *,
        organization: "Organization",
        patient: "Patient",
        inputs: Mapping[str, str],
        purpose: str,
        urgent: bool,
        clock: datetime,
    ) -> DryRunResult:
        return DryRunResult("send", "would call the adapter")

    def error_explanation(self, code: str) -> str:
        return ""


@dataclass(frozen=True)
class Accepted:
    provider_id: str
    provider_status: str


class Refused(Exception):
    def __init__(
        self, code: str, message: str, *, retryable: bool = False, opted_out: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.opted_out = opted_out


class Ambiguous(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Found:
    provider_id: str
    provider_status: str
    error_code: str = ""
    error_message: str = ""


class Transport:
    channel: str = ""
    can_lookup: bool = True
    status_map: Mapping[str, str] = {}
    status_rank: Mapping[str, int] = {}

    def send(self, message: "OutboundMessage") -> Accepted:
        raise NotImplementedError

    def lookup(self, message: "OutboundMessage", *, since: datetime) -> Found | None:
        raise NotImplementedError

    def throttle(self, message: "OutboundMessage") -> tuple[str, float] | None:
        return None

    def units(self, message: "OutboundMessage") -> int:
        return 1

    def explain_error(self, code: str) -> str:
        return ""
