"""workflows.adapters: the engine's side of the provider boundary. A registry the providers
fill, hooks whose defaults are an adapter with nothing to set up, and the messaging seam."""

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.factories import OrganizationFactory, PatientFactory
from workflows import adapters
from workflows.adapters import (
    REGISTRY,
    Adapter,
    DryRunResult,
    Function,
    adapter_get,
    adapter_register,
    step_messages,
    step_messages_register,
)


class Plain(Adapter):
    name = "plain-test"
    label = "Plain"
    functions = {"noop": Function(name="noop", label="No-op", parameters=())}


@pytest.fixture
def registered() -> Iterator[Plain]:
    adapter = adapter_register(Plain())
    yield adapter
    REGISTRY.pop(adapter.name, None)


def test_the_providers_registered_themselves_when_the_apps_were_ready() -> None:
    assert {"twilio", "webhook"} <= set(REGISTRY)


def test_a_registered_adapter_is_found_by_name(registered: Plain) -> None:
    assert adapter_get("plain-test") is registered


def test_an_unknown_adapter_is_a_lookup_error() -> None:
    with pytest.raises(LookupError, match="no adapter named 'nope'"):
        adapter_get("nope")


def test_a_functions_new_fields_default_to_nothing() -> None:
    function = Plain.functions["noop"]
    assert (function.sender_parameter, function.preview_parameter, function.channel) == (
        "",
        "",
        "",
    )


@pytest.mark.django_db
def test_the_hooks_default_to_an_adapter_with_nothing_to_set_up() -> None:
    adapter = Plain()
    organization = OrganizationFactory()
    assert adapter.setup_problem(organization) == ""
    assert adapter.senders(None) == {} and adapter.senders([organization.pk]) == {}
    assert adapter.preview("noop", "hi") == {"text": "hi", "warnings": []}
    assert adapter.error_explanation("30007") == ""
    result = adapter.dry_run(
        "noop",
        organization=organization,
        patient=PatientFactory(organization=organization),
        inputs={},
        purpose="transactional",
        urgent=False,
        clock=datetime(2026, 1, 5, 15, tzinfo=UTC),
    )
    assert result == DryRunResult("send", "would call the adapter")
    assert result.checks == [] and result.preview is None and result.decision is None


def test_the_base_adapter_cannot_execute() -> None:
    with pytest.raises(NotImplementedError):
        Plain().execute(function="noop", context=None)  # type: ignore[arg-type]


def test_step_messages_come_from_the_registered_function(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(adapters, "_step_messages", [])
    run: Any = object()
    assert step_messages(run) == {}  # no messaging app: no messages
    step_messages_register(lambda given: {1: [{"run": given}]})
    step_messages_register(lambda given: {2: [{"run": given}]})  # the last one registered
    assert step_messages(run) == {2: [{"run": run}]}
