"""The adapter protocol and registry: the engine's side of the provider boundary.

An adapter is a provider (Twilio, an outbound webhook, …) offering named functions, each with
a parameter schema. Python is the source of truth for that schema: the admin, validation and
the builder read it from here. The engine knows adapters only through this module: each
provider's folder implements `Adapter` and its hooks, and `integrations.providers` registers
them (one `adapter_register` line each) when the apps are ready, so nothing in `workflows`
imports a provider.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from patients.models import Organization, Patient
    from workflows.models import Run


@dataclass(frozen=True, slots=True)
class Parameter:
    """One input of an adapter function. The engine renders it against the run's data.

    `kind` says how: "text" is one template (the whole value); "json" is a JSON object whose
    string values are each a template, rendered into a JSON document, so a value can never
    break out of its string (keys, numbers, booleans and null stay as written); "html" is
    one template of HTML whose filled-in values are HTML-escaped, so the run's data is
    shown as text and can never add markup (the markup the admin wrote is kept). `check`, if
    set, vets a literal value at save time; a templated one is the adapter's to check when
    it runs. `choices`, if set, are the only values it takes, with their labels (the
    builder shows a list to pick from). `multiline`: written over several lines (the
    builder gives it a text box with room). `translatable`: what the patient reads, so a
    step may have a variant of it per language (workflows.variants)."""

    name: str
    label: str
    help: str = ""
    required: bool = True
    example: str = ""
    kind: Literal["text", "json", "html"] = "text"
    # A save-time check of a value written without {{variables}}: the problem, or "".
    check: Callable[[str], str] | None = None
    choices: tuple[tuple[str, str], ...] = ()
    multiline: bool = False
    translatable: bool = False


@dataclass(frozen=True, slots=True)
class SenderNoun:
    """How the builder and save-time validation name a function's senders (a clinic's
    approved numbers, its verified addresses, …): "one" (with its article) and "many" in
    sentences, the rest in the builder's list of them."""

    one: str = "an approved sender"
    many: str = "approved senders"
    choose: str = "Choose a sender…"
    none: str = "No approved senders yet"
    unlisted: str = "(not an approved sender)"


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
    # The parameter naming the clinic's own sender ("from"): a literal value must be one of
    # `Adapter.senders`, and the builder offers those to pick from. "": none.
    sender_parameter: str = ""
    # How those senders are named.
    sender_noun: SenderNoun = SenderNoun()
    # The parameter the builder previews as the patient will get it (`Adapter.preview`).
    preview_parameter: str = ""
    # The channel consent and caps are kept by ("sms", "email"); "" for no patient channel.
    channel: str = ""
    # The patient can answer what it sends, so a Wait-for-reply step may follow it; the
    # adapter's `conversation` hook says who the question went to and from.
    conversation: bool = False

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
    # The run's workflow and the step's 0-based index: a message keeps them, so per-workflow
    # analytics count a million messages from one index without joining runs.
    workflow_id: int | None = None
    step_index: int | None = None
    is_test: bool = False
    urgent: bool = False
    # The language the inputs were rendered in (a variant's, or the clinic's fallback).
    language: str = ""
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


@dataclass(frozen=True, slots=True)
class Conversation:
    """Where a step's question went, so that the patient's reply can be routed back to the
    run waiting for it: the patient's address (the reply's sender), the clinic's sender (the
    reply's recipient) and the question message's reference (for the conversation view)."""

    patient: str
    sender: str
    question: str = ""


@dataclass(frozen=True, slots=True)
class DryRunResult:
    """What an adapter step would do now, with no side effect: `outcome` is "send", "defer",
    "skip" or "error"; `preview` what would go out (the dry-run page shows it), `decision`
    the send-time decision as recorded with a message, `checks` that decision's checks in
    the policy's order with those never reached marked "not checked"."""

    outcome: Literal["send", "defer", "skip", "error"]
    detail: str
    preview: dict[str, Any] | None = None
    decision: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)


class Adapter:
    """Base class: subclasses set `name`, `label`, `functions` and implement `execute`; the
    other hooks default to an adapter with nothing to set up, preview or explain."""

    name: str = ""
    label: str = ""
    functions: Mapping[str, Function] = {}

    def execute(self, *, function: str, context: StepContext) -> Outcome:
        """Perform `function` once for this step. Must be safe to call again with the same
        `context.idempotency_key` (a redelivered task, a retry): never act twice."""
        raise NotImplementedError

    def message_fields(self, function: str, *, context: StepContext) -> "dict[str, Any] | Outcome":
        """For a function that messages a patient: the message `function` makes from
        `context` (its rendered inputs), as the fields of `integrations.sending.message_build`
        but the context's own (integration, channel, to, from_number, body, …), or the Outcome
        saying why no message can be made. `execute` sends what it returns; a broadcast makes
        its messages with it in bulk."""
        raise NotImplementedError

    def setup_problem(self, organization: "Organization") -> str:
        """Why this clinic cannot use the adapter yet (no integration set up), or ""."""
        return ""

    def senders(self, organization_ids: Iterable[int] | None) -> dict[int, list[str]]:
        """Each clinic's approved senders (of these clinics; None: of every clinic), in the
        order support staff entered them, for functions with a `sender_parameter`."""
        return {}

    def preview(self, function: str, text: str) -> dict[str, Any]:
        """The builder's preview of the rendered `preview_parameter`: "text", and what the
        builder shows with it (counts, "warnings": a list of sentences)."""
        return {"text": text, "warnings": []}

    def preview_for(
        self,
        function: str,
        text: str,
        *,
        organization: "Organization | None",
        inputs: Mapping[str, str],
        language: str = "",
    ) -> dict[str, Any]:
        """`preview` as `organization`'s rules would send it (they may add to the message, in
        `language`: a variant's, "" for the step's own text), with the step's other parameters
        (`inputs`, rendered). An adapter whose preview depends on none of them need not
        override it."""
        return self.preview(function, text)

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
        """What executing `function` with these rendered inputs would do at `clock`."""
        return DryRunResult("send", "would call the adapter")

    def error_explanation(self, code: str) -> str:
        """A provider's error code in words a clinic admin can act on, or ""."""
        return ""

    def conversation(
        self, function: str, *, inputs: Mapping[str, str], result: Mapping[str, Any]
    ) -> Conversation | None:
        """For a `Function.conversation` step that sent its message (its rendered `inputs`,
        its `result`): who the question went to and from. None: nothing to answer."""
        return None


REGISTRY: dict[str, Adapter] = {}


def adapter_register(adapter: Adapter) -> Adapter:
    REGISTRY[adapter.name] = adapter
    return adapter


def step_asks(step: Mapping[str, Any]) -> bool:
    """Whether the patient can answer what this step sends (a Wait for reply may follow)."""
    adapter = REGISTRY.get(str(step.get("adapter") or ""))
    function = adapter.functions.get(str(step.get("function") or "")) if adapter else None
    return step.get("type") == "adapter" and function is not None and function.conversation


def adapter_get(name: str) -> Adapter:
    try:
        return REGISTRY[name]
    except KeyError:
        raise LookupError(f"no adapter named {name!r}") from None


# The messaging seam: the messages each step of a run produced, as the run's page shows them
# ({step run id: [{"message", "explanation", "checks", "decided", ...}]}). The messaging app
# registers it when it is ready; the engine does not know its models.
StepMessages = Callable[["Run"], dict[int, list[dict[str, Any]]]]
_step_messages: list[StepMessages] = []


def step_messages_register(function: StepMessages) -> None:
    _step_messages[:] = [function]


def step_messages(run: "Run") -> dict[int, list[dict[str, Any]]]:
    """The messages of `run` by step run; {} when no messaging app is installed."""
    return _step_messages[0](run) if _step_messages else {}
