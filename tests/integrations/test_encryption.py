import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connection

from integrations.encryption import EncryptedJSONField, SecretDecryptionError
from integrations.models import Integration
from integrations.twilio.account import twilio_account
from tests.factories import IntegrationFactory


def _raw_token(pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT secrets FROM integrations_integration WHERE id = %s", [pk])
        return cursor.fetchone()[0]


@pytest.mark.django_db
def test_token_is_encrypted_at_rest_and_readable_in_python() -> None:
    integration = IntegrationFactory(auth_token="supersecrettoken123")
    raw = _raw_token(integration.pk)
    assert "supersecrettoken123" not in raw
    assert raw.startswith("gAAAA")  # a Fernet token
    assert (
        twilio_account(Integration.objects.get(pk=integration.pk)).auth_token
        == "supersecrettoken123"
    )


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
    assert twilio_account(Integration.objects.get(pk=integration.pk)).auth_token == "rotate-me"


@pytest.mark.django_db
def test_malformed_key_is_a_configuration_error(settings: object) -> None:
    settings.CAREFLOW_ENCRYPTION_KEYS = ["not-a-fernet-key"]  # type: ignore[attr-defined]
    with pytest.raises(ImproperlyConfigured, match="invalid key"):
        IntegrationFactory()


@pytest.mark.django_db
def test_secrets_are_one_ciphertext_of_a_json_object() -> None:
    integration = IntegrationFactory(auth_token="supersecrettoken123")
    raw = _raw_token(integration.pk)
    assert "auth_token" not in raw  # which secrets there are is secret too
    assert Integration.objects.get(pk=integration.pk).secrets == {
        "auth_token": "supersecrettoken123"
    }


@pytest.mark.django_db
def test_no_secrets_are_stored_as_empty_and_read_as_an_empty_object() -> None:
    integration = IntegrationFactory(secrets={})
    assert _raw_token(integration.pk) == ""
    assert Integration.objects.get(pk=integration.pk).secrets == {}


@pytest.mark.parametrize("value", ["not json", "[1, 2]", '"text"', 42, ["a"]])
def test_secrets_must_be_a_json_object(value: object) -> None:
    with pytest.raises(ValidationError, match="JSON object"):
        EncryptedJSONField().to_python(value)


def test_secrets_read_from_json_text_or_a_dict() -> None:
    field = EncryptedJSONField()
    assert field.to_python('{"auth_token": "x"}') == {"auth_token": "x"}
    assert field.to_python({"auth_token": "x"}) == {"auth_token": "x"}
    assert field.to_python(None) == field.to_python("") == {}
