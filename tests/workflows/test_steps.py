import zoneinfo
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workflows.steps import StepConfigError, condition_evaluate, delay_until, step_validate

NY = zoneinfo.ZoneInfo("America/New_York")


def _cond(**params: Any) -> dict[str, Any]:
    return {"type": "condition", "parameters": {"query": {"a": 1}, **params}}


def _delay(**params: Any) -> dict[str, Any]:
    return {"type": "delay", "parameters": params}


@pytest.mark.parametrize(
    ("step", "number", "total", "field", "fragment"),
    [
        (_cond(query={"a": {"$gtee": 1}}), 1, 2, "query", "$gtee"),
        (_cond(context="history.2.result"), 2, 3, "context", "earlier step"),
        (_cond(context="customer"), 2, 3, "context", "history.<n>.result"),
        (_cond(**{"else": "1"}), 2, 3, "else", "only go forward"),
        (_cond(**{"else": "9"}), 1, 3, "else", "from 2 to 3"),
        (_cond(**{"else": "later"}), 1, 3, "else", '"end" or a step number'),
        (_delay(kind="duration", seconds="0"), 1, 1, "seconds", "1 second to 366 days"),
        (_delay(kind="duration", seconds="abc"), 1, 1, "seconds", "whole number"),
        (_delay(kind="duration"), 1, 1, "seconds", "enter how long to wait, e.g. 3 days"),
        (_delay(kind="duration", seconds=""), 1, 1, "seconds", "enter how long to wait"),
        (_delay(kind="duration", seconds=str(400 * 86400)), 1, 1, "seconds", "366 days"),
        (_delay(kind="until_time", time="25:00"), 1, 1, "time", "HH:MM"),
        (_delay(kind="until_field", path=""), 1, 1, "path", "date field"),
        (_delay(kind="until_field", path="a", offset_seconds="x"), 1, 1, "offset_seconds", "whole"),
        (_delay(kind="sometime"), 1, 1, "kind", "duration, until_time or until_field"),
        ({"type": "adapter", "adapter": "fax"}, 1, 1, "adapter", "choose an adapter"),
        (
            {"type": "adapter", "adapter": "twilio", "function": "call"},
            1,
            1,
            "function",
            "no function",
        ),
        (
            {
                "type": "adapter",
                "adapter": "twilio",
                "function": "sendSMS",
                "parameters": {"message": "hi", "to": "{{customer.phone}}"},
            },
            1,
            1,
            "from",
            "From Phone is required",
        ),
        ({"type": "teleport"}, 1, 1, "type", "unknown step type"),
    ],
)
def test_step_validate_names_the_field(
    step: dict[str, Any], number: int, total: int, field: str, fragment: str
) -> None:
    with pytest.raises(StepConfigError) as excinfo:
        step_validate(step, number=number, total=total)
    assert excinfo.value.field == field
    assert fragment in str(excinfo.value)


@pytest.mark.parametrize(
    "step",
    [
        _cond(),
        _cond(context="history.1.result", **{"else": "3"}),
        _delay(kind="duration", seconds="60"),
        _delay(kind="until_time", time="09:30"),
        _delay(kind="until_field", path="appointment.startsAt", offset_seconds="-3600"),
    ],
)
def test_valid_steps_pass(step: dict[str, Any]) -> None:
    step_validate(step, number=2, total=3)


def test_condition_true_continues_false_ends_or_jumps() -> None:
    data = {"subscription": {"status": "active"}, "history": {"1": {"result": {"ok": True}}}}
    assert condition_evaluate({"query": {"subscription.status": "active"}}, data).matched
    ended = condition_evaluate({"query": {"subscription.status": "paused"}}, data)
    assert (ended.matched, ended.goto_index) == (False, None)
    jump = condition_evaluate({"query": {"x": 1}, "else": "4"}, data)
    assert (jump.matched, jump.goto_index) == (False, 3)
    on_history = condition_evaluate({"query": {"ok": True}, "context": "history.1.result"}, data)
    assert on_history.matched


def test_condition_on_a_missing_history_result_fails_clearly() -> None:
    with pytest.raises(StepConfigError, match=r"history\.2\.result is not an object"):
        condition_evaluate({"query": {"ok": True}, "context": "history.2.result"}, {"history": {}})


def test_delay_duration() -> None:
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert delay_until(
        {"kind": "duration", "seconds": "3600"}, data={}, started_at=start, tz=NY
    ) == start + timedelta(hours=1)


@pytest.mark.parametrize(
    ("start_utc", "expected_utc"),
    [
        # 07:00 in New York: 09:00 the same day
        (datetime(2026, 1, 1, 12, 0, tzinfo=UTC), datetime(2026, 1, 1, 14, 0, tzinfo=UTC)),
        # 11:00 in New York: 09:00 the next day
        (datetime(2026, 1, 1, 16, 0, tzinfo=UTC), datetime(2026, 1, 2, 14, 0, tzinfo=UTC)),
        # 15:00 EST on the eve of DST: 09:00 EDT next morning is 13:00 UTC, not 14:00
        (datetime(2026, 3, 7, 20, 0, tzinfo=UTC), datetime(2026, 3, 8, 13, 0, tzinfo=UTC)),
        # exactly 09:00: the next 09:00, never "now"
        (datetime(2026, 1, 1, 14, 0, tzinfo=UTC), datetime(2026, 1, 2, 14, 0, tzinfo=UTC)),
    ],
)
def test_delay_until_time_in_the_patients_zone(start_utc: datetime, expected_utc: datetime) -> None:
    until = delay_until(
        {"kind": "until_time", "time": "09:00"}, data={}, started_at=start_utc, tz=NY
    )
    assert until == expected_utc


def test_delay_until_field_with_offset_and_zones() -> None:
    data = {"appointment": {"startsAt": "2026-05-01T15:00:00+00:00", "day": "2026-05-01"}}
    start = datetime(2026, 4, 1, tzinfo=UTC)
    assert delay_until(
        {"kind": "until_field", "path": "appointment.startsAt", "offset_seconds": "-86400"},
        data=data,
        started_at=start,
        tz=NY,
    ) == (datetime(2026, 4, 30, 15, 0, tzinfo=UTC))
    midnight_ny = delay_until(
        {"kind": "until_field", "path": "appointment.day"}, data=data, started_at=start, tz=NY
    )
    assert midnight_ny == datetime(2026, 5, 1, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, "soon", 5, {"a": 1}])
def test_delay_until_field_that_is_not_a_date_fails(value: Any) -> None:
    with pytest.raises(StepConfigError, match="is not a date"):
        delay_until(
            {"kind": "until_field", "path": "a.b"},
            data={"a": {"b": value}},
            started_at=datetime(2026, 1, 1, tzinfo=UTC),
            tz=NY,
        )
