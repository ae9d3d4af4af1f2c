import pytest
from django.core.exceptions import ValidationError

from integrations.models import Integration, validate_channel_rules
from tests.factories import IntegrationFactory, OrganizationFactory


@pytest.mark.django_db
def test_an_integration_of_any_adapter_needs_no_provider_columns() -> None:
    integration = Integration.objects.create(
        organization=OrganizationFactory(), adapter="some-provider"
    )
    integration.refresh_from_db()
    assert (integration.senders, integration.settings, integration.secrets) == ([], {}, {})
    assert str(integration) == f"some-provider ({integration.organization})"


@pytest.mark.django_db
@pytest.mark.parametrize("senders", ["+14155550123", [1], {"a": 1}])
def test_senders_must_be_a_list_of_texts(senders: object) -> None:
    integration = IntegrationFactory.build(senders=senders, organization=None)
    with pytest.raises(ValidationError) as excinfo:
        integration.full_clean(exclude=["organization"])
    assert "senders" in excinfo.value.message_dict


@pytest.mark.django_db
@pytest.mark.parametrize("settings", [["a"], "text"])
def test_settings_must_be_an_object(settings: object) -> None:
    integration = IntegrationFactory.build(settings=settings, organization=None)
    with pytest.raises(ValidationError) as excinfo:
        integration.full_clean(exclude=["organization"])
    assert "settings" in excinfo.value.message_dict


@pytest.mark.django_db
def test_a_valid_integration_passes_the_model_checks() -> None:
    IntegrationFactory.build(organization=None).full_clean(exclude=["organization"])


@pytest.mark.django_db
def test_one_enabled_integration_per_adapter_and_clinic() -> None:
    existing = IntegrationFactory()
    second = IntegrationFactory.build(organization=existing.organization)
    with pytest.raises(ValidationError, match="already has an enabled integration"):
        second.validate_constraints()
    IntegrationFactory(organization=existing.organization, enabled=False)  # a disabled one may
    IntegrationFactory(organization=existing.organization, adapter="another")


RULES = {
    "quiet_hours": True,
    "transactional_per_day": None,
    "transactional_per_week": 5,
    "marketing_per_day": 0,
    "marketing_per_week": 2,
}


@pytest.mark.parametrize(
    ("channel_rules", "error"),
    [
        ([], "must be a JSON object"),
        ({"fax": RULES}, "There is no channel “fax”"),
        ({"email": {"quiet_hours": True}}, "The email rules must give quiet_hours"),
        ({"email": {**RULES, "extra": 1}}, "The email rules must give"),
        ({"email": {**RULES, "marketing_per_week": -1}}, "marketing_per_week must be blank"),
        ({"email": {**RULES, "marketing_per_day": 1.5}}, "marketing_per_day must be blank"),
        ({"email": {**RULES, "marketing_per_day": True}}, "marketing_per_day must be blank"),
        ({"email": {**RULES, "quiet_hours": None}}, "quiet_hours must be true or false"),
        (
            {"sms": {**RULES, "quiet_hours": False}},
            "Quiet hours cannot be switched off for sms",
        ),
    ],
)
def test_channel_rules_are_validated(channel_rules: object, error: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        validate_channel_rules(channel_rules)
    assert error in str(excinfo.value)


def test_channel_rules_of_registered_channels_pass() -> None:
    validate_channel_rules({})
    validate_channel_rules({"sms": RULES, "email": {**RULES, "marketing_per_week": None}})
