"""How a short text from a patient is read as a keyword: one normalisation for the opt-out
keywords (integrations) and the answers a Wait-for-reply step branches on (workflows).

A patient's phone or keyboard adds invisible and compatibility characters (zero-width spaces,
non-breaking spaces, full-width letters), and people type "Stop." or "STOP 🛑" or "yes 👍".
Missing such a STOP means the next text goes out after consent was revoked, and missing such
a "C" leaves an appointment unconfirmed, so every matcher reads the normalised text.
"""

import unicodedata
from collections.abc import Iterable

# The one list of words that revoke consent: every matcher, reply and document reads it.
# Twilio's defaults plus the words the FCC's consent-revocation rule (47 CFR 64.1200(a)(10),
# in force since 11 April 2025) says must be honoured: stop, quit, end, revoke, opt out,
# cancel, unsubscribe. Spacing and hyphens inside do not matter ("OPT OUT" = "OPT-OUT" = "OPTOUT").
OPT_OUT_KEYWORDS: tuple[str, ...] = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPT OUT",
    "OPTOUT",
)
OPT_IN_KEYWORDS: tuple[str, ...] = ("START", "YES", "UNSTOP")
HELP_KEYWORDS: tuple[str, ...] = ("HELP", "INFO")

# Unicode general categories a keyword never starts or ends with: punctuation, symbols (emoji),
# separators, combining marks (emoji variation selectors) and other (control, private use).
_DECORATION = frozenset("PSZMC")
# Typographic apostrophes, so that "don’t text me" reads like "don't text me".
_APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "\uff07": "'"})


def _invisible(ch: str) -> bool:
    category = unicodedata.category(ch)
    return category == "Cf" or (category == "Cc" and not ch.isspace())


def keyword_normalize(body: str) -> str:
    """`body` as keywords are matched: Unicode NFKC with case folded (full-width and other
    compatibility letters become plain ones), format and control characters (zero-width spaces
    and joiners, soft hyphens, BOM, NUL) removed, runs of whitespace made one space, punctuation, symbols and
    emoji stripped from both ends. Inner punctuation stays: "don't stop" is not "stop"."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", body).casefold())
    text = "".join(ch for ch in text if not _invisible(ch))
    text = " ".join(text.translate(_APOSTROPHES).split())
    start, end = 0, len(text)
    while start < end and unicodedata.category(text[start])[0] in _DECORATION:
        start += 1
    while end > start and unicodedata.category(text[end - 1])[0] in _DECORATION:
        end -= 1
    return text[start:end]


def keyword_compact(text: str) -> str:
    """A normalised text, or a keyword, without inner spaces, hyphens and underscores, so that
    "OPT OUT" = "OPT-OUT" = "OPTOUT"."""
    return "".join(
        ch for ch in text if not ch.isspace() and unicodedata.category(ch)[:2] not in ("Pd", "Pc")
    )


# The same three families in the other languages a clinic may enable (patients.languages),
# recognised only where the clinic enables the language: English is always recognised, as
# carriers and Twilio honour its words whatever the clinic's language. Twilio's own opt-out
# handling knows only the English words, so careflow records these and confirms them itself.
# Accented and plain spellings both, as phones often drop the accent ("ARRET" for "ARRÊT").
LANGUAGE_KEYWORDS: dict[str, dict[str, tuple[str, ...]]] = {
    "es": {
        "opt_out": ("PARAR", "ALTO", "DETENER", "CANCELAR", "TERMINAR", "BAJA"),
        "opt_in": ("COMENZAR", "INICIAR", "REANUDAR"),
        "help": ("AYUDA",),
    },
    "fr": {
        "opt_out": ("ARRÊT", "ARRET", "ARRÊTER", "ARRETER", "DÉSABONNER", "DESABONNER"),
        "opt_in": ("COMMENCER", "REPRENDRE"),
        "help": ("AIDE",),
    },
    "pt": {
        "opt_out": ("PARAR", "SAIR", "CANCELAR"),
        "opt_in": ("COMEÇAR", "COMECAR", "INICIAR"),
        "help": ("AJUDA",),
    },
}
# Every language with keywords: what a keyword that must never be an answer is checked in.
ALL_KEYWORD_LANGUAGES: tuple[str, ...] = ("en", *LANGUAGE_KEYWORDS)


def _keys(keywords: tuple[str, ...]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for word in keywords:
        keys.setdefault(keyword_compact(keyword_normalize(word)), word)
    return keys


_FAMILIES = (
    ("opt_out", _keys(OPT_OUT_KEYWORDS)),
    ("opt_in", _keys(OPT_IN_KEYWORDS)),
    ("help", _keys(HELP_KEYWORDS)),
)
_LANGUAGE_FAMILIES = {
    language: tuple((family, _keys(words)) for family, words in families.items())
    for language, families in LANGUAGE_KEYWORDS.items()
}


def keyword_read(body: str, *, languages: Iterable[str] = ()) -> tuple[str, str, str]:
    """`keyword_family`, and the language the keyword is in ("en", "es", …; "" for no
    keyword): the first of `languages` that lists it, English before them."""
    key = keyword_compact(keyword_normalize(body))
    tables: list[tuple[str, tuple[tuple[str, dict[str, str]], ...]]] = [("en", _FAMILIES)]
    tables += [(code, _LANGUAGE_FAMILIES[code]) for code in languages if code in _LANGUAGE_FAMILIES]
    # Opt-out first in every language: a word that stops in one and starts in another stops.
    for wanted in ("opt_out", "opt_in", "help"):
        for language, table in tables:
            for family, keys in table:
                if family == wanted and key in keys:
                    return family, keys[key], language
    return "", "", ""


def keyword_family(body: str, *, languages: Iterable[str] = ()) -> tuple[str, str]:
    """Which keyword `body` is, once normalised (the whole message must be the keyword): its
    family ("opt_out", "opt_in", "help") and the listed keyword, e.g. ("opt_out", "OPT OUT");
    ("", "") for any other text. English is always read; `languages` adds the words of those
    languages (a clinic's enabled ones). An opt-out or help word keeps its meaning wherever
    it is texted, so it is never an answer a Wait-for-reply step branches on."""
    family, keyword, _ = keyword_read(body, languages=languages)
    return family, keyword
