"""The one zone a patient is shown dates and times in: patient → address state → clinic."""

import pytest

from patients.zones import STATE_ZONES, display_zone, patient_zone, zone_valid
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
