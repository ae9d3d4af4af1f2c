"""Where a patient is in time, from what their record says.

Quiet hours (integrations.quiet_hours) and the dates and times texted to a patient
(workflows.rendering) read the same tables, so "Tuesday at 9:00" means the same place's
9:00 everywhere. Pure data and functions of it: no database, no provider.
"""

import zoneinfo
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from patients.models import Organization, Patient

# The zones of each US state (and DC); several where a state spans zones, the zone most of
# its people live in first (`display_zone` shows that one).
STATE_ZONES: dict[str, tuple[str, ...]] = {
    "AL": ("America/Chicago",),
    "AK": ("America/Anchorage", "America/Adak"),
    "AZ": ("America/Phoenix",),
    "AR": ("America/Chicago",),
    "CA": ("America/Los_Angeles",),
    "CO": ("America/Denver",),
    "CT": ("America/New_York",),
    "DE": ("America/New_York",),
    "DC": ("America/New_York",),
    "FL": ("America/New_York", "America/Chicago"),
    "GA": ("America/New_York",),
    "HI": ("Pacific/Honolulu",),
    "ID": ("America/Boise", "America/Los_Angeles"),
    "IL": ("America/Chicago",),
    "IN": ("America/Indiana/Indianapolis", "America/Chicago"),
    "IA": ("America/Chicago",),
    "KS": ("America/Chicago", "America/Denver"),
    "KY": ("America/New_York", "America/Chicago"),
    "LA": ("America/Chicago",),
    "ME": ("America/New_York",),
    "MD": ("America/New_York",),
    "MA": ("America/New_York",),
    "MI": ("America/Detroit", "America/Menominee"),
    "MN": ("America/Chicago",),
    "MS": ("America/Chicago",),
    "MO": ("America/Chicago",),
    "MT": ("America/Denver",),
    "NE": ("America/Chicago", "America/Denver"),
    "NV": ("America/Los_Angeles",),
    "NH": ("America/New_York",),
    "NJ": ("America/New_York",),
    "NM": ("America/Denver",),
    "NY": ("America/New_York",),
    "NC": ("America/New_York",),
    "ND": ("America/Chicago", "America/Denver"),
    "OH": ("America/New_York",),
    "OK": ("America/Chicago",),
    "OR": ("America/Los_Angeles", "America/Boise"),
    "PA": ("America/New_York",),
    "RI": ("America/New_York",),
    "SC": ("America/New_York",),
    "SD": ("America/Chicago", "America/Denver"),
    "TN": ("America/Chicago", "America/New_York"),
    "TX": ("America/Chicago", "America/Denver"),
    "UT": ("America/Denver",),
    "VT": ("America/New_York",),
    "VA": ("America/New_York",),
    "WA": ("America/Los_Angeles",),
    "WV": ("America/New_York",),
    "WI": ("America/Chicago",),
    "WY": ("America/Denver",),
    "PR": ("America/Puerto_Rico",),
}
STATE_NAMES = {
    "Alabama": "AL",
    "Alaska": "AK",
    "Arizona": "AZ",
    "Arkansas": "AR",
    "California": "CA",
    "Colorado": "CO",
    "Connecticut": "CT",
    "Delaware": "DE",
    "District of Columbia": "DC",
    "Washington D.C.": "DC",
    "Florida": "FL",
    "Georgia": "GA",
    "Hawaii": "HI",
    "Idaho": "ID",
    "Illinois": "IL",
    "Indiana": "IN",
    "Iowa": "IA",
    "Kansas": "KS",
    "Kentucky": "KY",
    "Louisiana": "LA",
    "Maine": "ME",
    "Maryland": "MD",
    "Massachusetts": "MA",
    "Michigan": "MI",
    "Minnesota": "MN",
    "Mississippi": "MS",
    "Missouri": "MO",
    "Montana": "MT",
    "Nebraska": "NE",
    "Nevada": "NV",
    "New Hampshire": "NH",
    "New Jersey": "NJ",
    "New Mexico": "NM",
    "New York": "NY",
    "North Carolina": "NC",
    "North Dakota": "ND",
    "Ohio": "OH",
    "Oklahoma": "OK",
    "Oregon": "OR",
    "Pennsylvania": "PA",
    "Rhode Island": "RI",
    "South Carolina": "SC",
    "South Dakota": "SD",
    "Tennessee": "TN",
    "Texas": "TX",
    "Utah": "UT",
    "Vermont": "VT",
    "Virginia": "VA",
    "Washington": "WA",
    "West Virginia": "WV",
    "Wisconsin": "WI",
    "Wyoming": "WY",
    "Puerto Rico": "PR",
}


def zone_valid(name: str) -> bool:
    """Whether `name` is a time zone this machine knows (IANA name, e.g. America/Chicago)."""
    if not name:
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def display_zone(*, patient_timezone: str, province_code: str, clinic_timezone: str) -> str:
    """The one zone to show a patient dates and times in: their own time zone, else the
    state of their address (its main zone where a state spans several, e.g. Florida's
    Eastern), else the clinic's, else UTC. Quiet hours, which must be safe wherever the
    recipient may be, weigh every candidate zone instead (and the phone's area code)."""
    if zone_valid(patient_timezone):
        return patient_timezone
    state = province_code.strip().upper()
    if state in STATE_ZONES:
        return STATE_ZONES[state][0]
    return clinic_zone(clinic_timezone).key


def clinic_zone(name: str) -> zoneinfo.ZoneInfo:
    """A clinic's zone, for its pages and for someone careflow has no record of; UTC for a
    name this machine does not know (validated on save, but a zone database update can drop
    one: a page must still render)."""
    return zoneinfo.ZoneInfo(name if zone_valid(name) else "UTC")


def patient_zone(patient: "Patient | None", organization: "Organization") -> zoneinfo.ZoneInfo:
    """`display_zone` for a patient of `organization` (None: someone careflow has no record
    of, shown the clinic's time)."""
    if patient is None:
        return clinic_zone(organization.timezone)
    return zoneinfo.ZoneInfo(
        display_zone(
            patient_timezone=patient.timezone,
            province_code=patient.province_code,
            clinic_timezone=organization.timezone,
        )
    )
