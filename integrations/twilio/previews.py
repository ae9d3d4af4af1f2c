"""The builder's preview of an SMS body: what it costs (segments, encoding) and what to
watch out for."""

from typing import Any

from integrations.first_contact import ClinicWording
from integrations.models import OutboundMessage
from integrations.short_links import LinkSettings, links_note, links_preview
from integrations.sms import MAX_BODY_CHARS, segment_info
from integrations.twilio.media import media_preview


def _non_gsm_characters(text: str) -> list[str]:
    return sorted({ch for ch in text if segment_info(ch).encoding == "UCS-2"})


def sms_preview(
    text: str,
    *,
    wording: ClinicWording | None = None,
    media_url: str = "",
    links: LinkSettings | None = None,
) -> dict[str, Any]:
    """One rendered SMS body with its counts and warnings. With the clinic's first-contact
    `wording`, the body is shown (and counted) as the first text to a number goes out, and
    "firstContact" says when that is; with a `media_url`, as the MMS it is ("media"); with
    the clinic's short `links`, with its links as short as they will be ("shortLinks")."""
    shortened, link_count = links_preview(text, links) if links is not None else (text, 0)
    sent = wording.apply(shortened) if wording is not None else shortened
    info = segment_info(sent)
    media = media_preview(media_url) if media_url.strip() else None
    warnings = []
    if info.encoding == "UCS-2":
        shown = ", ".join(f"“{ch}”" for ch in _non_gsm_characters(sent)[:5])
        warnings.append(
            f"Contains {shown}, which plain SMS cannot carry: the whole message is sent as "
            "UCS-2, 70 characters per segment instead of 160."
        )
    if media is not None:
        warnings.append(
            "Sent as an MMS with the media: billed as one MMS, not per segment (US and "
            "Canadian numbers only)."
        )
        if media["problem"]:
            warnings.append(f"Media URL: {media['problem']}.")
    elif info.characters > 160:
        warnings.append(
            f"Longer than 160 characters: sent as {info.segments} segments, each billed as one SMS."
        )
    elif info.segments > 1:
        warnings.append(f"Sent as {info.segments} segments, each billed as one SMS.")
    if info.characters > MAX_BODY_CHARS:
        warnings.append(f"Twilio refuses messages over {MAX_BODY_CHARS:,} characters.")
    preview: dict[str, Any] = {
        "text": sent,
        "characters": info.characters,
        "segments": 1 if media is not None else info.segments,
        "encoding": info.encoding,
        "perSegment": info.per_segment,
        "warnings": warnings,
    }
    if media is not None:
        preview["mms"] = True
        preview["media"] = media
    if links is not None and link_count:
        preview["shortLinks"] = links_note(links, link_count)
    if wording is not None and sent != shortened:
        plain = segment_info(shortened)
        preview["firstContact"] = (
            f"The clinic's brand prefix and opt-out wording are shown: {wording.when}. "
            f"Without them: {plain.characters} characters, {plain.segments} segment"
            f"{'s' if plain.segments != 1 else ''}."
        )
    return preview


def sms_dry_run_preview(message: OutboundMessage) -> dict[str, Any]:
    """The dry-run page's view of the SMS a step would send: who to, from whom, and what it
    costs."""
    info = segment_info(message.body)
    preview: dict[str, Any] = {
        "to": message.to,
        "from": message.from_number,
        "body": message.body,
        "characters": info.characters,
        "encoding": info.encoding,
        "segments": 1 if message.media_url else info.segments,
    }
    if message.media_url:
        preview["media"] = media_preview(message.media_url)
    return preview
