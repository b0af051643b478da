"""Freshness benchmark: how long a change made in Sysdig takes to reach the JupiterOne graph and to
fire its alert, on the production stack (Postgres, Redis, api-server, scheduler, dag-processor,
triggerer, Celery worker, run natively as the real-stack test runs them) with the default audit
poll interval (20 s), and what the time is spent on; then what an idle account costs.

Each change is one of the five a security team watches (a user made admin, a user added to the
Rapid Response team, a never-expiring admin service account created, an agent access key created,
a user removed), made through the Sysdig emulator's admin interface, one at a time; the clock runs
from the change to the moment the JupiterOne emulator holds it, and to the moment its rule's
alert is recorded. Timestamps of the asset event, the DAG run and its tasks (Airflow's REST API)
split the wait into: the watcher's poll, the scheduler starting the run, each task.

    .venv/bin/python bench/freshness.py [--changes 20] [--idle-minutes 10] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from real_stack import deploy_rules, stack, unpause, wait_for  # noqa: E402

from sysdig_j1_emulators.jupiterone import JupiterOneEmulator  # noqa: E402
from sysdig_j1_emulators.sysdig import SysdigEmulator  # noqa: E402
from sysdig_j1_emulators.sysdig_org import OrgSpec  # noqa: E402

TOKEN, ACCOUNT, KEY = "bench-token", "bench-account", "bench-key"
DAG, QUICK, SCOPE = "sysdig_jupiterone", "sysdig_jupiterone_quick", "sysdig-j1:5000001"
ORG = OrgSpec(users=200, teams=10, scans=90)
AUDIT = "GET /platform/v1/platform-audit-events"
POLL_SECONDS = 20  # the watcher's default, which the stack keeps


def kinds(n: int) -> tuple[str, dict | None, callable, str]:
    """The n-th change: (admin route, body, whether JupiterOne holds it, the rule that alerts)."""
    user = 10020 + n
    return [
        (f"/_emulator/users/{user}/update", {"isAdmin": True},
         lambda g, k: entity(g, f"sysdig_user:{user}").get("admin") is True, "sysdig-new-admin"),
        (f"/_emulator/teams/20000/users/{user}/add", None,
         lambda g, k: f"sysdig_team:20000|has|sysdig_user:{user}" in k, "sysdig-user-added-to-rapid-response-team"),
        ("/_emulator/service-accounts", {"name": f"bot-{n}", "systemRoles": ["ROLE_CUSTOMER"]},
         None, "sysdig-new-admin-service-account"),
        ("/_emulator/access-keys", {"teamId": 20001}, None, "sysdig-new-access-key"),
        (f"/_emulator/users/{user}/remove", None, lambda g, k: f"sysdig_user:{user}" not in k, "sysdig-user-removed"),
    ][n % 5]


def entity(graph: dict, key: str) -> dict:
    return next((e for e in graph["entities"] if e["_key"] == key), {})


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def seconds(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--idle-minutes", type=float, default=10)
    parser.add_argument("--latency", type=float, default=0.05)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="sysdig-j1-freshness-"))
    sysdig = SysdigEmulator(ORG, token=TOKEN, latency=args.latency)
    jupiterone = JupiterOneEmulator(folder / "j1-state.json", account=ACCOUNT, api_key=KEY)
    sysdig.start(), jupiterone.start()
    env = {
        "AIRFLOW_CONN_SYSDIG_DEFAULT": json.dumps({"conn_type": "sysdig", "host": sysdig.url, "password": TOKEN}),
        "AIRFLOW_CONN_JUPITERONE_DEFAULT": json.dumps(
            {"conn_type": "jupiterone", "host": jupiterone.url, "login": ACCOUNT, "password": KEY}),
        "AIRFLOW_VAR_SYSDIG_J1_STORAGE_URL": f"file://{folder}/storage",
        "SYSDIG_J1_SCHEDULE": "none", "SYSDIG_J1_TASK_RETRIES": "0",
    }
    deploy_rules(REPO, env["AIRFLOW_CONN_JUPITERONE_DEFAULT"])
    try:
        with stack(folder, REPO, env) as airflow:
            unpause(airflow, DAG, QUICK)
            run = airflow.ok("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None})["dag_run_id"]
            wait_for("the first full sync", lambda: airflow.ok("GET", f"/dags/{DAG}/dagRuns/{run}")["state"]
                     == "success", 600, airflow.logs)
            time.sleep(30)  # the watcher is running and has a position
            measured = [measure(n, airflow, sysdig, jupiterone) for n in range(args.changes)]
            report(measured)
            idle(airflow, sysdig, args.idle_minutes)
    finally:
        sysdig.stop(), jupiterone.stop()


def measure(n: int, airflow, sysdig, jupiterone) -> dict:
    # A random pause first: a change lands anywhere between two polls, not just after the last run.
    time.sleep(random.Random(n).uniform(0, POLL_SECONDS))
    path, body, holds, rule = kinds(n)
    runs_before = len(airflow.ok("GET", f"/dags/{QUICK}/dagRuns", params={"limit": 1000})["dag_runs"])
    alerts_before = len(jupiterone.alerts())
    changed_at = time.time()
    created = requests.post(sysdig.url + path, json=body, timeout=5).json()
    if holds is None:  # a new service account or access key: its id is in the answer
        kind = "sysdig_service_account" if "apiKey" in created else "sysdig_access_key"
        holds = lambda g, k, key=f"{kind}:{created['id']}": key in k  # noqa: E731

    def in_graph():
        graph = jupiterone.graph(SCOPE)
        return holds(graph, {o["_key"] for kind in graph for o in graph[kind]})

    graph_at = wait_for(f"change {n} in the graph", lambda: in_graph() and time.time(), 600, airflow.logs)
    alert = wait_for(f"change {n}'s alert", lambda: next(
        (a for a in jupiterone.alerts()[alerts_before:] if a["rule"] == rule), None), 600, airflow.logs)

    def settled():
        runs = airflow.ok("GET", f"/dags/{QUICK}/dagRuns", params={"limit": 1000})["dag_runs"]
        new = runs[runs_before:]
        return new if new and all(r["state"] in ("success", "failed") for r in new) else None

    runs = wait_for("the quick run", settled, 600, airflow.logs)
    first = runs[0]
    tasks = airflow.ok("GET", f"/dags/{QUICK}/dagRuns/{first['dag_run_id']}/taskInstances")["task_instances"]
    events = airflow.ok("GET", "/assets/events", params={"limit": 50, "order_by": "-timestamp"})["asset_events"]
    event = min((e for e in events if e["source_dag_id"] is None  # the watcher's, not a DAG's outlet
                 and datetime.fromisoformat(e["timestamp"]).timestamp() >= changed_at),
                key=lambda e: e["timestamp"])
    started = {ti["task_id"]: ti for ti in tasks}
    result = {
        "graph": graph_at - changed_at, "alert": alert["at"] / 1000 - changed_at, "runs": len(runs),
        "poll": datetime.fromisoformat(event["timestamp"]).timestamp() - changed_at,
        "scheduling": seconds(event["timestamp"], started["plan_quick_sync"]["start_date"]),
        **{task: seconds(ti["start_date"], ti["end_date"]) for task, ti in started.items()},
        "between tasks": seconds(started["plan_quick_sync"]["start_date"], started["evaluate_alert_rules"]["end_date"])
        - sum(seconds(ti["start_date"], ti["end_date"]) or 0 for task, ti in started.items()
              if task not in ("confirm_published", "check_extracts_complete")),
    }
    print(f"change {n + 1:2d} ({rule}): graph {result['graph']:5.1f} s, alert {result['alert']:5.1f} s, "
          f"{len(runs)} quick run(s)", flush=True)
    return result


def report(measured: list[dict]) -> None:
    print(f"\n{len(measured)} changes, poll interval {POLL_SECONDS} s\n")
    print("| | p50 | p95 | max |\n|---|---|---|---|")
    for name in ("graph", "alert"):
        values = [m[name] for m in measured]
        print(f"| change → {name} | {percentile(values, .5):.1f} s | {percentile(values, .95):.1f} s "
              f"| {max(values):.1f} s |")
    print("\nwhere the time goes (mean over the changes):\n\n| step | seconds |\n|---|---|")
    steps = ["poll", "scheduling", "plan_quick_sync", "extract_changed", "transform", "check_quality", "load",
             "evaluate_alert_rules", "between tasks"]
    for step in steps:
        values = [m[step] for m in measured if m.get(step) is not None]
        print(f"| {step} | {statistics.mean(values):.1f} |")


def idle(airflow, sysdig, minutes: float) -> None:
    requests.post(f"{sysdig.url}/_emulator/stats/reset", timeout=5)
    runs_before = len(airflow.ok("GET", f"/dags/{QUICK}/dagRuns", params={"limit": 1000})["dag_runs"])
    time.sleep(minutes * 60)
    asked = requests.get(f"{sysdig.url}/_emulator/stats", timeout=5).json()["requests"]
    runs = len(airflow.ok("GET", f"/dags/{QUICK}/dagRuns", params={"limit": 1000})["dag_runs"]) - runs_before
    print(f"\nidle {minutes:.0f} min: {sum(asked.values())} Sysdig requests ({sum(asked.values()) / minutes:.1f} a "
          f"minute; {asked.get(AUDIT, 0)} to the audit trail), {runs} quick runs")


if __name__ == "__main__":
    main()
