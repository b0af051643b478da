"""What the last publishes of a scope left, and how a run's graph compares with it, part by part.

Kept next to the runs (`RunStorage.published`), per scope: the graph snapshots (`changes.py`) of
the last successful publish ("latest") and of the one before ("before", which a re-run of the same
`load` compares with, as its first attempt did), one file per part of the graph and kind
(`parts.py`). A publish compares each part of its graph with the same unit of the baseline and
writes its own snapshots ("pending") as it goes, so it holds one part at a time; `commit` makes
them "latest" once JupiterOne has accepted the publish.

A shard's unit lines up with the same shard of the last publish because a result stays in its
shard (`findings.Shard`) as long as the number of shards stays the same; the folder names carry
that number, so after it changed, every object of the sharded types is reported as removed from
the old shards and added in the new ones, once (a warning says so; what is published does not
depend on it).
"""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa

from sysdig_j1 import callouts, changes, parts
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.transform import SHARDED_TYPES

log = logging.getLogger(__name__)

LISTED = 1_000  # of a sharded type's added, removed or changed objects, listed in changes.json


def snapshot_files(storage: RunStorage, scope: str, generation: str, unit: str, kind: str) -> list:
    """A unit's snapshot files of one kind in a generation (none: no such publish)."""
    folder = storage.published_graph(scope, generation)
    if unit == parts.CORE:
        found = folder / f"{parts.CORE}.{kind}.parquet"
        return [found] if found.exists() else []
    return [path for _, path in storage.pages(folder / unit, f".{kind}.parquet")]


def reader(storage: RunStorage, scope: str, generation: str, unit: str, kind: str) -> changes.Reader | None:
    """A unit's snapshot of one kind, read as little as each question needs. Older releases kept
    a generation whole, in one file: its core types stand in for the core (the sharded types,
    there too, are reported as added, once)."""
    readers = [file_reader(storage, path) for path in snapshot_files(storage, scope, generation, unit, kind)]
    legacy = storage.legacy_published_graph(scope, kind, generation)
    if unit == parts.CORE and not readers and legacy.exists():
        whole = file_reader(storage, legacy)
        core_types = sorted(set(whole(["_type"])["_type"].unique()) - SHARDED_TYPES)
        return lambda columns=None, keys=None, types=None: whole(
            columns, keys=keys, types=core_types if types is None else sorted(set(types) & set(core_types)))
    if not readers:
        return None

    def read(columns=None, keys=None, types=None) -> pd.DataFrame:
        return pd.concat([r(columns, keys=keys, types=types) for r in readers], ignore_index=True)

    return readers[0] if len(readers) == 1 else read


def file_reader(storage: RunStorage, path) -> changes.Reader:
    if "_hash" not in storage.parquet_columns(path):
        # written before snapshots kept a hash per object: hashed once here, in memory
        return changes.frame_reader(changes.snapshot(storage.read_parquet(path)))

    def read(columns=None, keys=None, types=None):
        filters = [f for f in (("_key", "in", keys) if keys is not None else None,
                               ("_type", "in", types) if types is not None else None) if f]
        return storage.read_parquet(path, columns=columns, filters=filters or None)

    return read


def compare(storage: RunStorage, scope: str, baseline: str, partial: list[str]) -> dict:
    """The run's graph compared with the scope's publish `baseline`, part by part, with its
    snapshots written as the "pending" generation; returns the change document (`changes.report`:
    every core change listed, at most LISTED of each list of a sharded type; each part's complete
    lists are in report/changes/<part>.json)."""
    pending = storage.reset(storage.published_graph(scope, "pending"))
    folder = storage.reset(storage.path("report", "changes"))
    found_by_kind: dict[str, dict] = {kind: {} for kind in parts.KINDS}
    security: dict[str, list] = {}

    def add(name: str, found: dict[str, dict], published: pd.DataFrame, listed: int | None) -> None:
        changes.merge_security(security, changes.security_changes(found["entities"], found["relationships"],
                                                                  published))
        for kind in parts.KINDS:
            changes.merge(found_by_kind[kind], found[kind], listed)
        if listed is not None:  # a part of a sharded type: its complete lists
            storage.write_json(folder / f"{name}.json", found)

    first, state = True, {}  # (from the core unit, which every graph has)
    units = parts.units(storage)
    for unit, unit_parts in units.items():
        before = {kind: reader(storage, scope, baseline, unit, kind) for kind in parts.KINDS}
        if unit != parts.CORE and before["entities"] is None and _other_shard_counts(storage, scope, baseline, unit):
            log.warning("%s: the number of shards changed since the last publish; this once, the change report "
                        "has every object of its types leave the old shards and come in the new ones", unit)
        now_keys: dict[str, list[pa.Array]] = {kind: [] for kind in parts.KINDS}
        for part in unit_parts:
            snapshots = {kind: changes.snapshot(parts.read(storage, part, kind)) for kind in parts.KINDS}
            if unit == parts.CORE:
                # a scope's first publish is its baseline: nothing is called out, its state is shown
                first = all(snapshot is None for snapshot in before.values())
                state = changes.security_state(snapshots["entities"], snapshots["relationships"])
                add(part.name, {kind: changes.compare(before[kind], snapshots[kind], partial) for kind in parts.KINDS},
                    snapshots["entities"], None)
            else:
                add(part.name, {kind: changes.compare_part(before[kind], snapshots[kind], partial)
                                for kind in parts.KINDS}, snapshots["entities"], LISTED)
            for kind in parts.KINDS:
                now_keys[kind].append(changes.key_array(snapshots[kind]["_key"]))
                kept = changes.carried_over(before[kind], snapshots[kind], partial) if unit == parts.CORE \
                    else snapshots[kind]
                storage.write_parquet(pending / f"{part.name}.{kind}.parquet", kept)
        if unit != parts.CORE:
            gone = {kind: changes.removed(before[kind], now_keys[kind], partial) for kind in parts.KINDS}
            add(f"{unit}/removed", gone, pd.DataFrame(), LISTED)
    # Units of the baseline not built now: kept as they were if JupiterOne kept their types
    # (a failed shard), else all of it is gone (findings switched off or none left, shards recounted).
    latest = storage.published_graph(scope, baseline)
    kept = set(partial) & SHARDED_TYPES
    for unit in sorted({name.rsplit("/", 1)[0] for name in _names(storage, latest) if "/" in name} - set(units)):
        if kept:
            for name in _names(storage, latest / unit):
                _copy(latest / unit / name, pending / unit / name)
        else:
            add(f"{unit}/removed", {kind: changes.removed(reader(storage, scope, baseline, unit, kind), [], partial)
                                    for kind in parts.KINDS}, pd.DataFrame(), LISTED)
    if first:
        security = {}
    document = changes.report(found_by_kind["entities"], found_by_kind["relationships"], security)
    labels, summaries = callouts.describe(lookup(storage, scope, ["pending", baseline]), {**security, **state})
    return {**document, "baseline": first, "state": state, "labels": labels, "summaries": summaries}


def lookup(storage: RunStorage, scope: str, generations: list[str]) -> callouts.Lookup:
    """Rows of a scope's snapshots by key, from the first of `generations` that holds each."""
    def rows(kind: str, keys: list[str], columns: list[str]) -> pd.DataFrame:
        found, wanted = [], set(keys)
        for generation in generations:
            files = [path for _, path in storage.pages(storage.published_graph(scope, generation), f".{kind}.parquet")]
            legacy = storage.legacy_published_graph(scope, kind, generation)
            for path in files + ([legacy] if legacy.exists() else []):
                if not wanted:
                    break
                have = [c for c in columns if c in storage.parquet_columns(path)]
                frame = storage.read_parquet(path, columns=have, filters=[("_key", "in", sorted(wanted))])
                found.append(frame)
                wanted -= set(frame["_key"])
        return pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=columns)

    return rows


def commit(storage: RunStorage, scope: str, rerun: bool) -> None:
    """After JupiterOne accepted the publish: "latest" becomes "before" (unless this is a re-run,
    whose "before" is already the publish before this run), and "pending" becomes "latest"."""
    if not rerun:
        _replace(storage, storage.published_graph(scope, "latest"), storage.published_graph(scope, "before"))
    _replace(storage, storage.published_graph(scope, "pending"), storage.published_graph(scope, "latest"))


def _replace(storage: RunStorage, source, target) -> None:
    """`target` becomes a copy of `source` (a folder; nothing when there is no `source`)."""
    storage.reset(target)
    for name in _names(storage, source):
        _copy(source / name, target / name)


def _names(storage: RunStorage, folder) -> list[str]:
    """The snapshot files under `folder`, relative to it."""
    return [str(path)[len(str(folder)):].strip("/") for _, path in storage.pages(folder, ".parquet")]


def _copy(source, target) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(source.read_bytes())


def _other_shard_counts(storage: RunStorage, scope: str, baseline: str, unit: str) -> bool:
    """Whether the baseline holds shards of the unit's resource, counted differently."""
    resource = unit.split("/", 1)[0]
    folder = storage.published_graph(scope, baseline) / resource
    return folder.exists() and any(True for _ in storage.pages(folder, ".parquet"))
