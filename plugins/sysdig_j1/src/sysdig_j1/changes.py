"""What a publish changed: the graph as published, compared with the scope's previous publish.

The snapshot of a publish is the graph without `_rawData` (the raw record is not a property anyone
watches) plus `_hash`, one hash of each object's properties; one Parquet file per kind, kept with
the scope's state and replaced only once a publish succeeds. The comparison reads only `_key`,
`_type` and `_hash` of the previous snapshot, finds what was added, removed or changed from those,
and reads the full previous rows of the changed objects alone, to list every changed property as
`[before, after]`. So it costs about one pass of hashing over the new graph, and its memory does
not grow with the old one. Types JupiterOne kept as partial datasets are left out, and their old
rows carry over into the new snapshot.

The report (`report/changes.json` in the run's folder) lists, per kind and `_type`, the `_key`s
added and removed, and each changed object's changed properties; on top, the changes security
teams watch: users added, removed, disabled, made or unmade admin; team membership and team-role
changes; teams added or removed; image scans failing policy; open critical findings, new or open
again; findings whose risk was accepted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sysdig_j1.model import FINDING, IMAGE_SCAN, RELATIONSHIPS, SERVICE_ACCOUNT, TEAM, USER

KINDS = ("entities", "relationships")
WHATS = ("added", "removed", "changed")
MEMBERSHIP = next(r.type for r in RELATIONSHIPS if r.source is TEAM and r.target is USER)
FAILING_POLICY = "failed"
INDEX_COLUMNS = ["_key", "_type", "_hash"]
NOT_PROPERTIES = ("_key", "_rawData", "_hash")
LIST_SEPARATOR = "\x1f"  # the ASCII unit separator: not in any property value we publish

# A previous snapshot, read as little as possible: `read(columns, keys=None, types=None)` gives
# those columns (all when None) of the rows with those `_key`s or `_type`s (all when None).
Reader = Callable[..., pd.DataFrame]


def key_array(keys: pd.Series) -> pa.Array:
    """A key column as one Arrow string array, whatever pandas holds it in (numpy objects, Arrow chunks)."""
    array = pa.array(keys.array, pa.string())
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def snapshot(frame: pd.DataFrame) -> pd.DataFrame:
    """What is kept of a published frame to compare the next publish with."""
    kept = frame.drop(columns=["_rawData", "_hash"], errors="ignore").reset_index(drop=True)
    return kept.assign(_hash=row_hashes(kept))


def frame_reader(frame: pd.DataFrame) -> Reader:
    """A Reader over a snapshot held in memory (tests, benchmarks)."""
    def read(columns=None, keys=None, types=None) -> pd.DataFrame:
        rows = frame if keys is None else frame[frame["_key"].isin(keys)]
        rows = rows if types is None else rows[rows["_type"].isin(types)]
        return rows if columns is None else rows[columns]

    return read


def carried_over(previous: Reader | None, current: pd.DataFrame, partial: Iterable[str]) -> pd.DataFrame:
    """The new snapshot: the `snapshot` of what was published now, plus the previous rows of the
    types JupiterOne kept as partial datasets (they were not sent, and they did not change)."""
    kept = sorted(set(partial))
    if previous is None or not kept:
        return current
    return pd.concat([current, previous(types=kept)], ignore_index=True)


def compare(before: Reader | None, after: pd.DataFrame, partial: Iterable[str] = ()) -> dict:
    """Per `_type`: added and removed `_key`s, and changed objects with `[before, after]` per
    property. `after` is the `snapshot` of what is published now."""
    kept = set(partial)
    now = after[~after["_type"].isin(kept)]
    was_index = now.iloc[:0][INDEX_COLUMNS] if before is None else before(INDEX_COLUMNS)
    was_index = was_index[~was_index["_type"].isin(kept)]
    # Arrow's hash lookups of one key column in the other, instead of a sorting join.
    now_keys, was_keys = key_array(now["_key"]), key_array(was_index["_key"])
    position = pc.index_in(now_keys, value_set=was_keys)  # where each key was, null when new
    found = position.is_valid().to_numpy(zero_copy_only=False)
    hashes = was_index["_hash"].to_numpy()
    was_hashes = hashes[position.fill_null(0).to_numpy()] if len(hashes) else np.zeros(len(now), np.uint64)
    gone = ~pc.is_in(was_keys, value_set=now_keys).to_numpy(zero_copy_only=False)

    report: dict[str, dict] = {}

    def entry(type_: str) -> dict:
        return report.setdefault(type_, {"added": [], "removed": [], "changed": []})

    for key, type_ in sorted(zip(now["_key"][~found], now["_type"][~found])):
        entry(type_)["added"].append(key)
    for key, type_ in sorted(zip(was_index["_key"][gone], was_index["_type"][gone])):
        entry(type_)["removed"].append(key)
    suspects = sorted(now["_key"][found & (was_hashes != now["_hash"].to_numpy())])
    if suspects and before is not None:
        # The hashes only narrow the search; the property-by-property comparison decides.
        was_rows = before(None, keys=suspects).set_index("_key")
        now_rows = now[now["_key"].isin(suspects)].set_index("_key")
        columns = sorted((set(was_rows.columns) | set(now_rows.columns)) - {"_type", *NOT_PROPERTIES})
        was_rows, now_rows = (f.reindex(index=suspects, columns=columns) for f in (was_rows, now_rows))
        types = now["_type"].set_axis(now["_key"]).reindex(suspects)
        for key, type_, was, is_ in zip(suspects, types, was_rows.to_dict("records"), now_rows.to_dict("records")):
            properties = {name: [plain(was[name]), plain(is_[name])] for name in columns if not _same(was[name], is_[name])}
            if properties:
                entry(type_)["changed"].append({"_key": key, "properties": properties})
    return dict(sorted(report.items()))


def row_hashes(frame: pd.DataFrame) -> np.ndarray:
    """One 64-bit hash per row of its property values, the same whether a property is absent or
    null: per column, only the present values are hashed, salted with the column's name, and the
    columns are summed, so column order and columns without values do not matter."""
    total = np.zeros(len(frame), dtype=np.uint64)
    for name in frame.columns:
        if name in NOT_PROPERTIES:
            continue
        present = frame[name].notna().to_numpy()
        if not present.any():
            continue
        values = frame[name][present]
        if values.dtype == object:  # lists (string[] properties) hash as their items, joined
            values = values.map(lambda v: LIST_SEPARATOR.join(map(str, v)) if isinstance(v, (list, np.ndarray)) else v)
        hashes = pd.util.hash_pandas_object(values, index=False).to_numpy()
        total[present] += hashes * _salt(name)  # uint64 arithmetic wraps, as a hash should
    return total


def _salt(name: str) -> np.uint64:
    return np.uint64(int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little") | 1)


def compare_part(before: Reader | None, after: pd.DataFrame, partial: Iterable[str] = ()) -> dict:
    """`compare` for one part of a unit published in parts (`parts.py`), against only the previous
    rows with the part's keys: what the unit no longer holds is for `removed` to find."""
    if before is None:
        return compare(None, after, partial)
    part_keys = after["_key"].tolist()

    def narrowed(columns=None, keys=None, types=None) -> pd.DataFrame:
        return before(columns, keys=part_keys if keys is None else keys, types=types)

    return compare(narrowed, after, partial)


def removed(before: Reader | None, now_keys: list[pa.Array], partial: Iterable[str] = ()) -> dict:
    """Per type, the `_key`s the previous unit held that no part of it holds now."""
    if before is None:
        return {}
    was = before(["_key", "_type"])
    was = was[~was["_type"].isin(set(partial))]
    now = pa.concat_arrays(now_keys) if now_keys else pa.array([], pa.string())
    gone = ~pc.is_in(key_array(was["_key"]), value_set=now).to_numpy(zero_copy_only=False)
    report: dict[str, dict] = {}
    for key, type_ in sorted(zip(was["_key"][gone], was["_type"][gone])):
        report.setdefault(type_, {"added": [], "removed": [], "changed": []})["removed"].append(key)
    return report


def merge(into: dict, found: dict, listed: int | None = None) -> None:
    """Add the changes per type `compare` found (in one part) to `into`, counting every one and
    keeping at most `listed` of each list (None: all)."""
    for type_, entry in found.items():
        kept = into.setdefault(type_, {**{what: [] for what in WHATS}, "counts": dict.fromkeys(WHATS, 0)})
        for what in WHATS:
            kept["counts"][what] += len(entry[what])
            room = len(entry[what]) if listed is None else max(0, listed - len(kept[what]))
            kept[what].extend(entry[what][:room])


def report(entities: dict, relationships: dict, security: dict) -> dict:
    """The document written to report/changes.json: totals per kind, the call-outs, and per kind
    and type what changed (`merge`d: counts, and the lists)."""
    kinds = {"entities": dict(sorted(entities.items())), "relationships": dict(sorted(relationships.items()))}
    totals = {kind: {what: sum(t["counts"][what] for t in types.values()) for what in WHATS}
              for kind, types in kinds.items()}
    return {"totals": totals, "security": security, **kinds}


def merge_security(into: dict, found: dict) -> None:
    """Add the call-outs of one part to those of the others."""
    for name, items in found.items():
        into.setdefault(name, []).extend(items)


def security_changes(entities: dict, relationships: dict, published: pd.DataFrame) -> dict:
    """The changes a security team acts on, picked out of the comparison (of a part: `published`
    is its entity frame)."""
    users, teams = entities.get(USER.type, {}), entities.get(TEAM.type, {})
    members, scans = relationships.get(MEMBERSHIP, {}), entities.get(IMAGE_SCAN.type, {})
    failing = set(_keys(published, IMAGE_SCAN.type, policyStatus=FAILING_POLICY))
    findings = entities.get(FINDING.type, {})
    open_by_severity = {severity: set(_keys(published, FINDING.type, severity=severity, open=True))
                        for severity in ("critical", "high")}

    def opened(severity: str) -> list[str]:
        """New open findings of a severity, and ones open again (their risk acceptance ended)."""
        found = open_by_severity[severity]
        return sorted([key for key in findings.get("added", []) if key in found]
                      + [key for key in changed(findings, "open", False, True) if key in found])

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
        "critical_findings_opened": opened("critical"),
        "high_findings_opened": opened("high"),
        "findings_risk_accepted": changed(findings, "open", True, False),
    }


def security_state(entities: pd.DataFrame, relationships: pd.DataFrame) -> dict:
    """What a security team looks at first in a graph (a scope's first publish, its baseline,
    shows it instead of changes): admins, admin service accounts whose token never expires, users
    in no team, image scans failing policy. From the core part's frames: none of these types is
    sharded."""
    members = relationships.loc[relationships["_type"] == MEMBERSHIP, "_toEntityKey"] \
        if "_toEntityKey" in relationships else pd.Series(dtype=object)
    users = _keys(entities, USER.type)
    return {
        "admins": _keys(entities, USER.type, admin=True),
        "admin_service_accounts_never_expiring": _keys(entities, SERVICE_ACCOUNT.type, admin=True, neverExpires=True),
        "users_in_no_team": sorted(set(users) - set(members)),
        "images_failing_policy": _keys(entities, IMAGE_SCAN.type, policyStatus=FAILING_POLICY),
    }


def _keys(frame: pd.DataFrame, type_: str, **equal: object) -> list[str]:
    """The sorted `_key`s of the frame's entities of a type whose properties have these values
    (none when the frame lacks a property)."""
    if not {"_key", "_type", *equal} <= set(frame.columns):
        return []
    rows = frame["_type"] == type_
    for name, value in equal.items():
        rows &= (frame[name] == value).fillna(False).astype(bool)
    return sorted(frame.loc[rows, "_key"])


# -- comparing values ------------------------------------------------------------------------------
def _same(a: object, b: object) -> bool:
    a, b = plain(a), plain(b)
    return (a is None and b is None) or (a is not None and b is not None and a == b)


def plain(value: object) -> object:
    """A JSON-safe Python value; pandas' missing values become None."""
    if isinstance(value, np.ndarray):
        return [plain(v) for v in value.tolist()]
    if isinstance(value, list):
        return [plain(v) for v in value]
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value
