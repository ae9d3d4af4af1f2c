"""Secrets at rest: MultiFernet with keys from CAREFLOW_ENCRYPTION_KEYS (rotatable, and
separate from SECRET_KEY so a leaked session key does not expose clinic credentials)."""

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import models
from django.views.decorators.debug import sensitive_variables


class SecretDecryptionError(ImproperlyConfigured):
    """A stored secret cannot be decrypted with the configured keys: never silently empty."""


@lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("CAREFLOW_ENCRYPTION_KEYS is empty.")
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "CAREFLOW_ENCRYPTION_KEYS holds an invalid key: each must be 32 url-safe "
            "base64-encoded bytes (generate one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`)."
        ) from exc


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.CAREFLOW_ENCRYPTION_KEYS))


# An error page lists each frame's local variables: hide the plaintext in these frames.
@sensitive_variables("plaintext")
def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


@sensitive_variables()
def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptionError(
            "A stored secret cannot be decrypted: CAREFLOW_ENCRYPTION_KEYS does not include "
            "the key it was encrypted with."
        ) from exc


class EncryptedTextField(models.TextField):
    """Stores Fernet ciphertext; Python code only ever sees the plaintext."""

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        return decrypt(value)

    @sensitive_variables("value")
    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)


class EncryptedJSONField(EncryptedTextField):
    """A JSON object of secrets (e.g. {"auth_token": …}) stored as one Fernet ciphertext:
    which secrets a provider has is as private as their values. Python sees a dict."""

    _pyi_private_set_type: dict[str, str] | str  # type: ignore[assignment]
    _pyi_private_get_type: dict[str, str]  # type: ignore[assignment]

    def from_db_value(  # type: ignore[override]
        self, value: str | None, expression: Any, connection: Any
    ) -> dict[str, str]:
        plaintext = super().from_db_value(value, expression, connection)
        return self.to_python(plaintext)

    @sensitive_variables("value", "plaintext")
    def to_python(self, value: Any) -> dict[str, str]:  # type: ignore[override]
        if value is None or value == "":
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise ValidationError("Secrets must be a JSON object.") from None
        if not isinstance(value, dict):
            raise ValidationError("Secrets must be a JSON object.")
        return {str(k): str(v) for k, v in value.items()}

    @sensitive_variables("value")
    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return value
        secrets = self.to_python(value)
        return encrypt(json.dumps(secrets, sort_keys=True)) if secrets else ""
