"""Phone numbers: parse anything a person types, store and compare E.164."""

import re
from functools import lru_cache
from typing import Any

import phonenumbers
from django.core.exceptions import ValidationError
from django.db import models

DEFAULT_REGION = "US"


# What a person may type for one number: spaces, brackets, dots, an international prefix and
# an extension make it longer than the E.164 form stored, which is what column limits apply to.
MAX_TYPED_LENGTH = 64
# An extension marker with no number after it ("… ext. "), which libphonenumber refuses.
_EMPTY_EXTENSION = re.compile(r"[\s,;]*(?:ext\.?|extension|x|#)[\s.]*\Z", re.IGNORECASE)


def _parseable(raw: str, region: str) -> str:
    raw = _EMPTY_EXTENSION.sub("", raw)
    # "00" is the international call prefix across most of the world; in the NANP (the
    # default region's plan) no national number starts with 0, so there it can only mean "+".
    if raw.startswith("00") and phonenumbers.country_code_for_region(region) == 1:
        raw = "+" + raw[2:]
    return raw


def phone_to_e164(value: str, *, region: str = DEFAULT_REGION) -> str:
    """Return `value` as an E.164 string, or raise ValidationError saying what is wrong."""
    raw = (value or "").strip()
    if not raw:
        raise ValidationError("Enter a phone number.", code="required")
    if len(raw) > MAX_TYPED_LENGTH:
        raise ValidationError(
            "This is too long for a phone number (at most %(limit)d characters).",
            code="invalid_phone",
            params={"limit": MAX_TYPED_LENGTH},
        )
    try:
        parsed = phonenumbers.parse(_parseable(raw, region), region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationError(
            "“%(value)s” is not a phone number (%(reason)s).",
            code="invalid_phone",
            params={"value": raw, "reason": str(exc.args[0]) if exc.args else "unparseable"},
        ) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationError(
            "“%(value)s” is not a valid phone number; use the international form, e.g. +14155550123.",
            code="invalid_phone",
            params={"value": raw},
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def phone_or_raw(value: str) -> str:
    """`value` in E.164 if it is a phone number, else as given (trimmed): how an inbound
    message's From and To are kept and compared (a short code or alphanumeric sender too)."""
    try:
        return phone_to_e164(value)
    except ValidationError:
        return value.strip()


def e164_problem(value: str) -> str:
    """Why `value` is not a number written as Twilio takes it (E.164), or ""."""
    try:
        e164 = phone_to_e164(value)
    except ValidationError as exc:
        return exc.messages[0]
    return "" if e164 == value else f"write the number in E.164 form: {e164}"


@lru_cache(maxsize=8192)  # checked for every send; a number's validity never changes
def is_e164(value: str) -> bool:
    """True when `value` is already a valid number written in E.164."""
    try:
        return phone_to_e164(value) == value
    except ValidationError:
        return False


def validate_e164(value: str) -> None:
    """Model-field validator: the stored value must be a valid E.164 number."""
    if not is_e164(value):
        raise ValidationError(
            "“%(value)s” is not a valid phone number in E.164 form, e.g. +14155550123.",
            code="invalid_phone",
            params={"value": value},
        )


class PhoneNumberField(models.CharField):
    """A phone number normalised to E.164 on clean, so forms accept what people type."""

    default_validators = [validate_e164]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 16)
        super().__init__(*args, **kwargs)

    def formfield(
        self, form_class: Any = None, choices_form_class: Any = None, **kwargs: Any
    ) -> Any:
        # max_length is the stored E.164 form's (checked on the model after normalising); the
        # form takes what people type, which is longer.
        kwargs = {"max_length": MAX_TYPED_LENGTH, **kwargs}
        return super().formfield(
            form_class=form_class, choices_form_class=choices_form_class, **kwargs
        )

    def get_prep_value(self, value: Any) -> Any:
        # CharField would run to_python here, turning a lookup for a malformed number into
        # an exception instead of an empty result.
        value = models.Field.get_prep_value(self, value)
        return value if value is None else str(value)

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if value in self.empty_values:
            return value
        return phone_to_e164(value)
