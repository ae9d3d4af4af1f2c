from datetime import UTC, datetime, time

import pytest

from integrations.quiet_hours import (
    UNKNOWN_ZONES,
    Window,
    effective_window,
    next_allowed,
    recipient_whereabouts,
)
from patients.models import Patient

DAY = Window(time(8, 0), time(21, 0))


def _patient(**fields: str) -> Patient:
    return Patient(first_name="A", **fields)


def test_patient_time_zone_wins() -> None:
    where = recipient_whereabouts(
        _patient(timezone="America/Denver", province_code="FL"), "+14155550123"
    )
    assert where.zones == ("America/Denver",)
    assert where.source == "patient time zone"
    assert "FL" in where.states  # a Florida address still brings Florida's rules


def test_address_state_next_then_area_code() -> None:
    assert recipient_whereabouts(_patient(province_code="tx"), "+14155550123").zones == (
        "America/Chicago",
        "America/Denver",
    )
    by_phone = recipient_whereabouts(_patient(), "+13055550123")  # Miami
    assert (by_phone.zones, by_phone.source) == (("America/New_York",), "area code")
    assert by_phone.states == {"FL"}
    assert recipient_whereabouts(_patient(), "+14155550123").states == {"CA"}


def test_no_clue_means_the_strictest_window() -> None:
    where = recipient_whereabouts(None, "+15005550006")  # a non-geographic number
    assert where.zones == UNKNOWN_ZONES
    assert where.source == "unknown"
    assert effective_window(time(8, 0), time(21, 0), where.states).end == time(20, 0)


@pytest.mark.parametrize(
    ("states", "end"),
    [({"FL"}, time(20, 0)), ({"OK"}, time(20, 0)), ({"CA"}, time(21, 0)), (set(), time(21, 0))],
)
def test_florida_and_oklahoma_end_at_20(states: set[str], end: time) -> None:
    assert effective_window(time(8, 0), time(21, 0), states).end == end


def test_allowed_now_returns_now() -> None:
    noon_ny = datetime(2026, 6, 1, 16, 0, tzinfo=UTC)
    assert next_allowed(noon_ny, ("America/New_York",), DAY) == noon_ny


def test_23_00_local_is_deferred_to_08_00_next_morning() -> None:
    eleven_pm_chicago = datetime(2026, 6, 2, 4, 0, tzinfo=UTC)  # 23:00 CDT on June 1
    assert next_allowed(eleven_pm_chicago, ("America/Chicago",), DAY) == datetime(
        2026, 6, 2, 13, 0, tzinfo=UTC
    )  # 08:00 CDT


def test_before_08_00_waits_until_08_00_the_same_day() -> None:
    six_am_la = datetime(2026, 1, 15, 14, 0, tzinfo=UTC)
    assert next_allowed(six_am_la, ("America/Los_Angeles",), DAY) == datetime(
        2026, 1, 15, 16, 0, tzinfo=UTC
    )


def test_several_zones_need_every_one_to_allow() -> None:
    # 08:30 in New York is 07:30 in Chicago: wait for Chicago's 08:00
    moment = datetime(2026, 1, 15, 13, 30, tzinfo=UTC)
    assert next_allowed(moment, ("America/New_York", "America/Chicago"), DAY) == datetime(
        2026, 1, 15, 14, 0, tzinfo=UTC
    )


def test_unknown_zones_still_have_a_common_window() -> None:
    moment = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    allowed = next_allowed(moment, UNKNOWN_ZONES, Window(time(8, 0), time(20, 0)))
    assert allowed is not None and allowed > moment
    assert next_allowed(allowed, UNKNOWN_ZONES, Window(time(8, 0), time(20, 0))) == allowed


def test_dst_spring_forward_morning() -> None:
    # 2026-03-08: clocks jump 02:00→03:00 in New York; 07:00 EDT is 11:00 UTC
    before = datetime(2026, 3, 8, 11, 0, tzinfo=UTC)
    assert next_allowed(before, ("America/New_York",), DAY) == datetime(
        2026, 3, 8, 12, 0, tzinfo=UTC
    )
