"""Extraction benchmark: our extract vs the original JupiterOne integration's call pattern.

For each organisation shape the Sysdig emulator runs in its own process with a fixed latency per
request. We measure:
- ours: the five extract tasks the original integration's data needs, as the DAG runs them (the
  independent ones side by side), all sharing one hook and so one bound of 8 requests in flight,
  in a child process so its peak RSS is its own; requests counted by the emulator;
- the original pattern, replayed serially by a small reference client: users, teams and scans in
  pages of 250 on the legacy endpoints, then two `/api/users/{id}` detail calls per user. Past
  `--reference-limit` requests its time is extrapolated from the measured time per request
  (marked "est.");
- the physical limit ceil(requests / concurrency) * latency, and our ratio to it.
Then one rate-limited run (60 requests per minute) of the middle shape, counting 429 answers.

    .venv/bin/python bench/extract.py [--shapes 200x10x500,2000x50x5000,20000x200x50000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from functools import partial

import requests
from harness import emulator_process

TOKEN = "bench-token"
CONCURRENCY = 8


@contextmanager
def emulator(users: int, teams: int, scans: int, latency: float, rate_limit: int | None = None):
    args = ["--token", TOKEN, "--users", str(users), "--teams", str(teams), "--scans", str(scans),
            "--latency", str(latency), *(["--rate-limit-per-minute", str(rate_limit)] if rate_limit else [])]
    with emulator_process("sysdig_j1_emulators.sysdig", *args, ready_path="/_emulator/stats") as (url, _):
        yield url


def emulator_stats(url: str, reset: bool = False) -> dict:
    stats = requests.get(f"{url}/_emulator/stats", timeout=5).json()
    if reset:
        requests.post(f"{url}/_emulator/stats/reset", timeout=5)
    return stats


def run_ours(url: str) -> dict:
    """Our extract in a child process; returns its wall time and peak RSS."""
    output = subprocess.run([sys.executable, __file__, "--child", url], capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def child(url: str) -> None:
    """The extract tasks as the DAG runs them (account, users, teams -> memberships and scans side
    by side), sharing one hook and so one bound of CONCURRENCY requests in flight."""
    os.environ["AIRFLOW_CONN_SYSDIG_DEFAULT"] = json.dumps(
        {"conn_type": "sysdig", "host": url, "password": TOKEN, "extra": {"max_concurrency": CONCURRENCY}}
    )
    from concurrent.futures import ThreadPoolExecutor

    from sysdig_j1 import extract
    from sysdig_j1.hooks.storage import RunStorage
    from sysdig_j1.hooks.sysdig import SysdigHook
    from sysdig_j1.scrub import Scrubber

    def teams_then_memberships(hook: SysdigHook, storage: RunStorage, scrubber: Scrubber) -> None:
        extract.run("teams", hook, storage, scrubber)
        extract.run("team_memberships", hook, storage, scrubber)

    with tempfile.TemporaryDirectory() as folder:
        storage = RunStorage(f"file://{folder}", "bench", "run")
        hook = SysdigHook()
        hook.session  # noqa: B018 - Airflow's connection lookup is worker start-up, not extraction
        started = time.perf_counter()
        with ThreadPoolExecutor(4) as tasks:
            runs = [tasks.submit(step, hook, storage, Scrubber([TOKEN])) for step in (
                *(partial(extract.run, resource) for resource in ("account", "users", "image_scans")),
                teams_then_memberships)]
            for run in runs:
                run.result()
        wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "peak_mb": peak_mb}))


def run_reference(url: str, limit: int) -> dict:
    """The original integration's pattern: serial legacy pages of 250, then 2 detail calls per user."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {TOKEN}"
    made = 0
    started = time.perf_counter()

    def get(path: str, **params) -> dict:
        nonlocal made
        made += 1
        response = session.get(f"{url}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def pages(path: str, items: str) -> list[dict]:
        records, offset = [], 0
        while True:
            body = get(path, offset=offset, limit=250)
            records += body[items]
            offset += len(body[items])
            if not body[items] or offset >= body.get("total", body.get("totalRows", 0)):
                return records

    users = pages("/api/v2/users/light", "users")
    pages("/api/v2/teams/light", "teams")
    pages("/api/scanning/v1/resultsDirect", "results")
    planned = made + 2 * len(users)
    for user in users:
        if made >= limit:
            break
        get(f"/api/users/{user['id']}")
        get(f"/api/users/{user['id']}")
    wall = time.perf_counter() - started
    estimated = made < planned
    return {"requests": planned, "wall": wall / made * planned if estimated else wall, "estimated": estimated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="200x10x500,2000x50x5000,20000x200x50000")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--reference-limit", type=int, default=4200,
                        help="measure the original pattern up to this many requests, extrapolate beyond")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)

    rows = []
    for shape in args.shapes.split(","):
        users, teams, scans = map(int, shape.split("x"))
        with emulator(users, teams, scans, args.latency) as url:
            ours = run_ours(url)
            made = sum(emulator_stats(url, reset=True)["requests"].values())
            reference = run_reference(url, args.reference_limit)
        limit = math.ceil(made / CONCURRENCY) * args.latency
        rows.append((f"{users:,} / {teams:,} / {scans:,}", made, ours["wall"], ours["peak_mb"], reference, limit))
        print(f"measured {shape}: ours {ours['wall']:.2f}s, reference {reference['wall']:.1f}s", file=sys.stderr)

    print(f"\nExtraction at {args.latency * 1000:.0f} ms per request, concurrency {CONCURRENCY}:\n")
    print("| users / teams / scans | our requests | our wall | our peak RSS | original pattern: requests | "
          "original wall | speed-up | physical limit | ours / limit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, made, wall, peak, reference, limit in rows:
        est = " (est.)" if reference["estimated"] else ""
        print(f"| {label} | {made} | {wall:.2f} s | {peak:.0f} MB | {reference['requests']:,} | "
              f"{reference['wall']:.1f} s{est} | {reference['wall'] / wall:.0f}x | {limit:.2f} s | {wall / limit:.2f} |")

    users, teams, scans = map(int, args.shapes.split(",")[min(1, len(args.shapes.split(",")) - 1)].split("x"))
    with emulator(users, teams, scans, args.latency, rate_limit=60) as url:
        ours = run_ours(url)
        stats = emulator_stats(url)
    print(f"\nWith a limit of 60 requests/minute ({users:,} / {teams:,} / {scans:,}): "
          f"{sum(stats['requests'].values())} requests, {stats['statuses'].get('429', 0)} answered 429, "
          f"wall {ours['wall']:.1f} s")


if __name__ == "__main__":
    main()
