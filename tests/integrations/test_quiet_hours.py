from datetime import UTC, datetime, time, timedelta

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


# Boundaries to the second, in each kind of whereabouts: the window is [start, end), so the
# first second of the window and its last second go out, the second before it and the end
# itself wait. Summer dates: New York is UTC-4, Chicago UTC-5, Honolulu UTC-10.
NY = "+12125550123"  # a Manhattan number
UNKNOWN = "+15005550006"  # non-geographic: nothing says where its owner is


def _utc(hour: int, minute: int = 0, second: int = 0, day: int = 2) -> datetime:
    return datetime(2026, 6, day, hour, minute, second, tzinfo=UTC)


@pytest.mark.parametrize(
    ("patient", "phone", "source", "offset"),
    [
        (_patient(timezone="America/Chicago"), NY, "patient time zone", 5),
        (_patient(province_code="CA"), NY, "address", 7),
        (_patient(), NY, "area code", 4),
    ],
)
@pytest.mark.parametrize(
    ("local", "waits_until_local_8"),
    [
        ((7, 59, 59), True),
        ((8, 0, 0), False),
        ((20, 59, 59), False),
        ((21, 0, 0), True),
    ],
)
def test_the_window_starts_and_ends_to_the_second_in_each_kind_of_whereabouts(
    patient: Patient,
    phone: str,
    source: str,
    offset: int,
    local: tuple[int, int, int],
    waits_until_local_8: bool,
) -> None:
    where = recipient_whereabouts(patient, phone)
    assert where.source == source
    hour, minute, second = local
    moment = _utc(0, day=2) + timedelta(hours=hour + offset, minutes=minute, seconds=second)
    allowed = next_allowed(moment, where.zones, DAY)
    if not waits_until_local_8:
        assert allowed == moment
        return
    next_eight = _utc(8 + offset, day=2 if hour < 8 else 3)
    assert allowed == next_eight


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        # every US zone must be between 08:00 and 20:00 (unknown: the strict states' 20:00)
        (_utc(17, 59, 59), _utc(18)),  # 07:59:59 in Honolulu waits for its 08:00
        (_utc(18), _utc(18)),  # 08:00 Honolulu, 14:00 New York
        (_utc(23, 59, 59), _utc(23, 59, 59)),  # 19:59:59 in New York: the last second
        (_utc(0, 0, 0, day=3), _utc(18, day=3)),  # 20:00 New York: the next shared morning
    ],
)
def test_unknown_whereabouts_allow_only_the_hours_every_us_zone_shares(
    moment: datetime, expected: datetime
) -> None:
    where = recipient_whereabouts(None, UNKNOWN)
    window = effective_window(time(8, 0), time(21, 0), where.states)
    assert (where.source, window) == ("unknown", Window(time(8, 0), time(20, 0)))
    assert next_allowed(moment, where.zones, window) == expected


def test_unknown_whereabouts_weigh_every_us_zone() -> None:
    assert set(UNKNOWN_ZONES) == {
        "America/New_York",
        "America/Chicago",
        "America/Denver",
        "America/Phoenix",
        "America/Los_Angeles",
        "America/Anchorage",
        "Pacific/Honolulu",
    }
    assert recipient_whereabouts(None, UNKNOWN).states == {"FL", "OK"}


@pytest.mark.parametrize(
    ("zone", "moment", "expected"),
    [
        # 2026-03-08, New York springs forward at 02:00: 07:59:59 EDT is 11:59:59 UTC
        (
            "America/New_York",
            datetime(2026, 3, 8, 11, 59, 59, tzinfo=UTC),
            datetime(2026, 3, 8, 12, 0, tzinfo=UTC),
        ),
        # the night before, 23:00 EST, waits for 08:00 EDT (12:00 UTC, not 13:00)
        (
            "America/New_York",
            datetime(2026, 3, 8, 4, 0, tzinfo=UTC),
            datetime(2026, 3, 8, 12, 0, tzinfo=UTC),
        ),
        # 2026-11-01, New York falls back at 02:00: 08:00 EST is 13:00 UTC
        (
            "America/New_York",
            datetime(2026, 11, 1, 4, 0, tzinfo=UTC),
            datetime(2026, 11, 1, 13, 0, tzinfo=UTC),
        ),
        # Phoenix keeps no daylight time: 08:00 MST is 15:00 UTC in March as in January
        (
            "America/Phoenix",
            datetime(2026, 3, 8, 14, 59, 59, tzinfo=UTC),
            datetime(2026, 3, 8, 15, 0, tzinfo=UTC),
        ),
    ],
)
def test_daylight_saving_changes_move_the_window_in_utc(
    zone: str, moment: datetime, expected: datetime
) -> None:
    assert next_allowed(moment, (zone,), DAY) == expected
    assert next_allowed(expected, (zone,), DAY) == expected


def test_the_evening_end_moves_with_daylight_time() -> None:
    # 20:59:59 EDT on 2026-10-31 is 00:59:59 UTC; on 2026-11-01, EST, it is 01:59:59 UTC
    saturday = datetime(2026, 11, 1, 0, 59, 59, tzinfo=UTC)
    assert next_allowed(saturday, ("America/New_York",), DAY) == saturday
    assert next_allowed(
        datetime(2026, 11, 2, 1, 59, 59, tzinfo=UTC), ("America/New_York",), DAY
    ) == datetime(2026, 11, 2, 1, 59, 59, tzinfo=UTC)  # 20:59:59 EST
    assert next_allowed(
        datetime(2026, 11, 2, 2, 0, tzinfo=UTC), ("America/New_York",), DAY
    ) == datetime(2026, 11, 2, 13, 0, tzinfo=UTC)  # 21:00 EST waits for 08:00 EST


def test_windows_that_never_overlap_give_none() -> None:
    # 08:00–12:00 in New York (12:00–16:00 UTC) and in Honolulu (18:00–22:00 UTC)
    morning = Window(time(8, 0), time(12, 0))
    assert next_allowed(_utc(13), ("America/New_York", "Pacific/Honolulu"), morning) is None


@pytest.mark.parametrize(
    ("start", "end", "states", "expected_end"),
    [
        (time(8, 0), time(19, 0), {"FL"}, time(19, 0)),  # an earlier clinic end stays
        (time(8, 0), time(20, 0), {"OK"}, time(20, 0)),
        (time(8, 0), time(20, 0, 1), {"OK"}, time(20, 0)),
        (time(9, 0), time(21, 0), {"TX", "FL"}, time(20, 0)),
        (time(9, 0), time(21, 0), {"TX"}, time(21, 0)),
    ],
)
def test_the_strict_states_cap_the_end_and_keep_the_start(
    start: time, end: time, states: set[str], expected_end: time
) -> None:
    assert effective_window(start, end, states) == Window(start, expected_end)


def test_an_area_code_without_zones_falls_back_to_its_states_zones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # libphonenumber names the place of an area code before its zone data knows it (a new
    # overlay code): the state named still gives the zones
    from integrations import quiet_hours

    monkeypatch.setattr(
        quiet_hours.phone_timezones, "time_zones_for_number", lambda number: ("Etc/Unknown",)
    )
    quiet_hours._phone_zones.cache_clear()
    try:
        where = recipient_whereabouts(_patient(), "+18505550123")  # Tallahassee, Florida
        assert (where.zones, where.states, where.source) == (
            ("America/New_York", "America/Chicago"),
            {"FL"},
            "area code",
        )
        assert recipient_whereabouts(None, UNKNOWN).source == "unknown"
    finally:
        quiet_hours._phone_zones.cache_clear()
