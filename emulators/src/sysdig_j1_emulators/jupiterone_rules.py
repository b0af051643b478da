"""The graph rules of the JupiterOne emulator: object validation on upload, DIFF at finalize.

Validation restates the data model's GraphObject/Entity schemas and the sync API's property
constraints (J1 reference notes §4.1 and §4.2). The real API may be more lenient on some of them
(the notes mark the `_key` length and the name pattern as unverified); the emulator is strict so
that anything it accepts is safe to send to J1.
"""

from __future__ import annotations

import re
from typing import Any, Callable

ENTITY = "entity"
RELATIONSHIP = "relationship"

_TYPE_PATTERN = re.compile(r"^[a-z0-9_]+$")
_PROPERTY_NAME_PATTERN = re.compile(r"^(_|tag\.)?[A-Za-z0-9. -]+$")
_NAME_RULE = _PROPERTY_NAME_PATTERN.pattern
_RESERVED_NAMES = {
    ENTITY: {"_key", "_type", "_class", "_rawData"},
    RELATIONSHIP: {"_key", "_type", "_class", "_rawData", "_fromEntityKey", "_toEntityKey", "_mapping"},
}
DIRECTIONS = ("FORWARD", "REVERSE")
_PRIMITIVE_TYPES = (str, bool, int, float, type(None))


class InvalidGraphObject(ValueError):
    """One uploaded object breaks a rule; the message names its `_key` and the property."""


def check_graph_object(kind: str, obj: Any, index: int) -> None:
    """Raise `InvalidGraphObject` if `obj` (the index-th `kind` in its request) breaks a rule."""
    if not isinstance(obj, dict):
        raise InvalidGraphObject(f"{kind} at index {index} is not an object")
    problem = _find_problem(kind, obj)
    if problem:
        raise InvalidGraphObject(f"{kind} _key={obj.get('_key')!r}: {problem}")


def _find_problem(kind: str, obj: dict[str, Any]) -> str | None:
    return (
        _check_identity(obj)
        or (_check_entity_names(obj) if kind == ENTITY else _check_endpoints(obj))
        or _check_property_names(kind, obj)
        or _check_values(kind, obj)
        or _check_raw_data(obj.get("_rawData"))
    )


def _check_identity(obj: dict[str, Any]) -> str | None:
    key, type_, class_ = obj.get("_key"), obj.get("_type"), obj.get("_class")
    if not (isinstance(key, str) and len(key) >= 10):
        return "property '_key' must be a string of at least 10 characters"
    if not (isinstance(type_, str) and len(type_) >= 3 and _TYPE_PATTERN.match(type_)):
        return "property '_type' must be a string of at least 3 characters from [a-z0-9_]"
    classes = class_ if isinstance(class_, list) else [class_]
    if not classes or not all(isinstance(c, str) and len(c) >= 2 for c in classes):
        return ("property '_class' must be a string of at least 2 characters"
                " or a non-empty list of them")
    return None


def _check_entity_names(obj: dict[str, Any]) -> str | None:
    for name in ("name", "displayName"):
        if not isinstance(obj.get(name), str):
            return f"property {name!r} is required and must be a string"
    return None


def _check_endpoints(obj: dict[str, Any]) -> str | None:
    if "_mapping" in obj:
        return _check_mapping(obj["_mapping"])
    for name in ("_fromEntityKey", "_toEntityKey"):
        if not (isinstance(obj.get(name), str) and obj[name]):
            return f"property {name!r} is required and must be a non-empty string"
    return None


def _check_mapping(mapping: Any) -> str | None:
    """A mapped relationship: its source in the job's scope, and how the mapper finds its target
    (the values of every filter key must be in `targetEntity`) or creates it."""
    if not isinstance(mapping, dict):
        return "property '_mapping' must be an object"
    if mapping.get("relationshipDirection") not in DIRECTIONS:
        return f"'_mapping.relationshipDirection' must be one of {', '.join(DIRECTIONS)}"
    if not (isinstance(mapping.get("sourceEntityKey"), str) and mapping["sourceEntityKey"]):
        return "'_mapping.sourceEntityKey' must be a non-empty string"
    target, filters = mapping.get("targetEntity"), mapping.get("targetFilterKeys")
    if not isinstance(target, dict) or not all(
            isinstance(v, _PRIMITIVE_TYPES) or (isinstance(v, list) and _is_uniform_primitive_list(v))
            for v in target.values()):
        return "'_mapping.targetEntity' must be an object of primitive properties"
    if not (isinstance(filters, list) and filters and all(
            isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys) for keys in filters)):
        return "'_mapping.targetFilterKeys' must be a non-empty array of non-empty arrays of property names"
    missing = sorted({k for keys in filters for k in keys} - target.keys())
    if missing:
        return f"'_mapping.targetEntity' lacks the filter key(s) {missing}"
    if not isinstance(mapping.get("skipTargetCreation", False), bool):
        return "'_mapping.skipTargetCreation' must be a boolean"
    if not mapping.get("skipTargetCreation") and not all(isinstance(target.get(k), str) for k in ("_type", "_class")):
        return "'_mapping.targetEntity' needs _type and _class to be created"
    return None


def _check_property_names(kind: str, obj: dict[str, Any]) -> str | None:
    for name in obj:
        if not _PROPERTY_NAME_PATTERN.match(name):
            return f"property {name!r} has an invalid name (must match {_NAME_RULE})"
        if name.startswith("_") and name not in _RESERVED_NAMES[kind]:
            return f"property {name!r} is reserved: custom properties cannot start with '_'"
    return None


def _check_values(kind: str, obj: dict[str, Any]) -> str | None:
    for name, value in obj.items():
        if name in ("_class", "_rawData", "_mapping"):  # checked by their own rules
            continue
        if isinstance(value, _PRIMITIVE_TYPES):
            continue
        if kind == RELATIONSHIP:
            return f"property {name!r} must be a string, number, boolean or null"
        if not (isinstance(value, list) and _is_uniform_primitive_list(value)):
            return f"property {name!r} must be a primitive or an array of one primitive type"
    return None


def _is_uniform_primitive_list(items: list[Any]) -> bool:
    # bool is a subclass of int in Python, so compare J1 kinds instead of Python classes.
    kinds = {_value_kind(item) for item in items}
    return len(kinds) <= 1 and "other" not in kinds


def _value_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null" if value is None else "other"


def _check_raw_data(raw_data: Any) -> str | None:
    if raw_data is None:
        return None
    if not isinstance(raw_data, list):
        return "property '_rawData' must be an array of {name, rawData}"
    names: set[str] = set()
    for entry in raw_data:
        if not (isinstance(entry, dict) and isinstance(entry.get("name"), str)):
            return "property '_rawData' entries need a string 'name'"
        if not isinstance(entry.get("rawData"), (dict, str)):
            return f"property '_rawData' entry {entry['name']!r} needs an object or string rawData"
        if entry["name"] in names:
            return f"property '_rawData' has the name {entry['name']!r} twice"
        names.add(entry["name"])
    return None


def diff_collection(
    stored: dict[str, dict[str, Any]],
    uploaded: dict[str, dict[str, Any]],
    keep_types: set[str],
    still_valid: Callable[[dict[str, Any]], bool] = lambda obj: True,
) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """DIFF one collection (entities or relationships, by `_key`) of one scope.

    The result holds everything uploaded, plus stored objects that were not uploaded but whose
    `_type` is a partial dataset (and that are `still_valid`); the rest of `stored` is deleted.
    Also returns the Created/Updated/Deleted counts, "updated" meaning the properties differ.
    """
    merged = dict(uploaded)
    for key, obj in stored.items():
        if key not in merged and obj["_type"] in keep_types and still_valid(obj):
            merged[key] = obj
    counts = {
        "Created": sum(key not in stored for key in uploaded),
        "Updated": sum(key in stored and stored[key] != obj for key, obj in uploaded.items()),
        "Deleted": sum(key not in merged for key in stored),
    }
    return merged, counts
