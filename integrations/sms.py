"""SMS encoding and segment arithmetic (GSM 03.38 / UCS-2), as carriers and Twilio bill it."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from wcwidth import iter_graphemes

# GSM 03.38 basic character set: one septet each. Not ESC (0x1B): it only introduces an
# extension-table character, and Twilio sends a body containing a bare ESC as UCS-2.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table: sent as ESC + char, so two septets each.
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")

MAX_BODY_CHARS = 1600

Encoding = Literal["GSM-7", "UCS-2"]

# Units (septets for GSM-7, UTF-16 code units for UCS-2) in a lone SMS, and in each part of
# a concatenated one (the rest of the part carries the concatenation header).
_CAPACITY: dict[Encoding, tuple[int, int]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    encoding: Encoding
    characters: int
    segments: int

    @property
    def per_segment(self) -> int:
        """Characters that fit one segment of a multi-part message in this encoding."""
        single, multi = _CAPACITY[self.encoding]
        return single if self.segments <= 1 else multi


def _utf16_units(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _ucs2_atoms(body: str, part: int) -> Iterable[int]:
    """The sizes, in UTF-16 code units, of the pieces Twilio never splits across parts: each
    grapheme (an emoji with its skin tone or ZWJ family, a flag, a letter with its accents),
    but not CR LF, two characters Twilio lets a part boundary fall between. A grapheme longer
    than a whole part (only contrived ones are) has to be split, but never inside a surrogate
    pair."""
    for grapheme in iter_graphemes(body):
        units = _utf16_units(grapheme)
        if units <= part and grapheme != "\r\n":
            yield units
        else:
            yield from (_utf16_units(ch) for ch in grapheme)


def _parts(atoms: Sequence[int], single: int, multi: int) -> int:
    """How many parts carry `atoms` in order, none split: one if all fit a lone SMS, else
    each part filled with whole atoms up to `multi` units."""
    if sum(atoms) <= single:
        return 1
    parts, used = 1, 0
    for size in atoms:
        if used + size > multi:
            parts, used = parts + 1, 0
        used += size
    return parts


def segment_info(body: str) -> SegmentInfo:
    """Encoding, character count and segment count of an SMS body, as Twilio counts them.

    One character outside GSM-7 (an emoji, a curly quote, a bare ESC) switches the whole
    message to UCS-2, whose units are UTF-16 code units: an emoji outside the BMP costs two.
    A part never ends inside an escape pair (€ costs two septets) or a grapheme, so a long
    message can need one part more than its units divided by 153 (or 67).
    """
    encoding: Encoding
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENDED for ch in body):
        encoding = "GSM-7"
        atoms = [2 if ch in _GSM_EXTENDED else 1 for ch in body]
    else:
        encoding = "UCS-2"
        atoms = list(_ucs2_atoms(body, _CAPACITY["UCS-2"][1]))
    segments = _parts(atoms, *_CAPACITY[encoding])
    return SegmentInfo(encoding=encoding, characters=len(body), segments=segments)
