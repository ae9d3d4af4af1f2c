"""The JSON Schema a clinic declares for a custom event type's `data`: what of JSON Schema
careflow takes (what the data reference can describe), the catalogue fields it becomes, and
checking an event's data against it. Pure functions over the schema: no database.

Only a small part of draft 2020-12 is taken: an object whose `properties` are strings
(optionally `format` date or date-time), numbers, integers, booleans, objects and arrays,
each with a `description` and `examples`, and `required`. Anything else (`$ref`, `oneOf`,
`pattern`, …) would validate data the builder cannot describe as variables, so it is refused
with the place it was found.
"""

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import SchemaError

from workflows.catalogue import Field

DRAFT = "https://json-schema.org/draft/2020-12/schema"
TYPES = ("string", "number", "integer", "boolean", "object", "array")
FORMATS = ("date", "date-time")
# Keywords every property may carry, and those of one type only.
_COMMON = {"type", "description", "examples", "title"}
_BY_TYPE = {
    "string": {"format"},
    "object": {"properties", "required", "additionalProperties"},
    "array": {"items"},
}
# The top level may also name its dialect.
_TOP = {"$schema"}
# Properties nested deeper than this are not described well by any variable list.
MAX_DEPTH = 8
# A type with more properties than this is not a custom event; it is a data dump.
MAX_PROPERTIES = 200
# What the API reports of a payload that fails its schema: the first few, by place.
MAX_ERRORS = 10


def _checker() -> FormatChecker:
    """date and date-time as the catalogue means them (ISO 8601), without the optional
    packages jsonschema's own date-time check needs."""
    checker = FormatChecker(formats=())

    @checker.checks("date", raises=ValueError)
    def _date(value: object) -> bool:
        return not isinstance(value, str) or bool(date.fromisoformat(value))

    @checker.checks("date-time", raises=ValueError)
    def _datetime(value: object) -> bool:
        if not isinstance(value, str):
            return True
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # A date-time without its offset is ambiguous across the clinic's time zones.
        return parsed.tzinfo is not None and "T" in value.upper()

    return checker


FORMAT_CHECKER = _checker()


def _place(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _node_problems(node: Any, path: str, depth: int, problems: list[str]) -> None:
    where = path or "the schema"
    if not isinstance(node, Mapping):
        problems.append(f"{where}: must be an object describing the value")
        return
    kind = node.get("type")
    if kind not in TYPES:
        choices = ", ".join(TYPES)
        problems.append(
            f"{_place(path, 'type')}: {kind!r} is not supported; use one of {choices}"
            if kind is not None
            else f"{where}: say its type (one of {choices})"
        )
        return
    allowed = _COMMON | _BY_TYPE.get(kind, set()) | (_TOP if depth == 0 else set())
    for key in node:
        if key not in allowed:
            problems.append(
                f"{_place(path, str(key))}: not supported for a {kind} "
                f"(use {', '.join(sorted(allowed))})"
            )
    if "description" in node and not isinstance(node["description"], str):
        problems.append(f"{_place(path, 'description')}: must be text")
    if "examples" in node and not isinstance(node["examples"], list):
        problems.append(f"{_place(path, 'examples')}: must be a list of example values")
    if kind == "string" and "format" in node and node["format"] not in FORMATS:
        problems.append(
            f"{_place(path, 'format')}: {node['format']!r} is not supported; "
            f"use {' or '.join(FORMATS)} (or leave it out)"
        )
    if kind == "array" and "items" in node:
        if depth >= MAX_DEPTH:
            problems.append(f"{where}: nested more than {MAX_DEPTH} levels; simplify it")
        else:
            _node_problems(node["items"], _place(path, "items"), depth + 1, problems)
    if kind == "object":
        properties = node.get("properties", {})
        if not isinstance(properties, Mapping):
            problems.append(f"{_place(path, 'properties')}: must be an object of properties")
            return
        if len(properties) > MAX_PROPERTIES:
            problems.append(f"{where}: more than {MAX_PROPERTIES} properties; split it")
            return
        if properties and depth >= MAX_DEPTH:
            problems.append(f"{where}: nested more than {MAX_DEPTH} levels; simplify it")
            return
        for name, child in properties.items():
            if not str(name) or "." in str(name) or str(name).strip() != str(name):
                problems.append(
                    f"{_place(path, 'properties')}: {name!r} cannot be a variable name "
                    "(no dots, no surrounding spaces)"
                )
                continue
            _node_problems(child, f"{_place(path, 'properties')}.{name}", depth + 1, problems)
        required = node.get("required", [])
        if not isinstance(required, list):
            problems.append(f"{_place(path, 'required')}: must be a list of property names")
        else:
            for name in required:
                if name not in properties:
                    problems.append(
                        f"{_place(path, 'required')}: {name!r} is not one of its properties"
                    )


def custom_schema_problems(schema: Any) -> list[str]:
    """What is wrong with a custom event type's data schema, each problem with its place
    ("properties.kitId.format: 'uuid' is not supported; …"); [] when careflow can take it.

    It must be valid JSON Schema (draft 2020-12) and, within that, what the data reference
    can describe: see the module's docstring."""
    if not isinstance(schema, Mapping):
        return ['the schema must be a JSON object, e.g. {"type": "object", "properties": {}}']
    dialect = schema.get("$schema")
    if dialect is not None and dialect != DRAFT:
        return [f"$schema: only draft 2020-12 is supported ({DRAFT}), or leave it out"]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        place = ".".join(str(part) for part in exc.path) or "the schema"
        return [f"{place}: {exc.message}"]
    if schema.get("type") != "object":
        return ['type: the event\'s data is an object: use "type": "object" with its properties']
    problems: list[str] = []
    _node_problems(schema, "", 0, problems)
    return problems


def _field(node: Mapping[str, Any], *, required: bool) -> Field:
    kind = node.get("type", "string")
    examples = node.get("examples") or []
    example = examples[0] if examples else None
    description = str(node.get("description") or node.get("title") or "")
    nullable = not required
    if kind == "object":
        properties = node.get("properties")
        if not properties:  # free-form, as a webhook's data: any key sent may be used
            return Field("object", description, example, nullable=nullable)
        needed = set(node.get("required") or [])
        fields = {
            str(name): _field(child, required=name in needed) for name, child in properties.items()
        }
        return Field("object", description, fields=fields, nullable=nullable)
    if kind == "array":
        items = node.get("items")
        return Field(
            "array",
            description,
            items=_field(items, required=True) if isinstance(items, Mapping) else None,
            nullable=nullable,
        )
    if kind in ("number", "integer"):
        return Field("number", description, example, nullable=nullable)
    if kind == "boolean":
        return Field("boolean", description, example, nullable=nullable)
    type_of = {"date": "date", "date-time": "datetime"}.get(node.get("format", ""), "string")
    return Field(type_of, description, example, nullable=nullable)  # type: ignore[arg-type]


def custom_schema_field(schema: Mapping[str, Any], description: str) -> Field:
    """The `data` object of a custom event type as the catalogue describes fields: what its
    data reference page, its builder variables and template checks read. A property not
    `required` may be missing: it is marked nullable (a template needs a default)."""
    data = _field(schema, required=True)
    return Field("object", description, fields=data.fields)


def custom_data_problems(schema: Mapping[str, Any], data: Any) -> list[str]:
    """Where `data` breaks the type's schema, each as "data.kitId: 12 is not of type
    'string'" (the first MAX_ERRORS, in order of place); [] when it fits."""
    validator = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    errors = sorted(
        validator.iter_errors(data), key=lambda e: [str(part) for part in e.absolute_path]
    )
    problems = []
    for error in errors[:MAX_ERRORS]:
        place = ".".join(["data", *(str(part) for part in error.absolute_path)])
        message = error.message
        if error.validator == "format":
            message = f"{error.instance!r} is not a valid {error.validator_value}"
        problems.append(f"{place}: {message}")
    return problems
