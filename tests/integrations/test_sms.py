import pytest

from integrations.sms import segment_info
from integrations.twilio.previews import sms_preview
from integrations.twilio.transport import TwilioTransport
from tests.integrations.segment_cases import calculator_cases


@pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [
        ("", "GSM-7", 1),
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),
        ("a" * 307, "GSM-7", 3),
        ("€" * 80, "GSM-7", 1),  # extension chars take two septets: 160
        ("€" * 81, "GSM-7", 2),
        ("a" * 70 + "’", "UCS-2", 2),  # one curly quote switches the whole message
        ("😀" * 35, "UCS-2", 1),  # an astral emoji is two UTF-16 units: 70
        ("😀" * 36, "UCS-2", 2),
    ],
)
def test_segment_info(body: str, encoding: str, segments: int) -> None:
    info = segment_info(body)
    assert (info.encoding, info.segments, info.characters) == (encoding, segments, len(body))


@calculator_cases
def test_segment_info_counts_as_twilios_segment_calculator(
    body: str, encoding: str, segments: int
) -> None:
    """Twilio never ends a part inside an escape pair, a surrogate pair or a grapheme, so a
    body can take one part more than its units divided by 153 (or 67)."""
    info = segment_info(body)
    assert (info.encoding, info.segments) == (encoding, segments)
    assert info.characters == len(body)


def test_a_grapheme_longer_than_a_part_is_split_between_code_points() -> None:
    # A letter with 80 combining accents is one grapheme of 81 units: it cannot fit a part,
    # so it is cut, though never inside a surrogate pair.
    assert segment_info("e" + "\u0301" * 80).segments == 2
    assert segment_info("😀" + "\U0001f3fd" * 40).segments == 2  # 82 units, all pairs


def test_builder_preview_and_throttle_use_twilios_count() -> None:
    body = "a" * 152 + "€" + "a" * 152
    preview = sms_preview(body)
    assert (preview["segments"], preview["encoding"]) == (3, "GSM-7")
    assert "sent as 3 segments" in " ".join(preview["warnings"])
    # The adapter's measure feeds the message log (OutboundMessage.segments) and the
    # throttle's reservation.
    assert TwilioTransport().measure(body) == (305, "GSM-7", 3)
    assert TwilioTransport().measure("😀" * 67) == (67, "UCS-2", 3)
