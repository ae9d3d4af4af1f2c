"""integrations.twilio.previews: an SMS body's counts and the warnings the builder shows."""

from integrations.twilio.previews import sms_preview


def test_a_short_plain_text_is_one_segment_without_warnings() -> None:
    assert sms_preview("Hi Tess") == {
        "text": "Hi Tess",
        "characters": 7,
        "segments": 1,
        "encoding": "GSM-7",
        "perSegment": 160,
        "warnings": [],
    }


def test_an_emoji_switches_to_ucs2_and_names_the_characters() -> None:
    preview = sms_preview("Shipped 📦 ’")
    assert (preview["encoding"], preview["perSegment"]) == ("UCS-2", 70)
    assert "“’”" in preview["warnings"][0] and "“📦”" in preview["warnings"][0]


def test_a_long_text_is_billed_per_segment() -> None:
    assert sms_preview("x" * 161)["warnings"] == [
        "Longer than 160 characters: sent as 2 segments, each billed as one SMS."
    ]
    # 80 UCS-2 characters: two segments, though under 160 characters
    assert sms_preview("📦" * 40)["warnings"][-1] == ("Sent as 2 segments, each billed as one SMS.")


def test_over_twilios_limit_says_so_last() -> None:
    preview = sms_preview("y" * 1601)
    assert preview["warnings"][-1] == "Twilio refuses messages over 1,600 characters."


def test_an_empty_text_is_one_segment() -> None:
    preview = sms_preview("")
    assert (preview["characters"], preview["segments"], preview["warnings"]) == (0, 1, [])
