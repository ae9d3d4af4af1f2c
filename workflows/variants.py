"""Message variants per language: a step's parameters["variants"] = {"es": {"message": "…"}}.

The step's own parameters stay the text in the clinic's fallback language, so a definition
written before languages is still valid and means the same, and a variant only overrides the
parameters it translates (`Parameter.translatable`): the recipient, the sender and the media
are the step's, whatever the language. A blank value in a variant is "not translated yet".
"""

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from patients.languages import LANGUAGE_NAMES, language_choose, language_name
from workflows.adapters import Function

if TYPE_CHECKING:
    from patients.models import Organization, Patient

VARIANTS = "variants"


def step_variants(parameters: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """The step's variants with something written in them, by language; {} if none (or
    if they are not the shape validation allows, which it reports)."""
    given = parameters.get(VARIANTS)
    if not isinstance(given, Mapping):
        return {}
    variants: dict[str, dict[str, str]] = {}
    for code, texts in given.items():
        if not isinstance(texts, Mapping):
            continue
        written = {str(k): str(v) for k, v in texts.items() if isinstance(v, str) and v.strip()}
        if written:
            variants[str(code)] = written
    return variants


def step_language(
    parameters: Mapping[str, Any], *, patient: "Patient | None", organization: "Organization"
) -> str:
    """The language a step's message goes to `patient` in: their preferred language when the
    step has a variant in it and the clinic enables it, else the clinic's fallback."""
    chosen = language_choose(
        wanted=patient.language if patient is not None else "",
        available=step_variants(parameters),
        enabled=organization.enabled_languages,
    )
    return chosen or organization.fallback_language


def parameters_in(
    parameters: Mapping[str, Any], language: str, *, function: Function | None
) -> dict[str, Any]:
    """The step's parameters as they are sent in `language`: its own, with the translatable
    ones its variant in `language` has written in place of them, and no variants."""
    chosen = dict(parameters)
    chosen.pop(VARIANTS, None)
    variant = step_variants(parameters).get(language, {})
    for name, text in variant.items():
        parameter = function.parameter(name) if function else None
        if parameter is not None and parameter.translatable:
            chosen[name] = text
    return chosen


def variants_shape_problems(value: Any, *, function: Function) -> list[str]:
    """What is wrong with a step's variants as a whole (not their templates): an object of
    known language codes, each an object of the function's translatable parameters' texts."""
    if value in (None, "", {}):
        return []
    if not isinstance(value, Mapping):
        return ['variants must be an object by language, e.g. {"es": {"message": "Hola"}}']
    translatable = [p.name for p in function.parameters if p.translatable]
    problems = []
    for code, texts in value.items():
        if code not in LANGUAGE_NAMES:
            problems.append(
                f"“{code}” is not a language careflow knows; use one of: "
                f"{', '.join(LANGUAGE_NAMES)}"
            )
            continue
        if not isinstance(texts, Mapping):
            problems.append(f"the {language_name(code)} variant must be an object of texts")
            continue
        for name, text in texts.items():
            if name not in translatable:
                allowed = ", ".join(translatable) or "nothing"
                problems.append(
                    f"the {language_name(code)} variant cannot set {name!r}: only {allowed} "
                    "can be translated"
                )
            elif not isinstance(text, str):
                problems.append(f"the {language_name(code)} {name} must be text")
    return problems
