"""The one zone a patient is shown dates and times in: patient → address state → clinic."""

import pytest

from patients.zones import (
    STATE_NAMES,
    STATE_ZONES,
    clinic_zone,
    display_zone,
    patient_zone,
    zone_valid,
)
from tests.factories import OrganizationFactory, PatientFactory


@pytest.mark.parametrize(
    ("patient_timezone", "province_code", "clinic_timezone", "expected"),
    [
        ("America/Denver", "IL", "America/New_York", "America/Denver"),
        ("", "IL", "America/New_York", "America/Chicago"),
        ("", " il ", "America/New_York", "America/Chicago"),
        ("", "FL", "America/Chicago", "America/New_York"),  # a split state: its main zone
        ("", "", "America/Los_Angeles", "America/Los_Angeles"),
        ("", "ON", "America/Los_Angeles", "America/Los_Angeles"),  # not a US state
        ("Not/AZone", "", "America/Phoenix", "America/Phoenix"),
        ("../../etc/passwd", "TX", "", "America/Chicago"),
        ("", "", "", "UTC"),
        ("", "", "Mars/Olympus", "UTC"),
    ],
)
def test_display_zone_falls_back_in_order(
    patient_timezone: str, province_code: str, clinic_timezone: str, expected: str
) -> None:
    assert (
        display_zone(
            patient_timezone=patient_timezone,
            province_code=province_code,
            clinic_timezone=clinic_timezone,
        )
        == expected
    )


def test_every_state_zone_is_a_real_zone() -> None:
    assert all(zone_valid(zone) for zones in STATE_ZONES.values() for zone in zones)


@pytest.mark.django_db
def test_patient_zone_reads_the_patient_and_the_clinic() -> None:
    clinic = OrganizationFactory(timezone="America/New_York")
    patient = PatientFactory(organization=clinic, timezone="", province_code="CA")
    assert patient_zone(patient, clinic).key == "America/Los_Angeles"
    assert patient_zone(None, clinic).key == "America/New_York"
    nowhere = PatientFactory(organization=clinic, timezone="", province_code="")
    assert patient_zone(nowhere, clinic).key == "America/New_York"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("America/Chicago", "America/Chicago"),
        ("UTC", "UTC"),
        ("", "UTC"),
        ("Mars/Olympus", "UTC"),
        ("../../etc/passwd", "UTC"),
        ("XXUTCXX", "UTC"),
    ],
)
def test_a_clinic_zone_this_machine_does_not_know_is_utc(name: str, expected: str) -> None:
    assert clinic_zone(name).key == expected


@pytest.mark.django_db
def test_someone_without_a_record_is_shown_the_clinics_zone_or_utc() -> None:
    # Whatever a patient record would have said (a state, a zone) plays no part for None.
    assert patient_zone(None, OrganizationFactory(timezone="America/Denver")).key == (
        "America/Denver"
    )
    unknown = OrganizationFactory(timezone="America/Denver")
    unknown.timezone = "Gone/Zone"  # dropped by a zone database update after it was saved
    assert patient_zone(None, unknown).key == "UTC"


# Written out independently of patients/zones.py (from the IANA zones each state's counties
# keep): a zone dropped from a split state's entry, or a state dropped, fails the test of
# that entry. Quiet hours weigh every zone of an entry; display_zone shows the first.
STATES = {
    "AL": ("America/Chicago",),
    "AK": ("America/Anchorage", "America/Adak"),
    "AZ": ("America/Phoenix",),
    "AR": ("America/Chicago",),
    "CA": ("America/Los_Angeles",),
    "CO": ("America/Denver",),
    "CT": ("America/New_York",),
    "DE": ("America/New_York",),
    "DC": ("America/New_York",),
    "FL": ("America/New_York", "America/Chicago"),  # the panhandle west of the Apalachicola
    "GA": ("America/New_York",),
    "HI": ("Pacific/Honolulu",),
    "ID": ("America/Boise", "America/Los_Angeles"),  # the panhandle
    "IL": ("America/Chicago",),
    "IN": ("America/Indiana/Indianapolis", "America/Chicago"),  # the Gary and Evansville corners
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
    "TX": ("America/Chicago", "America/Denver"),  # El Paso and Hudspeth counties
    "UT": ("America/Denver",),
    "VT": ("America/New_York",),
    "VA": ("America/New_York",),
    "WA": ("America/Los_Angeles",),
    "WV": ("America/New_York",),
    "WI": ("America/Chicago",),
    "WY": ("America/Denver",),
    "PR": ("America/Puerto_Rico",),
}


def test_the_table_has_every_state_dc_and_puerto_rico_and_nothing_else() -> None:
    assert sorted(STATE_ZONES) == sorted(STATES)


@pytest.mark.parametrize(("state", "zones"), sorted(STATES.items()))
def test_each_state_has_every_zone_its_people_live_in_main_zone_first(
    state: str, zones: tuple[str, ...]
) -> None:
    assert STATE_ZONES[state] == zones
    assert display_zone(patient_timezone="", province_code=state, clinic_timezone="") == zones[0]


# The names libphonenumber's geocoder gives a US number's place when it names only a state
# (quiet hours read the state's rules from them); written out independently of the table.
NAMES = {
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


def test_every_state_name_is_known_and_nothing_else() -> None:
    assert sorted(STATE_NAMES) == sorted(NAMES)


@pytest.mark.parametrize(("name", "code"), sorted(NAMES.items()))
def test_each_state_name_gives_its_code(name: str, code: str) -> None:
    assert STATE_NAMES[name] == code


@pytest.mark.parametrize(
    ("value", "valid"),
    [("America/Chicago", True), ("UTC", True), ("", False), ("Not/AZone", False), ("../x", False)],
)
def test_zone_valid_says_which_names_are_zones(value: str, valid: bool) -> None:
    assert zone_valid(value) is valid


@pytest.mark.django_db
def test_patient_zone_takes_the_patients_own_zone_first() -> None:
    clinic = OrganizationFactory(timezone="America/New_York")
    patient = PatientFactory(organization=clinic, timezone="America/Denver", province_code="CA")
    assert patient_zone(patient, clinic).key == "America/Denver"
