"""Benchmark of vulnerability findings at fleet scale: extract, transform, quality gate, publish.

For each fleet size (runtime results; the emulator lists as many pipeline and registry results,
which the default settings do not expand) the Sysdig emulator runs in its own process with 50 ms
per request, and each pipeline step runs in a child process of its own, as Airflow runs tasks,
so every peak RSS is that step's own:
- extract: the extracts the findings need (account, users, teams and memberships, image scans)
  in one process, then the findings as the DAG's mapped tasks run them: one process per shard
  (4), two at a time as on two worker slots, each with 4 requests in flight (so the account sees
  8); requests counted by the emulator; physical limit = ceil(requests / 8) x latency. A
  shard's code is the same in a LocalExecutor's task process and in a Celery worker's;
- transform, check_quality: `pipeline.transform` and `pipeline.check_quality` on what was stored;
- publish: `pipeline.load` (the change report, then one synchronization job) to a fresh
  JupiterOne in its own process on the same 2 cores: the emulator's job API, checking every object
  in Python, but counting instead of holding the graph (`jupiterone_sink.py`: the emulator itself
  would need more than this machine's memory at 5M findings); afterwards it must hold exactly the
  published counts and one CVE per distinct CVE id.

    .venv/bin/python bench/findings.py [--results 5000,25000] [--packages-per-scan 82]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import math
import os
import resource
import subprocess
import sys
import tempfile
import time

import requests
from harness import emulator_process

TOKEN, ACCOUNT, API_KEY = "bench-token", "bench-account", "bench-key"
CONCURRENCY = 8  # requests in flight for the account
SHARDS, AT_ONCE = 4, 4  # the DAG's default shards, all at once (worker slots)
PER_SHARD = CONCURRENCY // AT_ONCE  # each shard's max_concurrency: the account still sees 8 in flight
STEPS = ("extract", "transform", "check_quality", "publish")


def run_step(step: str, folder: str, sysdig_url: str, jupiterone_url: str = "") -> dict:
    output = subprocess.run([sys.executable, __file__, "--step", step, folder, sysdig_url, jupiterone_url],
                            capture_output=True, text=True)
    if output.returncode:
        raise RuntimeError(f"{step} failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


def child(step: str, folder: str, sysdig_url: str, jupiterone_url: str) -> None:
    in_flight = PER_SHARD if step.startswith("shard-") else CONCURRENCY
    os.environ["AIRFLOW_CONN_SYSDIG_DEFAULT"] = json.dumps(
        {"conn_type": "sysdig", "host": sysdig_url, "password": TOKEN, "extra": {"max_concurrency": in_flight}})
    os.environ["AIRFLOW_CONN_JUPITERONE_DEFAULT"] = json.dumps(
        {"conn_type": "jupiterone", "host": jupiterone_url or "http://127.0.0.1:9", "login": ACCOUNT,
         "password": API_KEY})
    logging.basicConfig(level=logging.WARNING)
    from sysdig_j1 import extract, pipeline
    from sysdig_j1.hooks.jupiterone import JupiterOneHook
    from sysdig_j1.hooks.storage import RunStorage
    from sysdig_j1.hooks.sysdig import SysdigHook
    from sysdig_j1.scrub import Scrubber

    storage = RunStorage(f"file://{folder}", "bench", "run")
    config_path = os.path.join(folder, "config.json")
    result: dict = {}
    if step == "before-findings":
        hook = SysdigHook()
        config = pipeline.validate_config(hook, JupiterOneHook(), storage)
        for name in ("account", "users", "teams", "team_memberships", "image_scans"):
            extract.run(name, hook, storage, Scrubber([TOKEN]))
        with open(config_path, "w") as out:
            json.dump(config, out)
    elif step.startswith("shard-"):
        from sysdig_j1.findings import Shard

        hook = SysdigHook()
        hook.session  # noqa: B018 - Airflow's connection lookup is worker start-up, not extraction
        started, cpu = time.perf_counter(), time.process_time()
        shard = Shard(int(step.removeprefix("shard-")), SHARDS)
        result = {"findings": extract.run("findings", hook, storage, Scrubber([TOKEN]), shard)["records"]}
        result["wall"], result["cpu"] = time.perf_counter() - started, time.process_time() - cpu
    else:
        with open(config_path) as config_file:
            config = json.load(config_file)
        graph_path = os.path.join(folder, "graph.json")
        started = time.perf_counter()
        if step == "transform":
            graph = pipeline.transform(storage, config)
            with open(graph_path, "w") as out:
                json.dump(graph, out)
            result["counts"] = graph["counts"]
        else:
            with open(graph_path) as graph_file:
                graph = json.load(graph_file)
            if step == "check_quality":
                result["evaluated"] = pipeline.check_quality(storage, graph)["evaluated"]
            else:
                build_page = pipeline.report_changes  # timed apart: the page must build in under 2 s

                def timed(*args, **kwargs):
                    begun = time.perf_counter()
                    built = build_page(*args, **kwargs)
                    result["report_s"] = time.perf_counter() - begun
                    return built

                pipeline.report_changes = timed
                loaded = pipeline.load(JupiterOneHook(), storage, graph, params={})
                result["sent"] = loaded["sent"]
        result["wall"] = time.perf_counter() - started
    result["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the task process's peak
    print(json.dumps(result))


def measure(results: int, packages: int, latency: float) -> dict:
    scans = results * 3  # as many pipeline and registry results, listed but not expanded
    args = ["--token", TOKEN, "--users", "50", "--teams", "5", "--scans", str(scans), "--packages-per-scan",
            str(packages), "--latency", str(latency)]
    row: dict = {"results": results}
    with tempfile.TemporaryDirectory() as folder, \
            emulator_process("sysdig_j1_emulators.sysdig", *args, ready_path="/_emulator/stats") as (sysdig, _):
        requests.get(f"{sysdig}/secure/vulnerability/v1/runtime-results", timeout=600,
                     headers={"Authorization": f"Bearer {TOKEN}"}, params={"limit": 1})  # warm the catalogue
        run_step("before-findings", folder, sysdig)
        requests.post(f"{sysdig}/_emulator/stats/reset", timeout=5)
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(AT_ONCE) as slots:
            shards = list(slots.map(lambda n: run_step(f"shard-{n}", folder, sysdig), range(SHARDS)))
        row["extract"] = {"wall": time.perf_counter() - started, "peak_mb": max(s["peak_mb"] for s in shards),
                          "findings": {name: sum(s["findings"][name] for s in shards) for name in shards[0]["findings"]}}
        asked = requests.get(f"{sysdig}/_emulator/stats", timeout=5).json()["requests"]
        row["full_results_requests"] = asked.get("GET /secure/vulnerability/v1/results/{result_id}", 0)
        row["limit"] = math.ceil(row["full_results_requests"] / CONCURRENCY) * latency
        row["shards"] = [{"wall": round(s["wall"], 1), "cpu": round(s["cpu"], 1)} for s in shards]
        row["transform"] = run_step("transform", folder, sysdig)
        row["check_quality"] = run_step("check_quality", folder, sysdig)
        with emulator_process("jupiterone_sink", "--account", ACCOUNT, "--api-key", API_KEY,
                              ready_path="/_emulator/jobs") as (jupiterone, _):
            row["publish"] = run_step("publish", folder, sysdig, jupiterone)
            held = requests.get(f"{jupiterone}/_emulator/summary", timeout=600).json()
            cves = requests.get(f"{jupiterone}/_emulator/summary?scope=system-mapper", timeout=600).json()
        published = {**row["transform"]["counts"]["entities"], **row["transform"]["counts"]["relationships"]}
        if {**held["entities"], **held["relationships"]} != {**published, **cves["entities"]}:
            raise RuntimeError(f"JupiterOne holds {held}, expected {published}")
        row["cves"] = cves["entities"].get("cve", 0)
    print(f"measured {results} results: {json.dumps(row)}", file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="5000,25000")
    parser.add_argument("--packages-per-scan", type=int, default=82, help="about 200 findings per result")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--step", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.step:
        return child(*args.step)

    rows = [measure(int(n), args.packages_per_scan, args.latency) for n in args.results.split(",")]
    print(f"\nFindings at {args.latency * 1000:.0f} ms per request, {CONCURRENCY} in flight; the findings "
          f"extract in {SHARDS} shards, {AT_ONCE} at a time, {PER_SHARD} in flight each (s = wall seconds, MB = the largest peak "
          "resident memory of the step's task processes):\n")
    print("| runtime results | findings | IS cve (CVEs) | full-result requests | extract (shards) | physical limit | "
          "extract / limit | transform | check_quality | publish (incl. change report) | total after extract |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        counts = row["transform"]["counts"]["relationships"]
        steps = {name: row[name] for name in STEPS}
        after = sum(row[name]["wall"] for name in STEPS[1:])
        print(f"| {row['results']:,} | {row['extract']['findings']['findings']:,} | "
              f"{counts.get('sysdig_finding_is_cve', 0):,} ({row['cves']:,}) | {row['full_results_requests']:,} | "
              + " | ".join(f"{steps[name]['wall']:.1f} s, {steps[name]['peak_mb']:,.0f} MB" if name != "extract"
                           else f"{steps[name]['wall']:.1f} s, {steps[name]['peak_mb']:,.0f} MB | {row['limit']:.1f} s | "
                                f"{steps[name]['wall'] / max(row['limit'], 1e-9):.2f}" for name in STEPS)
              + f" | {after:.0f} s |")
    print("\nThe change report's page (report/changes.json and report/index.html) built in "
          + ", ".join(f"{row['publish']['report_s']:.2f} s at {row['extract']['findings']['findings']:,} findings"
                      for row in rows) + ".")


if __name__ == "__main__":
    main()
