"""The quick sync, as one task at a time runs it (`dag.test()`): after a full publish, a change made
in Sysdig reaches JupiterOne through `sysdig_jupiterone_quick`, which re-reads only the listings the
change needs, publishes one DIFF job keeping every other type (partialDatasets) byte for byte, and
evaluates at once the deployed rules that read what changed, so their alert fires now.
(`test_audit_watcher` covers the watcher that starts it; `test_real_stack` the whole loop.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from conftest import REPO, task_states

from sysdig_j1 import monitoring
from sysdig_j1_emulators.sysdig_org import OrgSpec
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.model import ENTITIES, RELATIONSHIPS, reread_with

QUICK = "sysdig_jupiterone_quick"
UNTOUCHED = ("sysdig_image_scan", "sysdig_finding", "sysdig_cluster", "sysdig_host", "sysdig_sso_setting",
             "sysdig_ip_filter")
# Each change an administrator makes, the resource the audit trail names, what JupiterOne must then
# hold, and the rule whose alert must fire.
CHANGES = {
    "promote": ("/_emulator/users/10005/update", {"isAdmin": True}, "users",
                lambda graph: entity(graph, "sysdig_user:10005")["admin"] is True, "sysdig-new-admin"),
    "rapid-response": ("/_emulator/teams/20000/users/10006/add", None, "team_memberships",
                       lambda graph: "sysdig_team:20000|has|sysdig_user:10006" in keys(graph),
                       "sysdig-user-added-to-rapid-response-team"),
    "admin-service-account": ("/_emulator/service-accounts", {"name": "deploy-bot", "systemRoles": ["ROLE_CUSTOMER"]},
                              "service_accounts",
                              lambda graph: entity(graph, "sysdig_service_account:55000")["neverExpires"] is True,
                              "sysdig-new-admin-service-account"),
    "access-key": ("/_emulator/access-keys", {"teamId": 20001}, "access_keys",
                   lambda graph: "sysdig_team:20001|has|sysdig_access_key:75000" in keys(graph),
                   "sysdig-new-access-key"),
    "remove-user": ("/_emulator/users/10007/remove", None, "users",
                    lambda graph: "sysdig_user:10007" not in keys(graph), "sysdig-user-removed"),
}


def keys(graph: dict) -> set[str]:
    return {o["_key"] for kind in ("entities", "relationships") for o in graph[kind]}


def entity(graph: dict, key: str) -> dict:
    return next(e for e in graph["entities"] if e["_key"] == key)


ENDS = {r.type: {r.source.type, r.target.type} for r in RELATIONSHIPS}


def of_types(graph: dict, types: tuple[str, ...]) -> list[dict]:
    """The entities of these types and every relationship touching one, as JupiterOne holds them."""
    return [o for o in graph["entities"] if o["_type"] in types] + [
        o for o in graph["relationships"] if ENDS[o["_type"]] & set(types)]


@pytest.fixture
def quick_dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags")).get_dag(QUICK)


@pytest.fixture
def published(dag, start_sysdig, jupiterone, connect, monkeypatch):
    """A full publish, and the rules deployed (their first evaluation done: an alert is news)."""
    sysdig = start_sysdig(OrgSpec())
    connect(sysdig, jupiterone)
    assert set(task_states(dag.test()).values()) == {"success"}
    monkeypatch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(
        {"conn_type": "jupiterone", "host": jupiterone.url, "login": "test-j1-account", "password": "test-j1-key"}))
    monitoring.deploy(JupiterOneHook(), *monitoring.load(REPO / "include" / "jupiterone"), dry_run=False,
                      remove_unlisted=False)
    jupiterone.evaluate_rules()
    return sysdig


@pytest.mark.parametrize("change", CHANGES)
def test_a_change_reaches_jupiterone_and_fires_its_alert_touching_nothing_else(
        change, quick_dag, published, jupiterone):
    path, body, resource, holds, rule = CHANGES[change]
    before = jupiterone.graph()
    alerts_before = len(jupiterone.alerts())
    requests.post(published.url + path, json=body, timeout=5).raise_for_status()

    run = quick_dag.test(run_conf={"changed": [resource]})

    assert set(task_states(run).values()) == {"success"}
    after = jupiterone.graph()
    assert holds(after)
    assert of_types(after, UNTOUCHED) == of_types(before, UNTOUCHED) != []  # scans, findings, inventory, ...
    fired = [a["rule"] for a in jupiterone.alerts()[alerts_before:]]
    assert rule in fired
    job = sorted(jupiterone.jobs(), key=lambda j: j["startTimestamp"])[-1]
    assert set(UNTOUCHED) <= set(job["partialDatasets"]["types"])


def test_the_quick_sync_re_reads_only_what_the_change_needs(quick_dag, published, jupiterone):
    requests.post(f"{published.url}/_emulator/stats/reset", timeout=5)

    assert set(task_states(quick_dag.test(run_conf={"changed": ["sso_settings"]})).values()) == {"success"}

    asked = requests.get(f"{published.url}/_emulator/stats", timeout=5).json()["requests"]
    assert {path for path in asked if not path.startswith("GET /api/users/me")} == {"GET /platform/v1/sso-settings"}
    job = sorted(jupiterone.jobs(), key=lambda j: j["startTimestamp"])[-1]
    assert "sysdig_user" in job["partialDatasets"]["types"] and "sysdig_sso_setting" not in job["partialDatasets"]["types"]


def test_what_a_quick_sync_re_reads_makes_every_type_it_publishes_complete():
    """A user change re-reads every IAM listing its types are linked to, never scans or the inventory;
    and each type it then publishes has all its resources re-read."""
    for changed in ({"users"}, {"team_memberships"}, {"access_keys"}, {"sso_settings"}, {"ip_filters"}):
        reread = reread_with(changed)
        assert changed <= reread and "account" in reread
        assert not reread & {"image_scans", "findings", "clusters", "hosts"}
        published = {e.type for e in ENTITIES if set(e.resources) <= reread
                     and all(set(p.from_resources) <= reread for p in e.properties)}
        for r in RELATIONSHIPS:
            if r.source.type in published and not r.mapped and r.target.type != "sysdig_account":
                assert r.target.type in published or r.source.type == "sysdig_account", (changed, r.type)
    assert reread_with({"sso_settings"}) == {"account", "sso_settings"}


def test_both_dags_compare_with_the_same_last_publish(quick_dag, published, jupiterone, tmp_path):
    """The quick sync's change report and guard read the full sync's publish state: a promotion is
    reported once, as a change, by whichever DAG publishes it first."""
    requests.post(f"{published.url}/_emulator/users/10005/update", json={"isAdmin": True}, timeout=5)

    quick_dag.test(run_conf={"changed": ["users"]})

    reports = sorted(Path(tmp_path, "storage", QUICK).glob("*/report/changes.json"))
    assert json.loads(reports[-1].read_text())["security"]["users_made_admin"] == ["sysdig_user:10005"]
    state = json.loads(next(Path(tmp_path, "storage", "sysdig_jupiterone", "_published").glob("*.json")).read_text())
    assert state["run_folder"].endswith(reports[-1].parent.parent.name)  # the quick run's publish is the latest


@pytest.mark.parametrize("changed", [[], ["userz"]])
def test_a_quick_run_by_hand_must_name_resources_it_knows(quick_dag, start_sysdig, jupiterone, connect, changed):
    connect(start_sysdig(OrgSpec()), jupiterone)

    states = task_states(quick_dag.test(run_conf={"changed": changed}))

    assert states["plan_quick_sync"] == "failed" and jupiterone.jobs() == []
