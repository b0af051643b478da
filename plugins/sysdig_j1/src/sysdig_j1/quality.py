"""Data quality: Great Expectations suites derived from the data model, run on both frames.

Called directly (not through the GX Airflow operator, which pins an older structlog than
Airflow 3.3 needs). Each frame is checked as a whole (keys unique and non-null, types and classes
in the declared sets, relationship endpoints present) and per declared type (required properties,
key prefix, value ranges).

What keeps it fast (`bench/transform.py`; 1.1M entities + 1.2M relationships: 171 s -> 7 s):
- relationship endpoints are looked up among the entity keys and GX checks that each one found an
  entity, instead of an `ExpectColumnValuesToBeInSet` handed every entity key: GX re-serializes an
  expectation's arguments dozens of times while validating, so a value set of 1M keys took minutes.
- each suite gets only the columns its expectations read, plus `_key` to name offenders: GX
  fingerprints every batch it is handed (hashing all of it) and copies it per expectation (to drop
  nulls); the long `_rawData` JSON column and the ~50 unchecked properties made most of that work.
- each suite runs through a ValidationDefinition, which loads (and fingerprints) its batch once;
  `Batch.validate` loads it a second time.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sysdig_j1.changes import key_array
from sysdig_j1.model import ENTITIES, RELATIONSHIPS, Property

MAPPED_TYPES = [r.type for r in RELATIONSHIPS if r.mapped]
NON_NEGATIVE = ("integer", "number")  # counts, ids, versions; timestamps before 1970 are negative
ENDS = ("_fromEntityKey", "_toEntityKey")
KINDS = ("entities", "relationships")
# Failures name the offending objects by `_key`, not only by the failing values (often just null).
RESULT_FORMAT = {"result_format": "SUMMARY", "unexpected_index_column_names": ["_key"], "partial_unexpected_count": 10}


@dataclass(frozen=True)
class Check:
    """One expectation on one slice of a frame, described without GX objects so it stays testable."""

    frame: str  # "entities" or "relationships"
    type: str | None  # the `_type` slice, or None for the whole frame
    expectation: str  # GX expectation class name
    kwargs: tuple[tuple[str, object], ...]

    @property
    def column(self) -> str:
        return dict(self.kwargs)["column"]

    @property
    def label(self) -> str:
        where = f"{self.frame}[{self.type}]" if self.type else self.frame
        return f"{where} {self.expectation}({self.column})"


def _check(frame: str, type_: str | None, expectation: str, **kwargs: object) -> Check:
    return Check(frame, type_, expectation, tuple(kwargs.items()))


def found(end: str) -> str:
    """The column holding the `_key` of the entity an endpoint names (null when none has it)."""
    return f"{end.removesuffix('Key')}._key"


def _property_checks(frame: str, type_: str, properties: tuple[Property, ...]) -> list[Check]:
    checks = []
    for prop in properties:
        if prop.required:
            checks.append(_check(frame, type_, "ExpectColumnValuesToNotBeNull", column=prop.name))
        if prop.type in NON_NEGATIVE:
            checks.append(_check(frame, type_, "ExpectColumnValuesToBeBetween", column=prop.name, min_value=0))
    return checks


def build_checks() -> list[Check]:
    """Every expectation, derived from the model. Relationship endpoints are checked on the column
    `validate` adds per endpoint (see `found`)."""
    checks: list[Check] = []
    for frame, types in (("entities", ENTITIES), ("relationships", RELATIONSHIPS)):
        checks += [
            _check(frame, None, "ExpectColumnValuesToNotBeNull", column="_key"),
            _check(frame, None, "ExpectColumnValuesToBeUnique", column="_key"),
            _check(frame, None, "ExpectColumnValuesToBeInSet", column="_type", value_set=[t.type for t in types]),
            _check(frame, None, "ExpectColumnValuesToBeInSet", column="_class", value_set=sorted({t.cls for t in types})),
        ]
    for end in ENDS:
        checks.append(_check("relationships", None, "ExpectColumnValuesToNotBeNull", column=found(end)))
    for entity in ENTITIES:
        checks.append(_check("entities", entity.type, "ExpectColumnValuesToMatchRegex", column="_key",
                             regex=f"^{entity.type}:.+$"))
        checks += _property_checks("entities", entity.type, entity.properties)
    for rel in RELATIONSHIPS:
        checks += [
            _check("relationships", rel.type, "ExpectColumnValuesToMatchRegex", column="_fromEntityKey",
                   regex=f"^{rel.source.type}:.+$"),
            _check("relationships", rel.type, "ExpectColumnValuesToMatchRegex", column="_toEntityKey",
                   regex=rel.target.key_pattern if rel.mapped else f"^{rel.target.type}:.+$"),
        ]
        checks += _property_checks("relationships", rel.type, rel.properties)
    return checks


# Every column a check reads: the quality gate loads no other (the graph has ~50 more, _rawData among them).
COLUMNS = frozenset({"_type", *ENDS} | {check.column for check in build_checks()} - {found(end) for end in ENDS})


def with_endpoint_entities(relationships: pd.DataFrame, entities: pd.DataFrame,
                           other_keys: pd.Series | None = None) -> pd.DataFrame:
    """The relationships plus, per endpoint, the `_key` of the entity it names, looked up by key
    among `entities` (and `other_keys`: the core's entities, which a part's relationships may
    name): data for GX to judge, null where no entity has that key (or the endpoint is null)."""
    # a duplicate key only repeats a value; the uniqueness check reports it
    keys = key_array(entities["_key"]) if other_keys is None else pa.concat_arrays(
        [key_array(entities["_key"]), key_array(other_keys)])
    # A mapped relationship's target is another integration's (or JupiterOne's) entity, never in
    # this graph: it stands for itself here, and its per-type check holds it to the target's key pattern.
    external = relationships["_type"].isin(MAPPED_TYPES)

    def entity_at(end: str) -> pd.Series:
        position = pc.index_in(pa.array(relationships[end].array), value_set=keys)  # Arrow's hash lookup
        entity = pd.Series(pd.array(keys.take(position), dtype="string"), index=relationships.index)
        return entity.mask(external, relationships[end]) if end == "_toEntityKey" else entity

    return relationships.assign(**{found(end): entity_at(end) for end in ENDS if end in relationships})


def _numbers_for_gx(data: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """GX compares values of nullable numeric dtypes (Int64, Float64) with bounds one by one in
    Python, numpy floats vectorized. As float64 a null stays null (NaN) and every value keeps
    its sign, which is all a lower bound of 0 looks at."""
    numeric = [c for c in columns if c in data and pd.api.types.is_numeric_dtype(data[c])]
    return data.astype(dict.fromkeys(numeric, "float64"))


def validate(entities: pd.DataFrame, relationships: pd.DataFrame) -> dict:
    """Run every check on one graph; returns a JSON-safe report with `success` and one row per expectation."""
    return validate_parts(lambda: iter([(entities, relationships)]))


def validate_parts(graph_parts: Callable[[], Iterator[tuple[pd.DataFrame, pd.DataFrame]]]) -> dict:
    """Every check on a graph stored in parts (`parts.py`; the core first), a part at a time: each
    part is checked on its own (its relationships may name the core's entities), and `_key`
    uniqueness across parts from 64-bit hashes of the keys (`_SpilledHashes`), confirmed on the
    keys themselves. `graph_parts()` yields (entities, relationships) of every part; it is called
    twice only if two parts may share a key."""
    gate = _Gate()
    rows: dict[str, dict] = {}
    core_keys, parts = None, 0
    with tempfile.TemporaryDirectory(prefix="sysdig-j1-key-hashes-") as folder:
        hashes = {kind: _SpilledHashes(Path(folder, kind)) for kind in KINDS}
        for entities, relationships in graph_parts():
            for row in gate.validate(entities, relationships, core_keys):
                rows[row["check"]] = _merged(rows.get(row["check"]), row)
            core_keys = entities["_key"] if core_keys is None else core_keys
            for kind, frame in zip(KINDS, (entities, relationships)):
                hashes[kind].add(_key_hashes(frame))
            parts += 1
        suspects = {kind: spilled.in_two_parts() for kind, spilled in hashes.items()} if parts > 1 else {}
    for kind, repeated in _repeated_keys(suspects, graph_parts).items():
        label = _check(kind, None, "ExpectColumnValuesToBeUnique", column="_key").label
        rows[label] = _merged(rows.get(label), {
            "check": label, "success": False, "unexpected_count": len(repeated), "unexpected_percent": None,
            "element_count": 0, "examples": repeated[:5], "keys": repeated[:10], "error": None})
    results = list(rows.values())
    return {"success": all(r["success"] for r in results), "evaluated": len(results), "results": results}


class _Gate:
    """One GX context for every part (creating one costs seconds)."""

    def __init__(self) -> None:
        import great_expectations as gx  # heavy (seconds); only the quality task pays for it
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.context = gx.get_context(mode="ephemeral")
        self.context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep task logs readable
        self.batches = (self.context.data_sources.add_pandas("frames").add_dataframe_asset("frame")
                        .add_batch_definition_whole_dataframe("all"))
        self.groups: dict[tuple[str, str | None], list[Check]] = {}
        for check in build_checks():
            self.groups.setdefault((check.frame, check.type), []).append(check)
        self.runs = 0

    def validate(self, entities: pd.DataFrame, relationships: pd.DataFrame,
                 other_keys: pd.Series | None) -> list[dict]:
        import great_expectations.expectations as gxe

        gx = self.gx
        frames = {"entities": entities, "relationships": with_endpoint_entities(relationships, entities, other_keys)}
        rows = []
        for (frame_name, type_), group in self.groups.items():
            frame = frames[frame_name]
            rows_of_type = slice(None) if type_ is None else frame["_type"] == type_
            # Only what the suite reads: a missing column stays missing, for GX to report.
            columns = [c for c in dict.fromkeys(["_key", *(check.column for check in group)]) if c in frame]
            data = frame.loc[rows_of_type, columns]
            if data.empty:
                continue
            data = _numbers_for_gx(data, [c.column for c in group if c.expectation == "ExpectColumnValuesToBeBetween"])
            self.runs += 1
            name = f"{frame_name}-{type_ or 'all'}-{self.runs}"
            suite = self.context.suites.add(gx.ExpectationSuite(
                name=name, expectations=[getattr(gxe, c.expectation)(**dict(c.kwargs)) for c in group]))
            definition = self.context.validation_definitions.add(
                gx.ValidationDefinition(name=name, data=self.batches, suite=suite))
            result = definition.run(batch_parameters={"dataframe": data}, result_format=RESULT_FORMAT)
            # GX reorders results; (expectation, column) is unique within a slice, so match on it.
            by_check = {(r.expectation_config.type, r.expectation_config.kwargs["column"]): r for r in result.results}
            for check in group:
                rows.append(_row(check, by_check[(_snake(check.expectation), check.column)],
                                 check.column in data.columns))
        return rows


def _key_hashes(frame: pd.DataFrame) -> np.ndarray:
    return pd.util.hash_array(frame["_key"].dropna().to_numpy(dtype=object))


class _SpilledHashes:
    """Each part's distinct key hashes, kept on disk in BUCKETS files by their top bits, so that
    finding the hashes that are in two parts holds one bucket in memory, not 8 bytes for every key
    of the graph: held in memory, they grew the gate's peak with the tenant (`make bench`: 976 MB
    at 1M findings, 1,455 MB at 5M; spilled, 956 MB and 1,024 MB)."""

    BUCKETS = 64

    def __init__(self, folder: Path) -> None:
        folder.mkdir()
        self.files = [folder / f"{bucket:02d}.u64" for bucket in range(self.BUCKETS)]
        width = np.uint64(2**64 // self.BUCKETS)
        self.bounds = np.arange(1, self.BUCKETS, dtype=np.uint64) * width

    def add(self, hashes: np.ndarray) -> None:
        distinct = np.unique(hashes)  # sorted; repeats within a part are GX's to report
        for path, bucket in zip(self.files, np.split(distinct, np.searchsorted(distinct, self.bounds))):
            with path.open("ab") as out:
                bucket.tofile(out)

    def in_two_parts(self) -> np.ndarray:
        """The hashes added by more than one part: within a part they are distinct, so a hash
        equal to its neighbour in a sorted bucket came from two parts."""
        repeated = []
        for path in self.files:
            bucket = np.sort(np.fromfile(path, dtype=np.uint64))
            repeated.append(bucket[1:][bucket[1:] == bucket[:-1]])
        return np.unique(np.concatenate(repeated))


def _repeated_keys(suspects: dict[str, np.ndarray], graph_parts) -> dict[str, list[str]]:
    """Per kind, the keys found in more than one part, among those whose hashes are suspect:
    the keys themselves decide."""
    if not any(len(found) for found in suspects.values()):
        return {}
    where: dict[str, dict[str, set[int]]] = {kind: {} for kind in KINDS}
    for number, frames in enumerate(graph_parts()):
        for kind, frame in zip(KINDS, frames):
            keys = frame["_key"].dropna()
            for key in keys[np.isin(_key_hashes(frame), suspects[kind])]:
                where[kind].setdefault(key, set()).add(number)
    repeated = {kind: sorted(k for k, found in keys.items() if len(found) > 1) for kind, keys in where.items()}
    return {kind: keys for kind, keys in repeated.items() if keys}


def _merged(before: dict | None, row: dict) -> dict:
    """One check's results over several parts."""
    if before is None:
        return row
    count = (before["unexpected_count"] or 0) + (row["unexpected_count"] or 0)
    elements = before["element_count"] + row["element_count"]
    return {
        "check": row["check"],
        "success": before["success"] and row["success"],
        "unexpected_count": count,
        "unexpected_percent": 100 * count / elements if elements else None,
        "element_count": elements,
        "examples": (before["examples"] + row["examples"])[:5],
        "keys": (before["keys"] + row["keys"])[:10],
        "error": before["error"] or row["error"],
    }


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")


def _row(check: Check, outcome, column_present: bool) -> dict:
    result = outcome.result or {}
    error = None
    if not outcome.success:
        error = "column is missing" if not column_present else (outcome.exception_info or {}).get("exception_message")
    return {
        "check": check.label,
        "success": bool(outcome.success),
        "unexpected_count": result.get("unexpected_count"),
        "unexpected_percent": result.get("unexpected_percent"),
        "element_count": result.get("element_count") or 0,
        "examples": [str(v) for v in (result.get("partial_unexpected_list") or [])[:5]],
        "keys": [str(row.get("_key")) for row in (result.get("partial_unexpected_index_list") or [])],
        "error": error,
    }


def summary(report: dict) -> str:
    """A readable, per-expectation account of the failures."""
    failed = [r for r in report["results"] if not r["success"]]
    lines = [f"{len(failed)} of {report['evaluated']} data-quality checks failed:"]
    for row in failed:
        percent = "" if row["unexpected_percent"] is None else f" ({row['unexpected_percent']:.1f}%)"
        detail = row["error"] or (
            f"{row['unexpected_count']} unexpected{percent} in "
            f"{', '.join(row['keys'])}{' ...' if row['unexpected_count'] > len(row['keys']) else ''}; "
            f"values e.g. {row['examples']}"
        )
        lines.append(f"  - {row['check']}: {detail}")
    return "\n".join(lines)
