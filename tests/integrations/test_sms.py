import pytest

from integrations.sms import segment_info


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
