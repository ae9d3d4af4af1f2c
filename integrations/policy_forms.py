"""The messaging policy's admin form: the default rules (the policy's own fields) and, for each
registered channel, whether it follows them or rules of its own (`MessagingPolicy.channel_rules`).

The channels' fields are made from the transports registered at start-up, so a new channel
shows up here without a change to this module or a migration."""

from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from integrations.channels import registered_channels
from integrations.models import (
    CAP_FIELDS,
    SHORT_LINK_DEFAULT_DAYS,
    SMART_SENDING_MAX_HOURS,
    STOP_CONFIRMATION_DEFAULT,
    MessagingPolicy,
    validate_channel_rules,
    validate_short_link_domain,
)
from patients.languages import DEFAULT_LANGUAGE, LANGUAGES

FIRST_CONTACT_FIELDS = [
    "first_contact_enabled",
    "brand_name",
    "brand_prefix",
    "opt_out_wording",
    "first_contact_every_days",
]
SHORT_LINK_FIELDS = ["short_links_enabled", "short_link_domain", "short_link_days"]
KEYWORD_REPLY_FIELDS = ["help_text_reply", "stop_confirmation_reply"]
# The clinic's languages (kept on the Organization, where the engine reads them), edited here
# with the rest of its messaging rules by the clinic admin.
LANGUAGE_FIELDS = ["fallback_language", "languages"]

CAP_LABELS = {
    "transactional_per_day": "Transactional per day",
    "transactional_per_week": "Transactional per week",
    "marketing_per_day": "Marketing per day",
    "marketing_per_week": "Marketing per week",
}


def channel_field(channel: str, name: str) -> str:
    return f"{channel}__{name}"


def channel_fieldsets() -> list[tuple[str, dict[str, Any]]]:
    """One admin section per registered channel."""
    return [
        (
            f"{channel.upper() if len(channel) <= 3 else channel.capitalize()} rules",
            {
                "fields": [
                    channel_field(channel, name) for name in ("own", "quiet_hours", *CAP_FIELDS)
                ],
                "description": (
                    f"Unticked “own rules”: {channel} messages follow the default rules above."
                    + (
                        " The state rules for texts and calls bind this channel: its quiet"
                        " hours cannot be switched off."
                        if phone_rules
                        else " No state rule for texts and calls binds this channel."
                    )
                ),
            },
        )
        for channel, phone_rules in sorted(registered_channels().items())
    ]


class MessagingPolicyForm(forms.ModelForm):
    """Reads and writes `channel_rules` through one set of fields per channel."""

    # Declared without bounds so an N out of range gets one message naming both (below).
    smart_sending_hours = forms.IntegerField(
        label="Smart sending (hours)",
        required=False,
        help_text=MessagingPolicy._meta.get_field("smart_sending_hours").help_text,
    )

    # https assumed for a bare domain (go.sunrise.example): the only scheme a link domain
    # may have (the model's validator says so for an explicit http://).
    short_link_domain = forms.URLField(
        label="Short link domain",
        required=False,
        max_length=100,
        assume_scheme="https",
        validators=[validate_short_link_domain],
        help_text=MessagingPolicy._meta.get_field("short_link_domain").help_text,
    )
    fallback_language = forms.ChoiceField(
        label="Fallback language",
        choices=LANGUAGES,
        initial=DEFAULT_LANGUAGE,
        # Left out of a post (an older page): the clinic's fallback stays as it is.
        required=False,
        help_text="The language the workflows' messages are written in; sent to every patient "
        "whose language has no variant.",
    )
    languages = forms.MultipleChoiceField(
        label="Other languages",
        choices=LANGUAGES,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Patients who prefer one of these get a step's variant in it, and its "
        "keywords (e.g. PARAR, AYUDA in Spanish) are recognised. English keywords always are.",
    )

    class Meta:
        model = MessagingPolicy
        fields = [
            "organization",
            "quiet_hours_start",
            "quiet_hours_end",
            *CAP_FIELDS,
            "smart_sending_hours",
            *FIRST_CONTACT_FIELDS,
            *SHORT_LINK_FIELDS,
            *KEYWORD_REPLY_FIELDS,
            "translations",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        organization = self.instance.organization if self.instance.organization_id else None
        if organization is not None:
            self.initial.setdefault("fallback_language", organization.fallback_language)
            self.initial.setdefault("languages", list(organization.languages or []))
        if "stop_confirmation_reply" in self.fields:
            self.fields["stop_confirmation_reply"].required = False
            self.fields["stop_confirmation_reply"].help_text += " Blank: the default wording."
        if "short_link_days" in self.fields:
            self.fields["short_link_days"].required = False
            self.fields["short_link_days"].help_text += f" Blank: {SHORT_LINK_DEFAULT_DAYS}."
        stored = self.instance.channel_rules or {}
        for channel in self.channels():
            own = stored.get(channel)
            if isinstance(own, dict):
                self.initial.setdefault(channel_field(channel, "own"), True)
                for name in ("quiet_hours", *CAP_FIELDS):
                    if name in own:
                        self.initial.setdefault(channel_field(channel, name), own[name])
            else:  # a new channel's own rules start as a copy of the defaults
                self.initial.setdefault(channel_field(channel, "quiet_hours"), True)
                for name in CAP_FIELDS:
                    self.initial.setdefault(
                        channel_field(channel, name), getattr(self.instance, name)
                    )

    def clean_stop_confirmation_reply(self) -> str:
        """Blank: the default wording (a patient who opts out is always answered)."""
        text = str(self.cleaned_data.get("stop_confirmation_reply") or "").strip()
        return text or STOP_CONFIRMATION_DEFAULT

    def clean_short_link_days(self) -> int:
        """Blank: the default lifetime (a link always expires)."""
        days: int | None = self.cleaned_data.get("short_link_days")
        return SHORT_LINK_DEFAULT_DAYS if days is None else days

    def clean_translations(self) -> dict[str, Any]:
        """Blank: no texts in other languages (the column holds an object, never null)."""
        value = self.cleaned_data.get("translations")
        return value if value else {}

    def clean_smart_sending_hours(self) -> int | None:
        """One message for any out-of-range N (the field's own would name only one bound);
        0 is stored as blank: both mean off."""
        hours: int | None = self.cleaned_data.get("smart_sending_hours")
        if hours is not None and not 0 <= hours <= SMART_SENDING_MAX_HOURS:
            raise ValidationError(
                f"Smart sending looks back 1 to {SMART_SENDING_MAX_HOURS} hours (a week); "
                "leave it blank to turn it off."
            )
        return hours or None

    @staticmethod
    def channels() -> list[str]:
        return sorted(registered_channels())

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        rules: dict[str, dict[str, Any]] = {}
        for channel in self.channels():
            if not cleaned.get(channel_field(channel, "own")):
                continue
            rules[channel] = {
                "quiet_hours": bool(cleaned.get(channel_field(channel, "quiet_hours"))),
                **{name: cleaned.get(channel_field(channel, name)) for name in CAP_FIELDS},
            }
        try:
            validate_channel_rules(rules)
        except ValidationError as error:
            # What the fields cannot say themselves (a channel the rules for texts and calls
            # bind cannot have its quiet hours off): shown on the channel's quiet hours field.
            for channel in rules:
                try:
                    validate_channel_rules({channel: rules[channel]})
                except ValidationError as own_error:
                    self.add_error(channel_field(channel, "quiet_hours"), own_error)
            if not self.errors:
                raise error
        # Rules kept for a channel no longer registered are dropped on save (they could not
        # apply); the audit trail keeps what they were.
        self.instance.channel_rules = rules
        return cleaned


def channel_rules_summary(channel_rules: dict[str, Any]) -> list[tuple[str, str]]:
    """(channel, its rules in words) for a read-only page."""
    summary = []
    for channel, rules in sorted(channel_rules.items()):
        if not isinstance(rules, dict):
            continue
        caps = ", ".join(
            f"{CAP_LABELS[name].lower()} {'no cap' if rules.get(name) is None else rules[name]}"
            for name in CAP_FIELDS
        )
        quiet = "apply" if rules.get("quiet_hours") else "off"
        summary.append((channel, f"quiet hours {quiet}; {caps}"))
    return summary


def policy_form_class() -> type[MessagingPolicyForm]:
    """The form with one set of fields per channel registered now."""
    fields: dict[str, forms.Field] = {}
    for channel in MessagingPolicyForm.channels():
        fields[channel_field(channel, "own")] = forms.BooleanField(
            label=f"Own rules for {channel}", required=False
        )
        fields[channel_field(channel, "quiet_hours")] = forms.BooleanField(
            label="Quiet hours apply",
            required=False,
            help_text="The default window above, in the recipient's local time.",
        )
        for name in CAP_FIELDS:
            fields[channel_field(channel, name)] = forms.IntegerField(
                label=CAP_LABELS[name],
                required=False,
                min_value=0,
                help_text="Blank: no cap.",
            )
    return type("MessagingPolicyChannelsForm", (MessagingPolicyForm,), fields)
