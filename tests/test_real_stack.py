"""The DAG on the production stack, natively: Postgres, Redis, api-server, scheduler, dag-processor,
triggerer and a Celery worker (`real_stack.py`), with both emulators, driven only through
Airflow's public REST API as a platform team would drive it.

The stack starts once for this module (about 15 s) and is independent of the other tests: its
own Airflow home, metadata database, broker, emulators and storage.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg2
import pytest
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
from real_stack import stack, wait_for

from sysdig_j1.emulators.jupiterone import JupiterOneEmulator
from sysdig_j1.extract import EXTRACTS
from sysdig_j1.emulators.sysdig import SysdigEmulator
from sysdig_j1.emulators.sysdig_org import OrgSpec

DAG = "sysdig_jupiterone"
SCOPE = "sysdig-j1:5000001"
# 330 scans: 110 runtime results, enough pages for worker processes; a Celery worker's task process
# is daemonic and may start none, so this checks that the findings are then stored in the task itself
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
    }
    try:
        with stack(folder, REPO, env) as airflow:
            wait_for("the DAG", lambda: airflow.api("GET", f"/dags/{DAG}").ok, 120, airflow.logs)
            airflow.ok("PATCH", f"/dags/{DAG}", json={"is_paused": False})
            yield airflow, jupiterone, folder
    finally:
        sysdig.stop(), jupiterone.stop()


def finished(airflow, run_id: str, timeout: float = 240) -> dict:
    def done():
        run = airflow.ok("GET", f"/dags/{DAG}/dagRuns/{run_id}")
        return run if run["state"] in ("success", "failed") else None

    return wait_for(f"run {run_id}", done, timeout, airflow.logs)


def task_instances(airflow, run_id: str) -> dict[str, dict]:
    listing = airflow.ok("GET", f"/dags/{DAG}/dagRuns/{run_id}/taskInstances")
    return {ti["task_id"]: ti for ti in listing["task_instances"]}


@pytest.fixture(scope="module")
def first_run(world) -> str:
    airflow, _, _ = world
    run_id = airflow.ok("POST", f"/dags/{DAG}/dagRuns", json={"logical_date": None})["dag_run_id"]
    assert finished(airflow, run_id)["state"] == "success"
    return run_id


def test_a_triggered_run_succeeds_on_celery_and_publishes_the_graph(world, first_run):
    airflow, jupiterone, _ = world

    assert {ti["state"] for ti in task_instances(airflow, first_run).values()} == {"success"}
    assert jupiterone.summary(SCOPE) == EXPECTED
    hosts = {ti["hostname"] for ti in task_instances(airflow, first_run).values()}
    assert hosts and None not in hosts  # run by the Celery worker, not in-process


def test_clearing_one_task_reruns_only_it_with_an_identical_graph(world, first_run):
    airflow, jupiterone, _ = world
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
    airflow, jupiterone, _ = world
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
    airflow, jupiterone, folder = world
    host = json.loads(airflow.env[f"AIRFLOW_CONN_{conn_type.upper()}_DEFAULT"])["host"]

    def test(password: str) -> dict:
        return airflow.ok("POST", "/connections/test", json={
            "connection_id": f"{conn_type}_test", "conn_type": conn_type, "host": host, "login": login,
            "password": password})

    green, red = test(good), test(bad)
    assert green["status"] is True, green
    assert red["status"] is False and "401" in red["message"] and bad not in red["message"], red


def test_no_secret_in_any_log_xcom_row_or_storage_file(world, first_run):
    airflow, _, folder = world
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
    airflow, _, _ = world

    assert "Sync a Sysdig Secure account into the JupiterOne graph" in airflow.ok("GET", f"/dags/{DAG}/details")["doc_md"]
    tasks = airflow.ok("GET", f"/dags/{DAG}/tasks")["tasks"]
    undocumented = [t["task_id"] for t in tasks if not t["doc_md"]]
    assert len(tasks) == len(EXTRACTS) + 5 and not undocumented, undocumented
