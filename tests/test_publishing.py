"""Safe publishing, end to end (`dag.test()` against both emulators): partial datasets when an
extract fails, the mass-deletion guard and its override, and dry runs."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from conftest import expected_findings, task_states

from sysdig_j1_emulators.sysdig_org import OrgSpec

# the scans and, extracted from them, the findings
SCANS = {"sysdig_image_scan", "sysdig_account_has_image_scan", "sysdig_finding", "sysdig_image_scan_identified_finding",
         "sysdig_finding_is_cve"}


def keys(graph: dict, kind: str, types: set[str] | None = None) -> set[str]:
    return {o["_key"] for o in graph[kind] if types is None or o["_type"] in types}


def remove_users(sysdig, *user_ids: int) -> None:
    for user_id in user_ids:
        requests.post(f"{sysdig.url}/_emulator/users/{user_id}/remove", timeout=5).raise_for_status()


def test_a_failed_extract_publishes_the_rest_and_keeps_its_types(dag, start_sysdig, jupiterone, connect):
    sysdig = start_sysdig(OrgSpec())
    connect(sysdig, jupiterone)
    assert task_states(dag.test())["load"] == "success"
    before = jupiterone.graph()

    remove_users(sysdig, 10005)
    requests.post(f"{sysdig.url}/_emulator/faults", json={"fail_path": "/secure/vulnerability"}, timeout=5)
    run = dag.test()

    states = task_states(run)
    assert states["extract_image_scans"] == "failed"
    assert (states["transform"], states["check_quality"], states["load"]) == ("success",) * 3
    assert states["check_extracts_complete"] == "failed" and run.state == "failed"  # alerts fire
    after = jupiterone.graph()
    for kind in ("entities", "relationships"):  # the scans JupiterOne had are all still there
        assert keys(after, kind, SCANS) == keys(before, kind, SCANS) != set()
    assert keys(before, "entities") - keys(after, "entities") == {"sysdig_user:10005"}  # the rest updated
    job = jupiterone.jobs()[-1]
    assert job["partialDatasets"] == {"types": sorted(SCANS)}
    assert job["numEntitiesDeleted"] == 1


def test_the_guard_stops_a_run_that_drops_most_users_until_overridden(dag, start_sysdig, jupiterone, connect):
    sysdig = start_sysdig(OrgSpec())
    connect(sysdig, jupiterone)
    assert task_states(dag.test())["load"] == "success"
    before = jupiterone.graph()

    remove_users(sysdig, *range(10012, 10030))  # 18 of 30 users: 60 % fewer
    states = task_states(dag.test())

    assert states["load"] == "failed"
    aborted = jupiterone.jobs()[-1]
    assert aborted["status"] == "ABORTED" and "sysdig_user: 30 -> 12 (60% fewer)" in aborted["abortReason"]
    assert jupiterone.graph() == before

    assert task_states(dag.test(run_conf={"allow_mass_deletion": True}))["load"] == "success"
    assert jupiterone.summary()["entities"]["sysdig_user"] == 12


def test_dry_run_calls_nothing_and_writes_the_would_be_upload(dag, start_sysdig, jupiterone, connect, tmp_path):
    connect(start_sysdig(OrgSpec()), jupiterone)

    run = dag.test(run_conf={"dry_run": True})

    assert task_states(run)["load"] == "success"
    assert not any("/persister/" in route for route, n in jupiterone.request_counts.items() if n)
    [folder] = Path(tmp_path, "storage").rglob("dry_run")
    entities = json.loads((folder / "entities.json").read_text())
    relationships = json.loads((folder / "relationships.json").read_text())
    found = expected_findings(OrgSpec())
    # IAM and inventory: 3 roles, 7 service accounts, 5 access keys, 3 zones, 2 SSO settings, 4 IP
    # filters, 3 clusters and 16 hosts, each owned by the account; team ASSIGNED role 1, HAS service
    # account 4, HAS access key 3, USES zone 2; cluster HAS host 12; and 18 mapped IS (12 hosts on a
    # cloud, each cluster a kube_cluster, 3 of them managed)
    platform = 3 + 7 + 5 + 3 + 2 + 4 + 3 + 16
    assert (len(entities), len(relationships)) == (
        80 + platform + found["findings"],
        115 + platform + 1 + 4 + 3 + 2 + 12 + 18 + found["findings"] + found["cve_relationships"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["entities"] == {"sysdig_account": 1, "sysdig_user": 30, "sysdig_team": 4, "sysdig_image_scan": 45,
                                   "sysdig_finding": found["findings"], "sysdig_role": 3, "sysdig_service_account": 7,
                                   "sysdig_access_key": 5, "sysdig_zone": 3, "sysdig_sso_setting": 2,
                                   "sysdig_ip_filter": 4, "sysdig_cluster": 3, "sysdig_host": 16}
    assert summary["mass_deletion_check"].startswith("not checked: first publish")
