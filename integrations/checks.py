"""Deploy checks: refuse the development secrets in production (`manage.py check --deploy`)."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register


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
