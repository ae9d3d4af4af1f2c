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
        "AC" + "A" * 32,
    ],
)
def test_account_sid_must_be_ac_and_32_lowercase_hex(sid: str) -> None:
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
