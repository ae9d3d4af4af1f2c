"""API keys: issued to a clinic (shown once), looked up by their hash, revoked at once.

A key is `cfk_` and 43 URL-safe characters (256 random bits). Only its SHA-256 is stored, and
its first characters (`prefix`) for recognition in the admin and the audit trail.
"""

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

from integrations.models import ApiKey
from patients.models import Organization
from patients.services import token_hash

# Prefix so a leaked key is recognisable (secret scanners, logs) as a careflow API key.
API_KEY_PREFIX = "cfk_"
# Characters of the key kept for recognition: the prefix and 4 random ones (24 bits: shown
# to staff, no help to a guesser of the other 232).
SHOWN_LENGTH = len(API_KEY_PREFIX) + 4
# last_used_at is written at most this often per key: a busy key would otherwise update
# its row (and take its lock) on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    api_key: ApiKey
    # The key itself: show it once, never store or log it.
    token: str


def api_key_secret_assign(*, api_key: ApiKey) -> str:
    """Give an unsaved key a new secret (its hash and prefix); return the secret."""
    token = API_KEY_PREFIX + secrets.token_urlsafe(32)
    api_key.key_hash = token_hash(token)
    api_key.prefix = token[:SHOWN_LENGTH]
    return token


def api_key_issue(
    *, organization: Organization, name: str, scope: str, created_by: Any = None
) -> IssuedApiKey:
    """Create a key for the clinic; the returned token is the only copy of it."""
    api_key = ApiKey(organization=organization, name=name, scope=scope, created_by=created_by)
    token = api_key_secret_assign(api_key=api_key)
    api_key.full_clean()
    api_key.save()
    return IssuedApiKey(api_key, token)


def api_key_revoke(*, api_key: ApiKey, revoked_by: Any = None) -> bool:
    """Revoke the key now (the next request with it is refused); False if it already was."""
    now = timezone.now()
    revoked = ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(
        revoked_at=now, revoked_by=revoked_by
    )
    if revoked:
        api_key.revoked_at, api_key.revoked_by = now, revoked_by
    return bool(revoked)


def api_key_authenticate(*, token: str) -> ApiKey | None:
    """The active key this token is, with its clinic; None for an unknown or revoked one.
    Marks it used (at most once a minute)."""
    if not token.startswith(API_KEY_PREFIX) or len(token) > 200:
        return None
    api_key = (
        ApiKey.objects.select_related("organization")
        .filter(key_hash=token_hash(token), revoked_at__isnull=True)
        .first()
    )
    if api_key is not None:
        api_key_mark_used(api_key=api_key)
    return api_key


def api_key_mark_used(*, api_key: ApiKey) -> None:
    """Record that the key was used now, unless that was recorded less than a minute ago:
    a conditional UPDATE, so concurrent requests write it once."""
    now = timezone.now()
    if api_key.last_used_at is not None and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    stale = Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    if ApiKey.objects.filter(stale, pk=api_key.pk).update(last_used_at=now):
        api_key.last_used_at = now


def api_key_actor(api_key: ApiKey) -> str:
    """How the audit trail names the key's changes."""
    return f"API key “{api_key.name}” ({api_key.prefix}…)"
