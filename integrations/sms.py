"""SMS encoding and segment arithmetic (GSM 03.38 / UCS-2), as carriers and Twilio bill it."""

from dataclasses import dataclass
from typing import Literal

# GSM 03.38 basic character set: one septet each.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: sent as ESC + char, so two septets each.
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")

MAX_BODY_CHARS = 1600

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    encoding: Encoding
    characters: int
    segments: int

    @property
    def per_segment(self) -> int:
        """Characters that fit one segment of a multi-part message in this encoding."""
        single, multi = (160, 153) if self.encoding == "GSM-7" else (70, 67)
        return single if self.segments <= 1 else multi


def segment_info(body: str) -> SegmentInfo:
    """Encoding, character count and segment count of an SMS body.

    One character outside GSM-7 (an emoji, a curly quote) switches the whole message to
    UCS-2, whose units are UTF-16 code units: an emoji outside the BMP costs two.
    """
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in body):
        units = sum(2 if ch in _GSM_EXTENDED else 1 for ch in body)
        single, multi, encoding = 160, 153, "GSM-7"
    else:
        units = len(body.encode("utf-16-le")) // 2
        single, multi, encoding = 70, 67, "UCS-2"
    segments = 1 if units <= single else -(-units // multi)
    return SegmentInfo(encoding=encoding, characters=len(body), segments=segments)  # type: ignore[arg-type]
