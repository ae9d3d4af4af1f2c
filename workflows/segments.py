"""Segments: a clinic's patients chosen by a saved filter over them and their records.

`segment_patients` is the one way to read a segment's members: broadcasts stream it in
batches (by primary key), the admin counts it live. It must stay a single SQL query (no
per-patient Python), so that a 100,000-patient segment is counted and streamed cheaply.

A segment's filter is the workflows' query language (workflows.filters) over each patient's
*segment document*, whose fields are the catalogue below (`SEGMENT_FIELDS`):

    {"customer": {"firstName": "Ana", "provinceCode": "FL", "defaultAddress": {…}, "dob":
                  "1990-05-01", "createdAt": "2026-01-01T10:00:00+00:00",
                  "acceptMarketing": true, …},
     "subscriptions": [{"status": "active", "product": {"id": "SKU-1", "name": "Zinc"}, …}],
     "orders": {"count": 2, "daysSinceLast": 95, "items": [{"status": "shipped", …}]},
     "appointments": {"count": 1, "daysSinceLast": null, "items": [{…}]}}

The document is never built to match: `segment_q` translates the filter into one SQL
condition over Patient (record facts as EXISTS and COUNT subqueries), with the semantics
`filter_matches` has on that document — `segment_document` builds it, and a property test
holds the two together. What SQL cannot answer the same way ($regex, $mod, whole-array
equality, text compared with a date, …) is refused with an error naming the field and
operator, never answered differently.

Choices worth knowing:
- `customer.provinceCode`, `customer.city`, … are the address fields as clinics say them; the
  payloads' own paths (`customer.defaultAddress.provinceCode`) work too.
- `orders.daysSinceLast` is whole days (rounded down) since the most recent order created at
  or before now; a patient with no orders has null there, so `{"orders.daysSinceLast":
  {"$gt": 90}}` leaves them out and `{"orders.daysSinceLast": null}` (or `{"orders.count":
  0}`) finds them. `appointments.daysSinceLast` likewise counts from the latest appointment
  that has started.
- `customer.acceptMarketing` is the payloads' field: whether a marketing text may rely on the
  patient's SMS consent now (patients.consent), never a flag of its own. A broadcast checks
  consent again at send time; a segment only chooses whom to consider.
- Dates (`customer.dob`, `subscriptions.nextCycleDate`) compare with a full date
  "YYYY-MM-DD" or a {"$date": …}; date-times (`customer.createdAt`) with a {"$date": …}.
"""

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connections, models, router
from django.db.models import Count, Exists, F, FloatField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Coalesce, Collate
from django.db.models.lookups import (
    Exact,
    GreaterThan,
    GreaterThanOrEqual,
    LessThan,
    LessThanOrEqual,
)
from django.utils import timezone

from patients.consent import consent_allowed_q, patient_accepts_marketing
from patients.models import Appointment, ConsentRecord, Order, Patient, Subscription
from workflows.filters import LOGICAL_OPERATORS, FilterError, filter_validate
from workflows.models import Segment

# --- the catalogue: what a segment can test --------------------------------------------------


@dataclass(frozen=True)
class Scalar:
    """One value of a patient or of one of their records: a column, typed as the document
    has it ("string", "number", "boolean", "date", "datetime"; dates as ISO-8601 text)."""

    path: str
    type: str
    column: str
    description: str
    example: Any = None
    # Listed in the builder; an alias (the payloads' own spelling) is accepted, not offered.
    listed: bool = True

    def python(self, record: Any) -> Any:
        value = getattr(record, self.column)
        if value is None:
            return None
        if self.type == "number":
            return float(value) if isinstance(value, Decimal) else value
        if self.type == "datetime":
            return value.astimezone(UTC).isoformat()
        if self.type == "date":
            return value.isoformat()
        return value


@dataclass(frozen=True)
class Records:
    """A kind of record a patient has many of: a list of sub-documents at `path` (tested
    with $elemMatch, or through a field of its records: "any subscription's status"), and,
    under `facts`, computed numbers (`count`, `daysSinceLast` since `recency`)."""

    name: str
    path: str
    model: type[models.Model]
    fields: tuple[Scalar, ...]
    noun: str
    facts: str = ""
    recency: str = ""
    recency_words: str = ""

    def records(self, patient: Patient) -> Sequence[Any]:
        return list(getattr(patient, f"{self.model._meta.model_name}s").all())

    def related(self) -> QuerySet[Any]:
        return self.model._default_manager.filter(patient=OuterRef("pk")).order_by()


def _text(path: str, column: str, description: str, example: Any = None, **kw: Any) -> Scalar:
    return Scalar(path, "string", column, description, example, **kw)


_ADDRESS = (
    ("address1", "address1", "Street address, first line."),
    ("address2", "address2", "Street address, second line."),
    ("city", "city", "City.", "Tampa"),
    ("province", "province", "State or province, spelled out.", "Florida"),
    ("provinceCode", "province_code", "State or province code.", "FL"),
    ("postalCode", "postal_code", "ZIP or postal code.", "33602"),
    ("countryCode", "country_code", "Country code (ISO 3166).", "US"),
)

CUSTOMER_FIELDS: tuple[Scalar, ...] = (
    _text("customer.firstName", "first_name", "First name.", "Ana"),
    _text("customer.lastName", "last_name", "Last name.", "Lopez"),
    _text("customer.email", "email", "Email address (blank if none)."),
    _text("customer.phone", "phone", "Mobile number in E.164 (blank if none).", "+14155550123"),
    _text("customer.gender", "gender", "female, male, other, unknown or blank.", "female"),
    Scalar("customer.dob", "date", "dob", "Date of birth (null if unknown).", "1990-05-01"),
    _text("customer.timezone", "timezone", "IANA time zone (blank: derived).", "America/New_York"),
    _text("customer.language", "language", "Preferred language code (blank: the clinic's).", "es"),
    *(_text(f"customer.{key}", column, text, *example) for key, column, text, *example in _ADDRESS),
    # The payloads' spelling of the same columns (customer.updated's changedFields, workflow
    # filters): accepted, so a filter copied from a workflow works, but not offered twice.
    *(
        _text(f"customer.defaultAddress.{key}", column, text, *example, listed=False)
        for key, column, text, *example in _ADDRESS
    ),
    _text("customer.source", "source", "Where the patient signed up.", "patient-portal"),
    Scalar("customer.isTest", "boolean", "is_test", "A test patient."),
    Scalar("customer.createdAt", "datetime", "created_at", "When the patient was added."),
)

SUBSCRIPTIONS = Records(
    name="subscriptions",
    path="subscriptions",
    model=Subscription,
    noun="subscription",
    fields=(
        _text("status", "status", "created, active, paused or cancelled.", "active"),
        _text("product.id", "product_id", "The product's id (SKU).", "SKU-ZINC"),
        _text("product.name", "product_name", "The product's name.", "Zinc"),
        Scalar("price", "number", "price", "Price per cycle.", 49),
        Scalar("currentCycle", "number", "current_cycle", "The current cycle (the first is 1).", 2),
        Scalar("nextCycleDate", "date", "next_cycle_date", "Renewal date (null if none)."),
        Scalar("createdAt", "datetime", "created_at", "When the subscription was created."),
    ),
)
ORDERS = Records(
    name="orders",
    path="orders.items",
    model=Order,
    noun="order",
    facts="orders",
    recency="created_at",
    recency_words="the most recent order",
    fields=(
        _text("status", "status", "The order's status.", "shipped"),
        _text("number", "number", "The order number."),
        Scalar("totalAmount", "number", "total_amount", "Order total.", 120),
        _text("coupon", "coupon", "Coupon code (blank if none)."),
        Scalar("createdAt", "datetime", "created_at", "When the order was placed."),
    ),
)
APPOINTMENTS = Records(
    name="appointments",
    path="appointments.items",
    model=Appointment,
    noun="appointment",
    facts="appointments",
    recency="starts_at",
    recency_words="the latest appointment that has started",
    fields=(
        _text(
            "status", "status", "booked, confirmed, cancelled, completed, no_show, …", "completed"
        ),
        Scalar("startsAt", "datetime", "starts_at", "When the appointment starts."),
        _text("providerName", "provider_name", "The provider's name."),
    ),
)
RECORDS: tuple[Records, ...] = (SUBSCRIPTIONS, ORDERS, APPOINTMENTS)


@dataclass(frozen=True)
class Fact:
    """A number computed from a kind of records: how many (`count`), or whole days since
    the latest one at or before now (`daysSinceLast`, null when there is none)."""

    path: str
    kind: str
    records: Records
    description: str
    example: Any = None

    @property
    def type(self) -> str:
        return "number"


FACTS: tuple[Fact, ...] = tuple(
    fact
    for records in RECORDS
    if records.facts
    for fact in (
        Fact(f"{records.facts}.count", "count", records, f"How many {records.name}.", 2),
        Fact(
            f"{records.facts}.daysSinceLast",
            "daysSinceLast",
            records,
            f"Whole days since {records.recency_words}; null if none.",
            90,
        ),
    )
)


@dataclass(frozen=True)
class Flag:
    """A true/false fact about the patient read from their records' history (their consent):
    `python` answers it for one patient, `condition` is where it is true, as a Q."""

    path: str
    description: str
    python: Callable[[Patient], bool]
    condition: Callable[[], Q]
    example: Any = True

    @property
    def type(self) -> str:
        return "boolean"


FLAGS: tuple[Flag, ...] = (
    Flag(
        "customer.acceptMarketing",
        "Whether a marketing text may rely on the patient's SMS consent now.",
        patient_accepts_marketing,
        lambda: consent_allowed_q(purpose=ConsentRecord.Purpose.MARKETING),
    ),
)

# Every path a segment filter may name, top level.
SEGMENT_FIELDS: dict[str, Scalar | Flag | Fact | Records] = {
    **{f.path: f for f in CUSTOMER_FIELDS},
    **{f.path: f for f in FLAGS},
    **{f.path: f for f in FACTS},
    **{r.path: r for r in RECORDS},
}
# Objects of the document that are not values themselves: named only through their fields.
_OBJECTS = {"customer", "customer.defaultAddress", *(r.facts for r in RECORDS if r.facts)}


def segment_field_catalogue() -> list[dict[str, Any]]:
    """The fields for the point-and-click builder (workflows/static/careflow/query-builder.js):
    [{path, type, description, group, list, example}]; a record's field is "any of" them."""
    fields: list[dict[str, Any]] = []
    for item in SEGMENT_FIELDS.values():
        if isinstance(item, Records):
            for sub in item.fields:
                fields.append(
                    {
                        "path": f"{item.path}.{sub.path}",
                        "type": sub.type,
                        "description": f"{sub.description.rstrip('.')} (any of the {item.name}).",
                        "group": item.name,
                        "list": False,
                        "example": sub.example,
                    }
                )
        elif not isinstance(item, Scalar) or item.listed:
            fields.append(
                {
                    "path": item.path,
                    "type": item.type,
                    "description": item.description,
                    "group": item.path.rsplit(".", 1)[0],
                    "list": False,
                    "example": item.example,
                }
            )
    return fields


# --- the document a filter is matched against (for tests and explanations) -------------------


def _days_since(moments: Sequence[datetime], now: datetime) -> int | None:
    past = [moment for moment in moments if moment <= now]
    return (now - max(past)) // timedelta(days=1) if past else None


def _nested(pairs: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for path, value in pairs:
        *parents, last = path.split(".")
        node = document
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return document


def segment_document(patient: Patient, *, now: datetime) -> dict[str, Any]:
    """The document `segment_q` answers for: the patient's catalogue values at `now`.
    Reads the patient's records (prefetch them for many patients)."""
    pairs: list[tuple[str, Any]] = [(f.path, f.python(patient)) for f in CUSTOMER_FIELDS]
    pairs += [(f.path, f.python(patient)) for f in FLAGS]
    for records in RECORDS:
        rows = records.records(patient)
        items = [_nested([(f.path, f.python(row)) for f in records.fields]) for row in rows]
        pairs.append((records.path, items))
        if records.facts:
            moments = [getattr(row, records.recency) for row in rows]
            pairs.append((f"{records.facts}.count", len(rows)))
            pairs.append((f"{records.facts}.daysSinceLast", _days_since(moments, now)))
    return _nested(pairs)


# --- compilation: a filter → one SQL condition -----------------------------------------------

# A condition: a constant (the filter decides it without looking) or a Q. Q() means "true" to
# Django, and ~Q() too, so constants are kept apart and folded away.
Condition = bool | Q


def _not(condition: Condition) -> Condition:
    return not condition if isinstance(condition, bool) else ~condition


def _all(conditions: Sequence[Condition]) -> Condition:
    result: Condition = True
    for condition in conditions:
        if condition is False:
            return False
        if isinstance(condition, Q):
            result = condition if isinstance(result, bool) else result & condition
    return result


def _any(conditions: Sequence[Condition]) -> Condition:
    return _not(_all([_not(condition) for condition in conditions]))


def _q(condition: Condition) -> Q:
    if condition is True:
        return Q()
    if condition is False:
        return Q(pk__in=[])
    return condition


_NEGATIONS = {"$ne": "$eq", "$nin": "$in"}
_LOOKUPS: dict[str, type[Any]] = {
    "$eq": Exact,
    "$gt": GreaterThan,
    "$gte": GreaterThanOrEqual,
    "$lt": LessThan,
    "$lte": LessThanOrEqual,
}
# The earliest moment a record can have.
_EARLIEST = datetime.min.replace(tzinfo=UTC)
# Integers beyond this compare as floats (SQLite's integers are 64-bit).
_MAX_EXACT_INT = 2**53


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_date_literal(value: Any) -> bool:
    return isinstance(value, Mapping) and len(value) == 1 and "$date" in value


def _instant(literal: Mapping[str, Any]) -> datetime:
    # Validated by filter_validate: an ISO-8601 date or date-time; without an offset, UTC.
    parsed = datetime.fromisoformat(literal["$date"])
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def _refuse(path: str, op: str, why: str) -> FilterError:
    return FilterError(f'{path}: "{op}" {why}')


class _Source:
    """Where a path's values come from; answers one positive operator at a time."""

    path: str

    def positive(self, op: str, arg: Any) -> Condition:
        raise NotImplementedError

    def exists(self, flag: bool) -> Condition:
        return flag  # every catalogue value is in the document (null when unknown)


@dataclass
class _Column(_Source):
    """A scalar column of the queried model (the patient, or a record in $elemMatch)."""

    scalar: Scalar
    path: str
    vendor: str
    model: type[models.Model] = Patient

    def positive(self, op: str, arg: Any) -> Condition:
        kind, column = self.scalar.type, self.scalar.column
        if op in ("$size", "$elemMatch"):
            raise _refuse(self.path, op, f"tests a list, and {self.path} is a single value")
        if arg is None:
            # null equals null (and a missing value); $gte/$lte include it, $gt/$lt never.
            if op in ("$eq", "$gte", "$lte") and kind in ("date", "datetime"):
                return Q(**{f"{column}__isnull": True})
            return False
        if _is_date_literal(arg):
            return self._date_literal(op, _instant(arg))
        if isinstance(arg, (list, Mapping)):
            if op != "$eq":
                raise _refuse(self.path, op, "compares with a single value")
            return False  # a single value never equals a list or an object
        if isinstance(arg, bool):
            return self._boolean(op, arg) if kind == "boolean" else False
        if _is_number(arg):
            return self._number(op, arg) if kind == "number" else False
        if kind == "string":
            return self._string(op, arg)
        if kind == "date":
            return self._date_text(op, arg)
        if kind == "datetime":
            return self._datetime_text(op, arg)
        return False  # text never equals or orders with a number or true/false

    def _boolean(self, op: str, arg: bool) -> Condition:
        return _boolean(op, arg, Q(**{self.scalar.column: True}))

    def _number(self, op: str, arg: float) -> Condition:
        field = self.scalar.column
        model_field = self.model._meta.get_field(field)
        lhs: Any = F(field)
        if isinstance(model_field, models.DecimalField):
            lhs = Cast(F(field), FloatField())  # the document has the amount as a float
        condition = _compare_number(lhs, op, arg)
        if getattr(model_field, "null", False) and isinstance(condition, Q):
            return Q(**{f"{field}__isnull": False}) & condition
        return condition

    def _string(self, op: str, arg: str) -> Condition:
        column = self.scalar.column
        if "\x00" in arg:
            # Stored text never holds NUL: nothing equals the bound, and in code-point order
            # "ab\x00…" sits right after "ab", so the order test is one on "ab".
            if op == "$eq":
                return False
            arg = arg[: arg.index("\x00")]
            op = {"$gte": "$gt", "$lt": "$lte"}.get(op, op)
        if op == "$eq":
            return Q(**{column: arg})
        # Code-point order, as filter_matches compares: PostgreSQL's "C" collation (bytes
        # of UTF-8, which sort as code points); SQLite's default BINARY already is.
        lhs: Any = Collate(F(column), "C") if self.vendor == "postgresql" else F(column)
        return Q(_LOOKUPS[op](lhs, Value(arg)))

    def _date_text(self, op: str, arg: str) -> Condition:
        # The document has "YYYY-MM-DD": text equal to that, or ordered with another full
        # date, is the date's own order; other text would order by characters.
        try:
            day = date.fromisoformat(arg)
        except ValueError:
            day = None
        if day is None or day.isoformat() != arg:
            if op == "$eq":
                return False
            raise _refuse(
                self.path, op, f'compares a date with a full date such as "2026-01-31", not {arg!r}'
            )
        return self._lookup(op, day)

    def _datetime_text(self, op: str, arg: str) -> Condition:
        try:
            moment = datetime.fromisoformat(arg)
        except ValueError:
            moment = None
        if op != "$eq":
            raise _refuse(
                self.path,
                op,
                'compares a date-time with {"$date": "2026-01-31T00:00:00Z"}, not with text',
            )
        # The document writes the instant in UTC as Python's isoformat() does.
        if moment is None or moment.tzinfo is None or moment.utcoffset() != timedelta(0):
            return False
        return self._lookup("$eq", moment) if moment.isoformat() == arg else False

    def _date_literal(self, op: str, instant: datetime) -> Condition:
        kind = self.scalar.type
        if kind == "datetime":
            return self._lookup(op, instant)
        if kind != "date":
            if kind == "string":
                raise _refuse(
                    self.path, op, "compares dates; this field is text, compare it with text"
                )
            return False
        # A date in the document is its midnight UTC as an instant.
        day = instant.date()
        midnight = instant == datetime(day.year, day.month, day.day, tzinfo=UTC)
        if op == "$eq":
            return self._lookup("$eq", day) if midnight else False
        if op in ("$gt", "$lte") or midnight:
            return self._lookup(op, day)
        return self._lookup({"$gte": "$gt", "$lt": "$lte"}[op], day)

    def _lookup(self, op: str, value: Any) -> Q:
        suffix = {"$eq": "exact", "$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}[op]
        return Q(**{f"{self.scalar.column}__{suffix}": value})


@dataclass
class _AnyRecord(_Source):
    """A field of a kind of records outside $elemMatch: "any of the patient's records"."""

    records: Records
    column: _Column
    path: str

    def positive(self, op: str, arg: Any) -> Condition:
        condition = self.column.positive(op, arg)
        if condition is False:
            return False
        return Q(Exists(self.records.related().filter(_q(condition))))

    def exists(self, flag: bool) -> Condition:
        # Every record has every field: it exists when there is a record.
        found = Q(Exists(self.records.related()))
        return found if flag else ~found


@dataclass
class _RecordList(_Source):
    records: Records
    path: str
    vendor: str

    def positive(self, op: str, arg: Any) -> Condition:
        if op == "$elemMatch":
            first = next(iter(arg), "") if isinstance(arg, Mapping) else "$"
            if str(first).startswith("$") and first not in LOGICAL_OPERATORS:
                raise _refuse(
                    self.path,
                    op,
                    f"tests each {self.records.noun} as an object: name its fields, e.g. "
                    f'{{"{self.path}": {{"$elemMatch": {{"status": "active"}}}}}}',
                )
            condition = _document(arg, _record_scope(self.records, self.path, self.vendor))
            if condition is False:
                return False
            return Q(Exists(self.records.related().filter(_q(condition))))
        if op == "$size":
            return _count_condition(self.records, "$eq", arg)
        raise _refuse(
            self.path,
            op,
            f"cannot test the list of {self.records.name} as a whole; use $elemMatch, e.g. "
            f'{{"{self.path}": {{"$elemMatch": {{"status": "active"}}}}}}, or a field of its '
            f'records such as "{self.path}.{self.records.fields[0].path}"',
        )


def _boolean(op: str, arg: bool, true: Q) -> Condition:
    """A true/false value (never null) that is true where `true` holds, against a boolean."""
    is_true, is_false = true, ~true
    # false < true, as in Python and MongoDB.
    answers: dict[tuple[str, bool], Condition] = {
        ("$eq", True): is_true,
        ("$eq", False): is_false,
        ("$gt", False): is_true,
        ("$gt", True): False,
        ("$gte", False): True,
        ("$gte", True): is_true,
        ("$lt", False): False,
        ("$lt", True): is_false,
        ("$lte", False): is_false,
        ("$lte", True): True,
    }
    return answers[(op, arg)]


@dataclass
class _FlagSource(_Source):
    flag: Flag
    path: str

    def positive(self, op: str, arg: Any) -> Condition:
        if op in ("$size", "$elemMatch"):
            raise _refuse(self.path, op, f"tests a list, and {self.path} is true or false")
        if isinstance(arg, bool):
            return _boolean(op, arg, self.flag.condition())
        return False  # never null; true/false never equals or orders with anything else


def _count_expression(records: Records) -> Any:
    counted = records.related().values("patient").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted), 0)


def _compare_number(lhs: Any, op: str, arg: Any) -> Condition:
    """A number compared as an expression, never through a field's own conversion: Django
    would round 2.5 to 2 for an integer column, and to the column's digits for a decimal
    one. Anything but a number never equals or orders with one."""
    if not _is_number(arg) or (isinstance(arg, float) and math.isnan(arg)):
        return False
    value = float(arg) if isinstance(arg, int) and abs(arg) > _MAX_EXACT_INT else arg
    output: Any = FloatField() if isinstance(value, float) else models.BigIntegerField()
    return Q(_LOOKUPS[op](lhs, Value(value, output_field=output)))


def _count_condition(records: Records, op: str, arg: Any) -> Condition:
    if _is_number(arg) and not math.isnan(arg):
        # "Has any" and "has none" are the common questions: an EXISTS stops at the first
        # record where a COUNT reads them all (the count is whole and never negative).
        at_least = {
            "$gte": math.ceil(arg) if math.isfinite(arg) else None,
            "$gt": math.floor(arg) + 1 if math.isfinite(arg) else None,
        }.get(op)
        below = {
            "$lt": math.ceil(arg) if math.isfinite(arg) else None,
            "$lte": math.floor(arg) + 1 if math.isfinite(arg) else None,
        }.get(op)
        has_any = Q(Exists(records.related()))
        if at_least is not None and at_least <= 1:
            return True if at_least <= 0 else has_any
        if below is not None and below <= 1:
            return False if below <= 0 else ~has_any
        if op == "$eq" and arg == 0:
            return ~has_any
    return _compare_number(_count_expression(records), op, arg)


@dataclass
class _FactSource(_Source):
    fact: Fact
    path: str
    now: datetime

    def positive(self, op: str, arg: Any) -> Condition:
        if op in ("$size", "$elemMatch"):
            raise _refuse(self.path, op, f"tests a list, and {self.path} is a number")
        if isinstance(arg, (list, Mapping)) and not _is_date_literal(arg):
            if op != "$eq":
                raise _refuse(self.path, op, "compares with a single value")
            return False
        if self.fact.kind == "count":
            return _count_condition(self.fact.records, op, arg) if arg is not None else False
        return self._days(op, arg)

    def _days(self, op: str, arg: Any) -> Condition:
        records = self.fact.records
        column = records.recency
        past = records.related().filter(**{f"{column}__lte": self.now})
        has_any = Q(Exists(past))
        if arg is None:
            return ~has_any if op in ("$eq", "$gte", "$lte") else False
        if not _is_number(arg) or (isinstance(arg, float) and math.isnan(arg)):
            return False  # a number of days never equals or orders with anything else

        def at_least(days: float) -> Condition:
            # D ≥ days (D whole, ≥ 0): the latest is at or before now − days.
            if days <= 0:
                return has_any
            if days > (self.now - _EARLIEST).days:
                return False  # older than any date Python (or a record) can hold
            limit = self.now - timedelta(days=int(days))
            return has_any & ~Q(Exists(past.filter(**{f"{column}__gt": limit})))

        if op == "$gt":
            return at_least(math.floor(arg) + 1)
        if op == "$gte":
            return at_least(math.ceil(arg))
        if op == "$lt":
            return _all([has_any, _not(at_least(math.ceil(arg)))])
        if op == "$lte":
            return _all([has_any, _not(at_least(math.floor(arg) + 1))])
        if not float(arg).is_integer():
            return False
        return _all([at_least(arg), _not(at_least(arg + 1))])


# A scope: the fields a (sub-)document can name, as a function of a path to its source.
Scope = Callable[[str], _Source]


def _suggest(path: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(path, known, n=1, cutoff=0.6)
    if close:
        return f' (did you mean "{close[0]}"?)'
    return "; see the list of segment fields"


def _patient_scope(now: datetime, vendor: str) -> Scope:
    def source(path: str) -> _Source:
        item = SEGMENT_FIELDS.get(path)
        if isinstance(item, Scalar):
            return _Column(scalar=item, path=path, vendor=vendor)
        if isinstance(item, Fact):
            return _FactSource(fact=item, path=path, now=now)
        if isinstance(item, Flag):
            return _FlagSource(flag=item, path=path)
        if isinstance(item, Records):
            return _RecordList(records=item, path=path, vendor=vendor)
        for records in RECORDS:
            prefix = f"{records.path}."
            if path.startswith(prefix):
                sub = {f.path: f for f in records.fields}.get(path.removeprefix(prefix))
                if sub is not None:
                    column = _Column(scalar=sub, path=path, vendor=vendor, model=records.model)
                    return _AnyRecord(records=records, column=column, path=path)
        if path in _OBJECTS:
            raise FilterError(f"{path}: is a group of fields; test one of them, e.g. {path}.…")
        known = [f["path"] for f in segment_field_catalogue()] + [r.path for r in RECORDS]
        raise FilterError(f'{path}: unknown segment field "{path}"{_suggest(path, known)}')

    return source


def _record_scope(records: Records, prefix: str, vendor: str) -> Scope:
    fields = {f.path: f for f in records.fields}

    def source(path: str) -> _Source:
        sub = fields.get(path)
        if sub is None:
            where = f"{prefix}.$elemMatch"
            raise FilterError(
                f'{where}: {records.noun}s have no field "{path}"'
                f"{_suggest(path, list(fields))}; they have {', '.join(fields)}"
            )
        return _Column(scalar=sub, path=f"{prefix}.{path}", vendor=vendor, model=records.model)

    return source


def _document(query: Mapping[str, Any], scope: Scope) -> Condition:
    parts: list[Condition] = []
    for key, condition in query.items():
        if key in LOGICAL_OPERATORS:
            subs = [_document(sub, scope) for sub in condition]
            if key == "$and":
                parts.append(_all(subs))
            elif key == "$or":
                parts.append(_any(subs))
            else:
                parts.append(_not(_any(subs)))
        else:
            parts.append(_field(scope(key), condition))
    return _all(parts)


def _is_operators(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(value)
        and str(next(iter(value))).startswith("$")
        and not _is_date_literal(value)
    )


def _field(source: _Source, condition: Any) -> Condition:
    if not _is_operators(condition):
        return _operator(source, "$eq", condition)
    return _all([_operator(source, op, arg) for op, arg in condition.items()])


def _operator(source: _Source, op: str, arg: Any) -> Condition:
    if op in _NEGATIONS:
        # "No value equals": true for a patient without any such record, as in MongoDB.
        return _not(_operator(source, _NEGATIONS[op], arg))
    if op == "$not":
        return _not(_field(source, arg))
    if op == "$in":
        return _any([_operator(source, "$eq", item) for item in arg])
    if op == "$all":
        return bool(arg) and _all([_operator(source, "$eq", item) for item in arg])
    if op == "$exists":
        return source.exists(arg)
    if op in ("$regex", "$options"):
        raise _refuse(
            source.path,
            op,
            "is not available in segments (the database cannot match it as workflows do); "
            'use "is", "is one of" or a comparison',
        )
    if op == "$mod":
        raise _refuse(source.path, op, "is not available in segments")
    return source.positive(op, arg)


def _vendor() -> str:
    return connections[router.db_for_read(Patient)].vendor


def segment_q(query: Any, *, now: datetime | None = None) -> Q:
    """The filter as one condition on Patient, true exactly where `filter_matches` would be
    on `segment_document(patient, now=now)`. Raises FilterError, naming the field and
    operator, for a malformed filter, an unknown field, or what SQL cannot answer alike."""
    filter_validate(query)
    moment = now or timezone.now()
    return _q(_document(query, _patient_scope(moment, _vendor())))


def segment_validate(query: Any) -> None:
    """Raise FilterError unless `query` is a filter a segment can use."""
    segment_q(query)


def clinic_patients_matching(*, organization_id: int, query: Any) -> QuerySet[Patient]:
    """The clinic's patients a segment filter chooses now, ordered by primary key (the
    admin's live count reads it for a filter not saved yet). Raises FilterError."""
    return (
        Patient.objects.filter(organization_id=organization_id)
        .filter(segment_q(query))
        .order_by("pk")
    )


def segment_patients(*, segment: Segment) -> QuerySet[Patient]:
    """The segment's members now: the clinic's patients its filter matches (an empty filter
    matches every patient of the clinic), ordered by primary key. One SQL query; raises
    FilterError if the saved filter cannot be used."""
    return clinic_patients_matching(
        organization_id=segment.organization_id, query=segment.filter or {}
    )
