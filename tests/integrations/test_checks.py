from typing import Any

import pytest
from django import forms

from integrations.checks import integration_forms_check
from integrations.forms import INTEGRATION_FORMS, IntegrationForm


def test_the_registered_forms_pass() -> None:
    assert integration_forms_check() == []


@pytest.fixture
def provider_forms(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    forms_ = dict(INTEGRATION_FORMS)
    monkeypatch.setattr("integrations.checks.INTEGRATION_FORMS", forms_)
    return forms_


def test_a_form_of_no_adapter_is_an_error(provider_forms: dict[str, Any]) -> None:
    class Stray(IntegrationForm):
        adapter_name = "nobody"

    provider_forms["nobody"] = Stray
    assert [e.id for e in integration_forms_check()] == ["careflow.E003"]


@pytest.mark.parametrize(
    "field",
    [
        None,
        forms.CharField(),
        forms.CharField(widget=forms.PasswordInput(render_value=True)),
    ],
)
def test_a_secret_that_could_be_shown_is_an_error(
    provider_forms: dict[str, Any], field: forms.Field | None
) -> None:
    attrs: dict[str, Any] = {"adapter_name": "twilio", "secret_fields": ("api_key",)}
    if field is not None:
        attrs["api_key"] = field
    provider_forms["twilio"] = type("Leaky", (IntegrationForm,), attrs)
    assert [e.id for e in integration_forms_check()] == ["careflow.E004"]
