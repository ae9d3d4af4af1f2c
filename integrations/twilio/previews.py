"""The builder's preview of an SMS body: what it costs (segments, encoding) and what to
watch out for."""

from typing import Any

from integrations.models import OutboundMessage
from integrations.sms import MAX_BODY_CHARS, segment_info


def _non_gsm_characters(text: str) -> list[str]:
    return sorted({ch for ch in text if segment_info(ch).encoding == "UCS-2"})


def sms_preview(text: str) -> dict[str, Any]:
    """One rendered SMS body with its counts and warnings."""
    info = segment_info(text)
    warnings = []
    if info.encoding == "UCS-2":
        shown = ", ".join(f"“{ch}”" for ch in _non_gsm_characters(text)[:5])
        warnings.append(
            f"Contains {shown}, which plain SMS cannot carry: the whole message is sent as "
            "UCS-2, 70 characters per segment instead of 160."
        )
    if info.characters > 160:
        warnings.append(
            f"Longer than 160 characters: sent as {info.segments} segments, each billed as one SMS."
        )
    elif info.segments > 1:
        warnings.append(f"Sent as {info.segments} segments, each billed as one SMS.")
    if info.characters > MAX_BODY_CHARS:
        warnings.append(f"Twilio refuses messages over {MAX_BODY_CHARS:,} characters.")
    return {
        "text": text,
        "characters": info.characters,
        "segments": info.segments,
        "encoding": info.encoding,
        "perSegment": info.per_segment,
        "warnings": warnings,
    }


def sms_dry_run_preview(message: OutboundMessage) -> dict[str, Any]:
    """The dry-run page's view of the SMS a step would send: who to, from whom, and what it
    costs."""
    info = segment_info(message.body)
    return {
        "to": message.to,
        "from": message.from_number,
        "body": message.body,
        "characters": info.characters,
        "encoding": info.encoding,
        "segments": info.segments,
    }
