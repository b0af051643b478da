"""Issue 9's acceptance, end to end: publish; change the organisation (a user becomes admin, one is
disabled, one leaves a team, a team is removed); publish again. The run's changes.json lists
exactly those changes, the graph asset's event carries the totals, and the deployed rules,
evaluated by the JupiterOne emulator's rule engine, return exactly the affected users and team."""

from __future__ import annotations

import json

import requests
from conftest import REPO, task_states

from sysdig_j1 import monitoring
from sysdig_j1_emulators.sysdig_org import OrgSpec
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.hooks.storage import RunStorage

ADMIN, DISABLED, LEAVER, LEFT_TEAM, REMOVED_TEAM = 10007, 10008, 10009, 20001, 20003


def test_a_publish_reports_and_alerts_on_exactly_what_changed(dag, start_sysdig, jupiterone, connect, tmp_path):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    sysdig = start_sysdig(OrgSpec())
    connect(sysdig, jupiterone)
    assert set(task_states(dag.test()).values()) == {"success"}
    questions, rules = monitoring.load(REPO / "include" / "jupiterone")
    hook = JupiterOneHook(backoff=0.01)
    monitoring.deploy(hook, questions, rules, dry_run=False, remove_unlisted=False)
    again = monitoring.deploy(hook, questions, rules, dry_run=False, remove_unlisted=False)
    assert not any(again[kind][action] for kind in ("questions", "rules") for action in ("create", "update"))
    baseline = {e["name"]: e for e in jupiterone.evaluate_rules()}
    assert baseline["sysdig-new-admin"]["new"] == ["sysdig_user:10000", "sysdig_user:10001"]  # the first look
    kev_running = {e["_key"] for e in jupiterone.graph()["entities"]
                   if e.get("cisaKev") is True and e.get("open") is True and e.get("inUse") is True}
    assert set(baseline["sysdig-kev-cve-running"]["new"]) == kev_running != set()

    def change(path: str, body: dict | None = None) -> None:
        requests.post(f"{sysdig.url}/_emulator{path}", json=body, timeout=5).raise_for_status()

    change(f"/users/{ADMIN}/update", {"isAdmin": True})
    change(f"/users/{DISABLED}/update", {"isEnabled": False})
    change(f"/teams/{LEFT_TEAM}/users/{LEAVER}/remove")
    change(f"/teams/{REMOVED_TEAM}/remove")
    alerts_before = len(jupiterone.alerts())
    run = dag.test()
    assert set(task_states(run).values()) == {"success"}

    report = json.loads(RunStorage(f"file://{tmp_path}/storage", "sysdig_jupiterone", run.run_id)
                        .path("report", "changes.json").read_text())
    removed_team_members = [f"sysdig_team:{REMOVED_TEAM}|has|sysdig_user:{u}"
                            for u in (10000, 10001, 10003, 10007, 10011, 10015, 10019, 10023, 10027)]
    assert report["security"] == {
        "users_added": [], "users_removed": [], "users_disabled": [f"sysdig_user:{DISABLED}"], "users_enabled": [],
        "users_made_admin": [f"sysdig_user:{ADMIN}"], "users_no_longer_admin": [],
        # as admin, the user is now listed in every team; their own team is the one removed
        "memberships_added": [f"sysdig_team:{t}|has|sysdig_user:{ADMIN}" for t in (20000, 20001, 20002)],
        "memberships_removed": sorted([f"sysdig_team:{LEFT_TEAM}|has|sysdig_user:{LEAVER}", *removed_team_members]),
        "membership_roles_changed": [], "teams_added": [], "teams_removed": [f"sysdig_team:{REMOVED_TEAM}"],
        "image_scans_failing_policy": [], "critical_findings_opened": [], "high_findings_opened": [],
        "findings_risk_accepted": [],
    }
    changed = {c["_key"]: c["properties"] for kind in ("entities", "relationships")
               for type_ in report[kind].values() for c in type_["changed"]}
    assert changed[f"sysdig_user:{ADMIN}"] == {"admin": [False, True], "systemRole": ["ROLE_USER", "ROLE_CUSTOMER"]}
    assert changed[f"sysdig_user:{DISABLED}"] == {"active": [True, False], "enabled": [True, False]}
    assert {k: v for k, v in changed.items() if k.startswith("sysdig_team")} == {
        "sysdig_team:20000": {"userCount": [9, 10]}, "sysdig_team:20002": {"userCount": [9, 10]}}  # 20001: +1 -1
    assert len(changed) == 4
    assert report["entities"]["sysdig_team"]["removed"] == [f"sysdig_team:{REMOVED_TEAM}"]
    assert report["entities"]["sysdig_service_account"]["removed"] == ["sysdig_service_account:60003"]
    assert report["relationships"]["sysdig_account_has_team"]["removed"] == [
        f"sysdig_account:5000001|has|sysdig_team:{REMOVED_TEAM}"]

    with create_session() as session:
        asset = session.query(AssetModel).filter_by(name="sysdig_jupiterone.jupiterone_graph").one()
        event = session.query(AssetEvent).filter_by(asset_id=asset.id).order_by(AssetEvent.id.desc()).first()
        assert event.extra["totals"] == report["totals"] == {
            # the removed team, and its service account (with the team's HAS, the account's HAS and its USES zone)
            "entities": {"added": 0, "removed": 2, "changed": 4},
            "relationships": {"added": 3, "removed": 14, "changed": 0}}

    # The publish itself had the rules reading a changed type evaluated (evaluate_alert_rules): the
    # alerts are there already, not at the rules' next poll. The others found nothing new either.
    fired = {a["rule"]: a["new"] for a in jupiterone.alerts()[alerts_before:]}
    assert fired == {
        "sysdig-new-admin": [f"sysdig_user:{ADMIN}"],
        "sysdig-user-disabled": [f"sysdig_user:{DISABLED}"],
        "sysdig-user-added-to-rapid-response-team": [f"sysdig_user:{ADMIN}"],  # team 20000 has Rapid Response
        "sysdig-team-removed": [f"sysdig_team:{REMOVED_TEAM}"],
    }
    assert {e["name"]: e["alertLevel"] for e in jupiterone.evaluate_rules()} == dict.fromkeys(
        r.name for r in rules)  # nothing new at the next poll: the kev, policy and service-account rules neither
