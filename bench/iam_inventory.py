"""IAM and inventory benchmark: the extract tasks of roles, service accounts (global and per team),
access keys, zones, SSO settings, IP filters, clusters and hosts against a large tenant, then the
transform of what they stored.

The Sysdig emulator runs in its own process with a fixed latency per request. The nine extracts
run side by side after `extract_teams` (team service accounts are listed per team), sharing one
hook and so one bound of CONCURRENCY requests in flight (in the DAG each task has its own: this is
the slower case). We report requests per resource, wall time against the physical limit
ceil(requests / concurrency) * latency, and the transform's time for the resulting graph.

    .venv/bin/python bench/iam_inventory.py [--teams 200] [--hosts 20000] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import requests
from harness import emulator_process

TOKEN = "bench-token"
CONCURRENCY = 8
RESOURCES = ("roles", "service_accounts", "team_service_accounts", "access_keys", "zones", "sso_settings", "ip_filters",
             "clusters", "hosts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teams", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    shape = {"users": 10, "scans": 0, "teams": args.teams, "team-service-accounts": 5, "service-accounts": 200,
             "access-keys": 2_000, "roles": 50, "zones": 100, "ip-filters": 500, "clusters": 100, "hosts": args.hosts}
    flags = [item for name, value in shape.items() for item in (f"--{name}", str(value))]
    with emulator_process("sysdig_j1_emulators.sysdig", "--token", TOKEN, "--latency", str(args.latency), *flags,
                          ready_path="/_emulator/stats") as (url, _):
        os.environ["AIRFLOW_CONN_SYSDIG_DEFAULT"] = json.dumps(
            {"conn_type": "sysdig", "host": url, "password": TOKEN, "extra": {"max_concurrency": CONCURRENCY}})
        from sysdig_j1 import extract
        from sysdig_j1.hooks.storage import RunStorage
        from sysdig_j1.hooks.sysdig import SysdigHook
        from sysdig_j1.model import RELATIONSHIPS
        from sysdig_j1.scrub import Scrubber
        from sysdig_j1.transform import Context, build_graph

        with tempfile.TemporaryDirectory() as folder:
            storage = RunStorage(f"file://{folder}", "bench", "run")
            hook = SysdigHook()
            hook.session  # noqa: B018 - Airflow's connection lookup is worker start-up, not extraction
            for first in ("account", "teams"):
                extract.run(first, hook, storage, Scrubber([TOKEN]))
            requests.post(f"{url}/_emulator/stats/reset", timeout=5)
            started = time.perf_counter()
            with ThreadPoolExecutor(len(RESOURCES)) as tasks:
                manifests = list(tasks.map(lambda r: extract.run(r, hook, storage, Scrubber([TOKEN])), RESOURCES))
            wall = time.perf_counter() - started
            made = requests.get(f"{url}/_emulator/stats", timeout=5).json()["requests"]
            started = time.perf_counter()
            missing = {"users", "team_memberships", "image_scans", "findings"}  # not part of this benchmark
            entities, relationships, _ = build_graph(Context(storage, app_url=url, missing=missing))
            transform = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    records = {m["resource"]: sum(m["records"].values()) for m in manifests}
    total = sum(made.values())
    limit = math.ceil(total / CONCURRENCY) * args.latency
    print(f"\nIAM and inventory extraction at {args.latency * 1000:.0f} ms per request, concurrency {CONCURRENCY}:\n")
    print("| resource | records |\n|---|---|")
    for name in RESOURCES:
        print(f"| {name} | {records[name]:,} |")
    print("\n| route | requests |\n|---|---|")
    for route, asked in sorted(made.items()):
        print(f"| {route} | {asked} |")
    print(f"\n{total} requests in {wall:.2f} s; physical limit {limit:.2f} s; ours / limit {wall / limit:.2f}; "
          f"peak RSS {peak_mb:.0f} MB")
    counts = Counter(entities["_type"]) + Counter(relationships["_type"])
    mapped = sum(n for type_, n in counts.items() if type_ in {r.type for r in RELATIONSHIPS if r.mapped})
    print(f"transform: {len(entities):,} entities and {len(relationships):,} relationships ({mapped:,} mapped) "
          f"in {transform:.2f} s")


if __name__ == "__main__":
    main()
