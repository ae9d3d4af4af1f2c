"""The sandbox's own model of how Twilio measures an SMS body: encoding and segment count.

Written from Twilio's documentation, not from careflow's counter (integrations.sms), so
that a test comparing the two on generated bodies (tests/integrations/twilio/
test_sandbox_segments.py) catches a counting bug in either. It counts bits, as the
documentation does, where careflow counts characters:

- Twilio's "What the Heck is a Segment?" (https://www.twilio.com/blog/what-the-heck-is-a-segment-html):
  one SMS carries 140 bytes of user data, 1,120 bits. A GSM-7 character takes 7 bits; a
  character of the GSM extension table is sent as an escape plus the character, 14 bits. A
  UCS-2 unit takes 16 bits, and a character outside the Basic Multilingual Plane is two units.
  A body split across several messages gives 6 bytes (48 bits) of each to the User Data
  Header that tells the handset how to put it back together.
- "What is the SMS character limit?" (https://www.twilio.com/docs/glossary/what-sms-character-limit):
  one character outside the GSM-7 alphabet makes the whole body UCS-2; a body may be at most
  1,600 characters.
- Twilio's segment calculator (https://twiliodeved.github.io/message-segment-calculator/):
  a segment never ends inside an escape pair, nor, in UCS-2, inside a grapheme (a
  user-perceived character: an emoji with its skin tone, a ZWJ family, a flag, a letter with
  its combining accent), though one may fall between CR and LF. A bare ESC (0x1B) is not
  a character of the alphabet.

No Django imports: the sandbox runs without Django.
"""

from typing import Literal

from wcwidth import iter_graphemes

MAX_BODY_CHARS = 1600
USER_DATA_BITS = 140 * 8
UDH_BITS = 6 * 8
GSM_BITS = 7
UCS2_BITS = 16

# GSM 03.38 default alphabet, by code point: the ASCII rows it shares (LF, CR, space to Z
# except the four the extension table carries, underscore, a to z) and the rest of it.
_GSM_DEFAULT_ALPHABET = frozenset(
    [0x0A, 0x0D, 0x5F, *range(0x20, 0x5B), *range(0x61, 0x7B)]
    + [ord(ch) for ch in "\u00a3\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7\u00d8\u00f8"]
    + [ord(ch) for ch in "\u00c5\u00e5\u0394\u03a6\u0393\u039b\u03a9\u03a0\u03a8\u03a3"]
    + [ord(ch) for ch in "\u0398\u039e\u00c6\u00e6\u00df\u00c9\u00a4\u00a1\u00c4\u00d6"]
    + [ord(ch) for ch in "\u00d1\u00dc\u00a7\u00bf\u00e4\u00f6\u00f1\u00fc\u00e0"]
)
# GSM 03.38 extension table (sent after an escape): form feed, [ \ ] ^ { | } ~ and the euro.
_GSM_EXTENSION_TABLE = frozenset([0x0C, *range(0x5B, 0x5F), *range(0x7B, 0x7F), 0x20AC])


def _gsm7_bits(body: str) -> list[int] | None:
    """Bits each character takes in GSM-7, or None when the body cannot be GSM-7."""
    bits = []
    for ch in body:
        point = ord(ch)
        if point in _GSM_DEFAULT_ALPHABET:
            bits.append(GSM_BITS)
        elif point in _GSM_EXTENSION_TABLE:
            bits.append(2 * GSM_BITS)
        else:
            return None
    return bits


def _ucs2_bits(body: str) -> list[int]:
    """Bits each unsplittable piece takes in UCS-2: a grapheme, or each of its code points
    for CR LF (the calculator keeps carriage return and line feed apart) and for a grapheme
    bigger than a whole concatenated segment."""
    room = USER_DATA_BITS - UDH_BITS
    pieces = []
    for grapheme in iter_graphemes(body):
        sizes = [UCS2_BITS * (2 if ord(ch) > 0xFFFF else 1) for ch in grapheme]
        if sum(sizes) <= room and grapheme != "\r\n":
            pieces.append(sum(sizes))
        else:
            pieces.extend(sizes)
    return pieces


def twilio_measure(body: str) -> tuple[Literal["GSM-7", "UCS-2"], int]:
    """(encoding, num_segments) of an SMS body, as Twilio reports them."""
    pieces = _gsm7_bits(body)
    encoding: Literal["GSM-7", "UCS-2"] = "GSM-7"
    if pieces is None:
        encoding, pieces = "UCS-2", _ucs2_bits(body)
    if sum(pieces) <= USER_DATA_BITS:
        return encoding, 1
    segments, free = 0, 0
    for bits in pieces:
        if bits > free:
            segments, free = segments + 1, USER_DATA_BITS - UDH_BITS
        free -= bits
    return encoding, segments


def twilio_num_segments(body: str) -> int:
    return twilio_measure(body)[1]
