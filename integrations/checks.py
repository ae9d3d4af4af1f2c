"""Deploy checks: refuse the development secrets in production (`manage.py check --deploy`);
and, on every check, that each provider's integration form keeps its secrets write-only."""

from typing import Any

from django import forms
from django.conf import settings
from django.core.checks import Error, Tags, register

from integrations.api.throttling import ApiKeyRateThrottle
from integrations.forms import INTEGRATION_FORMS
from integrations.messaging import TRANSPORTS
from workflows.adapters import REGISTRY


@register(Tags.security, deploy=True)
def development_secrets_check(**kwargs: Any) -> list[Error]:
    errors = []
    if settings.DEV_ENCRYPTION_KEY in settings.CAREFLOW_ENCRYPTION_KEYS:
        errors.append(
            Error(
                "CAREFLOW_ENCRYPTION_KEYS uses the development key.",
                hint="Set CAREFLOW_ENCRYPTION_KEYS to a key of your own (see README).",
                id="careflow.E001",
            )
        )
    if settings.SECRET_KEY == settings.DEV_SECRET_KEY:
        errors.append(
            Error("SECRET_KEY is the development key.", hint="Set SECRET_KEY.", id="careflow.E002")
        )
    return errors


@register(Tags.security, deploy=True)
def provider_settings_check(**kwargs: Any) -> list[Error]:
    """What each provider says would fail it in production (Twilio: a status-callback URL it
    cannot reach)."""
    return [
        Error(problem, hint=hint, id="careflow.E005")
        for transport in TRANSPORTS.values()
        for problem, hint in transport.deploy_problems()
    ]


@register(Tags.security)
def integration_forms_check(**kwargs: Any) -> list[Error]:
    """A provider's form must belong to a registered adapter, and render each of its secret
    fields as a password input that is never filled in (the stored secret stays unseen)."""
    errors = []
    for adapter, form in INTEGRATION_FORMS.items():
        if adapter not in REGISTRY:
            errors.append(
                Error(
                    f"{form.__name__} is registered for {adapter!r}, which is no adapter.",
                    id="careflow.E003",
                )
            )
        for name in form.secret_fields:
            field = form.base_fields.get(name)
            widget = getattr(field, "widget", None)
            if not isinstance(widget, forms.PasswordInput) or widget.render_value:
                errors.append(
                    Error(
                        f"{form.__name__}.{name} is a secret: it must be a form field with a "
                        "PasswordInput(render_value=False) widget.",
                        id="careflow.E004",
                    )
                )
    return errors


@register()
def api_rates_check(**kwargs: Any) -> list[Error]:
    """The API's rate limits must parse: a typo would otherwise fail every API request."""
    errors = []
    for name in ("CAREFLOW_API_RATE_READ", "CAREFLOW_API_RATE_WRITE"):
        value = getattr(settings, name)
        try:
            requests, _ = ApiKeyRateThrottle.parse_rate(None, value)  # type: ignore[arg-type]
            valid = bool(requests and requests > 0)
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            valid = False
        if not valid:
            errors.append(
                Error(
                    f"{name} is {value!r}, not a rate.",
                    hint='Write "<requests>/<sec|min|hour|day>", e.g. "300/min".',
                    id="careflow.api.E001",
                )
            )
    return errors
