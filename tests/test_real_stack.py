"""The DAG on the production stack, natively: Postgres, Redis, api-server, scheduler, dag-processor,
triggerer and a Celery worker (`real_stack.py`), with both emulators, driven only through
Airflow's public REST API as a platform team would drive it.

The stack starts once for this module (about 15 s) and is independent of the other tests: its
own Airflow home, metadata database, broker, emulators and storage.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pytest
import requests
from conftest import (
    J1_ACCOUNT,
    J1_KEY,
    PLATFORM_ENTITIES,
    PLATFORM_RELATIONSHIPS,
    REPO,
    SYSDIG_TOKEN,
    expected_findings,
    storage_text,
)
from real_stack import ADMIN, deploy_rules, stack, unpause, wait_for

from sysdig_j1_emulators.jupiterone import JupiterOneEmulator
from sysdig_j1_emulators.sysdig import ALL_PERMISSIONS, SysdigEmulator
from sysdig_j1_emulators.sysdig_org import OrgSpec
from sysdig_j1.extract import EXTRACTS
from sysdig_j1.model import RELATIONSHIPS

DAG, QUICK = "sysdig_jupiterone", "sysdig_jupiterone_quick"
SCOPE = "sysdig-j1:5000001"
# 330 scans: 110 runtime results, some in every shard of the findings (4 by default)
ORG = OrgSpec(scans=330)
FOUND = expected_findings(ORG)
EXPECTED = {
    "entities": {"sysdig_account": 1, "sysdig_user": 30, "sysdig_team": 4, "sysdig_image_scan": 330,
                 "sysdig_finding": FOUND["findings"], **PLATFORM_ENTITIES},
    "relationships": {"sysdig_account_has_user": 30, "sysdig_account_has_team": 4,
                      "sysdig_account_has_image_scan": 330, "sysdig_team_has_user": 36,
                      "sysdig_image_scan_identified_finding": FOUND["findings"],
                      "sysdig_finding_is_cve": FOUND["cve_relationships"], **PLATFORM_RELATIONSHIPS},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The emulators and the stack, wired as docker-compose.yaml wires them."""
    folder = tmp_path_factory.mktemp("real-stack")
    sysdig = SysdigEmulator(ORG, token=SYSDIG_TOKEN)
    jupiterone = JupiterOneEmulator(folder / "j1-state.json", account=J1_ACCOUNT, api_key=J1_KEY)
    sysdig.start(), jupiterone.start()
    env = {
        "AIRFLOW_CONN_SYSDIG_DEFAULT": json.dumps(
            {"conn_type": "sysdig", "host": sysdig.url, "password": SYSDIG_TOKEN, "extra": {"region": "us2"}}),
        "AIRFLOW_CONN_JUPITERONE_DEFAULT": json.dumps(
            {"conn_type": "jupiterone", "host": jupiterone.url, "login": J1_ACCOUNT, "password": J1_KEY}),
        "AIRFLOW_VAR_SYSDIG_J1_STORAGE_URL": f"file://{folder}/storage",
        "SYSDIG_J1_SCHEDULE": "@daily",  # backfills need a periodic schedule
        "SYSDIG_J1_TASK_RETRIES": "0",
        "SYSDIG_J1_AUDIT_POLL_SECONDS": "10",  # (default 20: `make bench` measures with it)
    }
    deploy_rules(REPO, env["AIRFLOW_CONN_JUPITERONE_DEFAULT"])
    try:
        with stack(folder, REPO, env) as airflow:
            unpause(airflow, DAG, QUICK)
            yield airflow, jupiterone, folder, sysdig
    finally:
        sysdig.stop(), jupiterone.stop()


def finished(airflow, run_id: str, timeout: float = 240, dag_id: str = DAG) -> dict:
    def done():
        run = airflow.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    return wait_for(f"run {run_id}", done, timeout, airflow.logs)


CHANGE_COUNTS = tuple(f"num{kind}{what}" for kind in ("Entities", "Relationships")
                      for what in ("Created", "Updated", "Deleted"))


def changed_objects(job: dict) -> dict[str, int]:
    """What a JupiterOne job created, updated and deleted."""
    return {name: job[name] for name in CHANGE_COUNTS}


def task_instances(airflow, run_id: str, dag_id: str = DAG) -> dict[str, dict]:
    """By task id; a mapped task's instances as `<task id>[<map index>]`."""
    listing = airflow.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
    return {ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti
            for ti in listing["task_instances"]}


@pytest.fixture(scope="module")
def first_run(world) -> str:
    airflow, _, _, _ = world
    run_id = airflow.ok("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None})["dag_run_id"]
    assert finished(airflow, run_id)["state"] == "success"
    return run_id


def test_a_triggered_run_succeeds_on_celery_and_publishes_the_graph(world, first_run):
    airflow, jupiterone, _, _ = world

    instances = task_instances(airflow, first_run)
    assert {ti["state"] for ti in instances.values()} == {"success"}
    assert jupiterone.summary(SCOPE) == EXPECTED
    hosts = {ti["hostname"] for ti in instances.values()}
    assert hosts and None not in hosts  # run by the Celery workers, not in-process


def test_shards_run_side_by_side_on_both_workers_and_one_cleared_alone_reruns_with_a_no_op_publish(world, first_run):
    """Cleared together (nothing else running), the 4 shards spread over both workers: a worker
    holds at most 2 unacknowledged tasks (concurrency 2, prefetch multiplier 1, late acks), so
    while one worker runs two shards the other two go to the other worker. That holds only while a
    shard lasts longer than the scheduler takes to queue all four; a shard of this small tenant
    lasts about a second, and one CI run had a single worker run all four, two by two. So Sysdig
    answers 3 s late while they run (a shard then lasts about 13 s). Then one shard cleared alone
    re-runs, with what follows it, and nothing else."""
    airflow, jupiterone, _, sysdig = world
    before_graph = jupiterone.graph(SCOPE)

    def clear(task_ids: list) -> tuple[dict, dict]:
        before = task_instances(airflow, first_run)
        airflow.ok("POST", f"/dags/{DAG}/clearTaskInstances", json={
            "dag_run_id": first_run, "task_ids": task_ids, "only_failed": False, "dry_run": False,
            "include_downstream": True, "include_upstream": False, "reset_dag_runs": True})
        assert finished(airflow, first_run)["state"] == "success"
        after = task_instances(airflow, first_run)
        assert jupiterone.graph(SCOPE) == before_graph
        assert changed_objects(jupiterone.jobs()[-1]) == dict.fromkeys(CHANGE_COUNTS, 0)
        return before, after

    faults = f"{sysdig.url}/_emulator/faults"
    requests.post(faults, json={"latency": 3.0}, timeout=5).raise_for_status()
    try:
        _, after = clear(["extract_findings"])
    finally:
        requests.post(faults, json={}, timeout=5).raise_for_status()
    shards = {task: (ti["hostname"].split(".")[0], ti["start_date"], ti["end_date"])
              for task, ti in after.items() if task.startswith("extract_findings[")}
    assert len(shards) == 4 and {host for host, _, _ in shards.values()} == {"worker-1", "worker-2"}, shards

    before, after = clear([["extract_findings", 2]])
    rerun = {task for task in after if after[task]["try_number"] != before[task]["try_number"]}
    assert {task for task in rerun if task.startswith("extract_")} == {"extract_findings[2]"}
    assert {"transform", "check_quality", "load"} <= rerun


def test_clearing_one_task_reruns_only_it_with_an_identical_graph(world, first_run):
    airflow, jupiterone, _, _ = world
    before_graph, before = jupiterone.graph(SCOPE), task_instances(airflow, first_run)

    airflow.ok("POST", f"/dags/{DAG}/clearTaskInstances", json={
        "dag_run_id": first_run, "task_ids": ["load"], "only_failed": False, "dry_run": False,
        "include_downstream": False, "include_upstream": False, "reset_dag_runs": True})
    assert finished(airflow, first_run)["state"] == "success"

    after = task_instances(airflow, first_run)
    tries = {task: (before[task]["try_number"], after[task]["try_number"]) for task in after}
    assert {task for task, (was, now) in tries.items() if now != was} == {"load"}
    assert jupiterone.graph(SCOPE) == before_graph
    assert jupiterone.jobs()[-1]["numEntitiesCreated"] == jupiterone.jobs()[-1]["numEntitiesDeleted"] == 0


def test_a_backfill_with_several_runs_at_once_never_has_two_jobs_open_on_the_scope(world, first_run):
    airflow, jupiterone, _, _ = world
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    backfill = airflow.ok("POST", "/backfills", json={
        "dag_id": DAG, "from_date": (today - timedelta(days=4)).isoformat(),
        "to_date": (today - timedelta(days=2)).isoformat(), "max_active_runs": 3,
        "reprocess_behavior": "completed", "run_backwards": False, "dag_run_conf": {}})

    def runs():
        listing = airflow.ok("GET", f"/dags/{DAG}/dagRuns", params={"run_type": "backfill", "limit": 50})["dag_runs"]
        return listing if len(listing) == 3 and all(r["state"] in ("success", "failed") for r in listing) else None

    backfilled = wait_for(f"backfill {backfill['id']}", runs, 300, airflow.logs)

    assert [r["state"] for r in backfilled] == ["success"] * 3
    starts = sorted(datetime.fromisoformat(r["start_date"]) for r in backfilled)
    ends = sorted(datetime.fromisoformat(r["end_date"]) for r in backfilled)
    assert starts[1] < ends[0], "the backfill runs did overlap (so the test shows what it claims)"
    jobs = sorted((j for j in jupiterone.jobs() if j["scope"] == SCOPE), key=lambda j: j["startTimestamp"])
    assert len(jobs) >= 4 and all(j["status"] == "FINISHED" for j in jobs)
    for earlier, later in zip(jobs, jobs[1:]):
        assert later["startTimestamp"] >= earlier["endTimestamp"], (earlier["id"], later["id"])
    assert jupiterone.summary(SCOPE) == EXPECTED


@pytest.mark.parametrize(("conn_type", "login", "good", "bad"), [
    ("sysdig", None, SYSDIG_TOKEN, "not-the-token"),
    ("jupiterone", J1_ACCOUNT, J1_KEY, "not-the-key"),
])
def test_both_connection_types_test_green_with_good_keys_and_red_with_bad(world, conn_type, login, good, bad):
    airflow, jupiterone, folder, _ = world
    host = json.loads(airflow.env[f"AIRFLOW_CONN_{conn_type.upper()}_DEFAULT"])["host"]

    def test(password: str) -> dict:
        return airflow.ok("POST", "/connections/test", json={
            "connection_id": f"{conn_type}_test", "conn_type": conn_type, "host": host, "login": login,
            "password": password})

    green, red = test(good), test(bad)
    assert green["status"] is True, green
    assert red["status"] is False and "401" in red["message"] and bad not in red["message"], red


def test_no_secret_in_any_log_xcom_row_or_storage_file(world, first_run):
    airflow, _, folder, _ = world
    with psycopg2.connect(airflow.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "")) as db:
        with db.cursor() as cursor:
            cursor.execute("SELECT value::text FROM xcom")
            xcom = "\n".join(row[0] or "" for row in cursor.fetchall())
    assert '"account_id"' in xcom  # the manifests are there to search
    logs = "\n".join(p.read_text(errors="replace") for p in Path(airflow.home).rglob("*.log"))
    assert "extract_users" in logs  # the task logs are there to search
    stored = storage_text(folder / "storage")
    for secret in (SYSDIG_TOKEN, J1_KEY):
        assert secret not in xcom and secret not in logs and secret not in stored


def test_the_dag_and_every_task_carry_docs_for_the_ui(world):
    airflow, _, _, _ = world

    assert "Sync a Sysdig Secure account into the JupiterOne graph" in airflow.ok("GET", f"/dags/{DAG}/details")["doc_md"]
    tasks = airflow.ok("GET", f"/dags/{DAG}/tasks")["tasks"]
    undocumented = [t["task_id"] for t in tasks if not t["doc_md"]]
    assert len(tasks) == len(EXTRACTS) + 7 and not undocumented, undocumented


def test_a_signed_in_user_finds_the_run_report_in_its_graph_changes_tab(world, first_run, browser):
    airflow, _, _, _ = world
    report = f"{airflow.url}/sysdig-j1/runs/{DAG}/{first_run}"
    assert requests.get(report, timeout=30).status_code == 401  # no login, no report

    page = browser.new_page()
    page.goto(f"{airflow.url}/dags/{DAG}/runs/{first_run}/plugin/graph-changes")
    page.fill("input[name=username]", ADMIN)  # Airflow's sign-in page first
    page.fill("input[name=password]", airflow.password)
    page.click("button[type=submit]")
    shown = page.frame_locator("iframe").locator("h1")
    shown.wait_for(timeout=60_000)
    assert shown.inner_text() == f"Sysdig → JupiterOne: {SCOPE}"
    # (the earlier tests re-ran this run's load: its report may be a baseline or a comparison)
    assert re.search(r"sysdig_user\s+\d+\s+30\b", page.frame_locator("iframe").locator("#counts").inner_text())
    assert page.get_by_text("Graph changes").first.is_visible()  # the run's tab
    page.close()

    missing = requests.get(f"{airflow.url}/sysdig-j1/runs/{DAG}/no-such-run", headers=airflow.signed_in(), timeout=30)
    assert missing.status_code == 404 and "there is no such run" in missing.text


# -- minutes, not a day: the audit watcher in the triggerer, the quick sync on the Celery worker ----
UNTOUCHED = ("sysdig_image_scan", "sysdig_finding", "sysdig_cluster", "sysdig_host", "sysdig_sso_setting",
             "sysdig_ip_filter")
ENDS = {r.type: {r.source.type, r.target.type} for r in RELATIONSHIPS}
CREATED_SECRETS: list[str] = []  # what the changes below echo in the audit trail: found nowhere after


def untouched(jupiterone) -> list[dict]:
    """Scans, findings, the inventory, SSO and IP filters, and every relationship touching them."""
    graph = jupiterone.graph(SCOPE)
    return [o for o in graph["entities"] if o["_type"] in UNTOUCHED] + [
        o for o in graph["relationships"] if ENDS[o["_type"]] & set(UNTOUCHED)]


def quick_runs(airflow) -> list[dict]:
    return airflow.ok("GET", f"/dags/{QUICK}/dagRuns", params={"limit": 100})["dag_runs"]


def settled(airflow, count_before: int) -> list[dict]:
    """The quick runs since `count_before`, once none is queued or running."""
    runs = quick_runs(airflow)
    return runs[count_before:] if all(r["state"] in ("success", "failed") for r in runs) else None


def change(sysdig, path: str, body: dict | None = None) -> dict:
    response = requests.post(sysdig.url + path, json=body, timeout=5)
    response.raise_for_status()
    return response.json()


def published_keys(airflow, jupiterone, keys: list[dict], runs_before: int) -> list[dict]:
    """Waits until JupiterOne holds every access key created, and the quick runs are done; they."""
    def landed():
        held = {e["_key"] for e in jupiterone.graph(SCOPE)["entities"]}
        return all(f"sysdig_access_key:{k['id']}" in held for k in keys)

    wait_for(f"{len(keys)} new access keys in JupiterOne", landed, 360, airflow.logs)
    return wait_for("the quick runs", lambda: settled(airflow, runs_before), 300, airflow.logs)


def test_changes_in_sysdig_reach_jupiterone_and_fire_their_alerts_touching_nothing_else(world, first_run):
    airflow, jupiterone, _, sysdig = world
    before, runs_before, alerts_before = untouched(jupiterone), len(quick_runs(airflow)), len(jupiterone.alerts())

    change(sysdig, "/_emulator/users/10005/update", {"isAdmin": True})
    change(sysdig, "/_emulator/teams/20000/users/10006/add")  # team 20000 may use Rapid Response
    account = change(sysdig, "/_emulator/service-accounts", {"name": "deploy-bot", "systemRoles": ["ROLE_CUSTOMER"]})
    key = change(sysdig, "/_emulator/access-keys", {"teamId": 20001})
    change(sysdig, "/_emulator/users/10007/remove")
    CREATED_SECRETS.extend([account["apiKey"], key["accessKey"]])

    def landed():
        graph = jupiterone.graph(SCOPE)
        keys = {o["_key"] for kind in graph for o in graph[kind]}
        users = {e["_key"]: e for e in graph["entities"] if e["_type"] == "sysdig_user"}
        return (users["sysdig_user:10005"]["admin"] and "sysdig_team:20000|has|sysdig_user:10006" in keys
                and f"sysdig_service_account:{account['id']}" in keys and f"sysdig_access_key:{key['id']}" in keys
                and "sysdig_user:10007" not in keys)

    wait_for("the five changes in JupiterOne", landed, 300, airflow.logs)
    runs = wait_for("the quick runs", lambda: settled(airflow, runs_before), 300, airflow.logs)
    fired = {a["rule"] for a in jupiterone.alerts()[alerts_before:]}
    assert {"sysdig-new-admin", "sysdig-user-added-to-rapid-response-team", "sysdig-new-admin-service-account",
            "sysdig-new-access-key", "sysdig-user-removed"} <= fired
    assert 1 <= len(runs) <= 3 and {r["state"] for r in runs} == {"success"}
    assert untouched(jupiterone) == before  # byte for byte
    hosts = {ti["hostname"] for ti in task_instances(airflow, runs[-1]["dag_run_id"], QUICK).values()}
    assert hosts and None not in hosts  # on the Celery worker


def test_fifty_changes_within_ten_seconds_land_in_at_most_three_quick_runs(world, first_run):
    airflow, jupiterone, _, sysdig = world
    runs_before = len(quick_runs(airflow))
    started = time.monotonic()
    keys = []
    for n in range(50):
        keys.append(change(sysdig, "/_emulator/access-keys", {"teamId": 20000 + n % 4}))
        time.sleep(max(0.0, started + n * 0.18 - time.monotonic()))
    assert time.monotonic() - started <= 10
    CREATED_SECRETS.extend(k["accessKey"] for k in keys)

    runs = published_keys(airflow, jupiterone, keys, runs_before)
    assert 1 <= len(runs) <= 3 and {r["state"] for r in runs} == {"success"}


def test_a_triggerer_killed_in_a_burst_misses_no_change_and_applies_none_twice(world, first_run):
    airflow, jupiterone, _, sysdig = world
    runs_before = len(quick_runs(airflow))
    keys = [change(sysdig, "/_emulator/access-keys", {"agentLimit": 5}) for _ in range(5)]
    airflow.restart("triggerer")  # SIGKILL, then a new triggerer picks the watcher up from its stored position
    keys += [change(sysdig, "/_emulator/access-keys", {"agentLimit": 5}) for _ in range(5)]
    CREATED_SECRETS.extend(k["accessKey"] for k in keys)

    runs = published_keys(airflow, jupiterone, keys, runs_before)
    assert {r["state"] for r in runs} == {"success"}
    # Applied once: a full sync now finds JupiterOne holding exactly the account as it is.
    run_id = airflow.ok("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None})["dag_run_id"]
    assert finished(airflow, run_id)["state"] == "success"
    last = sorted((j for j in jupiterone.jobs() if j["scope"] == SCOPE), key=lambda j: j["startTimestamp"])[-1]
    assert {n: c for n, c in changed_objects(last).items() if "Updated" not in n} == dict.fromkeys(
        (n for n in CHANGE_COUNTS if "Updated" not in n), 0)


def test_a_quick_and_a_full_run_started_together_never_have_two_jobs_open_on_the_scope(world, first_run):
    """Both loads run in the account's 1-slot pool. JupiterOne keeps each job open 30 s after its
    finalize here, so without the pool the two publishes would overlap."""
    airflow, jupiterone, _, _ = world
    jupiterone.configure_faults(finalize_seconds=30)
    try:
        started = time.time() * 1000
        full = airflow.ok("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None})["dag_run_id"]
        quick = airflow.ok("POST", f"/dags/{QUICK}/dagRuns", json={"logical_date": None,
                                                                   "conf": {"changed": ["users"]}})["dag_run_id"]
        assert finished(airflow, quick, 360, QUICK)["state"] == "success"
        assert finished(airflow, full, 360)["state"] == "success"
    finally:
        jupiterone.configure_faults(finalize_seconds=0)
    jobs = sorted((j for j in jupiterone.jobs() if j["scope"] == SCOPE and j["startTimestamp"] >= started),
                  key=lambda j: j["startTimestamp"])
    assert len(jobs) == 2
    assert jobs[1]["startTimestamp"] >= jobs[0]["endTimestamp"], "two jobs were open on the scope at once"
    logs = "\n".join(p.read_text(errors="replace") for p in Path(airflow.home).rglob("*.log"))
    assert re.search(r"started \d+ s after check_quality: publishes run in pool sysdig_jupiterone\.publish", logs)


def test_secrets_the_audit_trail_echoes_appear_nowhere(world, first_run):
    airflow, jupiterone, folder, _ = world
    assert len(CREATED_SECRETS) >= 60  # the service account's key and every access key created above
    with psycopg2.connect(airflow.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("+psycopg2", "")) as db:
        with db.cursor() as cursor:
            cursor.execute("SELECT value::text FROM xcom UNION ALL SELECT extra::text FROM asset_event "
                           "UNION ALL SELECT value::text FROM asset_state_store")
            database = "\n".join(row[0] or "" for row in cursor.fetchall())
    logs = "\n".join(p.read_text(errors="replace") for p in Path(airflow.home).rglob("*.log"))
    assert "audit trail:" in logs  # the watcher's log lines are there to search
    published = json.dumps(jupiterone.graph())
    stored = storage_text(folder / "storage")
    for secret in CREATED_SECRETS:
        for where, text in (("the database", database), ("logs", logs), ("JupiterOne", published),
                            ("storage", stored)):
            assert secret not in text, f"a secret from the audit trail reached {where}"


def test_without_the_audit_permission_one_warning_no_quick_run_and_the_full_sync_works(world, first_run):
    """(Last: the watcher then idles for an hour before it asks again.)"""
    airflow, jupiterone, _, sysdig = world
    sysdig.permissions = tuple(p for p in ALL_PERMISSIONS if p != "audit-trail-events.read")
    runs_before = len(quick_runs(airflow))
    change(sysdig, "/_emulator/users/10008/update", {"isAdmin": True})
    time.sleep(40)  # four polls

    assert len(quick_runs(airflow)) == runs_before
    run_id = airflow.ok("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None})["dag_run_id"]
    assert finished(airflow, run_id)["state"] == "success"
    users = {e["_key"]: e for e in jupiterone.graph(SCOPE)["entities"] if e["_type"] == "sysdig_user"}
    assert users["sysdig_user:10008"]["admin"] is True
    log = (airflow.logs / "triggerer.log").read_text(errors="replace")
    assert log.count("lacks audit-trail-events.read") == 1
