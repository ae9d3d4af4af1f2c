"""The languages careflow can address a patient in: BCP 47 primary tags from a fixed list.

A fixed list, not every tag: each one is a language a clinic can enable, write message
variants in and have keywords recognised in, so an arbitrary tag ("en-x-pirate") would only
be a value nothing ever matches.
"""

from collections.abc import Iterable

from django.core.exceptions import ValidationError

# Languages most spoken at home in the US after English (Census ACS), with their names as a
# clinic admin reads them.
LANGUAGES: tuple[tuple[str, str], ...] = (
    ("en", "English"),
    ("es", "Spanish"),
    ("zh", "Chinese"),
    ("tl", "Tagalog"),
    ("vi", "Vietnamese"),
    ("ar", "Arabic"),
    ("fr", "French"),
    ("ko", "Korean"),
    ("ru", "Russian"),
    ("pt", "Portuguese"),
    ("ht", "Haitian Creole"),
    ("de", "German"),
)
LANGUAGE_NAMES: dict[str, str] = dict(LANGUAGES)
DEFAULT_LANGUAGE = "en"


def language_name(code: str) -> str:
    """The name of a listed language ("es" → "Spanish"); the code itself for any other."""
    return LANGUAGE_NAMES.get(code, code)


def validate_language(value: str) -> None:
    if value and value not in LANGUAGE_NAMES:
        raise ValidationError(
            "“%(value)s” is not a language careflow knows; use one of: %(codes)s.",
            code="invalid_language",
            params={"value": value, "codes": ", ".join(LANGUAGE_NAMES)},
        )


def validate_languages(value: object) -> None:
    """A clinic's enabled languages: a list of listed codes, each once."""
    if not isinstance(value, list) or not all(isinstance(code, str) for code in value):
        raise ValidationError('must be a list of language codes, e.g. ["en", "es"]')
    for code in value:
        validate_language(code)
    if len(set(value)) != len(value):
        raise ValidationError("each language is listed once")


def language_choose(*, wanted: str, available: Iterable[str], enabled: Iterable[str]) -> str:
    """The language to address a patient in: `wanted` (their preferred language) when the
    message has it (`available`) and the clinic enables it, else "" (the message's own
    text, written in the clinic's fallback language)."""
    if wanted and wanted in set(available) and wanted in set(enabled):
        return wanted
    return ""
