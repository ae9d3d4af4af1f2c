"""Keyword matching: the whole message, once normalised, is the keyword. A patient's
"ＳＴＯＰ", "Stop." or "STOP 🛑" revokes consent as surely as "STOP"."""

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.keywords import HELP_KEYWORDS, OPT_IN_KEYWORDS, OPT_OUT_KEYWORDS, keyword_normalize
from integrations.twilio.keywords import (
    KeywordMatch,
    keyword_action,
    keyword_match,
    reads_like_revocation,
    reply_language,
    twilio_handles_opt_out,
)
from patients.models import Organization, Patient

FCC_REVOCATION_WORDS = ("stop", "quit", "end", "revoke", "opt out", "cancel", "unsubscribe")
FAMILIES = (
    *((word, "opt_out") for word in OPT_OUT_KEYWORDS),
    *((word, "opt_in") for word in OPT_IN_KEYWORDS),
    *((word, "help") for word in HELP_KEYWORDS),
)

# What phones, keyboards and people put around or inside a word.
INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
SPACES = [" ", "\u00a0", "\u2002", "\u3000", "\t", "\n", "\u202f"]
PUNCTUATION = [*".!?,;:'\"“”‘’«»()[]*~…-_", "!!!", "?!", "..."]
EMOJI = ["🛑", "✋", "🙏", "👍🏽", "😡", "❌", "🚫", "❤️", "👨\u200d👩\u200d👧", "⛔️"]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", "STOP"),
        ("ＳＴＯＰ", "STOP"),  # full-width
        ("S\u200bTOP", "STOP"),  # zero-width space inside
        ("\u00a0stop\u00a0", "STOP"),  # non-breaking spaces
        ("\ufeffSTOP", "STOP"),  # byte-order mark
        ("STOP!", "STOP"),
        ("Stop.", "STOP"),
        ("STOP 🛑", "STOP"),
        ("“Stop”", "STOP"),
        ("'unsubscribe'", "UNSUBSCRIBE"),
        ("𝐒𝐓𝐎𝐏", "STOP"),  # mathematical bold letters, as "fancy text" keyboards send
        ("Revoke", "REVOKE"),
        ("opt out", "OPT OUT"),
        ("Opt-Out", "OPT OUT"),
        ("OPT  OUT!", "OPT OUT"),
        ("optout", "OPT OUT"),
        ("Stop all", "STOPALL"),
        ("ST\x00OP", "STOP"),  # control characters, as a broken client may send
        ("STOP\x07", "STOP"),
    ],
)
def test_decorated_opt_out_keywords_match(body: str, expected: str) -> None:
    assert keyword_match(body).action == "opt_out"
    assert keyword_match(body).keyword == expected


@pytest.mark.parametrize("word", FCC_REVOCATION_WORDS)
def test_every_word_the_fcc_rule_names_is_an_opt_out_keyword(word: str) -> None:
    assert keyword_action(word) == "opt_out"
    assert keyword_action(word.upper()) == "opt_out"


def test_the_keyword_lists_do_not_overlap() -> None:
    keys = [keyword_normalize(word).replace(" ", "") for word in OPT_IN_KEYWORDS + HELP_KEYWORDS]
    assert not {keyword_normalize(w).replace(" ", "") for w in OPT_OUT_KEYWORDS} & set(keys)


@pytest.mark.parametrize(
    "body",
    [
        "STOPPED",
        "don't stop",
        "stop it",
        "please stop",
        "STOP STOP",
        "S.T.O.P",
        "backend",
        "The End",
        "I need to cancel my appointment",
        "quitting",
        "ends",
        "",
        "   ",
        "🛑",
        "\u200b",
        "YES, but later",
        "help me find the clinic",
    ],
)
def test_more_than_the_keyword_is_not_a_keyword(body: str) -> None:
    assert keyword_action(body) == "none"


@pytest.mark.parametrize(
    "body",
    [
        "please ｓｔｏｐ texting me",
        "don’t text me again",
        "I revoke my consent",
        "Opt\u00a0out please",
    ],
)
def test_free_text_revocations_are_read_after_normalising(body: str) -> None:
    assert keyword_action(body) == "none"
    assert reads_like_revocation(body)


@pytest.mark.parametrize(
    ("body", "handled"),
    [
        ("STOP", True),
        (" stop ", True),
        ("Revoke", True),
        ("OPTOUT", True),
        ("OPT OUT", False),
        ("STOP!", False),
        ("ＳＴＯＰ", False),
    ],
)
def test_what_twilio_itself_treats_as_an_opt_out(body: str, handled: bool) -> None:
    assert twilio_handles_opt_out(body) is handled


def _fullwidth(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in text)


@st.composite
def decorated(draw: st.DrawFn, word: str) -> str:
    """`word` as a patient's phone might deliver it: any case, perhaps full-width, with
    invisible characters inside and spaces, punctuation and emoji around it."""
    text = "".join(ch.upper() if draw(st.booleans()) else ch.lower() for ch in word)
    if draw(st.booleans()):
        text = _fullwidth(text)
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(INVISIBLE)) + text[at:]
    around = st.lists(
        st.sampled_from(INVISIBLE + SPACES + PUNCTUATION + EMOJI), min_size=0, max_size=4
    )
    return "".join(draw(around)) + text + "".join(draw(around))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), family=st.sampled_from(FAMILIES))
def test_any_decoration_of_a_keyword_still_matches_it(
    data: st.DataObject, family: tuple[str, str]
) -> None:
    word, action = family
    body = data.draw(decorated(word))
    assert keyword_action(body) == action, ascii(body)


KEYWORD_KEYS = {
    keyword_normalize(w).replace(" ", "")
    for w in OPT_OUT_KEYWORDS + OPT_IN_KEYWORDS + HELP_KEYWORDS
}


@settings(max_examples=300, deadline=None)
@given(
    keyword=st.sampled_from(OPT_OUT_KEYWORDS),
    other=st.text(alphabet=st.characters(categories=["Lu", "Ll", "Nd"]), min_size=1, max_size=12),
    before=st.booleans(),
)
def test_a_keyword_with_another_word_is_never_an_opt_out(
    keyword: str, other: str, before: bool
) -> None:
    body = f"{other} {keyword}" if before else f"{keyword} {other}"
    # "STOP" + "ALL" is STOPALL, "OPT" + "OUT" is OPTOUT: then it is a keyword after all.
    compact = keyword_normalize(body).replace(" ", "")
    if compact in KEYWORD_KEYS:
        return
    assert keyword_action(body) != "opt_out", ascii(body)


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_any_text_is_matched_without_error_and_only_whole_keywords_opt_out(body: str) -> None:
    action = keyword_action(body)
    assert action in {"opt_out", "opt_in", "help", "none"}
    if action == "opt_out":
        letters = "".join(
            ch for ch in unicodedata.normalize("NFKC", body).casefold() if ch.isalnum()
        )
        assert letters in {
            "".join(c for c in w.casefold() if c.isalnum()) for w in OPT_OUT_KEYWORDS
        }


# What Twilio blocks and confirms itself on a long code, written out independently: careflow
# confirms every other opt-out (the only confirmation the FCC rule allows), so a word missing
# here means no confirmation at all, and one too many means two.
TWILIO_OWN = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]


@pytest.mark.parametrize("word", TWILIO_OWN)
def test_each_word_twilio_confirms_itself(word: str) -> None:
    assert twilio_handles_opt_out(f" {word.lower()} ")
    assert keyword_action(word) == "opt_out"


@pytest.mark.parametrize("word", ["OPT OUT", "OPT-OUT", "STOP!", "PARAR", "START", "HELP"])
def test_words_twilio_does_not_confirm(word: str) -> None:
    assert not twilio_handles_opt_out(word)


@pytest.mark.parametrize(
    ("word", "action"),
    [
        ("YES", "opt_in"),
        ("UNSTOP", "opt_in"),
        ("START", "opt_in"),
        ("INFO", "help"),
        ("HELP", "help"),
    ],
)
def test_opt_in_and_help_words_are_actions(word: str, action: str) -> None:
    assert keyword_action(word.lower()) == action


# The language a keyword is answered in. Unsaved rows: reply_language reads only their
# fields, and the clinic enables English (its fallback), Spanish and French.
def _clinic() -> Organization:
    return Organization(fallback_language="en", languages=["en", "es", "fr"])


@pytest.mark.parametrize(
    ("match", "patient_languages", "expected"),
    [
        # A keyword in another language is answered in it, whatever the patient prefers.
        (KeywordMatch("opt_out", "PARAR", "es"), ["fr"], "es"),
        (KeywordMatch("opt_out", "PARAR", "es"), [], "es"),
        # An English keyword (or free text) is answered in the first patient's language...
        (KeywordMatch("opt_out", "STOP", "en"), ["fr", "es"], "fr"),
        (KeywordMatch("help", "HELP", "en"), ["es"], "es"),
        (KeywordMatch("none", "", ""), ["fr"], "fr"),
        # ...when the clinic enables it; else in the clinic's own wording.
        (KeywordMatch("opt_out", "STOP", "en"), ["de"], ""),
        (KeywordMatch("none", "", ""), ["de", "fr"], ""),
        (KeywordMatch("opt_out", "STOP", "en"), [], ""),
        (KeywordMatch("none", "", ""), [], ""),
    ],
)
def test_the_language_a_keyword_is_answered_in(
    match: KeywordMatch, patient_languages: list[str], expected: str
) -> None:
    patients = [Patient(language=language) for language in patient_languages]
    assert reply_language(match, patients, _clinic()) == expected
