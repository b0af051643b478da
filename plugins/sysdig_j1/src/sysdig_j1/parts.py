"""The graph a run builds, in parts, so that no step holds a large tenant's graph at once.

Part "core" holds every type not fed by a sharded resource (users, teams, scans, the inventory:
small, and built together because their relationships join across resources). The types of a
sharded resource (findings) are built shard by shard, batch by batch: one part per batch of about
`transform.PART_ROWS` records, in `graph/<shard folder>/part-NNNNN.<kind>.parquet`. A shard's
parts form its *unit*: what is compared with the same shard of the last publish (a result stays
in its shard, so its findings do too). Quality, change report and publish then read one part at
a time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd

from sysdig_j1.hooks.storage import RunStorage

KINDS = ("entities", "relationships")
CORE = "core"


@dataclass(frozen=True)
class Part:
    unit: str  # "core", or the shard's folder, e.g. "findings/shard-003"
    name: str  # "core", or e.g. "findings/shard-003/part-00000"

    def path(self, storage: RunStorage, kind: str):
        return storage.path("graph", f"{kind}.parquet") if self.unit == CORE else \
            storage.path("graph", f"{self.name}.{kind}.parquet")


def write(storage: RunStorage, part: Part, entities: pd.DataFrame, relationships: pd.DataFrame) -> Counter:
    """Store one part; returns its object count per type."""
    counts: Counter = Counter()
    for kind, frame in zip(KINDS, (entities, relationships)):
        storage.write_parquet(part.path(storage, kind), frame)
        counts.update(frame["_type"].value_counts().to_dict())
    return counts


def parts(storage: RunStorage) -> list[Part]:
    """Every part of the run's graph: the core first, then each shard's in order."""
    found = [Part(CORE, CORE)]
    for _, path in storage.pages(storage.path("graph"), ".entities.parquet"):
        name = str(path)[len(str(storage.path("graph"))):].strip("/").removesuffix(".entities.parquet")
        if "/" in name:  # a shard's part (the core's own file, graph/entities.parquet, does not match)
            found.append(Part(name.rsplit("/", 1)[0], name))
    return found


def units(storage: RunStorage) -> dict[str, list[Part]]:
    """The parts by unit, in order."""
    grouped: dict[str, list[Part]] = {}
    for part in parts(storage):
        grouped.setdefault(part.unit, []).append(part)
    return grouped


def read(storage: RunStorage, part: Part, kind: str, columns: frozenset[str] | None = None) -> pd.DataFrame:
    """One kind of one part, or only those of `columns` its file has (a missing one stays missing)."""
    path = part.path(storage, kind)
    names = None if columns is None else [c for c in storage.parquet_columns(path) if c in columns]
    return storage.read_parquet(path, columns=names)


def frames(storage: RunStorage, kind: str, columns: frozenset[str] | None = None) -> Iterator[pd.DataFrame]:
    """One kind of every part, a part at a time."""
    for part in parts(storage):
        yield read(storage, part, kind, columns)
