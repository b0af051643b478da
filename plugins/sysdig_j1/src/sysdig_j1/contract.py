"""The source contract: what a raw Sysdig record must look like before anything is derived from it.

Derived from the data model, one contract per raw resource: every field the model reads (property
sources, key fields, fields only derivation rules read) with its JSON type, the groups of fields
of which at least one must be present (a required property's sources, the key), and the fields
Sysdig's published models require (`Property.api_required`), which must be present whenever the
object holding them is, so that a renamed field fails instead of publishing nulls. A record that
breaks it is rejected with the field and the reason; nothing is coerced. Timestamps are
parsed per value (ISO 8601 text, epoch seconds or epoch milliseconds, before 1970 too) into epoch
milliseconds, so a column may mix the three forms.

Each contract also gives the Arrow schema raw pages are stored with (`raw.py`): one typed column
per field, named by its dotted path as the transform reads it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from collections.abc import Callable
from functools import cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from sysdig_j1.model import ENTITIES, RELATIONSHIPS, EntityType, Property, RelationshipType

# Epoch values below this are seconds (legacy scanning), above it milliseconds: 1e11 s is the
# year 5138 and 1e11 ms is March 1973, so only ms values within three years of 1970 are misread.
SECONDS_CUTOFF = 100_000_000_000
ARROW_TYPES = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "timestamp": pa.int64(),  # epoch milliseconds
    "string[]": pa.list_(pa.string()),
    "integer[]": pa.list_(pa.int64()),
}


class ContractError(ValueError):
    """A raw record breaks its resource's contract; the message names the field and the problem."""


@dataclass(frozen=True)
class Contract:
    resource: str
    fields: dict[str, str]  # dotted path -> model type
    required: tuple[tuple[str, ...], ...]  # at least one field of each group is present
    keys: tuple[str, ...]  # the fields that identify a record, for error messages
    raw_data: bool = True  # whether pages keep each record as `_rawData` (see `raw.py`)
    present: tuple[str, ...] = ()  # present and not null wherever the object holding them is

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, ARROW_TYPES[type_]) for name, type_ in self.fields.items()])

    def values(self, record: Any) -> dict[str, Any]:
        """The record's contract fields as typed values (timestamps in epoch ms), or ContractError."""
        if not isinstance(record, dict):
            raise ContractError(f"record is a JSON {_json_type(record)}, not an object")
        out = {}
        for name, type_ in self.fields.items():
            value = record.get(name) if "." not in name else _lookup(record, name)
            out[name] = None if value is None else _typed(type_, value, name)
        for group in self.required:
            if all(out[name] is None for name in group):
                raise ContractError(f"required field {' or '.join(map(repr, group))} is missing or null")
        for name in self.present:  # (in lists, `[].field`, an element without it fails the type check)
            parent = name.rpartition(".")[0]
            if out[name] is None and "[]" not in name and (not parent or _lookup(record, parent) is not None):
                raise ContractError(f"field {name!r} is missing or null, but Sysdig's published model requires it")
        return out

    def columns(self, records: list[Any], scrub: Callable[[str, list], list]) -> dict[str, pa.Array] | None:
        """The same typed values as `values`, as Arrow arrays, a column at a time (several times
        faster on large pages), each column first passed through `scrub(field, values)`; None
        when any record breaks the contract or has a value this path does not decide, so that
        the caller goes record by record and names the record and the field."""
        if any("[]" in name for name in self.fields):  # paths into lists are the record path's
            return None
        found: dict[str, list] = {}

        def column(name: str) -> list:
            if name not in found:
                parent, _, last = name.rpartition(".")
                above = column(parent) if parent else records
                found[name] = [d.get(last) if type(d) is dict else None if d is None else _not_plain()
                               for d in above]
            return found[name]

        try:
            out = {}
            for name, type_ in self.fields.items():
                values = scrub(name, column(name))
                if type_ in CHECKED_PER_VALUE and not all(map(_ACCEPTS[type_], filter(_present, values))):
                    return None
                if type_ == "timestamp":
                    values = [None if v is None else epoch_ms(v) for v in values]
                out[name] = pa.array(values, ARROW_TYPES[type_])  # strict for text and booleans
        except (_NotPlain, ValueError, OverflowError, TypeError, pa.ArrowException):
            return None
        for group in self.required:
            present = functools.reduce(pc.or_, (out[name].is_valid() for name in group))
            if not pc.all(present).as_py():
                return None
        for name in self.present:
            parent = name.rpartition(".")[0]
            holders = found[parent] if parent else records
            if any(value is None and holder is not None for holder, value in zip(holders, found[name])):
                return None
        return out

    def identify(self, record: Any) -> str:
        """'id=10005' (or 'teamId=20000 userId=10005'): the record's key fields, for error messages.
        Values are quoted whole: callers scrub the message, which a cut secret would slip past."""
        found = []
        for name in self.keys:
            try:
                value = _lookup(record, name) if isinstance(record, dict) else None
            except ContractError:
                value = None
            if value is not None:
                found.append(f"{name}={value!r}")
        return " ".join(found) or "no id"


def _lookup(record: dict, name: str) -> Any:
    """The value at a dotted path; `list[].field` is the list of each element's field."""
    if "[]." in name:
        above, _, below = name.partition("[].")
        items = _lookup(record, above)
        if items is None:
            return None
        if not isinstance(items, list):
            raise ContractError(f"field {above!r} is a JSON {_json_type(items)}, not an array")
        return [_lookup(item, below) if isinstance(item, dict) else _element_not_object(above, item) for item in items]
    value: Any = record
    parts = name.split(".")
    for depth, part in enumerate(parts):
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ContractError(f"field {'.'.join(parts[:depth])!r} is a JSON {_json_type(value)}, not an object")
        value = value.get(part)
    return value


def _element_not_object(name: str, item: Any) -> None:
    raise ContractError(f"an element of field {name!r} is a JSON {_json_type(item)}, not an object")


INT64 = range(-(2**63), 2**63)  # what an Arrow integer column holds
EXACT_INTEGER = 2**53  # the largest integer a float (an Arrow number column) holds exactly
_ACCEPTS = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool) and v in INT64,
    "number": lambda v: (type(v) is float and math.isfinite(v))
    or (isinstance(v, int) and not isinstance(v, bool) and abs(v) <= EXACT_INTEGER),
    "boolean": lambda v: isinstance(v, bool),
    "string[]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    "integer[]": lambda v: isinstance(v, list) and all(_ACCEPTS["integer"](x) for x in v),
    "timestamp": lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool),
}


class _NotPlain(Exception):
    """A value the column path leaves to the record-by-record path (which explains it)."""


def _not_plain() -> None:
    raise _NotPlain


# The types whose column path checks `_ACCEPTS` value by value: Arrow's conversion is laxer for
# them (it truncates floats to integers, takes booleans as numbers and text as a list of
# characters), and as strict for text and booleans.
CHECKED_PER_VALUE = frozenset({"integer", "number", "string[]", "integer[]", "timestamp"})


def _present(value: Any) -> bool:
    return value is not None


def _typed(type_: str, value: Any, name: str) -> Any:
    if not _ACCEPTS[type_](value):
        raise ContractError(f"field {name!r} should be {_described(type_)}, got {_shown(value)}")
    if type_ == "timestamp":
        try:
            return epoch_ms(value)
        except (ValueError, OverflowError):
            raise ContractError(f"field {name!r} is not a date: {_shown(value)}") from None
    return value


def epoch_ms(value: str | int | float) -> int:
    """ISO 8601 text (without a zone: UTC), epoch seconds or epoch milliseconds -> epoch ms."""
    if isinstance(value, str):
        instant = datetime.fromisoformat(value)
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)
        return (instant - datetime(1970, 1, 1, tzinfo=UTC)) // _MILLISECOND
    if not math.isfinite(value):
        raise ValueError(value)
    ms = round(value * 1000 if abs(value) < SECONDS_CUTOFF else value)
    if abs(ms) > MAX_EPOCH_MS:
        raise ValueError(value)
    return ms


MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant ISO text can name
_MILLISECOND = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)


def _described(type_: str) -> str:
    return {
        "string": "text", "integer": "an integer", "number": "a number", "boolean": "true or false",
        "string[]": "a list of text", "integer[]": "a list of integers",
        "timestamp": "a date (ISO 8601 text or epoch seconds/milliseconds)",
    }[type_]


def _json_type(value: Any) -> str:
    for kind, name in ((bool, "boolean"), ((int, float), "number"), (str, "string"), (list, "array"),
                       (dict, "object")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else type(value).__name__


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{_json_type(value)} {text[:80] + '...' if len(text) > 80 else text}"


# -- derivation from the model ----------------------------------------------------------------
class _Builder:
    """Collects fields per resource, refusing a field declared with two different types."""

    def __init__(self) -> None:
        self.fields: dict[str, dict[str, str]] = {}
        self.required: dict[str, list[tuple[str, ...]]] = {}
        self.keys: set[tuple[str, str]] = set()
        self.present: dict[str, list[str]] = {}

    def add_key(self, resource: str, name: str, type_: str, owner: str) -> None:
        self.add(resource, name, type_, owner)
        self.keys.add((resource, name))

    def add(self, resource: str, name: str, type_: str, owner: str) -> None:
        if name.startswith("_"):  # added by the pipeline (e.g. `_partition`), not by the API
            return
        if (resource, name) in self.keys and type_ == "string":  # an id property: the key as text
            return
        fields = self.fields.setdefault(resource, {})
        if fields.setdefault(name, type_) != type_:
            raise TypeError(f"{owner}: source field {name!r} of {resource} declared as {fields[name]} and {type_}")

    def require_present(self, resource: str, name: str) -> None:
        names = self.present.setdefault(resource, [])
        if name not in names:
            names.append(name)

    def require(self, resource: str, group: tuple[str, ...]) -> None:
        group = tuple(name for name in group if not name.startswith("_"))
        if group and group not in self.required.setdefault(resource, []):
            self.required[resource].append(group)


def _split(entity: EntityType, name: str, resource: str) -> tuple[str, str]:
    """(resource, field) of a source field: enrichment fields carry the enrichment's prefix."""
    if entity.enrichment and name.startswith(entity.enrichment[2]):
        return entity.enrichment[0], name.removeprefix(entity.enrichment[2])
    return resource, name


def _add_properties(builder: _Builder, owner: EntityType | RelationshipType, resource_of) -> None:
    prop: Property
    for prop in owner.properties:
        for name in prop.sources:
            builder.add(*resource_of(name), prop.type, owner.type)
        for name, type_ in prop.reads:
            builder.add(*resource_of(name), type_, owner.type)
        if prop.api_required:
            builder.require_present(*resource_of(prop.sources[0]))
        needs = prop.sources or (() if prop.rule is None or prop.rule.total else tuple(n for n, _ in prop.reads))
        if prop.required and needs:
            resources = {resource_of(name)[0] for name in needs}
            if len(resources) == 1:  # alternatives spread over two resources: checked after the join
                builder.require(resources.pop(), tuple(resource_of(name)[1] for name in needs))


@cache
def contracts() -> dict[str, Contract]:
    builder = _Builder()
    for entity in ENTITIES:  # keys first: their declared type wins over a property's text type
        for resource in entity.resources:
            for name in entity.key_sources:
                builder.add_key(resource, name, entity.key_type, entity.type)
            builder.require(resource, entity.key_sources)
        if entity.enrichment:
            resource, id_field, _ = entity.enrichment
            builder.add_key(resource, id_field, entity.key_type, entity.type)
            builder.require(resource, (id_field,))
    for entity in ENTITIES:
        for resource in entity.resources:
            _add_properties(builder, entity, lambda name, e=entity, r=resource: _split(e, name, r))
    for rel in RELATIONSHIPS:
        if rel.resource:
            for name, end in ((rel.source_key_field, rel.source), (rel.target_key_field, rel.target)):
                if rel.many and name == rel.target_key_field:  # a list of keys, which may be empty
                    builder.add(rel.resource, name, end.key_type + "[]", rel.type)
                elif rel.optional or rel.mapped:  # a record may have none of these relationships
                    builder.add(rel.resource, name, end.key_type, rel.type)
                else:
                    builder.add_key(rel.resource, name, end.key_type, rel.type)
                    builder.require(rel.resource, (name,))
            _add_properties(builder, rel, lambda name, r=rel: (r.resource, name))
    without_raw_data = {r for e in ENTITIES if not e.raw_data for r in e.resources}
    return {
        resource: Contract(resource, fields, _implied_dropped(builder.required.get(resource, [])),
                           tuple(name for name in fields if (resource, name) in builder.keys),
                           raw_data=resource not in without_raw_data,
                           present=tuple(builder.present.get(resource, ())))
        for resource, fields in builder.fields.items()
    }


def _implied_dropped(groups: list[tuple[str, ...]]) -> tuple[tuple[str, ...], ...]:
    """Without the groups a required single field already satisfies (customer.name or customer.id)."""
    alone = {group[0] for group in groups if len(group) == 1}
    return tuple(group for group in groups if len(group) == 1 or not alone & set(group))


def contract_for(resource: str) -> Contract:
    """The contract of a raw resource (its top-level folder name, e.g. 'users_light')."""
    try:
        return contracts()[resource]
    except KeyError:
        raise KeyError(f"no source contract for resource {resource!r}; known: {sorted(contracts())}") from None
