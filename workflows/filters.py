"""Trigger filters and conditions: a MongoDB-query subset over dotted paths in event data."""

from collections.abc import Mapping
from typing import Any

from workflows.rendering import MISSING, resolve_path


class FilterError(ValueError):
    """A malformed query; the message names the path and operator at fault."""


_COMPARISONS = {
    "$gt": lambda a, b: a > b,
    "$gte": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$lte": lambda a, b: a <= b,
}
FIELD_OPERATORS = {"$eq", "$ne", "$in", "$nin", "$exists", *_COMPARISONS}
LOGICAL_OPERATORS = {"$and", "$or"}


def filter_validate(query: Any) -> None:
    """Raise FilterError unless `query` is a well-formed filter."""
    if not isinstance(query, Mapping):
        raise FilterError('a filter must be a JSON object, e.g. {"order.status": "shipped"}')
    for key, value in query.items():
        if key in LOGICAL_OPERATORS:
            if not isinstance(value, list) or not value:
                raise FilterError(f"{key} needs a non-empty list of filters")
            for sub in value:
                filter_validate(sub)
        elif key.startswith("$"):
            raise FilterError(f"unknown operator {key} at the top level")
        elif isinstance(value, Mapping) and any(k.startswith("$") for k in value):
            for op, arg in value.items():
                if op not in FIELD_OPERATORS:
                    raise FilterError(f"{key}: unknown operator {op}")
                if op in ("$in", "$nin") and not isinstance(arg, list):
                    raise FilterError(f"{key}: {op} needs a list")


def _candidates(value: Any) -> list[Any]:
    # As in MongoDB, a condition on an array field matches if any element matches.
    return [value, *value] if isinstance(value, list) else [value]


def _field_matches(value: Any, condition: Any) -> bool:
    if not (isinstance(condition, Mapping) and any(k.startswith("$") for k in condition)):
        return value is not MISSING and condition in _candidates(value)
    for op, arg in condition.items():
        if op == "$exists":
            if (value is not MISSING) != bool(arg):
                return False
        elif op == "$eq":
            if value is MISSING or arg not in _candidates(value):
                return False
        elif op == "$ne":
            if value is not MISSING and arg in _candidates(value):
                return False
        elif op == "$in":
            if value is MISSING or not any(c in arg for c in _candidates(value)):
                return False
        elif op == "$nin":
            if value is not MISSING and any(c in arg for c in _candidates(value)):
                return False
        else:
            compare = _COMPARISONS[op]
            if value is MISSING or not any(
                _comparable(c, arg) and compare(c, arg) for c in _candidates(value)
            ):
                return False
    return True


def _comparable(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    return (isinstance(a, numbers) and isinstance(b, numbers)) or (
        isinstance(a, str) and isinstance(b, str)
    )


def filter_matches(query: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """True when `data` satisfies `query` (an empty query matches everything)."""
    for key, value in query.items():
        if key == "$and":
            if not all(filter_matches(sub, data) for sub in value):
                return False
        elif key == "$or":
            if not any(filter_matches(sub, data) for sub in value):
                return False
        elif not _field_matches(resolve_path(data, key), value):
            return False
    return True
