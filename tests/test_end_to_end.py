"""The whole DAG (`dag.test()`) against both emulators over loopback HTTP.

The default emulator organisation (OrgSpec()) has 30 users of which 2 admins, 4 teams, 45 image
scans (15 per stage); every non-admin user is in one team (user index i -> team i % 4) and, with
withAdminUsers=true, both admins are in every team: 28 + 2 * 4 = 36 memberships.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import pandas as pd
import requests
from conftest import (
    PLATFORM_ENTITIES,
    PLATFORM_RELATIONSHIPS,
    REPO,
    SYSDIG_TOKEN,
    expected_findings,
    storage_text,
    task_states,
)

from sysdig_j1 import pipeline
from sysdig_j1_emulators.sysdig_org import OrgSpec
from sysdig_j1.extract import EXTRACTS
from sysdig_j1.findings import Shard
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import SysdigHook
from sysdig_j1.model import RESOURCES

ACCOUNT = "sysdig_account:5000001"
SCOPE = "sysdig-j1:5000001"
ALL_TASKS = {
    "validate_config", "extract_account", "extract_users", "extract_teams", "extract_team_memberships",
    "extract_roles", "extract_service_accounts", "extract_team_service_accounts", "extract_access_keys", "extract_zones", "extract_sso_settings",
    "extract_ip_filters", "extract_clusters", "extract_hosts",
    "extract_image_scans", "extract_findings", "transform", "check_quality", "load", "evaluate_alert_rules",
    "reset_audit_watcher", "check_extracts_complete",
}


def epoch_ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).replace(tzinfo=timezone.utc).timestamp() * 1000)


def scan_key(k: int, seed: int = 7) -> str:
    return "sysdig_image_scan:" + hashlib.sha256(f"{seed}:scan:{k}".encode()).hexdigest()[:32]


def by_key(objects: list[dict]) -> dict[str, dict]:
    return {o["_key"]: o for o in objects}


def test_run_publishes_the_whole_organisation(dag, start_sysdig, jupiterone, connect, tmp_path):
    connect(start_sysdig(OrgSpec()), jupiterone, account_name="acme-prod")

    run = dag.test()

    assert task_states(run) == {task: "success" for task in ALL_TASKS}
    found = expected_findings(OrgSpec())  # test_findings checks them in detail
    assert jupiterone.summary(SCOPE) == {
        "entities": {"sysdig_account": 1, "sysdig_user": 30, "sysdig_team": 4, "sysdig_image_scan": 45,
                     "sysdig_finding": found["findings"], **PLATFORM_ENTITIES},
        "relationships": {
            "sysdig_account_has_user": 30,
            "sysdig_account_has_team": 4,
            "sysdig_account_has_image_scan": 45,
            "sysdig_team_has_user": 36,
            "sysdig_image_scan_identified_finding": found["findings"],
            "sysdig_finding_is_cve": found["cve_relationships"],
            **PLATFORM_RELATIONSHIPS,
        },
    }
    graph = jupiterone.graph(SCOPE)
    entities, relationships = by_key(graph["entities"]), by_key(graph["relationships"])

    account = entities[ACCOUNT]
    assert (account["_class"], account["name"], account["displayName"]) == ("Account", "acme-prod", "acme-prod")
    assert all(e["tag.AccountName"] == "acme-prod" for e in graph["entities"])

    admin = entities["sysdig_user:10000"]
    assert admin["_class"] == "User" and admin["name"] == admin["email"] == "user0@example.com"
    assert (admin["admin"], admin["active"], admin["systemRole"]) == (True, True, "ROLE_CUSTOMER")
    assert admin["products"] == ["SDC", "SDS"]
    assert admin["createdOn"] == epoch_ms("2024-01-01T00:00:00")
    assert admin["lastSeenOnSecure"] == 1_700_000_000_000
    assert admin["webLink"].endswith("/#/settings/users/10000")
    disabled, pending, never_seen = (entities[f"sysdig_user:{10000 + i}"] for i in (6, 10, 3))
    assert (disabled["enabled"], disabled["active"]) == (False, False)
    assert (pending["status"], pending["active"]) == ("pending", False)
    assert "lastSeenOnSecure" not in never_seen and never_seen["systemRole"] == "ROLE_USER"

    default_team = entities["sysdig_team:20000"]
    assert (default_team["name"], default_team["default"], default_team["immutable"]) == ("Secure Operations", True, True)
    assert default_team["canUseRapidResponse"] is True and default_team["canUseAgentCli"] is False
    assert [entities[f"sysdig_team:{20000 + j}"]["userCount"] for j in range(4)] == [9, 9, 9, 9]

    runtime, pipeline, registry = (entities[scan_key(k)] for k in (0, 1, 2))
    assert (runtime["stage"], runtime["fullTag"], runtime["policyStatus"]) == (
        "runtime", "docker.io/acme/service-0:1.0.0", "passed")
    assert (runtime["registry"], runtime["repository"], runtime["tag"]) == ("docker.io", "acme/service-0", "1.0.0")
    assert (runtime["_class"], runtime["category"], runtime["internal"]) == ("Assessment", "Image Scan", False)
    assert "createdOn" not in runtime  # runtime results carry no time
    assert pipeline["stage"] == "pipeline" and pipeline["createdOn"] == epoch_ms("2024-06-01T00:01:00")
    assert (registry["stage"], registry["vendor"]) == ("registry", "ecr") and "policyStatus" not in registry
    assert registry["registry"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com"
    assert isinstance(runtime["criticalVulnerabilities"], int)

    admin_membership = relationships["sysdig_team:20000|has|sysdig_user:10000"]
    assert (admin_membership["_type"], admin_membership["role"]) == ("sysdig_team_has_user", "ROLE_TEAM_MANAGER")
    custom = relationships["sysdig_team:20000|has|sysdig_user:10012"]  # user 12: 12 % 13 == 12 -> custom role
    assert (custom["role"], custom["customTeamRoleId"]) == ("CUSTOM:7", 7)
    assert relationships[f"{ACCOUNT}|has|sysdig_user:10029"]["_fromEntityKey"] == ACCOUNT

    # Every published object matches the JSON Schema generated for its type.
    schemas = {p.stem: json.loads(p.read_text()) for p in (REPO / "include" / "schemas").glob("*.json")}
    for obj in graph["entities"] + graph["relationships"]:
        if "_mapping" in obj:  # as sent: the ends' keys are what JupiterOne's mapper resolved
            obj = {k: v for k, v in obj.items() if k not in ("_fromEntityKey", "_toEntityKey")}
        jsonschema.validate(obj, schemas[obj["_type"]])

    # Secrets reach neither JupiterOne nor the run's storage (the account record carries three).
    published, stored = json.dumps(graph), storage_text(tmp_path / "storage")
    assert '"customer"' in stored and '"customer"' in published  # the account record is in both
    for secret in ("accessKey", "agentInstallParams", "intercomUserIdHash", SYSDIG_TOKEN):
        assert secret not in published and secret not in stored


def test_second_run_deletes_exactly_the_removed_user(dag, start_sysdig, jupiterone, connect):
    sysdig = start_sysdig(OrgSpec())
    connect(sysdig, jupiterone)
    assert task_states(dag.test())["load"] == "success"
    before = jupiterone.graph()

    requests.post(f"{sysdig.url}/_emulator/users/10005/remove", timeout=5).raise_for_status()
    assert task_states(dag.test())["load"] == "success"
    after = jupiterone.graph()

    def keys(graph: dict, kind: str) -> set[str]:
        return {o["_key"] for o in graph[kind]}

    assert keys(before, "entities") - keys(after, "entities") == {"sysdig_user:10005"}
    assert keys(after, "entities") <= keys(before, "entities")
    assert keys(before, "relationships") - keys(after, "relationships") == {
        f"{ACCOUNT}|has|sysdig_user:10005",
        "sysdig_team:20001|has|sysdig_user:10005",  # user 5 is in team 5 % 4 = 1
    }
    assert keys(after, "relationships") <= keys(before, "relationships")
    last_job = jupiterone.jobs()[-1]
    assert (last_job["numEntitiesDeleted"], last_job["numRelationshipsDeleted"]) == (1, 2)


def test_bad_sysdig_token_fails_validation_and_publishes_nothing(dag, start_sysdig, jupiterone, connect):
    connect(start_sysdig(OrgSpec()), jupiterone, token="not-the-token")

    states = task_states(dag.test())

    assert states["validate_config"] == states["check_extracts_complete"] == "failed"
    assert {states[t] for t in ALL_TASKS - {"validate_config", "check_extracts_complete"}} == {"upstream_failed"}
    assert jupiterone.jobs() == []


def test_duplicate_user_ids_fail_quality_and_publish_nothing(dag, start_sysdig, jupiterone, connect, tmp_path):
    connect(start_sysdig(OrgSpec(duplicate_users=2)), jupiterone)

    run = dag.test()

    states = task_states(run)
    assert states["transform"] == "success"
    assert (states["check_quality"], states["load"]) == ("failed", "upstream_failed")
    # the last task fails too, and with it the run: nothing was published
    assert (states["check_extracts_complete"], run.state) == ("failed", "failed")
    assert jupiterone.jobs() == [] and jupiterone.summary() == {"entities": {}, "relationships": {}}
    [report_path] = Path(tmp_path, "storage").rglob("quality.json")
    failed = {r["check"]: r for r in json.loads(report_path.read_text())["results"] if not r["success"]}
    unique = failed["entities ExpectColumnValuesToBeUnique(_key)"]
    assert unique["unexpected_count"] == 4  # two ids, each seen twice
    assert sorted(unique["keys"]) == ["sysdig_user:10000", "sysdig_user:10000", "sysdig_user:10001", "sysdig_user:10001"]


def test_missing_user_enrichment_does_not_break_the_run(dag, start_sysdig, jupiterone, connect):
    connect(start_sysdig(OrgSpec(), users_light="gone"), jupiterone)

    assert set(task_states(dag.test()).values()) == {"success"}

    users = [e for e in jupiterone.graph()["entities"] if e["_type"] == "sysdig_user"]
    assert len(users) == 30
    assert not any({"systemRole", "products", "lastSeenOnSecure"} & set(u) for u in users)
    assert sum(u["active"] for u in users) == sum(u["enabled"] and u["status"] == "confirmed" for u in users) > 0


def test_legacy_scanning_source(dag, start_sysdig, jupiterone, connect):
    connect(start_sysdig(OrgSpec()), jupiterone, image_scan_source="legacy-scanning")

    assert task_states(dag.test())["load"] == "success"

    scans = {e["_key"]: e for e in jupiterone.graph()["entities"] if e["_type"] == "sysdig_image_scan"}
    assert len(scans) == 45
    first = scans["sysdig_image_scan:" + hashlib.sha256(b"7:image:0").hexdigest()]
    assert (first["stage"], first["policyStatus"], first["fullTag"]) == (
        "legacy", "PASS", "docker.io/acme/service-0:1.0.0")
    assert first["createdOn"] % 1000 == 0 and first["createdOn"] > 1_600_000_000_000  # epoch s -> ms


def test_rerunning_any_task_of_a_run_gives_the_same_result(dag, start_sysdig, jupiterone, connect, tmp_path):
    connect(start_sysdig(OrgSpec()), jupiterone)
    run = dag.test()
    storage = RunStorage(f"file://{tmp_path}/storage", "sysdig_jupiterone", run.run_id)

    def outputs() -> dict[str, object]:
        files = {}
        for path in Path(str(storage.root).removeprefix("file://")).rglob("*"):
            if path.suffix == ".parquet":
                files[str(path)] = pd.read_parquet(path).to_json()
            elif path.name != "load.json":  # names the job, new on every load
                files[str(path)] = path.read_bytes() if path.is_file() else None
        return files

    before, graph_before = outputs(), jupiterone.graph()
    assert len(before) > 10

    sysdig, j1 = SysdigHook(), JupiterOneHook()
    config = pipeline.validate_config(sysdig, j1, storage)
    shards = sum(ti.task_id == "extract_findings" for ti in run.get_task_instances())
    assert shards > 1
    for resource in RESOURCES:  # in dependency order: memberships are listed per extracted team
        if EXTRACTS[resource].sharded:  # one task per shard
            for n in range(shards):
                pipeline.extract(resource, sysdig, j1, storage, shard=Shard(n, shards))
        else:
            pipeline.extract(resource, sysdig, j1, storage)
    graph = pipeline.transform(storage, config)
    pipeline.check_quality(storage, graph)
    pipeline.load(j1, storage, graph, params={})

    assert outputs() == before
    assert jupiterone.graph() == graph_before
    assert jupiterone.jobs()[-1]["numEntitiesCreated"] == jupiterone.jobs()[-1]["numEntitiesDeleted"] == 0


def test_each_publish_reports_its_changes_and_updates_the_graph_asset(dag, start_sysdig, jupiterone, connect, tmp_path):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    sysdig = start_sysdig(OrgSpec())
    connect(sysdig, jupiterone)
    first = dag.test()
    requests.post(f"{sysdig.url}/_emulator/users/10005/remove", timeout=5).raise_for_status()
    second = dag.test()

    def report(run) -> dict:
        storage = RunStorage(f"file://{tmp_path}/storage", "sysdig_jupiterone", run.run_id)
        return json.loads(storage.path("report", "changes.json").read_text())

    found = expected_findings(OrgSpec())["findings"]
    assert report(first)["totals"]["entities"] == {"added": 80 + sum(PLATFORM_ENTITIES.values()) + found, "removed": 0,
                                                   "changed": 0}  # a first publish
    changed = report(second)
    assert changed["totals"] == {"entities": {"added": 0, "removed": 1, "changed": 1},
                                 "relationships": {"added": 0, "removed": 2, "changed": 0}}
    assert changed["security"]["users_removed"] == ["sysdig_user:10005"]
    assert changed["security"]["memberships_removed"] == ["sysdig_team:20001|has|sysdig_user:10005"]
    team = {c["_key"]: c["properties"] for c in changed["entities"]["sysdig_team"]["changed"]}
    assert team["sysdig_team:20001"] == {"userCount": [9, 8]}  # and nothing else about the team

    with create_session() as session:
        asset = session.query(AssetModel).filter_by(name="sysdig_jupiterone.jupiterone_graph").one()
        latest = session.query(AssetEvent).filter_by(asset_id=asset.id).order_by(AssetEvent.id.desc()).first()
        assert latest.extra["totals"] == changed["totals"] and latest.extra["dry_run"] is False
        assert latest.extra["security"] == {"users_removed": 1, "memberships_removed": 1}
        assert latest.extra["scope"] == "sysdig-j1:5000001"
