"""Quiet hours: when may a text reach this recipient, in their local time?

Where the recipient is comes from, in order: the patient's time zone, else the state of their
address, else their phone number's area code. A state or area code that spans several time
zones, or no clue at all, gives several candidate zones, and then a send must be allowed in
every one of them (the strictest window). Florida and Oklahoma cap the window at 20:00, and
apply whenever the recipient may be there, to the channels their rules for texts and calls
bind (`Transport.phone_rules`; integrations.policy decides which rules a message goes under).
"""

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache

import phonenumbers
from phonenumbers import geocoder
from phonenumbers import timezone as phone_timezones

from patients.models import Patient
from patients.zones import STATE_NAMES, STATE_ZONES

# No clue where the recipient is: the zones of the US states (the strictest window).
UNKNOWN_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
)
# States whose rules are stricter than the federal 08:00–21:00 (DOMAIN.md §5).
STRICT_STATES: dict[str, time] = {"FL": time(20, 0), "OK": time(20, 0)}
STRICT_STATE_DAILY_LIMIT = 3


@dataclass(frozen=True, slots=True)
class Whereabouts:
    """Where a recipient may be: candidate zones, possible states, and how we know."""

    zones: tuple[str, ...]
    states: frozenset[str]
    source: str  # "patient time zone" | "address" | "area code" | "unknown"


# What a number says about where its owner is never changes: parsed once per process
# (phonenumbers' parsing and lookups cost about 0.5 ms per send).
@lru_cache(maxsize=8192)
def _phone_state(phone: str) -> str | None:
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    description = geocoder.description_for_number(number, "en")
    if ", " in description:
        code = description.rsplit(", ", 1)[1]
        return code if code in STATE_ZONES else None
    return STATE_NAMES.get(description)


@lru_cache(maxsize=8192)
def _phone_zones(phone: str) -> tuple[str, ...]:
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return ()
    zones = tuple(z for z in phone_timezones.time_zones_for_number(number) if z != "Etc/Unknown")
    # A number that could be anywhere in the +1 zone tells us nothing.
    return zones if 0 < len(zones) <= 3 else ()


def recipient_whereabouts(patient: Patient | None, phone: str) -> Whereabouts:
    """Where the recipient may be, from the best evidence we have."""
    address_state = patient.province_code.upper() if patient and patient.province_code else ""
    phone_state = _phone_state(phone)
    states = {s for s in (address_state, phone_state) if s}
    if patient and patient.timezone:
        return Whereabouts((patient.timezone,), frozenset(states), "patient time zone")
    if address_state in STATE_ZONES:
        return Whereabouts(STATE_ZONES[address_state], frozenset(states), "address")
    zones = _phone_zones(phone) or (STATE_ZONES.get(phone_state or "", ()))
    if zones:
        return Whereabouts(zones, frozenset(states), "area code")
    # Unknown: any state may apply, so the strict states' rules do too.
    return Whereabouts(UNKNOWN_ZONES, frozenset(STRICT_STATES), "unknown")


@dataclass(frozen=True, slots=True)
class Window:
    start: time
    end: time


def effective_window(start: time, end: time, states: Iterable[str]) -> Window:
    """The clinic's window, narrowed by any strict state the recipient may be in."""
    for state in states:
        if state in STRICT_STATES:
            end = min(end, STRICT_STATES[state])
    return Window(start, end)


def _allowed(moment: datetime, zones: Iterable[str], window: Window) -> bool:
    return all(
        window.start <= moment.astimezone(zoneinfo.ZoneInfo(zone)).time() < window.end
        for zone in zones
    )


def next_allowed(now: datetime, zones: tuple[str, ...], window: Window) -> datetime | None:
    """`now` if sending is allowed now in every zone, else the earliest later moment that is;
    None if the zones' windows never overlap (then the caller picks a fallback)."""
    if _allowed(now, zones, window):
        return now
    candidates = []
    for zone in zones:
        tz = zoneinfo.ZoneInfo(zone)
        local = now.astimezone(tz)
        for days in range(3):
            start = datetime.combine(local.date() + timedelta(days=days), window.start, tzinfo=tz)
            if start > now:
                candidates.append(start)
    for candidate in sorted(candidates):
        if _allowed(candidate, zones, window):
            return candidate
    return None
