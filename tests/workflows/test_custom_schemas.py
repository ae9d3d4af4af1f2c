"""A custom event type's data schema (workflows.custom_schemas): what careflow takes of JSON
Schema, the place each refusal names, the catalogue fields it becomes, and data checked
against it with the path of each problem."""

from typing import Any

import pytest

from workflows.custom_schemas import (
    custom_data_problems,
    custom_schema_field,
    custom_schema_problems,
)

GOOD: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "kitId": {"type": "string", "description": "The kit.", "examples": ["KIT-1"]},
        "collectedOn": {"type": "string", "format": "date"},
        "readyAt": {"type": "string", "format": "date-time"},
        "count": {"type": "integer"},
        "score": {"type": "number"},
        "urgent": {"type": "boolean"},
        "lab": {
            "type": "object",
            "properties": {"name": {"type": "string"}},
            "required": ["name"],
        },
        "panels": {"type": "array", "items": {"type": "string"}},
        "extra": {"type": "object"},
    },
    "required": ["kitId"],
}


def test_a_schema_of_the_supported_keywords_is_taken() -> None:
    assert custom_schema_problems(GOOD) == []
    assert custom_schema_problems({"type": "object"}) == []


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ([], "the schema must be a JSON object"),
        ({"type": "array"}, "type: the event's data is an object"),
        ({"type": "object", "properties": {"a": {"type": "uuid"}}}, "properties.a.type"),
        (
            {"type": "object", "properties": {"a": {"type": "string", "format": "uuid"}}},
            "properties.a.format: 'uuid' is not supported; use date or date-time",
        ),
        (
            {"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}},
            "properties.a.pattern: not supported for a string",
        ),
        ({"type": "object", "properties": {"a": {"$ref": "#/x"}}}, "properties.a"),
        ({"type": "object", "oneOf": [{"type": "object"}]}, "oneOf: not supported"),
        (
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]},
            "required: 'b' is not one of its properties",
        ),
        ({"type": "object", "properties": {"a.b": {"type": "string"}}}, "'a.b' cannot be"),
        ({"type": 5}, "type: 5 is not valid under any of the given schemas"),
        ({"$schema": "http://json-schema.org/draft-07/schema#"}, "$schema: only draft 2020-12"),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "array", "items": {"type": "null"}}},
            },
            "properties.a.items.type: 'null' is not supported",
        ),
        ({"type": "object", "properties": {"a": {"type": "string", "examples": "x"}}}, "examples"),
    ],
)
def test_what_careflow_cannot_describe_is_refused_with_its_place(
    schema: Any, expected: str
) -> None:
    problems = custom_schema_problems(schema)
    assert problems, schema
    assert any(expected in problem for problem in problems), problems


def test_a_schema_nested_too_deep_is_refused() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {}}
    node = schema
    for _ in range(12):
        child: dict[str, Any] = {"type": "object", "properties": {}}
        node["properties"]["n"] = child
        node = child
    assert any("nested more than" in p for p in custom_schema_problems(schema))


def test_the_schema_becomes_the_data_references_fields() -> None:
    data = custom_schema_field(GOOD, "The data.")
    assert data.type == "object" and data.fields is not None
    fields = data.fields
    assert (fields["kitId"].type, fields["kitId"].example, fields["kitId"].nullable) == (
        "string",
        "KIT-1",
        False,
    )
    assert fields["collectedOn"].type == "date"
    assert fields["readyAt"].type == "datetime" and fields["readyAt"].nullable  # not required
    assert fields["count"].type == fields["score"].type == "number"
    assert fields["urgent"].type == "boolean"
    assert fields["lab"].fields is not None and fields["lab"].fields["name"].type == "string"
    assert fields["panels"].items is not None and fields["panels"].items.type == "string"
    assert fields["extra"].fields is None  # free-form: any key may be used


def test_a_schema_without_properties_takes_free_form_data() -> None:
    assert custom_schema_field({"type": "object"}, "").fields is None


def test_data_is_checked_with_the_path_of_each_problem() -> None:
    assert custom_data_problems(GOOD, {"kitId": "KIT-1", "lab": {"name": "Quest"}}) == []
    assert custom_data_problems(GOOD, {"kitId": 12}) == ["data.kitId: 12 is not of type 'string'"]
    assert custom_data_problems(GOOD, {}) == ["data: 'kitId' is a required property"]
    assert custom_data_problems(GOOD, {"kitId": "k", "lab": {}}) == [
        "data.lab: 'name' is a required property"
    ]
    assert custom_data_problems(GOOD, {"kitId": "k", "panels": ["a", 3]}) == [
        "data.panels.1: 3 is not of type 'string'"
    ]
    assert custom_data_problems(GOOD, "text") == ["data: 'text' is not of type 'object'"]


@pytest.mark.parametrize(
    ("field", "value", "ok"),
    [
        ("collectedOn", "2025-03-01", True),
        ("collectedOn", "2025-02-30", False),
        ("collectedOn", "yesterday", False),
        ("readyAt", "2025-03-01T10:00:00Z", True),
        ("readyAt", "2025-03-01T10:00:00+02:00", True),
        ("readyAt", "2025-03-01T10:00:00", False),  # no offset: which clinic's clock?
        ("readyAt", "2025-03-01", False),
    ],
)
def test_dates_and_times_are_checked(field: str, value: str, ok: bool) -> None:
    problems = custom_data_problems(GOOD, {"kitId": "k", field: value})
    assert (problems == []) is ok, problems
    if not ok:
        assert problems[0].startswith(f"data.{field}: ")
