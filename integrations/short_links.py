"""Short links: the http(s) links in a text become short links served by careflow when the
text is claimed for sending, and a click on one is recorded and becomes an event.

Rewritten at the claim, with the first-contact wording (integrations.sending,
integrations.first_contact): the body recorded in the claim is the body sent, so a retried,
redelivered or reconciled send goes out with the same links. A claim that is retried (the
provider asked us to try later) or raced finds the links it made before: one link per message
and URL (a UNIQUE constraint), so the code never changes for a message.

Only for channels whose transport says so (`Transport.short_links`, texts): a link costs an SMS
characters, an email nothing; and mail scanners follow every link in an email, which would
record clicks nobody made.

A code is random (`secrets`, base62) and names neither the patient nor the message: a guessed
or leaked code tells nothing, and a click is tied to its message only in our database.
"""

import hashlib
import re
import secrets
import string
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http.request import validate_host

from common.db import insert_or_get
from integrations.messaging import body_measure, transport_get
from integrations.models import LinkClick, MessagingPolicy, OutboundMessage, ShortLink
from integrations.policy import messaging_policy
from patients.payloads import customer_payload
from patients.recording import event_record

CODE_ALPHABET = string.ascii_letters + string.digits
# 62^10 ≈ 8·10^17: not guessable by trying, and short enough to cost little.
CODE_LENGTH = 10
CODE_PATTERN = re.compile(rf"[A-Za-z0-9]{{{CODE_LENGTH}}}")
PATH = "/l/"
# A link as written in a text: http(s), up to whitespace or a character no URL carries
# unescaped. Punctuation that ends a sentence is not part of it ("see https://x.example.").
_URL = re.compile(r"https?://[^\s<>\"'{}|\\^`]+", re.IGNORECASE)
_TRAILING = ".,;:!?)]'\""
# A link longer than this is left as it is (nothing sends such a link on purpose).
MAX_URL_LENGTH = 2000
CLICK_EVENT = "message.link_clicked"
# User agents of link-preview fetchers (a chat app or a phone drawing the link's card): their
# request is not a person clicking. Lower case, matched as substrings.
PREVIEW_AGENTS = (
    "facebookexternalhit",  # also iMessage's ("… facebookexternalhit/1.1 Facebot Twitterbot")
    "whatsapp",
    "slackbot",
    "slack-imgproxy",
    "twitterbot",
    "discordbot",
    "telegrambot",
    "skypeuripreview",
    "linkedinbot",
    "googlebot",
    "bingbot",
    "applebot",
    "bot/",
    "crawler",
    "spider",
    "preview",
)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """A clinic's short links: the origin they are served on and how long they work."""

    base: str  # https://go.sunrise.example (no trailing slash)
    days: int

    def url(self, code: str) -> str:
        return f"{self.base}{PATH}{code}"

    @property
    def length(self) -> int:
        """Characters of one short link in a text."""
        return len(self.url("x" * CODE_LENGTH))


def link_settings(policy: MessagingPolicy) -> LinkSettings | None:
    """The clinic's short links, or None when it does not shorten them."""
    if not policy.short_links_enabled:
        return None
    base = (policy.short_link_domain or settings.CAREFLOW_PUBLIC_URL).rstrip("/")
    return LinkSettings(base, policy.short_link_days)


def short_link_host_unserved(policy: MessagingPolicy) -> str:
    """The host of the clinic's short links when careflow would refuse requests for it (not
    in ALLOWED_HOSTS), else ""."""
    link = link_settings(policy)
    if link is None:
        return ""
    host = urlsplit(link.base).hostname or ""
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:  # Django's own default under DEBUG
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return "" if validate_host(host, allowed) else host


def links_in(body: str) -> list[tuple[int, int, str]]:
    """(start, end, url) of each link in `body`, in order, without the punctuation after it."""
    found = []
    for match in _URL.finditer(body):
        url = match.group(0).rstrip(_TRAILING)
        if len(url) <= len("https://") or len(url) > MAX_URL_LENGTH:
            continue
        found.append((match.start(), match.start() + len(url), url))
    return found


def links_replace(body: str, short: dict[str, str]) -> str:
    """`body` with each link found in `short` replaced by its short link."""
    parts, last = [], 0
    for start, end, url in links_in(body):
        if url in short:
            parts += [body[last:start], short[url]]
            last = end
    return "".join(parts) + body[last:]


def links_preview(body: str, link: LinkSettings) -> tuple[str, int]:
    """`body` as it will be sent (each link replaced by a short link of the real length, its
    code shown as x's) and how many links are replaced: for the builder's preview and the dry
    run, which count segments before any link exists."""
    urls = {url for _, _, url in links_in(body)}
    placeholder = link.url("x" * CODE_LENGTH)
    return links_replace(body, dict.fromkeys(urls, placeholder)), len(urls)


def links_note(link: LinkSettings, count: int) -> str:
    """How the preview says it."""
    each = "it is" if count == 1 else "each is"
    return (
        f"Links are shortened when sent: {count} link{'s' if count != 1 else ''}, {each} "
        f"~{link.length} characters ({link.base}{PATH}…), counted as such."
    )


def message_link_settings(message: OutboundMessage) -> LinkSettings | None:
    """The short links for `message`: its clinic's, if its channel carries them and its body
    has a link."""
    try:
        if not transport_get(message.integration.adapter).short_links:
            return None
    except LookupError:
        return None
    if not links_in(message.body):  # the policy is read only when it is needed
        return None
    return link_settings(messaging_policy(message.organization_id))


def _code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def short_link_get_or_create(
    *, message: OutboundMessage, url: str, link: LinkSettings, now: datetime
) -> ShortLink:
    """The message's short link for `url`: the one made by an earlier claim, or a new one
    with a fresh random code (a code taken already, 1 in 10^17, draws again)."""
    defaults = {
        "organization_id": message.organization_id,
        "expires_at": now + timedelta(days=link.days),
        "created_at": now,
    }
    for _ in range(5):
        try:
            with transaction.atomic():
                return insert_or_get(
                    ShortLink, {"message": message, "url": url}, {**defaults, "code": _code()}
                )
        except ShortLink.DoesNotExist:  # the INSERT failed on the code, not on message+url
            continue
    raise IntegrityError("no free short link code after 5 draws")


def short_links_fields(message: OutboundMessage, *, now: datetime) -> dict[str, Any]:
    """What a claim records for the message's links: the body with short links and its
    measure; nothing when the clinic does not shorten links, the channel does not carry them,
    or the body has none left to shorten (links that are already this message's short links,
    from an earlier claim, are left as they are)."""
    if message.pk is None:
        return {}
    link = message_link_settings(message)
    if link is None:
        return {}
    # By path, whatever the domain: the clinic may have changed its link domain since.
    mine = {
        f"{PATH}{code}"
        for code in ShortLink.objects.filter(message=message).values_list("code", flat=True)
    }
    urls = [url for _, _, url in links_in(message.body) if urlsplit(url).path not in mine]
    if not urls:
        return {}
    short = {
        url: link.url(short_link_get_or_create(message=message, url=url, link=link, now=now).code)
        for url in dict.fromkeys(urls)
    }
    body = links_replace(message.body, short)
    characters, encoding, segments = body_measure(
        message.integration.adapter, body, media=bool(message.media_url)
    )
    return {"body": body, "characters": characters, "encoding": encoding, "segments": segments}


def link_may_shorten(message: OutboundMessage) -> bool:
    """Whether a claim of `message` may shorten links (then the message row must exist
    before the claim: the links refer to it)."""
    return message_link_settings(message) is not None


# --- clicks --------------------------------------------------------------------------------


def is_preview_agent(user_agent: str) -> bool:
    """Whether the request comes from a link-preview fetcher rather than a person: a chat
    app's or a phone's card for the link. Best effort: an agent that hides what it is counts
    as a click."""
    agent = user_agent.lower()
    return any(word in agent for word in PREVIEW_AGENTS)


def agent_hash(user_agent: str) -> str:
    """A short, salted hash of the user agent: tells one device's repeated clicks apart from
    others' without keeping the agent string (nor any IP address)."""
    if not user_agent:
        return ""
    salted = f"{settings.SECRET_KEY}:short-link-agent:{user_agent}".encode()
    return hashlib.sha256(salted).hexdigest()[:16]


def short_link_find(code: str) -> ShortLink | None:
    """The link with this code; None for a code that cannot be one or is not ours."""
    if not CODE_PATTERN.fullmatch(code):
        return None
    return ShortLink.objects.select_related("message", "message__patient").filter(code=code).first()


def link_click_record(*, link: ShortLink, user_agent: str, now: datetime) -> LinkClick:
    """Record a click on `link` and, when the message went to a patient, the event
    message.link_clicked (through the outbox, in the same transaction): a workflow's goal,
    exit or trigger. One click per request: a patient who clicks twice clicked twice."""
    with transaction.atomic():
        click = LinkClick.objects.create(
            link=link, clicked_at=now, agent_hash=agent_hash(user_agent)
        )
        patient = link.message.patient
        if patient is not None:
            event_record(
                organization_id=link.organization_id,
                type=CLICK_EVENT,
                payload={
                    "link": {"url": link.url, "clickedAt": now.isoformat()},
                    "message": {"id": str(link.message.uuid)},
                    "customer": customer_payload(patient),
                },
                dedupe_key=f"{CLICK_EVENT}:{click.pk}",
                subject_type="customer",
                subject_id=str(patient.pk),
                occurred_at=now,
            )
    return click
