"""Benchmark of the transform (raw pages -> entity and relationship frames) and of the data-quality
check on its frames, at scale.

Raw input is written the way the extract tasks write it, but straight from the emulator's
organisation generator (no HTTP): 100,000 users (+ users_light), 1,000 teams, their memberships
with admins, the account, and N image scans split over the runtime/pipeline/registry partitions,
in pages of 1,000 records. Each size is transformed, then checked by `quality.validate`, in a fresh
child process, so its peak RSS (ru_maxrss of that process, imports included) belongs to that size
alone: "peak RSS" is read after the transform, "peak RSS with quality" after the check. Importing
Great Expectations is a fixed cost paid once per process; it is timed on its own, not in "quality s".

The demo row is the `make run` organisation (200 users, 10 teams, 500 scans) checked in a fresh
process with the Great Expectations import included, i.e. what the check_quality task pays there.

    .venv/bin/python bench/transform.py [--sizes 10000,100000,1000000] [--demo]

Generated input is cached under <tmp>/sysdig-j1-bench-parquet-pages/<shape>/ and reused by later runs
written under the same source contract.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import logging
import multiprocessing
import os
import platform
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

USERS, TEAMS, PAGE_SIZE = 100_000, 1_000, 1_000
DEMO = (200, 10, 500)  # users, teams, scans of `make run`
DEFAULT_SIZES = "10000,100000,1000000"
CACHE_ROOT = Path(tempfile.gettempdir()) / "sysdig-j1-bench-parquet-pages"  # raw pages as extract writes them
COMPLETE_MARKER = "complete"  # written last, so an interrupted generation is never reused


@dataclass(frozen=True)
class Measurement:
    scans: int
    entity_rows: int
    relationship_rows: int
    transform_seconds: float
    peak_rss_mb: float  # after the transform
    gx_import_seconds: float
    quality_seconds: float  # quality.validate, Great Expectations already imported
    quality_peak_rss_mb: float  # after the check too
    checks_passed: int
    checks_evaluated: int
    diff_seconds: float  # snapshot + changes.compare of both kinds + changes.report, vs a previous publish
    changed_objects: int  # what the comparison found: added + removed + changed
    diff_rss_before_mb: float  # resident memory when the comparison starts (the frames, mostly)
    diff_rss_peak_mb: float  # and its highest value during the comparison

    @property
    def rows_per_second(self) -> float:
        return (self.entity_rows + self.relationship_rows) / self.transform_seconds


# -- input generation (parent process) -----------------------------------------------------
# sysdig_j1 is imported inside the functions: the spawned child re-imports this module, and should
# load only what the transform needs, so its peak RSS is the transform's.
def _pages(indices: Sequence[int], render: Callable[[int], dict]) -> Iterator[list[dict]]:
    from sysdig_j1_emulators.sysdig_org import page

    for offset in range(0, len(indices), PAGE_SIZE):
        yield [render(i) for i in page(indices, offset, PAGE_SIZE)]


def _write_organisation(storage_url: str, users: int, teams: int, scans: int) -> None:
    from sysdig_j1_emulators.sysdig_org import STAGES, TEAM_ID_BASE, OrgSpec, SysdigOrg
    from sysdig_j1.hooks.storage import RunStorage
    from sysdig_j1.raw import write_page
    from sysdig_j1.scrub import Scrubber

    org = SysdigOrg(OrgSpec(users=users, teams=teams, scans=scans))
    storage = RunStorage(storage_url, "bench", "run")

    def write_pages(listing: str, pages: Iterable[list[dict]]) -> None:  # as the extract tasks store them
        for number, records in enumerate(pages):
            write_page(storage, listing, number, records, Scrubber(), endpoint=f"/bench/{listing}")

    write_pages("account", [[org.legacy_user(0)]])  # what /api/users/me answers
    write_pages("users", _pages(org.users(), org.public_user))
    write_pages("users_light", _pages(org.users(), org.light_user))
    write_pages("teams", _pages(org.teams(), org.public_team))
    for j in org.teams():  # one partition per team id, as extract lists each team's members
        members = org.members(j, with_admins=True)
        write_pages(f"team_memberships/{TEAM_ID_BASE + j}", _pages(members, partial(org.membership, j)))
    for stage in STAGES:
        write_pages(f"image_scans/{stage}", _pages(org.scans(stage), partial(org.stage_result, stage)))


def _contract_fingerprint() -> str:
    """Changes with any resource's page schema: the transform refuses pages of another contract."""
    from sysdig_j1.contract import contract_for
    from sysdig_j1.model import RESOURCES
    from sysdig_j1.raw import page_schema

    schemas = "\n".join(page_schema(contract_for(r)).to_string(show_schema_metadata=True) for r in RESOURCES)
    return hashlib.sha256(schemas.encode()).hexdigest()


def prepared_input(scans: int, users: int = USERS, teams: int = TEAMS) -> tuple[str, float | None]:
    """Storage URL of the raw input for this shape, and the seconds spent generating it (None: cached)."""
    folder = CACHE_ROOT / f"users{users}-teams{teams}-scans{scans}"
    url = f"file://{folder}"
    marker, fingerprint = folder / COMPLETE_MARKER, _contract_fingerprint()
    if marker.exists() and marker.read_text() == fingerprint:
        return url, None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    _write_organisation(url, users, teams, scans)
    seconds = time.perf_counter() - started
    marker.write_text(fingerprint)
    return url, seconds


# -- measurement (child process) -----------------------------------------------------------
def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _graph(storage_url: str):
    from sysdig_j1.hooks.storage import RunStorage
    from sysdig_j1.transform import Context, build_graph

    # Importing Airflow (via sysdig_j1) set up INFO logging to stdout, where GX's hundreds of INFO
    # lines would bury the table. (The demo row measures the same 2.1 s either way.)
    logging.getLogger("great_expectations").setLevel(logging.WARNING)

    storage = RunStorage(storage_url, "bench", "run")
    context = Context(storage, app_url="https://us2.app.sysdig.com", account_name="bench")
    entities, relationships, _ = build_graph(context)
    return entities, relationships


def _quality(entities, relationships) -> tuple[float, float, int, int]:
    """(import s, validate s, checks passed, checks evaluated). The first call in a process imports
    Great Expectations, as the check_quality task does; that import is timed apart."""
    from sysdig_j1 import quality

    started = time.perf_counter()
    import great_expectations  # noqa: F401
    import_seconds = time.perf_counter() - started
    started = time.perf_counter()
    report = quality.validate(entities, relationships)
    validate_seconds = time.perf_counter() - started
    return import_seconds, validate_seconds, sum(row["success"] for row in report["results"]), report["evaluated"]


def _previous_publish(entities, relationships) -> dict[str, bytes]:
    """A plausible previous publish of this graph, stored as load stores it (Parquet snapshots):
    1% of the users had the other admin flag, 1% of the image scans were not there yet, and 1,000
    users have since left."""
    import pandas as pd

    from sysdig_j1 import changes

    before = entities.drop(columns=["_rawData"])
    users = before.index[before["_type"] == "sysdig_user"]
    flipped = users[::100]
    before.loc[flipped, "admin"] = ~before.loc[flipped, "admin"].astype(bool)
    scans = before.index[before["_type"] == "sysdig_image_scan"][::100]
    left = before.loc[users[:1000]].assign(_key=lambda f: f["_key"] + "-left")
    before = pd.concat([before.drop(index=scans), left], ignore_index=True)
    stored = {}
    for kind, frame in (("entities", before), ("relationships", relationships)):
        buffer = io.BytesIO()
        changes.snapshot(frame).to_parquet(buffer, index=False)
        stored[kind] = buffer.getvalue()
    return stored


def _diff(entities, relationships) -> tuple[float, int, float, float]:
    """(seconds, objects found added/removed/changed, RSS MB before, peak RSS MB during) of what
    load does to report changes: snapshot
    the new graph (a hash per object), read the previous snapshot's index, compare, read the
    changed objects' previous rows, build the report."""
    import pandas as pd

    from sysdig_j1 import changes

    stored = _previous_publish(entities, relationships)

    def reader(data: bytes):
        def read(columns=None, keys=None, types=None):
            filters = [f for f in (("_key", "in", keys) if keys is not None else None,
                                   ("_type", "in", types) if types is not None else None) if f]
            return pd.read_parquet(io.BytesIO(data), columns=columns, filters=filters or None)
        return read

    gc.collect()
    with _rss_sampled() as rss:
        started = time.perf_counter()
        frames = {"entities": entities, "relationships": relationships}
        snapshots = {kind: changes.snapshot(frame) for kind, frame in frames.items()}
        compared = {kind: changes.compare(reader(stored[kind]), snapshots[kind]) for kind in frames}
        listed: dict[str, dict] = {kind: {} for kind in frames}
        for kind in frames:
            changes.merge(listed[kind], compared[kind])
        document = changes.report(listed["entities"], listed["relationships"], changes.security_changes(
            compared["entities"], compared["relationships"], snapshots["entities"]))
        seconds = time.perf_counter() - started
    return seconds, sum(sum(kind.values()) for kind in document["totals"].values()), rss["before"], rss["peak"]


@contextmanager
def _rss_sampled(interval: float = 0.01):
    """The process's resident memory when the block starts and its highest value during it (MB),
    sampled: ru_maxrss only tells the process's all-time peak."""
    import psutil

    process, found = psutil.Process(), {}
    found["before"] = found["peak"] = process.memory_info().rss / 2**20
    done = threading.Event()

    def sample() -> None:
        while not done.wait(interval):
            found["peak"] = max(found["peak"], process.memory_info().rss / 2**20)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield found
    finally:
        done.set()
        sampler.join()


def _measure_once(storage_url: str, scans: int) -> Measurement:
    import sysdig_j1.transform  # noqa: F401  (imports are not part of the transform's time)

    started = time.perf_counter()
    entities, relationships = _graph(storage_url)
    transform_seconds, transform_peak = time.perf_counter() - started, _peak_rss_mb()
    import_seconds, quality_seconds, passed, evaluated = _quality(entities, relationships)
    quality_peak = _peak_rss_mb()
    diff_seconds, changed, rss_before, rss_peak = _diff(entities, relationships)
    return Measurement(scans, len(entities), len(relationships), transform_seconds, transform_peak,
                       import_seconds, quality_seconds, quality_peak, passed, evaluated,
                       diff_seconds, changed, rss_before, rss_peak)


def _demo_once(storage_url: str) -> tuple[int, int, float, float, int, int]:
    """(entity rows, relationship rows, *`_quality`)"""
    entities, relationships = _graph(storage_url)
    return len(entities), len(relationships), *_quality(entities, relationships)


def in_fresh_process(function: Callable, *args: object):
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# -- report ----------------------------------------------------------------------------------
def markdown_table(measurements: list[Measurement]) -> str:
    lines = [
        "| scans | entity rows | relationship rows | transform s | rows/s | peak RSS MB "
        "| quality s | quality / transform | peak RSS with quality MB | checks passed "
        "| diff s | diff / transform | objects changed | RSS before / during diff MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {m.scans:,} | {m.entity_rows:,} | {m.relationship_rows:,} | {m.transform_seconds:.1f} "
        f"| {m.rows_per_second:,.0f} | {m.peak_rss_mb:,.0f} | {m.quality_seconds:.1f} "
        f"| {m.quality_seconds / m.transform_seconds:.2f} | {m.quality_peak_rss_mb:,.0f} "
        f"| {m.checks_passed}/{m.checks_evaluated} | {m.diff_seconds:.1f} | {m.diff_seconds / m.transform_seconds:.2f} "
        f"| {m.changed_objects:,} | {m.diff_rss_before_mb:,.0f} / {m.diff_rss_peak_mb:,.0f} |"
        for m in measurements
    ]
    return "\n".join(lines)


def demo_line() -> str:
    users, teams, scans = DEMO
    url, _ = prepared_input(scans, users, teams)
    entity_rows, relationship_rows, imported, validated, passed, evaluated = in_fresh_process(_demo_once, url)
    return (f"demo ({users} users, {teams} teams, {scans} scans: {entity_rows:,} entity + {relationship_rows:,} "
            f"relationship rows), fresh process: import great_expectations {imported:.1f} s + validate "
            f"{validated:.1f} s = {imported + validated:.1f} s; {passed}/{evaluated} checks passed")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated scan counts (default %(default)s)")
    parser.add_argument("--demo", action="store_true", help="only the demo-size row (import + validate)")
    args = parser.parse_args(argv)
    if args.demo:
        print(demo_line())
        return
    sizes = [int(size) for size in args.sizes.split(",")]

    measurements, generation = [], []
    for scans in sizes:
        url, seconds = prepared_input(scans)
        generation.append(f"{scans:,} scans " + ("cached" if seconds is None else f"{seconds:.1f} s"))
        print(f"input for {generation[-1]}", flush=True)
        measurements.append(in_fresh_process(_measure_once, url, scans))
        m = measurements[-1]
        print(f"{scans:,} scans: transform {m.transform_seconds:.1f} s, quality {m.quality_seconds:.1f} s, "
              f"diff {m.diff_seconds:.1f} s", flush=True)

    imports = ", ".join(f"{m.gx_import_seconds:.1f}" for m in measurements)
    print(f"\n{os.cpu_count()} CPUs, Python {platform.python_version()}; {USERS:,} users, {TEAMS:,} teams; "
          "rows/s = (entity + relationship rows) / transform s; quality s = quality.validate on the "
          f"transform's frames (import great_expectations, timed apart: {imports} s)\n")
    print(markdown_table(measurements))
    print(f"\n{demo_line()}")
    print(f"\nInput generation (not in the table): {'; '.join(generation)}.")


if __name__ == "__main__":
    main()
