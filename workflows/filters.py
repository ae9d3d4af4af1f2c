"""Trigger filters and condition steps: a MongoDB query subset over dotted paths in event data.

A filter is a JSON object in MongoDB query syntax, matched against a JSON-like document (the
event payload, or a condition step's context). `filter_validate` runs when an admin saves a
filter and explains every mistake; `filter_matches` runs for every event × enabled workflow,
so it interprets the query directly (no re-validation, no per-call compilation) and only checks
each operator's argument as cheaply as it must to raise FilterError instead of crashing.

Semantics, as MongoDB's matcher has them for the same JSON documents:
- Operators: $eq $ne $gt $gte $lt $lte $in $nin $exists $all $mod $size $elemMatch
  $regex (+ $options) $not on fields; $and $or $nor on whole conditions. `{"a": 1}` is
  implicit $eq; several keys, and several operators on one key, are an implicit $and.
- Paths: "a.b" walks sub-documents. A path piece that meets an array applies to each element
  that is a sub-document ({"order.lineItems.name": "Zinc"} matches if any line item is named
  Zinc); a numeric piece also indexes the array ("lineItems.0.name") and still matches a
  field named "0" in those sub-documents. Arrays nested directly in arrays are not flattened.
- Arrays at the end of a path: a condition matches if it holds for the whole array or for any
  element; $size and $elemMatch look at the array whole. $ne, $nin and $not match when the
  positive condition matches nothing, so they also match a missing field.
- null: {"a": null} (and $in with null, $gte/$lte null) matches null or a missing field, also
  a sub-document of an array that lacks the field; {"a": {"$ne": null}} is the exact opposite.
  $exists tells missing from null.
- Types: equality is type-strict except that 1 == 1.0 (and True is not 1). $gt/$gte/$lt/$lte
  compare only within one type: numbers with numbers, strings with strings (code-point
  order), booleans with booleans; a type mismatch is simply false. $mod truncates to integers
  as MongoDB does; $regex only tests strings.

Deliberate deviations:
- Dates: payloads carry dates as ISO-8601 strings, which compare as strings, as in MongoDB.
  In addition a query value may be MongoDB Extended JSON `{"$date": "2026-01-01T00:00:00Z"}`:
  it compares, by instant, with payload strings that parse as ISO-8601 calendar dates or
  date-times (YYYY-MM-DD…); strings without an offset are read as UTC. Other values never
  match it.
- $regex runs on Google RE2 (linear time, so no hostile pattern can hang a worker), not PCRE:
  no backreferences or lookaround, `\\Z` is spelled `\\z`, and `$` without "m" matches only at
  the very end. Patterns are limited to 500 characters, $options to "i", "m", "s", and a
  string longer than 10,000 characters never matches a $regex (so $not $regex matches it).
- JSON has no regular-expression literal, so regexes exist only as $regex (not inside $in or
  $all); `{"$not": {"$regex": …}}` is the JSON spelling of MongoDB's `{"$not": /…/}`.
- Embedded-document equality ignores key order (MongoDB's does not), because JSON objects
  stored in PostgreSQL jsonb do not keep their key order.
- Stricter validation than MongoDB, to catch an admin's mistakes at save time: $exists takes
  only true/false; comparisons take a number, string, boolean, null or $date (MongoDB would
  also order arrays and objects); operators may not hide inside plain values ({"a": {"b":
  {"$gt": 1}}} is rejected instead of meaning equality with that object); $all items cannot
  be $elemMatch.
"""

import difflib
import functools
import math
import operator
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import re2

from workflows.rendering import MISSING


class FilterError(ValueError):
    """A malformed query; the message names the path and operator at fault."""


MAX_DEPTH = 20
MAX_PATTERN_LENGTH = 500
MAX_REGEX_SUBJECT_LENGTH = 10_000

_ORDERS: dict[str, tuple[Callable[[Any, Any], bool], bool]] = {
    # operator: (order, whether equal values satisfy it)
    "$gt": (operator.gt, False),
    "$gte": (operator.ge, True),
    "$lt": (operator.lt, False),
    "$lte": (operator.le, True),
}
_NEGATIONS = {"$ne": "$eq", "$nin": "$in"}
# MongoDB hands these the array itself instead of unwinding it into its elements.
_WHOLE_ARRAY_OPERATORS = frozenset({"$size", "$elemMatch"})
LOGICAL_OPERATORS = frozenset({"$and", "$or", "$nor"})
FIELD_OPERATORS = frozenset(
    {"$eq", "$ne", *_ORDERS, "$in", "$nin", "$exists", "$all", "$mod", "$size"}
    | {"$elemMatch", "$regex", "$options", "$not"}
)
_ALL_OPERATORS = sorted(LOGICAL_OPERATORS | FIELD_OPERATORS)
_REGEX_FLAGS = frozenset("ims")
_NOT_AN_OBJECT = 'a filter must be a JSON object, e.g. {"order.status": "shipped"}'

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad admin pattern is a FilterError, not worker stderr noise


# --- public API ------------------------------------------------------------------------------


def filter_validate(query: Any) -> None:
    """Raise FilterError, naming the path and operator, unless `query` is a well-formed filter."""
    if not isinstance(query, Mapping):
        raise FilterError(_NOT_AN_OBJECT)
    _validate_document(query, prefix="", depth=1)


def filter_matches(query: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
    """True when `data` satisfies `query` (an empty query matches everything).

    Meant for validated queries; an invalid one raises FilterError, never TypeError/KeyError.
    `data` that is not a JSON object has no fields: every path in it is missing.
    """
    if not isinstance(query, Mapping):
        raise FilterError(_NOT_AN_OBJECT)
    try:
        return _document_matches(query, data)
    except RecursionError:
        # Only an unvalidated query nests this deep: filter_validate allows MAX_DEPTH levels.
        raise FilterError(f"the filter is nested more than {MAX_DEPTH} levels deep") from None


# --- matching --------------------------------------------------------------------------------


def _document_matches(query: Mapping[str, Any], doc: Any) -> bool:
    for key, condition in query.items():
        if not isinstance(key, str):
            raise FilterError(f"{key!r}: field names must be text")
        if key.startswith("$"):
            if not _logical_matches(key, condition, doc):
                return False
        elif not _condition_matches(key, condition, doc):
            return False
    return True


def _logical_matches(op: str, conditions: Any, doc: Any) -> bool:
    if op not in LOGICAL_OPERATORS:
        raise _operator_at_top(op)
    queries = _conditions_arg("top level", op, conditions)
    if op == "$and":
        return all(_document_matches(query, doc) for query in queries)
    if op == "$or":
        return any(_document_matches(query, doc) for query in queries)
    return not any(_document_matches(query, doc) for query in queries)  # $nor


def _condition_matches(path: str, condition: Any, doc: Any) -> bool:
    if _is_operator_object(condition):
        return _field_matches(path, condition, doc)
    return _operator_matches(path, "$eq", condition, {}, doc)


def _field_matches(path: str, operators: Mapping[str, Any], doc: Any) -> bool:
    """All `operators` hold for the field at `path`."""
    for op, arg in operators.items():
        if op == "$options":  # read together with $regex
            _require_regex(path, operators)
        elif not _operator_matches(path, op, arg, operators, doc):
            return False
    return True


def _operator_matches(path: str, op: str, arg: Any, operators: Mapping[str, Any], doc: Any) -> bool:
    """One operator against the field at `path`, with MongoDB's array and missing-field rules."""
    if op not in FIELD_OPERATORS:  # before looking at values: a path may yield none
        raise _operator_in_field(path, op)
    if op in _NEGATIONS:
        # {"$ne": x} is "no value at the path equals x": true for a missing field, and false
        # for an array with any element equal to x.
        return not _operator_matches(path, _NEGATIONS[op], arg, operators, doc)
    if op == "$not":
        return not _field_matches(path, _not_arg(path, arg), doc)
    if op == "$all":
        # MongoDB defines {"$all": [x, y]} as {"$eq": x} and {"$eq": y}; [] matches nothing.
        items = _list_arg(path, op, arg)
        return bool(items) and all(
            _operator_matches(path, "$eq", item, operators, doc) for item in items
        )
    if op == "$exists" and not _exists_arg(path, arg):
        return not _operator_matches(path, op, True, operators, doc)
    values = _values(doc, _split(path), expand=op not in _WHOLE_ARRAY_OPERATORS)
    return any(_value_matches(path, op, arg, operators, value) for value in values)


def _all_match(path: str, operators: Mapping[str, Any], value: Any) -> bool:
    """All `operators` hold for one value (an element tested by $elemMatch)."""
    for op, arg in operators.items():
        if op == "$options":
            _require_regex(path, operators)
        elif not _value_matches(path, op, arg, operators, value):
            return False
    return True


def _value_matches(path: str, op: str, arg: Any, operators: Mapping[str, Any], value: Any) -> bool:
    """One operator against one value, arrays not unwound (MongoDB's matchesSingleElement)."""
    if op in _NEGATIONS:
        return not _value_matches(path, _NEGATIONS[op], arg, operators, value)
    if op in _ORDERS:
        return _compare(op, _bound_arg(path, op, arg), value)
    match op:
        case "$eq":
            return _equal(value, arg)
        case "$in":
            return any(_equal(value, item) for item in _list_arg(path, op, arg))
        case "$all":
            items = _list_arg(path, op, arg)
            return bool(items) and all(_equal(value, item) for item in items)
        case "$exists":
            return (value is not MISSING) == _exists_arg(path, arg)
        case "$size":
            size = _size_arg(path, arg)
            return isinstance(value, list) and len(value) == size
        case "$mod":
            return _mod_matches(_mod_arg(path, arg), value)
        case "$regex":
            regex = _regex_arg(path, arg, operators.get("$options", ""))
            return (
                isinstance(value, str)
                and len(value) <= MAX_REGEX_SUBJECT_LENGTH
                and regex.search(value) is not None
            )
        case "$elemMatch":
            return _elem_match(path, _elem_match_arg(path, arg), value)
        case "$not":
            return not _all_match(path, _not_arg(path, arg), value)
    raise _operator_in_field(path, op)


def _elem_match(path: str, query: Mapping[str, Any], value: Any) -> bool:
    if not isinstance(value, list):
        return False
    if _is_value_form(query):  # {"$gte": 1, "$lt": 5}: every operator on the same element
        return any(_all_match(path, query, element) for element in value)
    # {"name": "Zinc", "quantity": 2}: the whole sub-query against the same element
    return any(
        _document_matches(query, _as_document(element))
        for element in value
        if isinstance(element, (Mapping, list))
    )


def _as_document(element: Any) -> Any:
    # MongoDB matches an array element that is itself an array as a document keyed "0", "1", …
    if isinstance(element, list):
        return {str(index): item for index, item in enumerate(element)}
    return element


# --- paths -----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _values(doc: Any, parts: tuple[str, ...], start: int = 0, *, expand: bool) -> Iterator[Any]:
    """Every value the path `parts[start:]` reaches in `doc`, as MongoDB's path iterator yields.

    A sub-document without the field yields MISSING (so {"a.b": null} matches
    {"a": [{"b": 1}, {}]}); an array element that is not a sub-document yields nothing.
    """
    value, index = _descend(doc, parts, start)
    if isinstance(value, list):
        yield from _array_values(value, parts, index + 1, expand=expand)
    else:
        yield value


def _descend(doc: Any, parts: tuple[str, ...], start: int) -> tuple[Any, int]:
    """Follow `parts` through sub-documents; stop at the first array, returning its position."""
    value = doc
    for index in range(start, len(parts)):
        if not isinstance(value, Mapping):
            return MISSING, index  # a scalar (or nothing) where a sub-document was needed
        value = value.get(parts[index], MISSING)
        if isinstance(value, list):
            return value, index
    return value, len(parts)


def _array_values(
    array: list[Any], parts: tuple[str, ...], rest: int, *, expand: bool
) -> Iterator[Any]:
    if rest == len(parts):
        # The path ends at this array: the elements are candidates, and so is the array itself
        # ({"tags": "vip"} and {"tags": ["vip", "new"]} both match ["vip", "new"]).
        if expand:
            yield from array
        yield array
        return
    offset = _array_offset(parts[rest])
    last = rest + 1 == len(parts)
    for position, element in enumerate(array):
        if isinstance(element, Mapping):
            # Even a numeric piece is looked up as a field of each sub-document first.
            yield from _values(element, parts, rest, expand=expand)
        if position != offset:
            continue
        if last:
            yield element  # an indexed element is not unwound, even if it is an array
        elif isinstance(element, Mapping):
            yield from _values(element, parts, rest + 1, expand=expand)
        elif isinstance(element, list):
            yield from _array_values(element, parts, rest + 1, expand=expand)


def _array_offset(piece: str) -> int:
    """The array index a path piece names, as MongoDB reads it ("0", "12"; not "01"), else -1."""
    canonical = piece == "0" or not piece.startswith("0")
    if piece.isascii() and piece.isdigit() and len(piece) < 10 and canonical:
        return int(piece)
    return -1


# --- values ----------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _equal(value: Any, literal: Any) -> bool:
    """MongoDB equality of a document value with a query literal: type-strict, but 1 == 1.0."""
    if literal is None:
        return value is None or value is MISSING
    if isinstance(literal, bool) or isinstance(value, bool):
        return isinstance(literal, bool) and isinstance(value, bool) and value == literal
    if isinstance(literal, (int, float)):
        return _is_number(value) and value == literal
    if isinstance(literal, str):
        return isinstance(value, str) and value == literal
    if isinstance(literal, list):
        return (
            isinstance(value, list)
            and len(value) == len(literal)
            and all(map(_equal, value, literal))
        )
    if isinstance(literal, Mapping):
        if _is_date(literal):
            return _payload_instant(value) == _date_arg(None, literal)
        return (
            isinstance(value, Mapping)
            and value.keys() == literal.keys()
            and all(_equal(value[key], item) for key, item in literal.items())
        )
    return False


def _compare(op: str, bound: Any, value: Any) -> bool:
    """$gt/$gte/$lt/$lte: only values of the bound's own type compare; anything else is false."""
    order, inclusive = _ORDERS[op]
    if bound is None:
        # null is a type of its own in MongoDB's ordering, equal to a missing field.
        return inclusive and (value is None or value is MISSING)
    if isinstance(bound, bool):
        return isinstance(value, bool) and order(value, bound)
    if isinstance(bound, (int, float)):
        return _is_number(value) and order(value, bound)
    if isinstance(bound, str):
        return isinstance(value, str) and order(value, bound)
    instant = _payload_instant(value)  # bound is a {"$date": …}, checked by _bound_arg
    return instant is not None and order(instant, _date_arg(None, bound))


def _mod_matches(divisor_remainder: tuple[int, int], value: Any) -> bool:
    if not _is_number(value) or not math.isfinite(value):
        return False
    divisor, remainder = divisor_remainder
    dividend = int(value)  # MongoDB truncates toward zero
    # C's remainder takes the dividend's sign (-5 mod 4 is -1), Python's the divisor's.
    result = abs(dividend) % abs(divisor)
    return (-result if dividend < 0 else result) == remainder


def _is_date(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and "$date" in value


def _payload_instant(value: Any) -> datetime | None:
    # Cheap shape check first, so the cache only sees strings that look like YYYY-MM-DD….
    if isinstance(value, str) and 10 <= len(value) <= 64 and value[4] == "-" == value[7]:
        return _parse_instant(value)
    return None


@functools.lru_cache(maxsize=4096)
def _parse_instant(text: str) -> datetime | None:
    """An ISO-8601 date or date-time as an aware instant; without an offset it is UTC."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@functools.lru_cache(maxsize=512)
def _compile(pattern: str, options: str) -> Any:
    flags = "".join(sorted(set(options)))
    return re2.compile(f"(?{flags}){pattern}" if flags else pattern, _RE2_OPTIONS)


# --- classification --------------------------------------------------------------------------


def _is_operator_key(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("$")


def _is_operator_object(value: Any) -> bool:
    """{"$gt": 1} is a condition; {"x": 1} and {"$date": …} are values to compare with."""
    return (
        isinstance(value, Mapping)
        and _is_operator_key(next(iter(value), None))
        and not _is_date(value)
    )


def _is_value_form(query: Mapping[str, Any]) -> bool:
    """$elemMatch: {"$gt": 1} tests elements as values; {"x": 1} or {"$or": …} as documents."""
    first = next(iter(query), None)
    return _is_operator_key(first) and first not in LOGICAL_OPERATORS


# --- operator arguments: shared by validation and (cheaply) by matching -----------------------


def _error(where: str | None, message: str) -> FilterError:
    return FilterError(f"{where}: {message}" if where else message)


def _unknown_operator(where: str, op: Any) -> FilterError:
    close = difflib.get_close_matches(str(op), _ALL_OPERATORS, n=1)
    hint = (
        f' (did you mean "{close[0]}"?)' if close else f"; use one of {', '.join(_ALL_OPERATORS)}"
    )
    return _error(where, f'unknown operator "{op}"{hint}')


def _operator_at_top(op: str, where: str = "top level") -> FilterError:
    if op in FIELD_OPERATORS:
        return _error(
            where,
            f'"{op}" tests a field, so it goes under one, e.g. {{"order.totalAmount": {{"{op}": …}}}}',
        )
    return _unknown_operator(where, op)


def _operator_in_field(path: str, op: Any) -> FilterError:
    if op in LOGICAL_OPERATORS:
        return _error(
            path,
            f'"{op}" combines whole conditions, so it goes at the top level or in $elemMatch, '
            f'e.g. {{"{op}": [{{"{path}": …}}, {{…}}]}}',
        )
    return _unknown_operator(path, op)


def _conditions_arg(where: str, op: str, arg: Any) -> list[Mapping[str, Any]]:
    if not isinstance(arg, list) or not arg:
        raise _error(
            where,
            f'"{op}" needs a non-empty list of conditions, e.g. {{"{op}": [{{"a": 1}}, {{"b": 2}}]}}',
        )
    for number, item in enumerate(arg, start=1):
        if not isinstance(item, Mapping):
            raise _error(where, f'"{op}" item {number} must be an object like {{"a": 1}}')
    return arg


def _list_arg(path: str, op: str, arg: Any) -> list[Any]:
    if not isinstance(arg, list):
        raise _error(
            path, f'"{op}" needs a list of values, e.g. {{"{op}": ["shipped", "delivered"]}}'
        )
    return arg


def _bound_arg(path: str, op: str, arg: Any) -> Any:
    if arg is None or isinstance(arg, (str, int, float)):
        return arg
    if _is_date(arg):
        _date_arg(path, arg)
        return arg
    raise _error(
        path,
        f'"{op}" compares with a number, text, true/false, null or {{"$date": "2026-01-01T00:00:00Z"}}, '
        "not with a list or an object",
    )


def _date_arg(where: str | None, literal: Mapping[str, Any]) -> datetime:
    text = literal["$date"]
    instant = _payload_instant(text)  # None for anything but a date text
    if instant is None:
        raise _error(
            where,
            f'"$date" needs an ISO-8601 date or date-time such as "2026-01-01T00:00:00Z", not {text!r}',
        )
    return instant


def _exists_arg(path: str, arg: Any) -> bool:
    if not isinstance(arg, bool):
        raise _error(path, '"$exists" needs true or false, e.g. {"$exists": true}')
    return arg


def _size_arg(path: str, arg: Any) -> int:
    if _is_number(arg) and math.isfinite(arg) and arg >= 0 and float(arg).is_integer():
        return int(arg)
    raise _error(path, '"$size" needs a whole number of items (0 or more), e.g. {"$size": 2}')


def _mod_arg(path: str, arg: Any) -> tuple[int, int]:
    if (
        isinstance(arg, list)
        and len(arg) == 2
        and all(_is_number(n) and math.isfinite(n) for n in arg)
        and int(arg[0]) != 0  # MongoDB truncates first, so 0.5 is a zero divisor too
    ):
        return int(arg[0]), int(arg[1])
    raise _error(
        path,
        '"$mod" needs [divisor, remainder] with a non-zero divisor, e.g. {"$mod": [2, 0]} for even numbers',
    )


def _regex_arg(path: str, pattern: Any, options: Any) -> Any:
    if not isinstance(pattern, str):
        raise _error(path, '"$regex" needs a text pattern, e.g. {"$regex": "^dr", "$options": "i"}')
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise _error(
            path,
            f'"$regex" pattern is {len(pattern)} characters long; the limit is {MAX_PATTERN_LENGTH}',
        )
    if not isinstance(options, str) or not _REGEX_FLAGS.issuperset(options):
        unsupported = "".join(sorted(set(str(options)) - _REGEX_FLAGS))
        raise _error(
            path,
            f'"$options" "{unsupported}" is not supported; use any of "i" (ignore case), '
            '"m" (^ and $ match at each line), "s" (. matches line breaks)',
        )
    try:
        return _compile(pattern, options)
    except UnicodeEncodeError:
        # JSON's "\ud800" escape gives Python a lone surrogate, which UTF-8 (and RE2) cannot hold.
        raise _error(
            path, f'"$regex" pattern {pattern!r} cannot be used (it holds a lone surrogate)'
        ) from None
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args else "invalid pattern"
        raise _error(
            path,
            f'"$regex" pattern {pattern!r} cannot be used ({reason}); backreferences such as \\1 '
            "and lookaround such as (?=…) or (?<!…) are not supported",
        ) from None


def _require_regex(path: str, operators: Mapping[str, Any]) -> None:
    if "$regex" not in operators:
        raise _error(
            path, '"$options" only works next to "$regex", e.g. {"$regex": "^dr", "$options": "i"}'
        )


def _elem_match_arg(path: str, arg: Any) -> Mapping[str, Any]:
    if not isinstance(arg, Mapping):
        raise _error(
            path,
            '"$elemMatch" needs an object, e.g. {"$elemMatch": {"name": "Zinc", "quantity": 2}}',
        )
    return arg


def _not_arg(path: str, arg: Any) -> Mapping[str, Any]:
    if not _is_operator_object(arg):
        raise _error(
            path,
            '"$not" needs an object of operators or a regex, e.g. {"$not": {"$gt": 5}} '
            'or {"$not": {"$regex": "^test"}}',
        )
    return arg


# --- validation ------------------------------------------------------------------------------


def _check_depth(where: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _error(where, f"the filter is nested more than {MAX_DEPTH} levels deep; simplify it")


def _validate_document(query: Mapping[str, Any], *, prefix: str, depth: int) -> None:
    where = prefix or "top level"
    _check_depth(where, depth)
    for key, condition in query.items():
        if not isinstance(key, str):
            raise _error(where, f"field names must be text, not {key!r}")
        if key in LOGICAL_OPERATORS:
            for sub in _conditions_arg(where, key, condition):
                _validate_document(sub, prefix=prefix, depth=depth + 1)
        elif key.startswith("$"):
            raise _operator_at_top(key, where)
        else:
            path = f"{prefix}.{key}" if prefix else key
            _validate_path(path)
            _validate_condition(path, condition, depth + 1)


def _validate_path(path: str) -> None:
    pieces = path.split(".")
    if "" in pieces:
        raise _error(
            path or '""',
            "a field path cannot have empty parts (check for doubled or trailing dots)",
        )
    for piece in pieces:
        if piece.startswith("$"):
            raise _error(
                path,
                f'"{piece}" is an operator, not a field name; write {{"field": {{"{piece}": …}}}}',
            )


def _validate_condition(path: str, condition: Any, depth: int) -> None:
    # Any operator key makes an operator object, so {"b": 1, "$gt": 2} is reported as mixed.
    is_literal = not isinstance(condition, Mapping) or _is_date(condition)
    if not is_literal and any(_is_operator_key(key) for key in condition):
        _validate_operators(path, condition, depth)
    else:
        _validate_literal(path, None, condition, depth)


def _validate_operators(path: str, operators: Mapping[str, Any], depth: int) -> None:
    _check_depth(path, depth)
    for op, arg in operators.items():
        if not _is_operator_key(op):
            example = next(key for key in operators if _is_operator_key(key))
            raise _error(
                path,
                f'mixes operators ("{example}") with plain fields ("{op}") in one object; '
                f'to test a nested field write {{"{path}.{op}": …}} as its own key',
            )
        if op not in FIELD_OPERATORS:
            raise _operator_in_field(path, op)
        _validate_operator(path, op, arg, operators, depth)


def _validate_operator(
    path: str, op: str, arg: Any, operators: Mapping[str, Any], depth: int
) -> None:
    match op:
        case "$eq" | "$ne":
            _validate_literal(path, op, arg, depth + 1)
        case "$gt" | "$gte" | "$lt" | "$lte":
            _bound_arg(path, op, arg)
        case "$in" | "$nin" | "$all":
            for item in _list_arg(path, op, arg):
                _validate_literal(path, op, item, depth + 1)
        case "$exists":
            _exists_arg(path, arg)
        case "$size":
            _size_arg(path, arg)
        case "$mod":
            _mod_arg(path, arg)
        case "$regex":
            _regex_arg(path, arg, operators.get("$options", ""))
        case "$options":
            _require_regex(path, operators)
        case "$elemMatch":
            query = _elem_match_arg(path, arg)
            if _is_value_form(query):
                _validate_operators(path, query, depth + 1)
            else:
                _validate_document(query, prefix=path, depth=depth + 1)
        case "$not":
            _validate_operators(path, _not_arg(path, arg), depth + 1)


def _validate_literal(path: str, op: str | None, value: Any, depth: int) -> None:
    """A plain value to compare with: JSON, no operators inside (except a {"$date": …})."""
    if isinstance(value, (Mapping, list)):
        _check_depth(path, depth)  # only containers nest; a scalar adds no level
    if isinstance(value, Mapping):
        if _is_date(value):
            _date_arg(path, value)
            return
        for key, item in value.items():
            if _is_operator_key(key):
                raise _literal_operator_error(path, op, key)
            _validate_literal(f"{path}.{key}" if op is None else path, op, item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _validate_literal(path, op, item, depth + 1)
    elif value is not None and not isinstance(value, (str, int, float)):
        raise _error(path, f"{value!r} is not a JSON value")


def _literal_operator_error(path: str, op: str | None, key: str) -> FilterError:
    if op is None:
        return _error(
            path,
            f'operator "{key}" cannot sit inside a plain value; to test this nested field write '
            f'{{"{path}": {{"{key}": …}}}}',
        )
    return _error(path, f'"{op}" takes plain values, so it cannot contain the operator "{key}"')


# --- a query in words ------------------------------------------------------------------------

_SYMBOLS = {"$ne": "is not", "$lt": "<", "$lte": "≤", "$gt": ">", "$gte": "≥"}
_EMPTY_LISTS: tuple[list[Any], ...] = ([None, ""], [None, []])
_ESCAPED = re2.compile(r"^(?:[^.*+?^${}()|\[\]\\]|\\[.*+?^${}()|\[\]\\])*$", _RE2_OPTIONS)


def filter_summary(query: Any) -> str | None:
    """A query as a clinic admin reads it — `order.totalAmount ≥ 50 and (customer.isTest is
    true or order.coupon starts with “vip”)` — for what the point-and-click builder writes;
    None for anything else (the caller shows the JSON)."""
    if not isinstance(query, Mapping) or not query:
        return None
    try:
        return _document_words(query, depth=1)[0]
    except _NoWords:
        return None


class _NoWords(Exception):
    pass


# Words and how they are joined: "" for one condition, else "and" or "or".
_Words = tuple[str, str]


def _joined(parts: list[_Words], joiner: str) -> _Words:
    if len(parts) == 1:
        return parts[0]
    pieces = [words if kind in ("", joiner) else f"({words})" for words, kind in parts]
    return f" {joiner} ".join(pieces), joiner


def _document_words(query: Mapping[str, Any], *, depth: int) -> _Words:
    if depth > MAX_DEPTH or not query:
        raise _NoWords
    parts: list[_Words] = []
    for key, condition in query.items():
        if key in ("$and", "$or") and isinstance(condition, list) and condition:
            subs = [_document_words(_mapping(sub), depth=depth + 1) for sub in condition]
            parts.append(_joined(subs, key[1:]))
        elif isinstance(key, str) and key and not key.startswith("$"):
            parts.append(_joined([(w, "") for w in _condition_words(key, condition)], "and"))
        else:
            raise _NoWords
    return _joined(parts, "and")


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _NoWords
    return value


def _condition_words(path: str, condition: Any) -> list[str]:
    if not _is_operator_object(condition):
        if isinstance(condition, bool):
            return [f"{path} is {'true' if condition else 'false'}"]
        return [f"{path} is {_value_words(condition)}"]
    if set(condition) == {"$regex", "$options"} and condition["$options"] == "i":
        pattern = condition["$regex"]
        starts = isinstance(pattern, str) and pattern.startswith("^")
        text = _unescaped(pattern[1:] if starts else pattern)
        return [f"{path} {'starts with' if starts else 'contains'} “{text}”"]
    words = []
    for op, arg in condition.items():
        if op in ("$in", "$nin") and arg in _EMPTY_LISTS:
            words.append(f"{path} is {'not ' if op == '$nin' else ''}empty")
        elif op in ("$in", "$nin") and isinstance(arg, list) and arg:
            values = ", ".join(_value_words(item) for item in arg)
            words.append(f"{path} is {'one' if op == '$in' else 'none'} of {values}")
        elif op in _SYMBOLS:
            words.append(f"{path} {_SYMBOLS[op]} {_value_words(arg)}")
        elif op == "$regex" and len(condition) == 1 and isinstance(arg, str):
            words.append(f"{path} matches the pattern “{arg}”")
        elif (
            op == "$not"
            and isinstance(arg, Mapping)
            and set(arg) == {"$regex", "$options"}
            and arg["$options"] == "i"
        ):
            words.append(f"{path} does not contain “{_unescaped(arg['$regex'])}”")
        else:
            raise _NoWords
    return words


def _unescaped(pattern: Any) -> str:
    if not isinstance(pattern, str) or not _ESCAPED.search(pattern):
        raise _NoWords
    return re2.sub(r"\\(.)", r"\1", pattern)


def _value_words(value: Any) -> str:
    if isinstance(value, str):
        return f"“{value}”"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_number(value):
        return f"{value:g}" if isinstance(value, float) else str(value)
    if _is_date(value) and isinstance(value["$date"], str):
        return value["$date"].replace("T", " ").replace(":00Z", " UTC")
    raise _NoWords
