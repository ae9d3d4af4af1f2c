"""The keyword tables, entry by entry (common.keywords): the words are written out here
independently of the code, so a word dropped from a family, moved to another family or
misspelt fails the test for that word."""

import pytest

from common.keywords import (
    ALL_KEYWORD_LANGUAGES,
    HELP_KEYWORDS,
    LANGUAGE_KEYWORDS,
    OPT_IN_KEYWORDS,
    OPT_OUT_KEYWORDS,
    keyword_compact,
    keyword_family,
    keyword_normalize,
    keyword_read,
)

# English: Twilio's defaults and the FCC's revocation words (47 CFR 64.1200(a)(10)).
ENGLISH = {
    "opt_out": ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPT OUT"],
    "opt_in": ["START", "YES", "UNSTOP"],
    "help": ["HELP", "INFO"],
}
OTHER_LANGUAGES = {
    "es": {
        "opt_out": ["PARAR", "ALTO", "DETENER", "CANCELAR", "TERMINAR", "BAJA"],
        "opt_in": ["COMENZAR", "INICIAR", "REANUDAR"],
        "help": ["AYUDA"],
    },
    "fr": {
        "opt_out": ["ARRÊT", "ARRET", "ARRÊTER", "ARRETER", "DÉSABONNER", "DESABONNER"],
        "opt_in": ["COMMENCER", "REPRENDRE"],
        "help": ["AIDE"],
    },
    "pt": {
        "opt_out": ["PARAR", "SAIR", "CANCELAR"],
        "opt_in": ["COMEÇAR", "COMECAR", "INICIAR"],
        "help": ["AJUDA"],
    },
}


def test_the_english_families_are_exactly_these_words() -> None:
    assert set(OPT_OUT_KEYWORDS) == {*ENGLISH["opt_out"], "OPTOUT"}
    assert set(OPT_IN_KEYWORDS) == set(ENGLISH["opt_in"])
    assert set(HELP_KEYWORDS) == set(ENGLISH["help"])


@pytest.mark.parametrize(
    ("word", "family"), [(word, family) for family, words in ENGLISH.items() for word in words]
)
def test_each_english_keyword_is_read_in_its_family_in_any_case(word: str, family: str) -> None:
    for body in (word, word.lower(), word.title(), f" {word.lower()}! "):
        assert keyword_family(body) == (family, word)
        assert keyword_read(body, languages=["es", "fr", "pt"]) == (family, word, "en")


def test_other_languages_have_exactly_these_words() -> None:
    assert {
        language: {family: set(words) for family, words in families.items()}
        for language, families in LANGUAGE_KEYWORDS.items()
    } == {
        language: {family: set(words) for family, words in families.items()}
        for language, families in OTHER_LANGUAGES.items()
    }
    assert ALL_KEYWORD_LANGUAGES == ("en", "es", "fr", "pt")


@pytest.mark.parametrize(
    ("language", "word", "family"),
    [
        (language, word, family)
        for language, families in OTHER_LANGUAGES.items()
        for family, words in families.items()
        for word in words
    ],
)
def test_each_keyword_of_a_language_is_read_only_where_the_clinic_enables_it(
    language: str, word: str, family: str
) -> None:
    assert keyword_read(word.lower(), languages=[language]) == (family, word, language)
    assert keyword_family(word) == ("", "")  # English alone knows none of them


def test_a_word_that_stops_in_one_language_and_starts_in_another_stops() -> None:
    # INICIAR starts in Spanish and Portuguese; PARAR stops in both: the first listed wins
    assert keyword_read("parar", languages=["pt", "es"]) == ("opt_out", "PARAR", "pt")
    assert keyword_read("parar", languages=["es", "pt"]) == ("opt_out", "PARAR", "es")
    assert keyword_read("iniciar", languages=["xx", "pt"]) == ("opt_in", "INICIAR", "pt")


@pytest.mark.parametrize(
    ("body", "normalized"),
    [
        ("  Stop  ", "stop"),
        ("ＳＴＯＰ", "stop"),
        ("S\u200bTOP", "stop"),
        ("don\u2019t  stop", "don't stop"),
        ("🛑 stop 🛑", "stop"),
        ("...", ""),
        ("\x00", ""),
        ("a\tb", "a b"),
    ],
)
def test_normalizing(body: str, normalized: str) -> None:
    assert keyword_normalize(body) == normalized


@pytest.mark.parametrize(
    ("text", "compact"), [("opt out", "optout"), ("opt-out", "optout"), ("opt_out", "optout")]
)
def test_compacting_drops_inner_spaces_hyphens_and_underscores(text: str, compact: str) -> None:
    assert keyword_compact(text) == compact


@pytest.mark.parametrize("body", ["hello", "stop it", "", "🛑", "yes please"])
def test_any_other_text_is_no_keyword_in_no_language(body: str) -> None:
    assert keyword_read(body, languages=["es", "fr", "pt"]) == ("", "", "")
    assert keyword_family(body) == ("", "")


def test_a_word_an_enabled_language_starts_with_still_stops_when_english_stops_with_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # no listed language has such a word yet; the order of the families guards the next one
    from common import keywords

    monkeypatch.setitem(keywords._LANGUAGE_FAMILIES, "zz", (("opt_in", {"stop": "STOP"}),))
    assert keyword_read("stop", languages=["zz"]) == ("opt_out", "STOP", "en")
    monkeypatch.setitem(keywords._LANGUAGE_FAMILIES, "zz", (("help", {"start": "START"}),))
    assert keyword_read("start", languages=["zz"]) == ("opt_in", "START", "en")
