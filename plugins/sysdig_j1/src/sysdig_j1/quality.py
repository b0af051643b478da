"""Data quality: Great Expectations suites derived from the data model, run on both frames.

Called directly (not through the GX Airflow operator, which pins an older structlog than
Airflow 3.3 needs). Each frame is checked as a whole (keys unique and non-null, types and classes
in the declared sets, relationship endpoints present) and per declared type (required properties,
key prefix, value ranges).
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from sysdig_j1.model import ENTITIES, RELATIONSHIPS, Property

NON_NEGATIVE = ("integer", "number")  # counts, ids, versions; timestamps before 1970 are negative
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
    def label(self) -> str:
        where = f"{self.frame}[{self.type}]" if self.type else self.frame
        column = dict(self.kwargs).get("column", "")
        return f"{where} {self.expectation}({column})"


def _check(frame: str, type_: str | None, expectation: str, **kwargs: object) -> Check:
    return Check(frame, type_, expectation, tuple(kwargs.items()))


def _property_checks(frame: str, type_: str, properties: tuple[Property, ...]) -> list[Check]:
    checks = []
    for prop in properties:
        if prop.required:
            checks.append(_check(frame, type_, "ExpectColumnValuesToNotBeNull", column=prop.name))
        if prop.type in NON_NEGATIVE:
            checks.append(_check(frame, type_, "ExpectColumnValuesToBeBetween", column=prop.name, min_value=0))
    return checks


def build_checks(entity_keys: list[str]) -> list[Check]:
    """Every expectation, derived from the model; relationship endpoints must be in `entity_keys`."""
    checks: list[Check] = []
    for frame, types in (("entities", ENTITIES), ("relationships", RELATIONSHIPS)):
        checks += [
            _check(frame, None, "ExpectColumnValuesToNotBeNull", column="_key"),
            _check(frame, None, "ExpectColumnValuesToBeUnique", column="_key"),
            _check(frame, None, "ExpectColumnValuesToBeInSet", column="_type", value_set=[t.type for t in types]),
            _check(frame, None, "ExpectColumnValuesToBeInSet", column="_class", value_set=sorted({t.cls for t in types})),
        ]
    for end in ("_fromEntityKey", "_toEntityKey"):
        checks.append(_check("relationships", None, "ExpectColumnValuesToBeInSet", column=end, value_set=entity_keys))
    for entity in ENTITIES:
        checks.append(_check("entities", entity.type, "ExpectColumnValuesToMatchRegex", column="_key",
                             regex=f"^{entity.type}:.+$"))
        checks += _property_checks("entities", entity.type, entity.properties)
    for rel in RELATIONSHIPS:
        checks += [
            _check("relationships", rel.type, "ExpectColumnValuesToMatchRegex", column="_fromEntityKey",
                   regex=f"^{rel.source.type}:.+$"),
            _check("relationships", rel.type, "ExpectColumnValuesToMatchRegex", column="_toEntityKey",
                   regex=f"^{rel.target.type}:.+$"),
        ]
        checks += _property_checks("relationships", rel.type, rel.properties)
    return checks


def validate(entities: pd.DataFrame, relationships: pd.DataFrame) -> dict:
    """Run every check; returns a JSON-safe report with `success` and one row per expectation."""
    import great_expectations as gx  # heavy (seconds); only the quality task pays for it
    import great_expectations.expectations as gxe
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # keep task logs readable
    batch_definition = (
        context.data_sources.add_pandas("frames").add_dataframe_asset("frame").add_batch_definition_whole_dataframe("all")
    )
    frames = {"entities": entities, "relationships": relationships}
    groups: dict[tuple[str, str | None], list[Check]] = {}
    for check in build_checks(entities["_key"].dropna().tolist()):
        groups.setdefault((check.frame, check.type), []).append(check)

    rows = []
    for (frame_name, type_), group in groups.items():
        frame = frames[frame_name]
        data = frame if type_ is None else frame[frame["_type"] == type_]
        if data.empty:
            continue
        suite = context.suites.add(
            gx.ExpectationSuite(
                name=f"{frame_name}-{type_ or 'all'}",
                expectations=[getattr(gxe, c.expectation)(**dict(c.kwargs)) for c in group],
            )
        )
        result = batch_definition.get_batch(batch_parameters={"dataframe": data}).validate(
            suite, result_format=RESULT_FORMAT
        )
        # GX reorders results; (expectation, column) is unique within a slice, so match on it.
        by_check = {(r.expectation_config.type, r.expectation_config.kwargs["column"]): r for r in result.results}
        for check in group:
            column = dict(check.kwargs)["column"]
            rows.append(_row(check, by_check[(_snake(check.expectation), column)], column in data.columns))
    return {"success": all(r["success"] for r in rows), "evaluated": len(rows), "results": rows}


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
        "examples": [str(v) for v in (result.get("partial_unexpected_list") or [])[:5]],
        "keys": [str(row.get("_key")) for row in (result.get("partial_unexpected_index_list") or [])],
        "error": error,
    }


def summary(report: dict) -> str:
    """A readable, per-expectation account of the failures."""
    failed = [r for r in report["results"] if not r["success"]]
    lines = [f"{len(failed)} of {report['evaluated']} data-quality checks failed:"]
    for row in failed:
        detail = row["error"] or (
            f"{row['unexpected_count']} unexpected ({row['unexpected_percent']:.1f}%) in "
            f"{', '.join(row['keys'])}{' ...' if row['unexpected_count'] > len(row['keys']) else ''}; "
            f"values e.g. {row['examples']}"
        )
        lines.append(f"  - {row['check']}: {detail}")
    return "\n".join(lines)
