import pytest
from django.core.exceptions import ValidationError

from tests.factories import IntegrationFactory


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sid",
    [
        "",
        "AC123",
        "ac" + "0" * 32,
        "AC" + "g" * 32,
        "AC" + "0" * 33,
        "SK" + "0" * 32,
        "AC" + "G" * 32,
        "AC" + "é" * 32,
    ],
)
def test_account_sid_must_be_ac_and_32_hex(sid: str) -> None:
    integration = IntegrationFactory.build(account_sid=sid, organization=None)
    with pytest.raises(ValidationError) as excinfo:
        integration.full_clean(exclude=["organization"])
    assert "account_sid" in excinfo.value.message_dict


@pytest.mark.django_db
def test_valid_account_sid_and_numbers_pass() -> None:
    integration = IntegrationFactory.build(
        account_sid="AC" + "0123456789abcdef" * 2,
        organization=None,
        sending_numbers=["+14155550123"],
    )
    integration.full_clean(exclude=["organization"])


@pytest.mark.django_db
def test_sids_with_upper_case_hex_are_accepted_and_stored_in_lower_case() -> None:
    # Twilio's own pattern is ^AC[0-9a-fA-F]{32}$; its Console and API write lower case.
    integration = IntegrationFactory.build(
        account_sid="  AC" + "0123456789ABCDEF" * 2 + " ",
        messaging_service_sid="MG" + "ABCDEF0123456789" * 2,
        organization=None,
    )
    integration.full_clean(exclude=["organization"])
    assert integration.account_sid == "AC" + "0123456789abcdef" * 2
    assert integration.messaging_service_sid == "MG" + "abcdef0123456789" * 2


@pytest.mark.django_db
@pytest.mark.parametrize("sid", ["MG" + "G" * 32, "mg" + "0" * 32, "MG" + "0" * 31])
def test_messaging_service_sid_must_be_mg_and_32_hex(sid: str) -> None:
    integration = IntegrationFactory.build(messaging_service_sid=sid, organization=None)
    with pytest.raises(ValidationError) as excinfo:
        integration.full_clean(exclude=["organization"])
    assert "messaging_service_sid" in excinfo.value.message_dict


@pytest.mark.django_db
@pytest.mark.parametrize("numbers", [["4155550123"], ["not a number"], "+14155550123", [1]])
def test_sending_numbers_must_be_e164(numbers: object) -> None:
    integration = IntegrationFactory.build(sending_numbers=numbers, organization=None)
    with pytest.raises(ValidationError) as excinfo:
        integration.full_clean(exclude=["organization"])
    assert "sending_numbers" in excinfo.value.message_dict


@pytest.mark.django_db
def test_masked_account_sid_hides_most_of_it() -> None:
    integration = IntegrationFactory.build(account_sid="AC" + "ab12" * 7 + "cdef")
    assert integration.masked_account_sid() == "ACab12…cdef"


@pytest.mark.django_db
def test_the_integration_form_takes_an_upper_case_sid_and_stores_it_lower_case() -> None:
    from integrations.admin import IntegrationForm
    from tests.factories import OrganizationFactory

    upper = "AC" + "0123456789ABCDEF" * 2
    form = IntegrationForm(
        data={
            "organization": OrganizationFactory().pk,
            "name": "Twilio",
            "adapter": "twilio",
            "account_sid": upper,
            "auth_token": "tok-secret-123",
            "sending_numbers": "+15005550006",
            "sender_type": "auto",
            "messaging_service_sid": "MG" + "ABCDEF0123456789" * 2,
            "enabled": "on",
        }
    )
    assert form.is_valid(), form.errors
    integration = form.save()
    integration.refresh_from_db()
    assert integration.account_sid == upper.lower().replace("ac", "AC", 1)
    assert integration.messaging_service_sid == "MG" + "abcdef0123456789" * 2
