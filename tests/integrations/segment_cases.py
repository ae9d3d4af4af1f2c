"""SMS bodies at the edges of segment counting, with the encoding and segment count Twilio's
own segment calculator gives them.

Source: Twilio's Message Segment Calculator, https://twiliodeved.github.io/message-segment-calculator/
(repository https://github.com/TwilioDevEd/message-segment-calculator, commit a50230f,
`docs/scripts/segmentsCalculator.js`, the bundle the page runs): each body below was put
through its `SegmentedMessage` and the table keeps what it answered. Both careflow's counter
(tests/integrations/test_sms.py) and the sandbox's own model of Twilio
(tests/integrations/twilio/test_sandbox_segments.py) are held to it.

Where careflow knowingly differs from the calculator: a grapheme longer than a whole part (a
letter under dozens of combining marks, a run of joiners: contrived text) goes whole into one
segment there, more than an SMS can carry; careflow cuts it between code points. Beyond this table, generated bodies are checked
against the sandbox's own model of Twilio (test_sandbox_segments.py), not the calculator.
"""

import pytest

EURO = "€"  # GSM-7 extension table: escape + character, two septets
EMOJI = "😀"  # outside the BMP: a surrogate pair, two UTF-16 units
FAMILY = "👨\u200d👩\u200d👧\u200d👦"  # one grapheme of 11 UTF-16 units (ZWJ sequence)
THUMBS = "👍🏽"  # emoji + skin-tone modifier: one grapheme, 4 units
FLAG = "🇫🇷"  # two regional indicators: one grapheme, 4 units
QUOTE = "’"  # not GSM-7, one UTF-16 unit

# (description, body, encoding, segments)
CALCULATOR_CASES: list[tuple[str, str, str, int]] = [
    ("empty body", "", "GSM-7", 1),
    ("160 letters", "a" * 160, "GSM-7", 1),
    ("161 letters", "a" * 161, "GSM-7", 2),
    ("306 letters", "a" * 306, "GSM-7", 2),
    ("307 letters", "a" * 307, "GSM-7", 3),
    ("80 euro signs", EURO * 80, "GSM-7", 1),
    ("81 euro signs", EURO * 81, "GSM-7", 2),
    ("158 letters then a euro: 160 septets", "a" * 158 + EURO, "GSM-7", 1),
    ("159 letters then a euro: 161 septets", "a" * 159 + EURO, "GSM-7", 2),
    ("152 letters, euro, 152 letters", "a" * 152 + EURO + "a" * 152, "GSM-7", 3),
    ("153 letters, euro, 151 letters", "a" * 153 + EURO + "a" * 151, "GSM-7", 2),
    ("a brace at the part boundary", "a" * 152 + "{" + "a" * 152, "GSM-7", 3),
    ("escape pairs at every part boundary", ("a" * 152 + EURO) * 3, "GSM-7", 4),
    ("CR LF is two GSM-7 characters", "a" * 158 + "\r\n", "GSM-7", 1),
    ("CR LF split at the part boundary", "a" * 152 + "\r\n" + "a" * 152, "GSM-7", 2),
    ("CR LF split at a UCS-2 part boundary", QUOTE * 66 + "\r\n" + QUOTE * 66, "UCS-2", 2),
    ("form feed is an escape pair", "\f" * 80, "GSM-7", 1),
    ("one form feed too many", "\f" * 81, "GSM-7", 2),
    ("GSM-7 accented letters", "ñ" * 160, "GSM-7", 1),
    ("a bare ESC is UCS-2", "\x1b", "UCS-2", 1),
    ("ESC among letters", "a" * 10 + "\x1b" + "a" * 10, "UCS-2", 1),
    ("70 curly quotes", QUOTE * 70, "UCS-2", 1),
    ("71 curly quotes", QUOTE * 71, "UCS-2", 2),
    ("134 curly quotes", QUOTE * 134, "UCS-2", 2),
    ("135 curly quotes", QUOTE * 135, "UCS-2", 3),
    ("Spanish i-acute is UCS-2", "Í" * 71, "UCS-2", 2),
    ("35 emoji: 70 units", EMOJI * 35, "UCS-2", 1),
    ("36 emoji", EMOJI * 36, "UCS-2", 2),
    ("66 emoji", EMOJI * 66, "UCS-2", 2),
    ("67 emoji: 134 units, but 33 a part", EMOJI * 67, "UCS-2", 3),
    ("letters and an emoji: 70 units", "a" * 68 + EMOJI, "UCS-2", 1),
    ("letters and an emoji: 71 units", "a" * 69 + EMOJI, "UCS-2", 2),
    ("surrogate pair on the 67th unit", QUOTE * 66 + EMOJI + QUOTE * 66, "UCS-2", 3),
    ("surrogate pair after the 67th unit", QUOTE * 67 + EMOJI + QUOTE * 65, "UCS-2", 2),
    ("euro in a UCS-2 body is one unit", EURO * 69 + EMOJI, "UCS-2", 2),
    ("ZWJ families within one part", FAMILY * 6, "UCS-2", 1),
    ("ZWJ family across the part boundary", QUOTE * 62 + FAMILY + QUOTE * 61, "UCS-2", 3),
    ("skin-tone emoji across the part boundary", QUOTE * 65 + THUMBS + QUOTE * 65, "UCS-2", 3),
    ("flag across the part boundary", QUOTE * 65 + FLAG + QUOTE * 65, "UCS-2", 3),
    ("combining accent across the boundary", QUOTE * 66 + "e\u0301" + QUOTE * 66, "UCS-2", 3),
]

# The table as test parameters: body, encoding, segments (each named by its description).
calculator_cases = pytest.mark.parametrize(
    ("body", "encoding", "segments"),
    [pytest.param(body, enc, seg, id=name) for name, body, enc, seg in CALCULATOR_CASES],
)
