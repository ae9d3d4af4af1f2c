import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from integrations.encryption import SecretDecryptionError
from integrations.models import Integration
from tests.factories import IntegrationFactory


def _raw_token(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT auth_token FROM integrations_integration WHERE id = %s", [pk])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_token_is_encrypted_at_rest_and_readable_in_python() -> None:
    integration = IntegrationFactory(auth_token="supersecrettoken123")
    raw = _raw_token(integration.pk)
    assert "supersecrettoken123" not in raw
    assert raw.startswith("gAAAA")  # a Fernet token
    assert Integration.objects.get(pk=integration.pk).auth_token == "supersecrettoken123"


@pytest.mark.django_db
def test_wrong_key_fails_loudly(settings: object) -> None:
    integration = IntegrationFactory(auth_token="supersecrettoken123")
    settings.CAREFLOW_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]  # type: ignore[attr-defined]
    with pytest.raises(SecretDecryptionError, match="CAREFLOW_ENCRYPTION_KEYS"):
        Integration.objects.get(pk=integration.pk)


@pytest.mark.django_db
def test_key_rotation_reads_old_and_writes_new(settings: object) -> None:
    old_keys = list(settings.CAREFLOW_ENCRYPTION_KEYS)  # type: ignore[attr-defined]
    integration = IntegrationFactory(auth_token="rotate-me")
    new_key = Fernet.generate_key().decode()
    settings.CAREFLOW_ENCRYPTION_KEYS = [new_key, *old_keys]  # type: ignore[attr-defined]
    reloaded = Integration.objects.get(pk=integration.pk)
    reloaded.save()
    settings.CAREFLOW_ENCRYPTION_KEYS = [new_key]  # type: ignore[attr-defined]
    assert Integration.objects.get(pk=integration.pk).auth_token == "rotate-me"


@pytest.mark.django_db
def test_malformed_key_is_a_configuration_error(settings: object) -> None:
    settings.CAREFLOW_ENCRYPTION_KEYS = ["not-a-fernet-key"]  # type: ignore[attr-defined]
    with pytest.raises(ImproperlyConfigured, match="invalid key"):
        IntegrationFactory()
