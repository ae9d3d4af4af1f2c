"""Fixtures of the engine's tests."""

from collections.abc import Iterator

import pytest

from integrations.email.adapter import EmailAdapter
from workflows.adapters import REGISTRY, Adapter, adapter_register


@pytest.fixture
def email_adapter() -> Iterator[Adapter]:
    """The email adapter in the registry for one test (until the provider registers itself
    at start-up), and the registry as it was afterwards."""
    before = REGISTRY.get("email")
    adapter = adapter_register(EmailAdapter())
    yield adapter
    if before is None:
        REGISTRY.pop("email", None)
    else:
        adapter_register(before)
