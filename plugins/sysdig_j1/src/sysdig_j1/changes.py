"""What a publish changed: the graph as published, compared with the scope's previous publish.

The snapshot of a publish is the graph without `_rawData` (the raw record is not a property anyone
watches), one Parquet file per kind, kept with the scope's state and replaced only once a publish
succeeds. Comparing two snapshots is vectorized: one hash per row finds the objects that changed,
and only those are compared property by property. Types JupiterOne kept as partial datasets are
left out of the comparison, and their old snapshot rows carry over into the new snapshot.

The report (`report/changes.json` in the run's folder) lists, per kind and `_type`, the `_key`s
added and removed, and for each changed object every changed property as `[before, after]`; on
top, the changes security teams watch: users added, removed, disabled, made or unmade admin; team
membership and team-role changes; teams added or removed; new failing image scans.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pandas as pd

from sysdig_j1.model import IMAGE_SCAN, RELATIONSHIPS, TEAM, USER

KINDS = ("entities", "relationships")
MEMBERSHIP = next(r.type for r in RELATIONSHIPS if r.source is TEAM and r.target is USER)
FAILING_POLICY = "failed"


def snapshot(frame: pd.DataFrame) -> pd.DataFrame:
    """What is kept of a published frame to compare the next publish with."""
    return frame.drop(columns=["_rawData"], errors="ignore").reset_index(drop=True)


def carried_over(previous: pd.DataFrame | None, current: pd.DataFrame, partial: Iterable[str]) -> pd.DataFrame:
    """The new snapshot: what was published now, plus the previous rows of the types JupiterOne
    kept as partial datasets (they were not sent, and they did not change)."""
    kept = set(partial)
    if previous is None or not kept:
        return snapshot(current)
    return pd.concat([snapshot(current), previous[previous["_type"].isin(kept)]], ignore_index=True)


def compare(before: pd.DataFrame | None, after: pd.DataFrame, partial: Iterable[str] = ()) -> dict:
    """Per `_type`: added and removed `_key`s, and changed objects with `[before, after]` per property."""
    kept = set(partial)
    after = snapshot(after)
    after = after[~after["_type"].isin(kept)]
    before = after.iloc[:0] if before is None else snapshot(before)
    before = before[~before["_type"].isin(kept)]
    old, new = before.set_index("_key"), after.set_index("_key")
    columns = sorted((set(old.columns) | set(new.columns)) - {"_type"})
    common = old.index.intersection(new.index)
    old_common, new_common = (_comparable(f.reindex(index=common, columns=columns)) for f in (old, new))
    differs = _row_hashes(old_common) != _row_hashes(new_common)

    report: dict[str, dict] = {}

    def entry(type_: str) -> dict:
        return report.setdefault(type_, {"added": [], "removed": [], "changed": []})

    for key, type_ in new["_type"].reindex(new.index.difference(old.index)).sort_index().items():
        entry(type_)["added"].append(key)
    for key, type_ in old["_type"].reindex(old.index.difference(new.index)).sort_index().items():
        entry(type_)["removed"].append(key)
    # The hashes only narrow the search; the property-by-property comparison decides.
    changed_keys = common[differs].sort_values()
    was_rows = old.loc[changed_keys].reindex(columns=columns).to_dict("records")
    now_rows = new.loc[changed_keys].reindex(columns=columns).to_dict("records")
    for key, type_, was, now in zip(changed_keys, new.loc[changed_keys, "_type"], was_rows, now_rows):
        properties = {name: [_plain(was[name]), _plain(now[name])] for name in columns if not _same(was[name], now[name])}
        if properties:
            entry(type_)["changed"].append({"_key": key, "properties": properties})
    return dict(sorted(report.items()))


def report(entities: dict, relationships: dict, published: pd.DataFrame) -> dict:
    """The document written to report/changes.json: totals per kind, the call-outs, and per kind
    and type the full comparison. `published` is the entity frame just published (or that would be)."""
    kinds = {"entities": entities, "relationships": relationships}
    totals = {
        kind: {what: sum(len(t[what]) for t in types.values()) for what in ("added", "removed", "changed")}
        for kind, types in kinds.items()
    }
    return {"totals": totals, "security": security_changes(entities, relationships, published), **kinds}


def security_changes(entities: dict, relationships: dict, published: pd.DataFrame) -> dict:
    """The changes a security team acts on, picked out of the full comparison."""
    users, teams = entities.get(USER.type, {}), entities.get(TEAM.type, {})
    members, scans = relationships.get(MEMBERSHIP, {}), entities.get(IMAGE_SCAN.type, {})
    failing: set[str] = set()
    if "policyStatus" in published:
        failing = set(published.loc[(published["policyStatus"] == FAILING_POLICY).fillna(False).astype(bool), "_key"])

    def changed(type_changes: dict, name: str, before: object, after: object) -> list[str]:
        return [c["_key"] for c in type_changes.get("changed", [])
                if c["properties"].get(name, [None, None]) == [before, after]]

    return {
        "users_added": users.get("added", []),
        "users_removed": users.get("removed", []),
        "users_disabled": changed(users, "enabled", True, False),
        "users_enabled": changed(users, "enabled", False, True),
        "users_made_admin": changed(users, "admin", False, True),
        "users_no_longer_admin": changed(users, "admin", True, False),
        "memberships_added": members.get("added", []),
        "memberships_removed": members.get("removed", []),
        "membership_roles_changed": [
            {"_key": c["_key"], "role": c["properties"]["role"]}
            for c in members.get("changed", []) if "role" in c["properties"]
        ],
        "teams_added": teams.get("added", []),
        "teams_removed": teams.get("removed", []),
        # new scans that fail their policy, and known scans that started failing it
        "image_scans_failing_policy": sorted(
            [key for key in scans.get("added", []) if key in failing]
            + [c["_key"] for c in scans.get("changed", [])
               if c["properties"].get("policyStatus", [None, None])[1] == FAILING_POLICY]
        ),
    }


# -- comparing values ------------------------------------------------------------------------------
def _comparable(frame: pd.DataFrame) -> pd.DataFrame:
    """Lists (string[] properties) as JSON text, so rows hash and compare by value."""
    out = frame.copy()
    for name in out.columns:
        if out[name].dtype == object:
            out[name] = out[name].map(lambda v: json.dumps(_plain(v)) if isinstance(v, (list, np.ndarray)) else v)
    return out


def _row_hashes(frame: pd.DataFrame) -> np.ndarray:
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _same(a: object, b: object) -> bool:
    a, b = _plain(a), _plain(b)
    return (a is None and b is None) or (a is not None and b is not None and a == b)


def _plain(value: object) -> object:
    """A JSON-safe Python value; pandas' missing values become None."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value
