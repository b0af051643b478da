"""Benchmark of the transform (raw pages -> entity and relationship frames) at scale.

Raw input is written the way the extract tasks write it, but straight from the emulator's
organisation generator (no HTTP): 100,000 users (+ users_light), 1,000 teams, their memberships
with admins, the account, and N image scans split over the runtime/pipeline/registry partitions,
in pages of 1,000 records. Each size is transformed in a fresh child process, so its peak RSS
(ru_maxrss of that process, imports included) belongs to that size alone.

    .venv/bin/python bench/transform.py [--sizes 10000,100000,1000000]

Generated input is cached under <tmp>/sysdig-j1-bench-parquet-pages/<shape>/ and reused by later runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

USERS, TEAMS, PAGE_SIZE = 100_000, 1_000, 1_000
DEFAULT_SIZES = "10000,100000,1000000"
CACHE_ROOT = Path(tempfile.gettempdir()) / "sysdig-j1-bench-parquet-pages"  # raw pages as extract writes them
COMPLETE_MARKER = "complete"  # written last, so an interrupted generation is never reused


@dataclass(frozen=True)
class Measurement:
    scans: int
    entity_rows: int
    relationship_rows: int
    transform_seconds: float
    peak_rss_mb: float

    @property
    def rows_per_second(self) -> float:
        return (self.entity_rows + self.relationship_rows) / self.transform_seconds


# -- input generation (parent process) -----------------------------------------------------
# sysdig_j1 is imported inside the functions: the spawned child re-imports this module, and should
# load only what the transform needs, so its peak RSS is the transform's.
def _pages(indices: Sequence[int], render: Callable[[int], dict]) -> Iterator[list[dict]]:
    from sysdig_j1.emulators.sysdig_org import page

    for offset in range(0, len(indices), PAGE_SIZE):
        yield [render(i) for i in page(indices, offset, PAGE_SIZE)]


def _write_organisation(storage_url: str, scans: int) -> None:
    from sysdig_j1.emulators.sysdig_org import STAGES, TEAM_ID_BASE, OrgSpec, SysdigOrg
    from sysdig_j1.hooks.storage import RunStorage
    from sysdig_j1.raw import write_page
    from sysdig_j1.scrub import Scrubber

    org = SysdigOrg(OrgSpec(users=USERS, teams=TEAMS, scans=scans))
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


def prepared_input(scans: int) -> tuple[str, float | None]:
    """Storage URL of the raw input for `scans`, and the seconds spent generating it (None: cached)."""
    folder = CACHE_ROOT / f"users{USERS}-teams{TEAMS}-scans{scans}"
    url = f"file://{folder}"
    if (folder / COMPLETE_MARKER).exists():
        return url, None
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    started = time.perf_counter()
    _write_organisation(url, scans)
    seconds = time.perf_counter() - started
    (folder / COMPLETE_MARKER).touch()
    return url, seconds


# -- measurement (child process) -----------------------------------------------------------
def _transform_once(storage_url: str, scans: int) -> Measurement:
    from sysdig_j1.hooks.storage import RunStorage
    from sysdig_j1.transform import Context, build_graph

    storage = RunStorage(storage_url, "bench", "run")
    started = time.perf_counter()
    entities, relationships, _ = build_graph(
        Context(storage, app_url="https://us2.app.sysdig.com", account_name="bench")
    )
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return Measurement(scans, len(entities), len(relationships), seconds, peak_kib / 1024)


def measure_in_fresh_process(storage_url: str, scans: int) -> Measurement:
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_transform_once, storage_url, scans).result()


# -- report ----------------------------------------------------------------------------------
def markdown_table(measurements: list[Measurement]) -> str:
    lines = [
        "| scans | entity rows | relationship rows | transform s | rows/s | peak RSS MB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {m.scans:,} | {m.entity_rows:,} | {m.relationship_rows:,} | {m.transform_seconds:.1f} "
        f"| {m.rows_per_second:,.0f} | {m.peak_rss_mb:,.0f} |"
        for m in measurements
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated scan counts (default %(default)s)")
    sizes = [int(size) for size in parser.parse_args(argv).sizes.split(",")]

    measurements, generation = [], []
    for scans in sizes:
        url, seconds = prepared_input(scans)
        generation.append(f"{scans:,} scans " + ("cached" if seconds is None else f"{seconds:.1f} s"))
        print(f"input for {generation[-1]}", flush=True)
        measurements.append(measure_in_fresh_process(url, scans))
        print(f"{scans:,} scans: transform {measurements[-1].transform_seconds:.1f} s", flush=True)

    print(f"\n{os.cpu_count()} CPUs, Python {platform.python_version()}; {USERS:,} users, {TEAMS:,} teams; "
          "rows/s = (entity + relationship rows) / transform s\n")
    print(markdown_table(measurements))
    print(f"\nInput generation (not in the table): {'; '.join(generation)}.")


if __name__ == "__main__":
    main()
