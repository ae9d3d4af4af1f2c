"""Keywords in the languages a clinic enables (common.keywords.LANGUAGE_KEYWORDS)."""

import pytest

from common.keywords import keyword_family


@pytest.mark.parametrize(
    ("body", "family", "keyword"),
    [
        ("PARAR", "opt_out", "PARAR"),
        ("parar.", "opt_out", "PARAR"),
        ("Alto 🛑", "opt_out", "ALTO"),
        ("cancelar", "opt_out", "CANCELAR"),
        ("AYUDA", "help", "AYUDA"),
        ("comenzar", "opt_in", "COMENZAR"),
        # English is always read, whatever the clinic enables.
        ("STOP", "opt_out", "STOP"),
        ("help", "help", "HELP"),
    ],
)
def test_spanish_keywords_when_spanish_is_enabled(body: str, family: str, keyword: str) -> None:
    assert keyword_family(body, languages=("en", "es")) == (family, keyword)


@pytest.mark.parametrize("body", ["PARAR", "AYUDA", "ALTO", "COMENZAR"])
def test_spanish_keywords_are_plain_text_where_spanish_is_not_enabled(body: str) -> None:
    assert keyword_family(body) == ("", "")
    assert keyword_family(body, languages=("en", "vi")) == ("", "")


def test_a_sentence_with_a_keyword_in_it_is_not_the_keyword() -> None:
    assert keyword_family("no quiero parar", languages=("es",)) == ("", "")


def test_french_accents_are_optional() -> None:
    assert keyword_family("arrêt", languages=("fr",))[0] == "opt_out"
    assert keyword_family("ARRET", languages=("fr",))[0] == "opt_out"
