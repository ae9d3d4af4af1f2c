"""The trigger-filter / condition query language: MongoDB semantics on JSON payloads.

Pure unit tests: no database. Expected results follow MongoDB's matcher (and, for null, the
cases of MongoDB's own jstests/core/query/null_query_semantics.js) unless a test says it
checks one of our documented deviations.
"""

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from workflows import filters
from workflows.filters import FilterError, filter_matches, filter_validate

ORDER = {
    "status": "processing",
    "order": {
        "number": "1001",
        "totalAmount": 120.5,
        "discountAmount": 0,
        "coupon": None,
        "createdAt": "2026-01-15T10:00:00+00:00",
        "customer": {"firstName": "Ann", "phone": "+14155550123", "acceptMarketing": True},
        "lineItems": [
            {"name": "Vitamin D", "price": 10, "quantity": 2, "isSubscription": False},
            {"name": "Zinc", "price": 25.5, "quantity": 1, "isSubscription": True},
        ],
        "tags": ["vip", "new"],
        "statusHistory": [["created", "paid"], ["shipped"]],
    },
}


def matches(query: dict[str, Any], data: Any) -> bool:
    """Validate first, as the admin does when saving, then match."""
    filter_validate(query)
    return filter_matches(query, data)


# --- the documented example ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [("processing", True), ("shipped", True), ("cancelled", False), ("no-show", False)],
)
def test_domain_example_status_not_in(status: str, expected: bool) -> None:
    query = {"status": {"$nin": ["cancelled", "no-show"]}}
    assert matches(query, {"status": status}) is expected


def test_domain_example_matches_a_payload_without_status() -> None:
    assert matches({"status": {"$nin": ["cancelled", "no-show"]}}, {}) is True


def test_empty_filter_matches_everything() -> None:
    assert matches({}, ORDER) is True
    assert matches({}, {}) is True


# --- every operator, positively and negatively -----------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # implicit equality and $eq
        ({"status": "processing"}, True),
        ({"status": "shipped"}, False),
        ({"status": {"$eq": "processing"}}, True),
        ({"status": {"$eq": "Processing"}}, False),
        (
            {
                "order.customer": {
                    "firstName": "Ann",
                    "phone": "+14155550123",
                    "acceptMarketing": True,
                }
            },
            True,
        ),
        ({"order.customer": {"firstName": "Ann"}}, False),  # whole sub-document, not a subset
        # $ne
        ({"status": {"$ne": "shipped"}}, True),
        ({"status": {"$ne": "processing"}}, False),
        # comparisons
        ({"order.totalAmount": {"$gt": 120}}, True),
        ({"order.totalAmount": {"$gt": 120.5}}, False),
        ({"order.totalAmount": {"$gte": 120.5}}, True),
        ({"order.totalAmount": {"$gte": 121}}, False),
        ({"order.totalAmount": {"$lt": 121}}, True),
        ({"order.totalAmount": {"$lt": 120.5}}, False),
        ({"order.totalAmount": {"$lte": 120.5}}, True),
        ({"order.totalAmount": {"$lte": 120}}, False),
        ({"order.totalAmount": {"$gt": 100, "$lt": 200}}, True),  # implicit $and on one key
        ({"order.totalAmount": {"$gt": 100, "$lt": 110}}, False),
        ({"order.number": {"$gt": "1000"}}, True),  # strings compare with strings
        ({"order.number": {"$gt": "2"}}, False),  # …by code point, not numerically
        ({"order.customer.acceptMarketing": {"$gt": False}}, True),  # booleans with booleans
        ({"order.customer.acceptMarketing": {"$lt": True}}, False),
        # $in / $nin
        ({"status": {"$in": ["processing", "shipped"]}}, True),
        ({"status": {"$in": ["shipped", "delivered"]}}, False),
        ({"status": {"$in": []}}, False),
        ({"status": {"$nin": ["shipped"]}}, True),
        ({"status": {"$nin": ["processing"]}}, False),
        ({"status": {"$nin": []}}, True),
        # $exists
        ({"order.coupon": {"$exists": True}}, True),  # present though null
        ({"order.trackingNumber": {"$exists": True}}, False),
        ({"order.trackingNumber": {"$exists": False}}, True),
        ({"order.coupon": {"$exists": False}}, False),
        # $all
        ({"order.tags": {"$all": ["new", "vip"]}}, True),
        ({"order.tags": {"$all": ["vip", "gold"]}}, False),
        ({"order.tags": {"$all": ["vip"]}}, True),
        # $mod
        ({"order.lineItems.0.quantity": {"$mod": [2, 0]}}, True),
        ({"order.lineItems.1.quantity": {"$mod": [2, 0]}}, False),
        # $size
        ({"order.lineItems": {"$size": 2}}, True),
        ({"order.lineItems": {"$size": 3}}, False),
        # $elemMatch, with field sub-queries and operator-only sub-queries
        ({"order.lineItems": {"$elemMatch": {"name": "Zinc", "price": {"$gt": 20}}}}, True),
        ({"order.lineItems": {"$elemMatch": {"name": "Zinc", "price": {"$lt": 20}}}}, False),
        ({"order.tags": {"$elemMatch": {"$gte": "v", "$lt": "w"}}}, True),
        ({"order.tags": {"$elemMatch": {"$gte": "w"}}}, False),
        # $regex and $options
        ({"order.customer.firstName": {"$regex": "^A"}}, True),
        ({"order.customer.firstName": {"$regex": "^a"}}, False),
        ({"order.customer.firstName": {"$regex": "^a", "$options": "i"}}, True),
        # $not
        ({"order.totalAmount": {"$not": {"$gt": 200}}}, True),
        ({"order.totalAmount": {"$not": {"$gt": 100}}}, False),
        ({"order.customer.firstName": {"$not": {"$regex": "^B"}}}, True),
        ({"order.customer.firstName": {"$not": {"$regex": "^a", "$options": "i"}}}, False),
        # $and / $or / $nor and implicit $and of keys
        ({"status": "processing", "order.totalAmount": {"$gt": 100}}, True),
        ({"status": "processing", "order.totalAmount": {"$gt": 200}}, False),
        ({"$and": [{"status": "processing"}, {"order.number": "1001"}]}, True),
        ({"$and": [{"status": "processing"}, {"order.number": "1002"}]}, False),
        ({"$or": [{"status": "shipped"}, {"order.number": "1001"}]}, True),
        ({"$or": [{"status": "shipped"}, {"order.number": "1002"}]}, False),
        ({"$nor": [{"status": "shipped"}, {"order.number": "1002"}]}, True),
        ({"$nor": [{"status": "shipped"}, {"order.number": "1001"}]}, False),
        (
            {
                "$or": [
                    {"$and": [{"status": "processing"}, {"order.coupon": "X"}]},
                    {"order.tags": "vip"},
                ]
            },
            True,
        ),
    ],
)
def test_operators(query: dict[str, Any], expected: bool) -> None:
    assert matches(query, ORDER) is expected


# --- paths and arrays ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # a path piece meeting an array applies to each sub-document in it
        ({"order.lineItems.name": "Zinc"}, True),
        ({"order.lineItems.name": "Iron"}, False),
        ({"order.lineItems.price": {"$gt": 20}}, True),
        ({"order.lineItems.price": {"$gt": 30}}, False),
        # numeric pieces index arrays
        ({"order.lineItems.0.name": "Vitamin D"}, True),
        ({"order.lineItems.0.name": "Zinc"}, False),
        ({"order.lineItems.1.name": "Zinc"}, True),
        ({"order.lineItems.2.name": {"$exists": True}}, False),  # out of range: missing
        ({"order.lineItems.01.name": "Zinc"}, False),  # "01" is not how MongoDB spells 1
        ({"order.tags.0": "vip"}, True),
        ({"order.tags.0": "new"}, False),
        # equality against an array: the whole array, or any element
        ({"order.tags": "new"}, True),
        ({"order.tags": ["vip", "new"]}, True),
        ({"order.tags": ["new", "vip"]}, False),  # arrays are ordered
        ({"order.tags": ["vip"]}, False),
        # nested arrays: one level is unwound per path piece, never two
        ({"order.statusHistory": ["shipped"]}, True),
        ({"order.statusHistory": "shipped"}, False),
        ({"order.statusHistory.1": "shipped"}, False),  # the indexed element is not unwound
        ({"order.statusHistory.1": ["shipped"]}, True),
        ({"order.statusHistory.0.1": "paid"}, True),
        ({"order.statusHistory.0.1": "created"}, False),
        # a path through a scalar leads nowhere
        ({"status.length": {"$exists": True}}, False),
        ({"order.number.0": "1"}, False),
    ],
)
def test_paths(query: dict[str, Any], expected: bool) -> None:
    assert matches(query, ORDER) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"a": {"0": {"b": 1}}}, True),  # a numeric piece also names a sub-document field
        ({"a": [{"b": 1}]}, True),  # …or indexes an array
        ({"a": [{"0": {"b": 1}}]}, True),  # …or names a field of an element
        ({"a": [{"b": 2}, {"b": 1}]}, False),  # index 0 is b: 2
        ({"a": {"1": {"b": 1}}}, False),
    ],
)
def test_numeric_path_piece_also_matches_field_named_zero(data: Any, expected: bool) -> None:
    assert matches({"a.0.b": 1}, data) is expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"a": [{"b": [{"c": 1}, {"c": 2}]}, {"b": [{"c": 3}]}]}, True),
        ({"a": [{"b": [{"c": 1}]}, {"b": {"c": 3}}]}, True),
        ({"a": [{"b": [{"c": 1}]}]}, False),
        ({"a": [[{"b": [{"c": 3}]}]]}, False),  # array directly in an array: not unwound
    ],
)
def test_arrays_of_sub_documents_nest_through_several_levels(data: Any, expected: bool) -> None:
    assert matches({"a.b.c": 3}, data) is expected


def test_elem_match_differs_from_separate_dotted_conditions() -> None:
    # The classic difference: dotted conditions may be met by different elements,
    # $elemMatch needs one element that meets them all.
    data = {"a": [{"x": 1, "y": 0}, {"x": 0, "y": 2}]}
    assert matches({"a.x": 1, "a.y": 2}, data) is True
    assert matches({"a": {"$elemMatch": {"x": 1, "y": 2}}}, data) is False
    assert matches({"a": {"$elemMatch": {"x": 0, "y": 2}}}, data) is True


def test_elem_match_operators_apply_to_one_element_together() -> None:
    data = {"scores": [1, 10]}
    assert matches({"scores": {"$gt": 4, "$lt": 6}}, data) is True  # 10 > 4, 1 < 6
    assert matches({"scores": {"$elemMatch": {"$gt": 4, "$lt": 6}}}, data) is False
    assert matches({"scores": {"$elemMatch": {"$gt": 4, "$lt": 11}}}, data) is True


@pytest.mark.parametrize(
    ("query", "data", "expected"),
    [
        ({"a": {"$elemMatch": {"x": 1}}}, {"a": {"x": 1}}, False),  # needs an array
        ({"a": {"$elemMatch": {"x": 1}}}, {}, False),
        ({"a": {"$elemMatch": {}}}, {"a": [1, {"x": 1}]}, True),  # any sub-document
        ({"a": {"$elemMatch": {}}}, {"a": [1, 2]}, False),
        ({"a": {"$elemMatch": {"$or": [{"x": 1}, {"y": 1}]}}}, {"a": [{"y": 1}]}, True),
        ({"a": {"$elemMatch": {"$or": [{"x": 1}, {"y": 1}]}}}, {"a": [{"z": 1}]}, False),
        ({"a.b": {"$elemMatch": {"$eq": 2}}}, {"a": [{"b": [1]}, {"b": [2]}]}, True),
        ({"a": {"$elemMatch": {"$eq": 1}}}, {"a": [[1]]}, False),  # elements are not unwound
        ({"a": {"$elemMatch": {"$elemMatch": {"$eq": 1}}}}, {"a": [[1]]}, True),
        ({"a": {"$elemMatch": {"0": 1}}}, {"a": [[1, 2]]}, True),  # arrays match as documents
        ({"a": {"$elemMatch": {"$ne": None}}}, {"a": [None]}, False),
        ({"a": {"$elemMatch": {"$ne": None}}}, {"a": [None, 0]}, True),
    ],
)
def test_elem_match_edges(query: dict[str, Any], data: Any, expected: bool) -> None:
    assert matches(query, data) is expected


# --- null, missing and $exists (cases from MongoDB's null_query_semantics.js) -----------------

NULL_DOCS: dict[str, dict[str, Any]] = {
    "no_a": {},
    "a_null": {"a": None},
    "a_number": {"a": 4},
    "a_empty_subobject": {"a": {}},
    "a_subobject_b_null": {"a": {"b": None}},
    "a_subobject_b_not_null": {"a": {"b": "hi"}},
    "a_empty_array": {"a": []},
    "a_double_array": {"a": [[]]},
    "a_value_array_all_nulls": {"a": [None, None]},
    "a_value_array_with_null": {"a": [1, "string", None, 4]},
    "a_value_array_no_nulls": {"a": [1, "string", 4]},
    "a_object_array_some_b_nulls": {"a": [{"b": None}, {"b": 3}]},
    "a_object_array_some_b_missing": {"a": [{"b": 3}, {}]},
    "a_object_array_no_b_nulls": {"a": [{"b": 1}, {"b": "string"}]},
}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        (
            {"a": None},
            {"no_a", "a_null", "a_value_array_all_nulls", "a_value_array_with_null"},
        ),
        (
            {"a": {"$in": [None, 75]}},
            {"no_a", "a_null", "a_value_array_all_nulls", "a_value_array_with_null"},
        ),
        (
            {"a": {"$gte": None}},
            {"no_a", "a_null", "a_value_array_all_nulls", "a_value_array_with_null"},
        ),
        ({"a": {"$gt": None}}, set()),
        ({"a": {"$exists": False}}, {"no_a"}),
        (
            {"a.b": None},
            {
                "no_a",
                "a_null",
                "a_number",
                "a_empty_subobject",
                "a_subobject_b_null",
                "a_object_array_some_b_nulls",
                "a_object_array_some_b_missing",
            },
        ),
        (
            {"a.b": {"$exists": True}},
            {
                "a_subobject_b_null",
                "a_subobject_b_not_null",
                "a_object_array_some_b_nulls",
                "a_object_array_some_b_missing",
                "a_object_array_no_b_nulls",
            },
        ),
        (
            {"a": {"$elemMatch": {"$eq": None}}},
            {"a_value_array_all_nulls", "a_value_array_with_null"},
        ),
    ],
)
def test_null_and_missing(query: dict[str, Any], expected: set[str]) -> None:
    assert {name for name, doc in NULL_DOCS.items() if matches(query, doc)} == expected


@pytest.mark.parametrize(
    ("positive", "negative"),
    [
        ({"a": None}, {"a": {"$ne": None}}),
        ({"a.b": None}, {"a.b": {"$ne": None}}),
        ({"a": {"$in": [None, 4]}}, {"a": {"$nin": [None, 4]}}),
        ({"a": {"$gte": None}}, {"a": {"$not": {"$gte": None}}}),
        ({"a.b": {"$exists": True}}, {"a.b": {"$exists": False}}),
        ({"a": "string"}, {"a": {"$ne": "string"}}),
    ],
)
def test_negations_are_exact_complements(
    positive: dict[str, Any], negative: dict[str, Any]
) -> None:
    for name, doc in NULL_DOCS.items():
        assert matches(positive, doc) is not matches(negative, doc), name


@pytest.mark.parametrize(
    ("query", "data", "expected"),
    [
        ({"coupon": {"$ne": "SAVE10"}}, {}, True),  # $ne matches a missing field
        ({"coupon": {"$nin": ["SAVE10"]}}, {}, True),
        ({"coupon": {"$in": ["SAVE10"]}}, {}, False),
        ({"coupon": {"$eq": "SAVE10"}}, {}, False),
        ({"tags": {"$ne": "vip"}}, {"tags": ["new", "vip"]}, False),  # …but no element may be
        ({"tags": {"$ne": "vip"}}, {"tags": ["new"]}, True),
        ({"tags": {"$nin": ["vip", "gold"]}}, {"tags": ["new", "vip"]}, False),
        ({"tags": {"$nin": ["vip", "gold"]}}, {"tags": ["new"]}, True),
        ({"tags": {"$ne": ["new"]}}, {"tags": ["new"]}, False),  # …nor the whole array
        ({"amount": {"$gt": 0}}, {}, False),  # comparisons never match a missing field
        ({"amount": {"$not": {"$gt": 0}}}, {}, True),
        ({"name": {"$regex": "."}}, {}, False),
        ({"name": {"$not": {"$regex": "."}}}, {}, True),
        ({"name": {"$not": {"$regex": "."}}}, {"name": 5}, True),  # $regex tests strings only
    ],
)
def test_negative_operators_on_missing_fields_and_arrays(
    query: dict[str, Any], data: Any, expected: bool
) -> None:
    assert matches(query, data) is expected


# --- types -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "data", "expected"),
    [
        ({"n": 1}, {"n": 1.0}, True),
        ({"n": 1.0}, {"n": 1}, True),
        ({"n": {"$in": [2, 1.0]}}, {"n": 1}, True),
        ({"n": True}, {"n": 1}, False),
        ({"n": 1}, {"n": True}, False),
        ({"n": 0}, {"n": False}, False),
        ({"n": {"$in": [1]}}, {"n": True}, False),
        ({"n": "50"}, {"n": 50}, False),
        ({"n": 50}, {"n": "50"}, False),
        ({"n": None}, {"n": 0}, False),
        ({"n": None}, {"n": ""}, False),
        ({"n": None}, {"n": False}, False),
        ({"n": {"x": 1}}, {"n": {"x": 1.0}}, True),
        ({"n": {"x": 1, "y": 2}}, {"n": {"y": 2, "x": 1}}, True),  # deviation: key order ignored
        ({"n": {"x": 1}}, {"n": {"x": 1, "y": 2}}, False),
        ({"n": [1, [2, {"z": None}]]}, {"n": [1.0, [2, {"z": None}]]}, True),
        ({"n": [1, [2, {"z": None}]]}, {"n": [1, [2, {}]]}, False),
    ],
)
def test_equality_is_type_strict_except_for_numbers(
    query: dict[str, Any], data: Any, expected: bool
) -> None:
    assert matches(query, data) is expected


@pytest.mark.parametrize(
    ("query", "data", "expected"),
    [
        ({"n": {"$gt": 40}}, {"n": "50"}, False),  # string "50" vs number: no comparison
        ({"n": {"$lt": 60}}, {"n": "50"}, False),
        ({"n": {"$gt": "40"}}, {"n": 50}, False),
        ({"n": {"$gte": "40"}}, {"n": "50"}, True),
        ({"n": {"$gte": "100"}}, {"n": "50"}, True),  # strings order by code point
        ({"n": {"$gte": 0}}, {"n": True}, False),  # booleans are not numbers
        ({"n": {"$lt": 2}}, {"n": False}, False),
        ({"n": {"$gte": False}}, {"n": 0}, False),
        ({"n": {"$gt": False}}, {"n": True}, True),
        ({"n": {"$gt": 1}}, {"n": 1.5}, True),
        ({"n": {"$lt": 2.5}}, {"n": 2}, True),
        ({"n": {"$gt": 0}}, {"n": None}, False),
        ({"n": {"$gt": 0}}, {"n": [1, "x"]}, True),  # any element
        ({"n": {"$gt": 0}}, {"n": ["1", "x"]}, False),
        ({"n": {"$lt": "b"}}, {"n": {"a": 1}}, False),
        ({"n": {"$gt": "Z"}}, {"n": "a"}, True),  # binary order: lower case after upper
        ({"n": {"$lt": "é"}}, {"n": "z"}, True),
    ],
)
def test_comparisons_only_within_one_type(query: dict[str, Any], data: Any, expected: bool) -> None:
    assert matches(query, data) is expected


# --- $all, $size, $mod -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "data", "expected"),
    [
        ({"t": {"$all": []}}, {"t": []}, False),  # MongoDB: an empty $all matches nothing
        ({"t": {"$all": []}}, {"t": ["a"]}, False),
        ({"t": {"$all": ["a"]}}, {"t": "a"}, True),  # a scalar is a one-element set
        ({"t": {"$all": ["a", "b"]}}, {"t": "a"}, False),
        ({"t": {"$all": ["a", "a"]}}, {"t": ["a"]}, True),
        ({"t": {"$all": [["a", "b"]]}}, {"t": ["a", "b"]}, True),  # the whole array
        ({"t": {"$all": [["a", "b"]]}}, {"t": [["a", "b"], "c"]}, True),  # a nested element
        ({"t": {"$all": [["a", "b"]]}}, {"t": ["b", "a"]}, False),
        ({"t.n": {"$all": [1, 2]}}, {"t": [{"n": 1}, {"n": 2}]}, True),
        ({"t.n": {"$all": [1, 3]}}, {"t": [{"n": 1}, {"n": 2}]}, False),
        ({"t": {"$all": ["a"]}}, {}, False),
    ],
)
def test_all(query: dict[str, Any], data: Any, expected: bool) -> None:
    assert matches(query, data) is expected


@pytest.mark.parametrize(
    ("query", "data", "expected"),
    [
        ({"t": {"$size": 0}}, {"t": []}, True),
        ({"t": {"$size": 0}}, {}, False),  # only arrays have a size
        ({"t": {"$size": 0}}, {"t": None}, False),
        ({"t": {"$size": 1}}, {"t": "a"}, False),
        ({"t": {"$size": 1}}, {"t": {"x": 1}}, False),
        ({"t": {"$size": 2}}, {"t": [[1, 2]]}, False),  # the array itself, not its elements
        ({"t": {"$size": 1}}, {"t": [[1, 2]]}, True),
        ({"t": {"$size": 2.0}}, {"t": [1, 2]}, True),
        ({"t.x": {"$size": 2}}, {"t": [{"x": [1]}, {"x": [1, 2]}]}, True),
        ({"t.x": {"$size": 3}}, {"t": [{"x": [1]}, {"x": [1, 2]}]}, False),
    ],
)
def test_size(query: dict[str, Any], data: Any, expected: bool) -> None:
    assert matches(query, data) is expected


@pytest.mark.parametrize(
    ("arg", "value", "expected"),
    [
        ([4, 0], 8, True),
        ([4, 0], 9, False),
        ([4, 1], 9, True),
        ([4, 1], 9.9, True),  # MongoDB truncates the value…
        ([4.9, 1], 9, True),  # …and the divisor…
        ([4, 1.7], 9, True),  # …and the remainder
        ([4, -1], -5, True),  # remainder keeps the dividend's sign, as in C
        ([4, 3], -5, False),
        ([-4, 1], 5, True),
        ([4, 0], "8", False),
        ([2, 1], True, False),
        ([2, 0], None, False),
    ],
)
def test_mod(arg: list[Any], value: Any, expected: bool) -> None:
    assert matches({"n": {"$mod": arg}}, {"n": value}) is expected


def test_mod_applies_to_array_elements() -> None:
    assert matches({"n": {"$mod": [5, 0]}}, {"n": [3, 10]}) is True
    assert matches({"n": {"$mod": [5, 0]}}, {"n": [3, 11]}) is False


# --- $regex ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regex", "text", "expected"),
    [
        ({"$regex": "zinc"}, "Zinc 50mg", False),
        ({"$regex": "zinc", "$options": "i"}, "Zinc 50mg", True),
        ({"$regex": "^50mg$"}, "Zinc\n50mg\ntablets", False),
        ({"$regex": "^50mg$", "$options": "m"}, "Zinc\n50mg\ntablets", True),
        ({"$regex": "Zinc.50"}, "Zinc\n50", False),
        ({"$regex": "Zinc.50", "$options": "s"}, "Zinc\n50", True),
        ({"$regex": "^zinc.50$", "$options": "im"}, "x\nZINC\n50", False),
        ({"$regex": "^zinc.50$", "$options": "ims"}, "x\nZINC\n50", True),
        ({"$regex": "^zinc.50$", "$options": "is"}, "x\nZINC\n50", False),
        ({"$regex": r"\d+mg"}, "Zinc 50mg", True),
        ({"$regex": r"^\+1415"}, "+14155550123", True),
        ({"$regex": "é"}, "Café", True),
        ({"$regex": ""}, "", True),
    ],
)
def test_regex_and_options(regex: dict[str, Any], text: str, expected: bool) -> None:
    assert matches({"name": regex}, {"name": text}) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["Vitamin D", "Zinc"], True),  # any string in an array
        (["Vitamin D"], False),
        (5, False),  # never coerced to a string
        (None, False),
        ({"name": "Zinc"}, False),
        ([["Zinc"]], False),
    ],
)
def test_regex_only_matches_strings(value: Any, expected: bool) -> None:
    assert matches({"items": {"$regex": "^Zi"}}, {"items": value}) is expected


def test_regex_through_array_of_sub_documents() -> None:
    assert matches({"order.lineItems.name": {"$regex": "^zi", "$options": "i"}}, ORDER) is True
    assert matches({"order.lineItems.name": {"$regex": "^iron"}}, ORDER) is False


def test_regex_ignores_strings_over_the_length_limit() -> None:
    limit = filters.MAX_REGEX_SUBJECT_LENGTH
    assert matches({"body": {"$regex": "a$"}}, {"body": "x" * (limit - 1) + "a"}) is True
    assert matches({"body": {"$regex": "a$"}}, {"body": "x" * limit + "a"}) is False
    assert matches({"body": {"$not": {"$regex": "a$"}}}, {"body": "x" * limit + "a"}) is True


@pytest.mark.parametrize("pattern", ["(a+)+$", "^(a|a)*$", "(a|aa)+$", "(.*a){12}$"])
def test_catastrophic_backtracking_pattern_finishes_quickly(pattern: str) -> None:
    # Python's re takes exponential time on these; RE2 is linear. A correctness guard.
    query = {"body": {"$regex": pattern}}
    filter_validate(query)
    started = time.perf_counter()
    result = filter_matches(query, {"body": "a" * 5000 + "!"})
    assert time.perf_counter() - started < 1.0
    assert result is False


def test_compiled_patterns_are_cached() -> None:
    filters._compile.cache_clear()
    query = {"name": {"$regex": "^cache-me", "$options": "i"}}
    for _ in range(3):
        filter_matches(query, {"name": "Cache-me"})
    assert filters._compile.cache_info().misses == 1
    assert filters._compile.cache_info().hits == 2


# --- $not ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "data", "expected"),
    [
        ({"n": {"$not": {"$gt": 1, "$lt": 5}}}, {"n": 3}, False),  # not (both)
        ({"n": {"$not": {"$gt": 1, "$lt": 5}}}, {"n": 7}, True),
        ({"n": {"$not": {"$eq": 3}}}, {"n": [1, 3]}, False),
        ({"n": {"$not": {"$eq": 3}}}, {"n": [1, 2]}, True),
        ({"n": {"$not": {"$in": [1, 2]}}}, {"n": "1"}, True),
        ({"n": {"$not": {"$size": 2}}}, {"n": [1]}, True),
        ({"n": {"$not": {"$not": {"$eq": 3}}}}, {"n": 3}, True),
        ({"n": {"$not": {"$exists": True}}}, {}, True),
        ({"n": {"$elemMatch": {"$not": {"$gt": 5}}}}, {"n": [9, 2]}, True),
        ({"n": {"$elemMatch": {"$not": {"$gt": 5}}}}, {"n": [9, 7]}, False),
    ],
)
def test_not(query: dict[str, Any], data: Any, expected: bool) -> None:
    assert matches(query, data) is expected


# --- $date: our extension --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "created_at", "expected"),
    [
        ({"$gte": {"$date": "2026-01-01T00:00:00Z"}}, "2026-01-01T00:00:00+00:00", True),
        ({"$gt": {"$date": "2026-01-01T00:00:00Z"}}, "2026-01-01T00:00:00+00:00", False),
        # 08:00 in Tokyo is 23:00 the day before in UTC
        ({"$lt": {"$date": "2026-01-01T00:00:00Z"}}, "2026-01-01T08:00:00+09:00", True),
        ({"$gte": {"$date": "2026-01-01T00:00:00Z"}}, "2026-01-01T08:00:00+09:00", False),
        # 20:00 in New York on Dec 31 is 01:00 on Jan 1 in UTC
        ({"$gte": {"$date": "2026-01-01T00:00:00Z"}}, "2025-12-31T20:00:00-05:00", True),
        ({"$gte": {"$date": "2026-01-01T00:00:00-05:00"}}, "2026-01-01T04:59:59Z", False),
        ({"$eq": {"$date": "2026-01-01T09:00:00+09:00"}}, "2026-01-01T00:00:00Z", True),
        ({"$eq": {"$date": "2026-01-01T09:00:00+09:00"}}, "2026-01-01T09:00:00Z", False),
        ({"$ne": {"$date": "2026-01-01T09:00:00+09:00"}}, "2026-01-01T00:00:00Z", False),
        ({"$in": [{"$date": "2026-01-01T00:00:00.000Z"}]}, "2026-01-01T00:00:00Z", True),
        # date-only and offset-less strings are read as UTC
        ({"$eq": {"$date": "2026-01-01"}}, "2026-01-01T00:00:00Z", True),
        ({"$lt": {"$date": "2026-01-02"}}, "2026-01-01", True),
        ({"$gt": {"$date": "2026-01-01T00:00:00Z"}}, "2026-01-01T00:00:01", True),
        # values that are not ISO-8601 dates never match a $date
        ({"$gt": {"$date": "2000-01-01T00:00:00Z"}}, "next Tuesday", False),
        ({"$gt": {"$date": "2000-01-01T00:00:00Z"}}, "20260101", False),
        ({"$gt": {"$date": "2000-01-01T00:00:00Z"}}, 1767225600000, False),
        ({"$gt": {"$date": "2000-01-01T00:00:00Z"}}, None, False),
        ({"$lt": {"$date": "2000-01-01T00:00:00Z"}}, "2026-13-45", False),
    ],
)
def test_date_extension_compares_instants(
    query: dict[str, Any], created_at: Any, expected: bool
) -> None:
    assert matches({"createdAt": query}, {"createdAt": created_at}) is expected


def test_date_strings_without_date_extension_compare_as_strings() -> None:
    # as in MongoDB: same instant, different strings
    data = {"createdAt": "2026-01-01T09:00:00+09:00"}
    assert matches({"createdAt": "2026-01-01T00:00:00Z"}, data) is False
    assert matches({"createdAt": {"$gt": "2026-01-01T08"}}, data) is True


def test_date_implicit_equality_and_array_elements() -> None:
    data = {"visits": ["2026-01-01T00:00:00Z", "2026-02-01T12:00:00+02:00"]}
    assert matches({"visits": {"$date": "2026-02-01T10:00:00Z"}}, data) is True
    assert matches({"visits": {"$gt": {"$date": "2026-03-01T00:00:00Z"}}}, data) is False


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"status": {"$nin": ["cancelled", "no-show"]}},
        {"a": {"x": 1, "y": [1, {"z": None}]}},
        {"a": {}},
        {"a": {"$date": "2026-01-01"}},
        {"a": {"$in": [{"$date": "2026-01-01T00:00:00Z"}, None, [1], {"x": 1}]}},
        {"a": {"$eq": {"when": {"$date": "2026-01-01"}}}},
        {"a": {"$regex": "^x", "$options": "ims"}},
        {"a": {"$elemMatch": {"b": {"$gt": 1}, "$or": [{"c": 1}, {"d": 2}]}}},
        {"a": {"$not": {"$regex": "^x", "$options": "i"}}},
        {"a": {"$size": 0}},
        {"a": {"$mod": [3.5, -1]}},
        {"a": {"$all": []}},
        {"$nor": [{"a": 1}], "b": {"$exists": False}},
    ],
)
def test_valid_filters_pass(query: dict[str, Any]) -> None:
    filter_validate(query)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"order.totalAmount": {"$gtee": 50}},
            'order.totalAmount: unknown operator "$gtee" (did you mean "$gte"?)',
        ),
        ({"status": {"$nim": ["a"]}}, 'status: unknown operator "$nim" (did you mean "$nin"?)'),
        (
            {"a": {"$elemmatch": {}}},
            'a: unknown operator "$elemmatch" (did you mean "$elemMatch"?)',
        ),
        ({"$ore": [{"a": 1}]}, 'top level: unknown operator "$ore" (did you mean "$or"?)'),
        ({"a": {"$zzzzzz": 1}}, 'a: unknown operator "$zzzzzz"; use one of $all, $and'),
        ({"$gt": 5}, 'top level: "$gt" tests a field, so it goes under one'),
        ({"a": {"$and": [{"b": 1}]}}, 'a: "$and" combines whole conditions'),
        ({"a": {"$not": {"$or": [{"b": 1}]}}}, 'a: "$or" combines whole conditions'),
        ({"a": {"$in": "shipped"}}, 'a: "$in" needs a list of values'),
        ({"a": {"$nin": None}}, 'a: "$nin" needs a list of values'),
        ({"a": {"$all": "x"}}, 'a: "$all" needs a list of values'),
        ({"$and": []}, 'top level: "$and" needs a non-empty list of conditions'),
        ({"$or": {"a": 1}}, 'top level: "$or" needs a non-empty list of conditions'),
        ({"$nor": [{"a": 1}, "b"]}, 'top level: "$nor" item 2 must be an object'),
        ({"a": {"$elemMatch": {"$or": []}}}, 'a: "$or" needs a non-empty list of conditions'),
        ({"a": {"$mod": [0, 1]}}, 'a: "$mod" needs [divisor, remainder] with a non-zero divisor'),
        ({"a": {"$mod": [0.5, 0]}}, 'a: "$mod" needs [divisor, remainder]'),
        ({"a": {"$mod": [2]}}, 'a: "$mod" needs [divisor, remainder]'),
        ({"a": {"$mod": [2, 0, 1]}}, 'a: "$mod" needs [divisor, remainder]'),
        ({"a": {"$mod": ["2", 0]}}, 'a: "$mod" needs [divisor, remainder]'),
        ({"a": {"$mod": [True, 0]}}, 'a: "$mod" needs [divisor, remainder]'),
        ({"a": {"$size": -1}}, 'a: "$size" needs a whole number of items'),
        ({"a": {"$size": 1.5}}, 'a: "$size" needs a whole number of items'),
        ({"a": {"$size": "2"}}, 'a: "$size" needs a whole number of items'),
        ({"a": {"$size": True}}, 'a: "$size" needs a whole number of items'),
        ({"a": {"$exists": 1}}, 'a: "$exists" needs true or false'),
        ({"a": {"$exists": "yes"}}, 'a: "$exists" needs true or false'),
        ({"a": {"$elemMatch": [1]}}, 'a: "$elemMatch" needs an object'),
        ({"a": {"$not": "^x"}}, 'a: "$not" needs an object of operators or a regex'),
        ({"a": {"$not": {}}}, 'a: "$not" needs an object of operators or a regex'),
        ({"a": {"$not": {"b": 1}}}, 'a: "$not" needs an object of operators or a regex'),
        ({"a": {"$regex": 5}}, 'a: "$regex" needs a text pattern'),
        (
            {"a": {"$regex": "(a)\\1"}},
            "a: \"$regex\" pattern '(a)\\\\1' cannot be used (invalid escape",
        ),
        (
            {"a": {"$regex": "(?=x)"}},
            "a: \"$regex\" pattern '(?=x)' cannot be used (invalid perl operator",
        ),
        ({"a": {"$regex": "(?<!x)y"}}, 'a: "$regex" pattern'),
        ({"a": {"$regex": "[a-"}}, "a: \"$regex\" pattern '[a-' cannot be used"),
        (
            {"a": {"$regex": "x" * 501}},
            'a: "$regex" pattern is 501 characters long; the limit is 500',
        ),
        ({"a": {"$regex": "x", "$options": "x"}}, 'a: "$options" "x" is not supported'),
        ({"a": {"$regex": "x", "$options": "iu"}}, 'a: "$options" "u" is not supported'),
        ({"a": {"$regex": "x", "$options": 1}}, 'a: "$options" "1" is not supported'),
        ({"a": {"$options": "i"}}, 'a: "$options" only works next to "$regex"'),
        (
            {"a": {"$gt": 1, "b": 2}},
            'a: mixes operators ("$gt") with plain fields ("b") in one object; to test a nested field write {"a.b": …}',
        ),
        ({"a": {"b": 2, "$gt": 1}}, 'a: mixes operators ("$gt") with plain fields ("b")'),
        (
            {"a": {"$elemMatch": {"$gt": 1, "b": 2}}},
            'a: mixes operators ("$gt") with plain fields ("b")',
        ),
        ({"a": {"$elemMatch": {"b": 2, "$gt": 1}}}, 'a: "$gt" tests a field, so it goes under one'),
        (
            {"a": {"$elemMatch": {"b": {"$gtee": 1}}}},
            'a.b: unknown operator "$gtee" (did you mean "$gte"?)',
        ),
        (
            {"a": {"$gt": [1]}},
            'a: "$gt" compares with a number, text, true/false, null or {"$date"',
        ),
        ({"a": {"$lte": {"x": 1}}}, 'a: "$lte" compares with a number'),
        ({"a": {"$gt": {"$date": "tomorrow"}}}, 'a: "$date" needs an ISO-8601 date'),
        ({"a": {"$date": 1767225600000}}, 'a: "$date" needs an ISO-8601 date'),
        ({"a": {"$in": [{"$date": "soon"}]}}, 'a: "$date" needs an ISO-8601 date'),
        (
            {"a": {"b": {"$gt": 1}}},
            'a.b: operator "$gt" cannot sit inside a plain value; to test this nested field write {"a.b": {"$gt": …}}',
        ),
        (
            {"a": {"$in": [{"$regex": "^x"}]}},
            'a: "$in" takes plain values, so it cannot contain the operator "$regex"',
        ),
        (
            {"a": {"$eq": {"$gt": 1}}},
            'a: "$eq" takes plain values, so it cannot contain the operator "$gt"',
        ),
        (
            {"a": {"$all": [{"$elemMatch": {"b": 1}}]}},
            'a: "$all" takes plain values, so it cannot contain the operator "$elemMatch"',
        ),
        ({"a..b": 1}, "a..b: a field path cannot have empty parts"),
        ({"a.": 1}, "a.: a field path cannot have empty parts"),
        ({"": 1}, '"": a field path cannot have empty parts'),
        ({"a.$gt": 1}, 'a.$gt: "$gt" is an operator, not a field name'),
        ({"a": {1, 2}}, "a: {1, 2} is not a JSON value"),
    ],
)
def test_validation_errors_name_path_and_operator(query: Any, message: str) -> None:
    with pytest.raises(FilterError) as excinfo:
        filter_validate(query)
    assert str(excinfo.value).startswith(message)


@pytest.mark.parametrize("query", [None, [], "status", 5, [{"a": 1}]])
def test_filter_must_be_an_object(query: Any) -> None:
    with pytest.raises(FilterError, match="a filter must be a JSON object"):
        filter_validate(query)
    with pytest.raises(FilterError, match="a filter must be a JSON object"):
        filter_matches(query, {})


def _nested_and(levels: int) -> dict[str, Any]:
    query: dict[str, Any] = {"a": 1}
    for _ in range(levels):
        query = {"$and": [query]}
    return query


def _nested_not(levels: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"$eq": 1}
    for _ in range(levels):
        condition = {"$not": condition}
    return {"a": condition}


def test_nesting_depth_is_bounded() -> None:
    # Each query object counts as a level: the 20th may hold only plain values.
    filter_validate(_nested_and(19))
    with pytest.raises(FilterError, match="top level: the filter is nested more than 20 levels"):
        filter_validate(_nested_and(20))
    filter_validate(_nested_not(18))
    with pytest.raises(FilterError, match="a: the filter is nested more than 20 levels"):
        filter_validate(_nested_not(19))


def _nested_list(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_deep_literal_is_bounded() -> None:
    filter_validate({"a": _nested_list(19)})
    with pytest.raises(FilterError, match="a: the filter is nested more than 20 levels"):
        filter_validate({"a": _nested_list(20)})


# --- unvalidated filters fail with FilterError, never a crash ---------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"a": {"$gtee": 1}},
        {"$gt": 1},
        {"$where": "sleep(1000)"},
        {"a": {"$and": [{"b": 1}]}},
        {"$and": 5},
        {"$or": [5]},
        {"a": {"$in": 5}},
        {"a": {"$nin": None}},
        {"a": {"$all": 5}},
        {"a": {"$mod": 5}},
        {"a": {"$mod": [0, 0]}},
        {"a": {"$mod": [float("inf"), 0]}},
        {"a": {"$size": "x"}},
        {"a": {"$exists": "x"}},
        {"a": {"$elemMatch": 5}},
        {"a": {"$not": 5}},
        {"a": {"$regex": ["x"]}},
        {"a": {"$regex": "(?=x)"}},
        {"a": {"$regex": "x", "$options": ["i"]}},
        {"a": {"$options": "i"}},
        {"a": {"$gt": [1]}},
        {"a": {"$gt": {"$date": ["x"]}}},
        {"a": {"$date": {"$numberLong": "1"}}},
        {5: 1},
        _nested_not(5000),
    ],
)
def test_unvalidated_filters_raise_filter_error(query: Any) -> None:
    with pytest.raises(FilterError):
        filter_validate(query)
    for data in ({"a": [1, {"b": 2}, "x"]}, {"a": 1}, {}):
        with pytest.raises(FilterError):
            filter_matches(query, data)


@pytest.mark.parametrize(
    ("query", "data"),
    [
        # Matching may stop before it reaches the bad part, but it never crashes.
        ({"a": {"$gt": 1, 5: 2}}, {"a": 0}),
        ({"a": {"$gt": 1, "b": 2}}, {"a": 0}),
        ({"a": {"b": 2, "$gt": 1}}, {"a": {"b": 2, "$gt": 1}}),
        ({"a.b": {"$in": 5}}, {"a": [1, 2]}),  # the path reaches no value to test
    ],
)
def test_unvalidated_filters_never_crash(query: Any, data: Any) -> None:
    with pytest.raises(FilterError):
        filter_validate(query)
    try:
        result = filter_matches(query, data)
    except FilterError:
        return
    assert isinstance(result, bool)


@pytest.mark.parametrize("data", [None, [], "x", 5, [{"a": 1}]])
def test_non_object_data_has_no_fields(data: Any) -> None:
    assert filter_matches({"a": {"$exists": False}}, data) is True
    assert filter_matches({"a": 1}, data) is False


# --- what the point-and-click builder writes (builder.js, query-builder.js) -----------------

IS_EMPTY: dict[str, list[Any]] = {"$in": [None, ""]}
LIST_IS_EMPTY: dict[str, list[Any]] = {"$in": [None, []]}


@pytest.mark.parametrize(
    ("data", "empty"),
    [
        ({}, True),  # missing
        ({"a": None}, True),
        ({"a": ""}, True),
        ({"a": "x"}, False),
        ({"a": " "}, False),
        ({"a": 0}, False),
        ({"a": False}, False),
    ],
)
def test_is_empty_is_missing_null_or_blank_and_is_not_empty_its_opposite(
    data: dict[str, Any], empty: bool
) -> None:
    filter_validate({"a": IS_EMPTY})
    assert filter_matches({"a": IS_EMPTY}, data) is empty
    assert filter_matches({"a": {"$nin": [None, ""]}}, data) is not empty


@pytest.mark.parametrize(
    ("data", "empty"),
    [({}, True), ({"a": None}, True), ({"a": []}, True), ({"a": ["phone"]}, False)],
)
def test_a_list_is_empty_when_missing_null_or_without_items(
    data: dict[str, Any], empty: bool
) -> None:
    filter_validate({"a": LIST_IS_EMPTY})
    assert filter_matches({"a": LIST_IS_EMPTY}, data) is empty
    assert filter_matches({"a": {"$nin": [None, []]}}, data) is not empty


@pytest.mark.parametrize(
    ("query", "matches", "misses"),
    [
        # "contains" (any case): the text escaped, so "." and "+" are themselves
        ({"$regex": r"1\.5\+", "$options": "i"}, "Dose 1.5+ mg", "Dose 105+ mg"),
        ({"$regex": "^vip", "$options": "i"}, "VIP-2025", "not VIP"),  # "starts with"
        ({"$not": {"$regex": "test", "$options": "i"}}, "Real", "A TEST order"),
        # a datetime compared by instant with {"$date": …}, as the builder writes it
        ({"$gte": {"$date": "2026-01-01T09:00:00Z"}}, "2026-01-01T10:00:00+01:00", "2025-12-31"),
    ],
)
def test_the_builders_text_and_date_operators(query: Any, matches: str, misses: str) -> None:
    filter_validate({"a": query})
    assert filter_matches({"a": query}, {"a": matches}) is True
    assert filter_matches({"a": query}, {"a": misses}) is False


def test_any_item_of_a_list_of_objects_is_tested_through_the_lists_path() -> None:
    order = {"order": {"lineItems": [{"name": "Zinc", "price": 9}, {"name": "Iron", "price": 60}]}}
    assert filter_matches({"order.lineItems.name": "Iron"}, order) is True
    assert filter_matches({"order.lineItems.price": {"$gte": 50}}, order) is True
    assert filter_matches({"order.lineItems.price": {"$gte": 100}}, order) is False


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"order.status": "shipped"}, "order.status is “shipped”"),
        (
            {"order.totalAmount": {"$gte": 50, "$lt": 99.5}},
            "order.totalAmount ≥ 50 and order.totalAmount < 99.5",
        ),
        ({"customer.isTest": False}, "customer.isTest is false"),
        ({"customer.isTest": True}, "customer.isTest is true"),
        ({"a": {"$ne": True}}, "a is not true"),
        ({"a": {"$in": [False, True]}}, "a is one of false, true"),
        # a float is written without a needless ".0"; an integer in full, however long
        ({"a": {"$gte": 2.0, "$lt": 1234567}}, "a ≥ 2 and a < 1234567"),
        ({"order.status": {"$in": ["a", "b"]}}, "order.status is one of “a”, “b”"),
        ({"order.coupon": {"$in": [None, ""]}}, "order.coupon is empty"),
        ({"changedFields": {"$nin": [None, []]}}, "changedFields is not empty"),
        ({"order.status": {"$nin": ["a", "b"]}}, "order.status is none of “a”, “b”"),
        ({"order.coupon": {"$regex": r"1\.5", "$options": "i"}}, "order.coupon contains “1.5”"),
        ({"order.coupon": {"$regex": "^vip", "$options": "i"}}, "order.coupon starts with “vip”"),
        ({"a": {"$not": {"$regex": "x", "$options": "i"}}}, "a does not contain “x”"),
        ({"a": {"$regex": "^a.*b$"}}, "a matches the pattern “^a.*b$”"),
        ({"a": {"$lt": {"$date": "2026-01-01T09:00:00Z"}}}, "a < 2026-01-01 09:00 UTC"),
        (
            {"a": 1, "$or": [{"b": 2, "c": 3}, {"d": {"$ne": 4}}]},
            "a is 1 and ((b is 2 and c is 3) or d is not 4)",
        ),
        ({"$and": [{"$or": [{"a": 1}, {"b": 2}]}, {"c": 3}]}, "(a is 1 or b is 2) and c is 3"),
        # what the builder does not write: the JSON is shown instead
        ({"a": {"$size": 2}}, None),
        ({"a": {"$regex": "a.b", "$options": "i"}}, None),
        ({"a": None}, None),
        ({"$nor": [{"a": 1}]}, None),
        ({"$where": "x"}, None),
        ({"": 1}, None),
        ({"$or": [{}, {"a": 1}]}, None),
        ({"a": {"$all": ["x"]}}, None),
        ({"a": {"$eq": "x"}}, None),
        ({"a": {"$regex": 5}}, None),  # not a pattern (the filter is invalid)
        ({"a": {"$elemMatch": {"$regex": "x", "$options": "i"}}}, None),  # no "does not"
        ({}, None),
        ("not a query", None),
    ],
)
def test_filter_summary_says_the_builders_queries_in_words(query: Any, words: str | None) -> None:
    assert filters.filter_summary(query) == words


def test_filter_summary_says_as_deep_a_query_as_validation_accepts() -> None:
    assert filters.filter_summary(_nested_and(19)) == "a is 1"
    assert filters.filter_summary(_nested_and(20)) is None


def test_an_operator_at_the_top_of_an_unvalidated_filter_is_named_there() -> None:
    with pytest.raises(FilterError) as excinfo:
        filter_matches({"$gt": 1}, {})
    assert str(excinfo.value).startswith('top level: "$gt" tests a field, so it goes under one')


@pytest.mark.parametrize(
    ("query", "data", "message"),
    [
        ({"$where": "x"}, {}, 'top level: unknown operator "$where"'),
        ({"$and": 5}, {}, 'top level: "$and" needs a non-empty list of conditions'),
        ({"a": {"$elemMatch": {"$options": "i"}}}, {"a": ["x"]}, 'a: "$options" only works next'),
        ({"a": {"$elemMatch": {"$size": "x"}}}, {"a": [[1]]}, 'a: "$size" needs a whole number'),
        ({"a": {"$elemMatch": {"$not": 5}}}, {"a": [1]}, 'a: "$not" needs an object'),
        ({"a": {"$date": "x"}}, {"a": "2026-01-01"}, '"$date" needs an ISO-8601 date'),
        ({"a": {"$elemMatch": {"$gt": [1]}}}, {"a": [1]}, 'a: "$gt" compares with a number'),
        ({"a": {"$elemMatch": {"$in": 5}}}, {"a": [1]}, 'a: "$in" needs a list of values'),
        ({"a": {"$elemMatch": {"$all": 5}}}, {"a": [1]}, 'a: "$all" needs a list of values'),
        ({"a": {"$elemMatch": {"$regex": "(?=x)"}}}, {"a": ["x"]}, 'a: "$regex" pattern'),
        ({"a": {"$elemMatch": {"$foo": 1}}}, {"a": [1]}, 'a: unknown operator "$foo"'),
        ({"a": {"$options": "i"}}, {"a": "x"}, 'a: "$options" only works next to "$regex"'),
        ({"a": {"$gtee": 1}}, {"a": 1}, 'a: unknown operator "$gtee" (did you mean "$gte"?)'),
        ({"a": {"$not": 5}}, {"a": 1}, 'a: "$not" needs an object'),
        ({"a": {"$all": 5}}, {"a": 1}, 'a: "$all" needs a list of values'),
        ({"a": {"$exists": 1}}, {"a": 1}, 'a: "$exists" needs true or false'),
        ({"a": {"$mod": 5}}, {"a": 1}, 'a: "$mod" needs [divisor, remainder]'),
        ({"a": {"$elemMatch": 5}}, {"a": [1]}, 'a: "$elemMatch" needs'),
        ({"a": {"$not": {"$size": "x"}}}, {"a": [1]}, 'a: "$size" needs a whole number'),
        # inside $elemMatch each element is matched alone, by another path of the matcher
        ({"a": {"$elemMatch": {"$nin": 5}}}, {"a": [1]}, 'a: "$in" needs a list of values'),
        ({"a": {"$elemMatch": {"$exists": 1}}}, {"a": [1]}, 'a: "$exists" needs true or false'),
        (
            {"a": {"$elemMatch": {"$not": {"$size": "x"}}}},
            {"a": [[1]]},
            'a: "$size" needs a whole number',
        ),
        ({1: "x"}, {}, "1: field names must be text"),
        (
            {"a": {"$elemMatch": {"$elemMatch": {"$gt": [1]}}}},
            {"a": [[1]]},
            'a: "$gt" compares with a number',
        ),
    ],
)
def test_matching_an_unvalidated_filter_says_where_it_is_wrong(
    query: Any, data: Any, message: str
) -> None:
    with pytest.raises(FilterError) as excinfo:
        filter_matches(query, data)
    assert str(excinfo.value).startswith(message)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            {"a": {"$gt": [1]}},
            'a: "$gt" compares with a number, text, true/false, null or {"$date": '
            '"2026-01-01T00:00:00Z"}, not with a list or an object',
        ),
        (
            {"a": {"$regex": "x", "$options": "gx"}},
            'a: "$options" "gx" is not supported; use any of "i" (ignore case), "m" (^ and $ '
            'match at each line), "s" (. matches line breaks)',
        ),
        (
            {"a": {"$not": 5}},
            'a: "$not" needs an object of operators or a regex, e.g. {"$not": {"$gt": 5}} or '
            '{"$not": {"$regex": "^test"}}',
        ),
        (
            {"a": {"$ne": {"b": {"$gt": 1}}}},
            'a: "$ne" takes plain values, so it cannot contain the operator "$gt"',
        ),
        (
            {"a": {"$eq": {"b": {"$gt": 1}}}},
            'a: "$eq" takes plain values, so it cannot contain the operator "$gt"',
        ),
        (
            {"a": {"$eq": [{"$gt": 1}]}},
            'a: "$eq" takes plain values, so it cannot contain the operator "$gt"',
        ),
        ({1: "x"}, "top level: field names must be text, not 1"),
        *(
            (
                {"a": {op: [1]}},
                f'a: "{op}" compares with a number, text, true/false, null or {{"$date": '
                '"2026-01-01T00:00:00Z"}, not with a list or an object',
            )
            for op in ("$gte", "$lt", "$lte")
        ),
        (
            {"items": {"$elemMatch": {"$or": [{"name": {"$gtee": 1}}]}}},
            'items.name: unknown operator "$gtee" (did you mean "$gte"?)',
        ),
    ],
)
def test_validation_errors_in_full(query: Any, message: str) -> None:
    with pytest.raises(FilterError) as excinfo:
        filter_validate(query)
    assert str(excinfo.value) == message


def _lists(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("make", "deepest"),
    [
        # The filter may nest 20 levels: the filter itself is one, a field's value the next,
        # an operator one more (and $not / $elemMatch another), each list one.
        (lambda n: {"a": _lists(n)}, 19),
        (lambda n: {"a": {"$eq": _lists(n)}}, 18),
        (lambda n: {"a": {"$ne": _lists(n)}}, 18),
        (lambda n: {"a": {"$in": [_lists(n)]}}, 18),
        (lambda n: {"a": {"$nin": [_lists(n)]}}, 18),
        (lambda n: {"a": {"$all": [_lists(n)]}}, 18),
        (lambda n: {"a": {"$not": {"$eq": _lists(n)}}}, 17),
        (lambda n: {"a": {"$elemMatch": {"$eq": _lists(n)}}}, 17),
    ],
    ids=["plain", "$eq", "$ne", "$in", "$nin", "$all", "$not", "$elemMatch"],
)
def test_a_literal_may_nest_as_deep_as_the_filter_allows_and_no_deeper(
    make: Callable[[int], Any], deepest: int
) -> None:
    filter_validate(make(deepest))
    with pytest.raises(FilterError, match="nested more than 20 levels deep"):
        filter_validate(make(deepest + 1))


def test_negated_operators_match_the_opposite_of_their_operator() -> None:
    assert filter_matches({"a": {"$ne": 5}}, {"a": 5}) is False
    assert filter_matches({"a": {"$ne": 5}}, {"a": 6}) is True
    assert filter_matches({"a": {"$nin": [1, 2]}}, {"a": 2}) is False
    assert filter_matches({"a": {"$nin": [1, 2]}}, {"a": 3}) is True
    # and element by element inside $elemMatch
    assert filter_matches({"a": {"$elemMatch": {"$ne": 5}}}, {"a": [5]}) is False
    assert filter_matches({"a": {"$elemMatch": {"$ne": 5}}}, {"a": [5, 6]}) is True
    assert filter_matches({"a": {"$elemMatch": {"$nin": [5]}}}, {"a": [5]}) is False


def test_matching_an_unvalidated_filter_nested_too_deep_says_so() -> None:
    """Deeper than Python's recursion allows: a FilterError, not a RecursionError."""
    query: Any = {"a": 1}
    for _ in range(5000):
        query = {"$and": [query]}
    with pytest.raises(FilterError) as excinfo:
        filter_matches(query, {"a": 1})
    assert str(excinfo.value) == "the filter is nested more than 20 levels deep"


def test_a_pattern_re2_refuses_is_explained_with_what_is_not_supported() -> None:
    with pytest.raises(FilterError) as excinfo:
        filter_validate({"a": {"$regex": "(?=x)"}})
    assert str(excinfo.value).startswith("a: \"$regex\" pattern '(?=x)' cannot be used (")
    assert str(excinfo.value).endswith(
        "); backreferences such as \\1 and lookaround such as (?=…) or (?<!…) are not supported"
    )


def test_a_pattern_may_be_as_long_as_the_limit() -> None:
    filter_validate({"a": {"$regex": "x" * filters.MAX_PATTERN_LENGTH}})
    with pytest.raises(FilterError, match="pattern is 501 characters long; the limit is 500"):
        filter_validate({"a": {"$regex": "x" * (filters.MAX_PATTERN_LENGTH + 1)}})


def _nested_object(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"b": value}
    return value


def test_a_deep_object_is_bounded_as_a_deep_list_is() -> None:
    filter_validate({"a": _nested_object(19)})
    with pytest.raises(FilterError, match="the filter is nested more than 20 levels"):
        filter_validate({"a": _nested_object(20)})


def test_elem_match_reads_a_regex_with_its_options_on_each_element() -> None:
    query = {"a": {"$elemMatch": {"$regex": "^x", "$options": "i"}}}
    assert matches(query, {"a": ["y", "X1"]}) is True
    assert matches(query, {"a": ["y", "1X"]}) is False


@pytest.mark.parametrize(
    ("query", "data"),
    [
        # a path through a list of sub-documents that ends at a list: its elements count
        ({"order.lineItems.tags": "vip"}, {"order": {"lineItems": [{"tags": ["new", "vip"]}]}}),
        ({"lineItems.0.tags": "vip"}, {"lineItems": [{"tags": ["new", "vip"]}]}),
        ({"lineItems.0.tags": {"$in": ["vip"]}}, {"lineItems": [{"tags": ["vip"]}]}),
        ({"a.0.b": "v"}, {"a": [[{"b": ["w", "v"]}]]}),  # the indexed element is a list
    ],
)
def test_a_list_at_the_end_of_a_path_through_a_list_is_unwound(
    query: dict[str, Any], data: Any
) -> None:
    assert matches(query, data) is True


def test_a_value_json_cannot_hold_equals_nothing() -> None:
    # A filter built in code, not read from JSON: a tuple is no JSON value, not even equal to itself.
    assert filter_matches({"a": (1, 2)}, {"a": (1, 2)}) is False
    assert filter_matches({"a": {"$in": [(1, 2)]}}, {"a": [1, 2]}) is False


def test_a_payload_date_is_read_up_to_64_characters() -> None:
    # A date-time may carry any number of fractional digits; longer than 64 characters is text.
    query = {"a": {"$gte": {"$date": "2026-01-01T00:00:00Z"}}}
    at_limit = "2026-01-01T00:00:00." + "1" * 38 + "+00:00"
    assert len(at_limit) == 64 and filter_matches(query, {"a": at_limit}) is True
    assert filter_matches(query, {"a": at_limit.replace(".", ".1", 1)}) is False


def test_a_pattern_with_a_lone_surrogate_is_refused_not_a_crash() -> None:
    # json.loads('"\\ud800"') is a lone surrogate: no UTF-8 text, so RE2 cannot take it.
    pattern = json.loads('"^\\ud800"')
    with pytest.raises(FilterError) as excinfo:
        filter_validate({"a": {"$regex": pattern}})
    assert str(excinfo.value) == (
        "a: \"$regex\" pattern '^\\ud800' cannot be used (it holds a lone surrogate)"
    )


@pytest.mark.parametrize(
    ("items", "data", "expected"),
    [
        (["x"], ["y", "x"], True),
        (["x"], ["y"], False),
        (["x", "x"], ["x"], True),
        (["x", "y"], ["x", "y"], False),  # no one element is both
        ([], ["x"], False),
    ],
)
def test_all_inside_elem_match_is_tested_on_each_element(
    items: list[str], data: list[str], expected: bool
) -> None:
    assert matches({"a": {"$elemMatch": {"$all": items}}}, {"a": data}) is expected


def _elem_match_values(levels: int) -> dict[str, Any]:
    condition: dict[str, Any] = {"$gt": 1}
    for _ in range(levels):
        condition = {"$elemMatch": condition}
    return {"a": condition}


def _elem_match_documents(levels: int) -> dict[str, Any]:
    query: dict[str, Any] = {"b": 1}
    for _ in range(levels):
        query = {"a": {"$elemMatch": query}}
    return query


@pytest.mark.parametrize(
    ("nested", "deepest"),
    [
        (lambda n: {"a": {"$in": [_nested_list(n)]}}, 18),  # field, operator, list: 3 levels
        (_elem_match_values, 18),  # each $elemMatch of operators: one level
        (_elem_match_documents, 9),  # each $elemMatch of a document: two (object, query)
    ],
)
def test_every_kind_of_nesting_counts_against_the_depth_limit(nested: Any, deepest: int) -> None:
    filter_validate(nested(deepest))
    with pytest.raises(FilterError, match="the filter is nested more than 20 levels"):
        filter_validate(nested(deepest + 1))
