"""A text's media (an MMS): which URLs Twilio can fetch, and what the preview says of them.

Twilio fetches each MediaUrl itself when it sends the MMS (at most 10 per message, 5 MB in
all; JPEG, PNG and GIF are resized for the handset, other types such as PDF are passed on as
they are). A URL it cannot fetch fails the message later (error 11200/12300), after the step
has "succeeded", so what can be told in advance is told when the workflow is saved (a literal
URL) or when the step runs (a templated one).
"""

from typing import Any
from urllib.parse import urlsplit

from common.addresses import host_unreachable
from integrations.models import MEDIA_URL_MAX_CHARS

# By the path's extension; a URL without one is Twilio's to judge by its Content-Type.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif"})
DOCUMENT_EXTENSIONS = frozenset({".pdf"})


def _extension(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""


def media_url_problem(value: str) -> str:
    """Why Twilio could not (or must not) fetch `value` as a text's media, or "".

    https only (a URL sent in clear could be swapped on the way, and carriers ask for it);
    no user name or password in it (the URL is stored and shown in the message log); no host
    only the clinic's network knows (localhost, a private or loopback address): Twilio would
    fail to fetch it, after the step had succeeded. Hosts are not looked up in DNS here: a
    name's address can change between saving and sending, and Twilio, not careflow, fetches
    it, so the check is about reachability, not about protecting careflow's network."""
    url = value.strip()
    if not url:
        return ""
    if len(url) > MEDIA_URL_MAX_CHARS:
        return f"the media URL is longer than {MEDIA_URL_MAX_CHARS:,} characters"
    if any(ch.isspace() for ch in url):
        return "the media URL contains spaces: encode them as %20"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 — raises ValueError for a port that is not a number
    except ValueError:
        return "the media URL is not a valid URL"
    if parts.scheme.lower() != "https":
        return "the media URL must start with https:// (Twilio fetches it; plain http is refused)"
    if not host:
        return "the media URL has no host"
    if parts.username is not None or parts.password is not None:
        return "the media URL must not contain a user name or password"
    unreachable = host_unreachable(host)
    if unreachable == "address":
        return f"the media URL's host {host} is a private or local address Twilio cannot reach"
    if unreachable == "name":
        return f"the media URL's host “{host}” is not reachable from the internet"
    extension = _extension(parts.path)
    if extension and extension not in IMAGE_EXTENSIONS | DOCUMENT_EXTENSIONS:
        return (
            f"the media URL ends in “{extension}”: send an image (JPEG, PNG, GIF) or a PDF "
            "(Twilio's MMS limit is 5 MB)"
        )
    return ""


def media_kind(url: str) -> str:
    """ "image", "pdf" or "file" (no extension to tell by), as the preview shows it."""
    extension = _extension(urlsplit(url).path)
    if extension in IMAGE_EXTENSIONS:
        return "image"
    if extension in DOCUMENT_EXTENSIONS:
        return "pdf"
    return "file"


def media_preview(url: str) -> dict[str, Any]:
    """The preview's view of a media URL: the URL, its kind and any problem. The admin shows
    it as a link, never loading it itself: an image fetched by the page would tell a third
    party the staff member's address (and, rendered for a test patient, whatever patient data
    a templated URL carries)."""
    url = url.strip()
    return {"url": url, "kind": media_kind(url), "problem": media_url_problem(url)}
