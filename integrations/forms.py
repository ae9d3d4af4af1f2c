"""The admin form of an Integration: the generic part here, each provider's fields in its
own folder (`integrations/<provider>/forms.py`), registered with `integration_form_register`
and picked by the integration's adapter (integrations.admin.IntegrationAdmin)."""

from typing import Any, ClassVar

from django import forms
from django.core.exceptions import ValidationError

from integrations.models import Integration


class IntegrationForm(forms.ModelForm):
    """A provider's subclass declares its form fields and maps them to and from the
    integration's `settings`, `secrets` and `senders` (never rendering a secret back), and
    offers the admin list's summaries and the credentials check."""

    adapter_name: ClassVar[str] = ""
    adapter_label: ClassVar[str] = ""
    # Write-only fields: blank on the page, blank on submit keeps the stored value; hidden
    # from error reports' POST data and from read-only pages.
    secret_fields: ClassVar[tuple[str, ...]] = ()
    # How far ahead the provider queues a sender's messages before refusing them.
    queue_limit_seconds: ClassVar[float | None] = None

    class Meta:
        model = Integration
        fields = ["organization", "name", "enabled"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.instance.adapter = self.adapter_name
        for name in self.secret_fields:
            self.initial[name] = ""
            if self.instance.pk is None:
                self.fields[name].required = True
        self.initial.update(self.provider_initial(self.instance))

    # What a provider implements --------------------------------------------------------

    def provider_initial(self, integration: Integration) -> dict[str, Any]:
        """The provider's form fields' values for an integration (secrets excluded)."""
        return {}

    def provider_values(
        self, cleaned: dict[str, Any], secrets: dict[str, str]
    ) -> tuple[dict[str, Any], dict[str, str], list[str]]:
        """(settings, secrets, senders) from the cleaned form; `secrets` already holds the
        stored value of every secret field left blank. Raises ValidationError keyed by
        form field."""
        return {}, secrets, []

    @classmethod
    def account_display(cls, integration: Integration) -> str:
        """The account, masked, for the admin list."""
        return ""

    @classmethod
    def rates_display(cls, integration: Integration) -> str:
        return ""

    @classmethod
    def backlog_keys(cls, integration: Integration) -> list[tuple[str, str]]:
        """(sender, throttle key) for each sender whose booked-ahead sending the list shows."""
        return []

    @classmethod
    def inbound_webhook_path(cls, integration: Integration) -> str:
        return ""

    @classmethod
    def credentials_check(cls, integration: Integration) -> tuple[bool, str]:
        """(accepted, what the provider said), for support staff; never a secret."""
        return False, "this provider has no credentials check"

    @classmethod
    def credentials_verdict(cls, integration: Integration) -> tuple[bool, str, bool]:
        """(accepted, what the provider said, rejected): `rejected` only when the provider
        refused the credentials themselves (not an outage), which raises a failure alert."""
        accepted, said = cls.credentials_check(integration)
        return accepted, said, False

    # ---------------------------------------------------------------------------------

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        if self.adapter_name not in INTEGRATION_FORMS:
            raise ValidationError(f"No provider named “{self.adapter_name}”.")
        stored: dict[str, str] = {}
        if self.instance.pk is not None:
            stored = dict(Integration.objects.get(pk=self.instance.pk).secrets or {})
        secrets = {
            name: cleaned.get(name) or stored.get(name, "")
            for name in self.secret_fields
            if cleaned.get(name) or stored.get(name)
        }
        try:  # even when a field failed already: every problem is said at once
            settings, secrets, senders = self.provider_values(cleaned, secrets)
        except ValidationError as exc:  # keyed by the provider's form fields
            problems = exc.error_dict if hasattr(exc, "error_dict") else {"": exc.error_list}
            for name, errors in problems.items():
                if name not in self.errors:  # a field's own error said it already
                    self.add_error(name if name in self.fields else None, errors)
            return cleaned
        if self.errors:
            return cleaned
        self.instance.adapter = self.adapter_name
        self.instance.settings = settings
        self.instance.secrets = secrets
        self.instance.senders = senders
        if not self.instance.name:
            self.instance.name = self.adapter_label
        return cleaned

    def validate_unique(self) -> None:
        # The constraint names organization and adapter; `adapter` is not a form field, so
        # ModelForm would leave the constraint unchecked (an IntegrityError on save).
        try:
            self.instance.validate_constraints()
        except ValidationError as exc:
            self.add_error(None, exc)
        super().validate_unique()


INTEGRATION_FORMS: dict[str, type[IntegrationForm]] = {}


def integration_form_register(form: type[IntegrationForm]) -> type[IntegrationForm]:
    INTEGRATION_FORMS[form.adapter_name] = form
    return form


def integration_form_get(adapter: str) -> type[IntegrationForm] | None:
    return INTEGRATION_FORMS.get(adapter)
