"""Who and what can reach the tenant (roles, service accounts, access keys, zones, SSO, IP filters)
and what Sysdig watches (clusters, hosts), end to end: the DAG against both emulators over loopback.

Expected numbers and values come from the emulator organisation's own records (`SysdigOrg`), not
from the pipeline's rules; mapped relationships are checked against targets another
integration's scope holds, and the would-be upload for what they carry.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

import pandas as pd
import pytest
import requests
from conftest import J1_ACCOUNT, J1_KEY, REPO, SYSDIG_TOKEN, storage_text, task_states

from sysdig_j1 import extract, load, monitoring, raw
from sysdig_j1.contract import ContractError, contract_for
from sysdig_j1_emulators.jupiterone import MAPPER_SCOPE
from sysdig_j1_emulators.jupiterone_graphql import evaluate
from sysdig_j1_emulators.sysdig import ALL_PERMISSIONS
from sysdig_j1_emulators.sysdig_org import OrgSpec, SysdigOrg
from sysdig_j1.hooks.sysdig import Listing, ListingError, SysdigHook
from sysdig_j1.model import RELATIONSHIPS, SEVERITIES
from sysdig_j1.scrub import Scrubber

SCOPE = "sysdig-j1:5000001"
AUTH = {"Authorization": f"Bearer {SYSDIG_TOKEN}"}
NEW_ENTITY_TYPES = {"sysdig_role", "sysdig_service_account", "sysdig_access_key", "sysdig_zone", "sysdig_sso_setting",
                    "sysdig_ip_filter", "sysdig_cluster", "sysdig_host"}


def day_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() * 1000)


def of_type(objects: list[dict], type_: str) -> list[dict]:
    return [o for o in objects if o["_type"] == type_]


def by_key(objects: list[dict], type_: str) -> dict[str, dict]:
    return {o["_key"]: o for o in of_type(objects, type_)}


def counts(objects: list[dict]) -> dict[str, int]:
    found: dict[str, int] = {}
    for obj in objects:
        found[obj["_type"]] = found.get(obj["_type"], 0) + 1
    return found


def seed(jupiterone, scope: str, entities: list[dict]) -> None:
    """What another integration published into its own scope, through the sync-job API."""
    jobs = f"{jupiterone.url}/persister/synchronization/jobs"
    headers = {"Authorization": f"Bearer {J1_KEY}", "JupiterOne-Account": J1_ACCOUNT}
    job = requests.post(jobs, json={"source": "api", "scope": scope}, headers=headers, timeout=5).json()["job"]
    uploaded = requests.post(f"{jobs}/{job['id']}/entities", json={"entities": entities}, headers=headers, timeout=5)
    assert uploaded.status_code == 200, uploaded.text
    requests.post(f"{jobs}/{job['id']}/finalize", json={}, headers=headers, timeout=5).raise_for_status()
    for _ in range(50):
        if requests.get(f"{jobs}/{job['id']}", headers=headers, timeout=5).json()["job"]["status"] == "FINISHED":
            return
        time.sleep(0.1)
    raise AssertionError("seeding job did not finish")


def expected(spec: OrgSpec) -> dict:
    """Counts and records as the emulator serves them."""
    org = SysdigOrg(spec)
    teams = [org.public_team(j) for j in range(spec.teams)]
    keys = [org.access_key(a, [t["id"] for t in teams]) for a in range(spec.access_keys)]
    hosts = [org.host(h) for h in range(spec.hosts)]
    clusters = [org.cluster(c) for c in range(spec.clusters)]
    service_accounts = [*map(org.service_account, range(spec.service_accounts)),
                        *(org.team_service_account(j, k) for j in range(spec.teams)
                          for k in range(spec.team_service_accounts))]
    return {
        "entities": {"sysdig_role": spec.roles, "sysdig_service_account": len(service_accounts),
                     "sysdig_access_key": spec.access_keys, "sysdig_zone": spec.zones, "sysdig_sso_setting": 2,
                     "sysdig_ip_filter": spec.ip_filters, "sysdig_cluster": spec.clusters, "sysdig_host": spec.hosts},
        "relationships": {
            "sysdig_team_assigned_role": sum(t["customTeamRoleId"] is not None for t in teams),
            "sysdig_team_has_service_account": sum(sa["teamId"] is not None for sa in service_accounts),
            "sysdig_team_has_access_key": sum(k["teamId"] is not None for k in keys),
            "sysdig_team_uses_zone": sum(len(t["zoneIds"]) for t in teams),
            "sysdig_cluster_has_host": sum(h["metadata"]["cluster"] is not None for h in hosts),
        },
        "org": org, "hosts": hosts, "clusters": clusters, "keys": keys, "service_accounts": service_accounts,
    }


def test_every_new_type_publishes_with_exact_counts_and_sample_properties(dag, start_sysdig, jupiterone, connect):
    spec = OrgSpec()
    connect(start_sysdig(spec), jupiterone)
    want = expected(spec)

    assert set(task_states(dag.test()).values()) == {"success"}

    graph = jupiterone.graph(SCOPE)
    entities, relationships = counts(graph["entities"]), counts(graph["relationships"])
    assert {t: entities.get(t, 0) for t in NEW_ENTITY_TYPES} == want["entities"]
    assert {t: relationships.get(t, 0) for t in want["relationships"]} == want["relationships"]
    assert all(relationships[f"sysdig_account_has_{t.removeprefix('sysdig_')}"] == n for t, n in want["entities"].items())
    assert all(n > 0 for n in want["relationships"].values())  # every kind of relationship is exercised

    found = graph["entities"]
    role = by_key(found, "sysdig_role")["sysdig_role:7"]
    assert (role["_class"], role["name"], role["securePermissions"], role["monitorPermissions"]) == (
        "AccessRole", "Platform Operator", ["policy-events.read", "scanning.read", "runtime-policies.edit",
                                            "capture.read", "rapid-response.exec"], ["dashboards.read", "alerts.read",
                                                                                     "alerts.edit"])
    accounts = by_key(found, "sysdig_service_account")
    admin = accounts["sysdig_service_account:50000"]
    assert (admin["scope"], admin["admin"], admin["neverExpires"], admin["systemRoles"]) == (
        "global", True, True, ["ROLE_CUSTOMER"])
    assert "expiresOn" not in admin and admin["lastUsedOn"] == day_ms("2024-01-31")  # 30 days after creation
    team_sa = accounts["sysdig_service_account:60001"]
    assert (team_sa["scope"], team_sa["teamId"], team_sa["teamRole"], team_sa["admin"], team_sa["neverExpires"]) == (
        "team", 20001, "ROLE_TEAM_STANDARD", False, False)
    assert team_sa["expiresOn"] == day_ms("2024-06-01")  # a year after its creation
    keys = by_key(found, "sysdig_access_key")
    disabled, limited = keys["sysdig_access_key:70003"], keys["sysdig_access_key:70002"]
    assert (disabled["_class"], disabled["name"], disabled["enabled"], "agentLimit" in disabled) == (
        "AccessKey", "Agent access key 70003", False, False)
    assert disabled["disabledOn"] == disabled["createdOn"] + 9 * 86_400_000 and "teamId" not in disabled
    assert (limited["enabled"], limited["agentLimit"], limited["agentReservation"], limited["teamId"]) == (
        True, 20, 2, 20002)
    zone = by_key(found, "sysdig_zone")["sysdig_zone:40001"]
    assert (zone["_class"], zone["name"], zone["scopeTargetTypes"], zone["scopeRules"]) == (
        "Group", "zone-1", ["kubernetes", "aws"], ['clusterId in ("prod-1")', 'account in ("123456789012")'])
    assert by_key(found, "sysdig_zone")["sysdig_zone:40000"]["system"] is True
    sso = by_key(found, "sysdig_sso_setting")
    assert (sso["sysdig_sso_setting:1"]["name"], sso["sysdig_sso_setting:1"]["type"],
            sso["sysdig_sso_setting:1"]["passwordLoginEnabled"]) == ("Okta", "SAML", False)
    assert (sso["sysdig_sso_setting:2"]["name"], sso["sysdig_sso_setting:2"]["active"],
            sso["sysdig_sso_setting:2"]["passwordLoginEnabled"]) == ("SSO (OPENID, monitor)", False, True)
    ip = by_key(found, "sysdig_ip_filter")["sysdig_ip_filter:80001"]
    assert (ip["name"], ip["enabled"], ip["allowed"], "note" in ip) == ("203.0.113.1/32", True, True, False)
    cluster = by_key(found, "sysdig_cluster")["sysdig_cluster:prod-0"]
    served = want["clusters"][0]
    assert (cluster["_class"], cluster["id"], cluster["distribution"], cluster["arn"], cluster["lastSeenOn"]) == (
        "Cluster", served["hash"], "EKS", served["metadata"]["arn"], served["lastSeen"] * 1000)
    summary, in_use = served["vulnerabilitySummary"], served["inUseVulnerabilitySummary"]
    assert {level: cluster[f"{level}Vulnerabilities"] for level in SEVERITIES} == {
        level: summary[f"{level}SeverityCount"] for level in SEVERITIES}  # from the published field names
    assert (cluster["hasExploit"], cluster["inUseCriticalVulnerabilities"], cluster["inUseHighVulnerabilities"]) == (
        summary["hasExploit"], in_use["criticalSeverityCount"], in_use["highSeverityCount"])
    host = by_key(found, "sysdig_host")[f"sysdig_host:{want['hosts'][0]['hash']}"]
    assert all(isinstance(host[f"{level}Vulnerabilities"], int) for level in SEVERITIES)
    assert (host["_class"], host["hostname"], host["cluster"], host["instanceId"], host["zoneNames"]) == (
        "Host", "node-0", "prod-0", want["hosts"][0]["metadata"]["providerID"].rsplit("/", 1)[1],
        ["Entire Infrastructure"])
    team = by_key(found, "sysdig_team")["sysdig_team:20002"]
    assert (team["allZones"], team["customTeamRoleId"], "defaultTeamRole" in team) == (False, 7, False)
    assert by_key(found, "sysdig_team")["sysdig_team:20000"]["allZones"] is True
    edges = {(r["_fromEntityKey"], r["_toEntityKey"]) for r in graph["relationships"]}
    assert {("sysdig_team:20002", "sysdig_role:7"), ("sysdig_team:20002", "sysdig_zone:40001"),
            ("sysdig_team:20001", "sysdig_service_account:60001"), ("sysdig_team:20000", "sysdig_access_key:70000"),
            ("sysdig_cluster:prod-0", host["_key"])} <= edges

    # The questions the new types make possible find exactly what they ask about.
    questions = {q.name: q.query for q in monitoring.load(REPO / "include" / "jupiterone")[0]}

    def answer(name: str) -> list[str]:
        now = int(time.time() * 1000)
        return sorted(e["_key"] for e in evaluate(questions[name], graph["entities"], graph["relationships"], now))

    accounts = want["service_accounts"]
    assert answer("sysdig-admin-service-accounts-never-expiring") == sorted(
        f"sysdig_service_account:{sa['id']}" for sa in accounts if sa["expirationDate"] is None
        and ("ROLE_CUSTOMER" in sa["systemRoles"] or sa["teamRole"] == "ROLE_TEAM_MANAGER")) != []
    assert answer("sysdig-service-accounts-unused-90-days") == sorted(  # every use was in 2023-2024
        f"sysdig_service_account:{sa['id']}" for sa in accounts if sa["lastUsed"] is not None)
    assert answer("sysdig-access-keys-without-agent-limit") == [
        f"sysdig_access_key:{k['id']}" for k in want["keys"] if k["isEnabled"] and k["agentLimit"] is None] != []
    assert answer("sysdig-teams-limited-to-zones") == ["sysdig_team:20002", "sysdig_team:20003"]
    assert answer("sysdig-password-login-besides-sso") == []  # Okta is on with password login off


def test_mapped_relationships_find_other_integrations_assets_and_never_create_them(
        dag, start_sysdig, jupiterone, connect, tmp_path):
    spec = OrgSpec()
    want = expected(spec)
    hosts, clusters = want["hosts"], want["clusters"]
    # Each group of 4 hosts runs on one cloud: 3 nodes naming their machine in providerID (our
    # reading), then a host of no cluster naming it in the documented arn or resourceId.
    aws_host, azure_host, gce_host = hosts[0], hosts[4], hosts[8]
    plain_ec2, plain_vm, plain_gce = hosts[3], hosts[7], hosts[11]
    instance_id = aws_host["metadata"]["providerID"].rsplit("/", 1)[1]
    vm_id = azure_host["metadata"]["providerID"].removeprefix("azure://").lower()
    _, _, project, zone, name = gce_host["metadata"]["providerID"].split("/")
    plain_instance = plain_ec2["metadata"]["arn"].rsplit("/", 1)[1]
    plain_gce_name = plain_gce["metadata"]["resourceId"].rsplit("/", 1)[1]
    theirs = [
        {"_key": f"arn:aws:ec2:us-east-1:123456789012:instance/{instance_id}", "_type": "aws_instance",
         "_class": "Host", "instanceId": instance_id},
        {"_key": vm_id, "_type": "azure_vm", "_class": "Host"},
        {"_key": f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/instances/{name}",
         "_type": "google_compute_instance", "_class": "Host"},
        {"_key": "kube_cluster:prod-1", "_type": "kube_cluster", "_class": "Cluster"},
        {"_key": clusters[0]["metadata"]["arn"], "_type": "aws_eks_cluster", "_class": "Cluster",
         "arn": clusters[0]["metadata"]["arn"]},
        {"_key": clusters[1]["metadata"]["resourceId"].lower(), "_type": "azure_kubernetes_cluster",
         "_class": "Cluster"},
        {"_key": f"google_container_cluster:{clusters[2]['metadata']['resourceId']}",
         "_type": "google_container_cluster", "_class": "Cluster"},
        {"_key": plain_ec2["metadata"]["arn"], "_type": "aws_instance", "_class": "Host", "instanceId": plain_instance},
        {"_key": plain_vm["metadata"]["resourceId"].lower(), "_type": "azure_vm", "_class": "Host"},
        {"_key": f"https://www.googleapis.com/compute/v1/projects/acme-prod/zones/us-central1-a/instances/"
                 f"{plain_gce_name}", "_type": "google_compute_instance", "_class": "Host"},
    ]
    for entity in theirs:
        entity["name"] = entity["displayName"] = entity["_key"].rsplit("/", 1)[-1]
    seed(jupiterone, "other-clouds", theirs)
    connect(start_sysdig(spec), jupiterone)

    assert set(task_states(dag.test()).values()) == {"success"}

    host_key, cluster_key = "sysdig_host:{}".format, "sysdig_cluster:{}".format
    resolved = {(r["_type"], r["_fromEntityKey"], r["_toEntityKey"]) for r in jupiterone.graph(SCOPE)["relationships"]
                if r["_class"] == "IS" and r["_type"] != "sysdig_finding_is_cve"}
    assert resolved == {
        ("sysdig_host_is_aws_instance", host_key(aws_host["hash"]), theirs[0]["_key"]),
        ("sysdig_host_is_azure_vm", host_key(azure_host["hash"]), theirs[1]["_key"]),
        ("sysdig_host_is_google_compute_instance", host_key(gce_host["hash"]), theirs[2]["_key"]),
        ("sysdig_cluster_is_kube_cluster", cluster_key("prod-1"), "kube_cluster:prod-1"),
        ("sysdig_cluster_is_aws_eks_cluster", cluster_key("prod-0"), theirs[4]["_key"]),
        ("sysdig_cluster_is_azure_kubernetes_cluster", cluster_key("prod-1"), theirs[5]["_key"]),
        ("sysdig_cluster_is_google_container_cluster", cluster_key("prod-2"), theirs[6]["_key"]),
        ("sysdig_host_is_aws_instance", host_key(plain_ec2["hash"]), theirs[7]["_key"]),
        ("sysdig_host_is_azure_vm", host_key(plain_vm["hash"]), theirs[8]["_key"]),
        ("sysdig_host_is_google_compute_instance", host_key(plain_gce["hash"]), theirs[9]["_key"]),
    }
    assert jupiterone.graph("other-clouds")["entities"] == sorted(theirs, key=lambda e: e["_key"])  # not changed
    created = {e["_type"] for e in jupiterone.graph(MAPPER_SCOPE)["entities"]}
    assert created <= {"cve"}  # no host or cluster target was created, though most had none to find

    # What was uploaded: every host on a cloud and every cluster asks for its target, never creating it.
    graph_file = max((tmp_path / "storage").rglob("graph/relationships.parquet"), key=lambda p: p.stat().st_mtime)
    uploaded = [o for o in load.graph_objects(pd.read_parquet(graph_file)) if "_mapping" in o
                and o["_type"] != "sysdig_finding_is_cve"]
    targets = {r.type: r.target for r in RELATIONSHIPS if r.mapped}
    for rel in uploaded:
        target, mapping = targets[rel["_type"]], rel["_mapping"]
        assert mapping["skipTargetCreation"] is True and mapping["relationshipDirection"] == "FORWARD"
        assert mapping["targetFilterKeys"] == [["_type", target.match]]
        assert mapping["targetEntity"]["_type"] == target.type and target.match in mapping["targetEntity"]
    on_cloud = sum(any(h["metadata"].get(f) for f in ("providerID", "arn", "resourceId")) for h in hosts)
    assert (len(uploaded), on_cloud) == (on_cloud + spec.clusters + 3, 12)  # kube_cluster each, 3 managed
    match = {(r["_type"], r["_mapping"]["targetEntity"][targets[r["_type"]].match]) for r in uploaded}
    assert ("sysdig_host_is_aws_instance", instance_id) in match
    assert ("sysdig_host_is_azure_vm", vm_id) in match and vm_id.startswith("/subscriptions/")


def test_a_token_lacking_two_permissions_keeps_those_resources_objects(
        dag, start_sysdig, jupiterone, connect, capfd, caplog):
    spec = OrgSpec()
    connect(start_sysdig(spec), jupiterone)
    assert set(task_states(dag.test()).values()) == {"success"}
    before = jupiterone.graph(SCOPE)

    limited = start_sysdig(OrgSpec(ip_filters=3, hosts=12),
                           permissions=[p for p in ALL_PERMISSIONS if p not in ("zones.read",
                                                                                "customer-access-keys.read")])
    connect(limited, jupiterone)
    run = dag.test()

    assert set(task_states(run).values()) == {"success"} and run.state == "success"
    after = jupiterone.graph(SCOPE)
    kept_types = {"sysdig_zone", "sysdig_account_has_zone", "sysdig_team_uses_zone", "sysdig_access_key",
                  "sysdig_account_has_access_key", "sysdig_team_has_access_key"}
    for kind in ("entities", "relationships"):
        assert [o for o in after[kind] if o["_type"] in kept_types] == [
            o for o in before[kind] if o["_type"] in kept_types] != []
    assert len(of_type(after["entities"], "sysdig_ip_filter")) == 3  # the rest was published, changes and all
    assert len(of_type(after["entities"], "sysdig_host")) == 12
    logs = capfd.readouterr().out + caplog.text
    assert "zones will not be extracted: the token lacks the permission zones.read" in logs
    assert "access_keys will not be extracted: the token lacks the permission customer-access-keys.read" in logs
    asked = requests.get(f"{limited.url}/_emulator/stats", timeout=5).json()
    assert not [route for route in asked["requests"] if "zones" in route or "access-keys" in route]
    assert "403" not in asked["statuses"]
    assert jupiterone.jobs()[-1]["partialDatasets"] == {"types": sorted(kept_types)}


def test_a_switched_off_resource_is_removed_and_its_dependents_with_it(
        dag, start_sysdig, jupiterone, connect, capfd, caplog):
    spec = OrgSpec()
    sysdig = start_sysdig(spec)
    connect(sysdig, jupiterone)
    assert set(task_states(dag.test()).values()) == {"success"}
    before = jupiterone.graph(SCOPE)

    connect(sysdig, jupiterone, disabled_resources="hosts, team_memberships, team_service_accounts")
    run = dag.test()

    assert set(task_states(run).values()) == {"success"}  # the mass-deletion guard does not object: on purpose
    after = jupiterone.graph(SCOPE)
    removed = {"sysdig_host", "sysdig_account_has_host", "sysdig_cluster_has_host", "sysdig_team_has_user",
               "sysdig_team_has_service_account"}
    assert not [o for kind in after.values() for o in kind if o["_type"] in removed]
    # service accounts are fed by two resources: with the team ones off, the global ones remain
    fed_apart = {"sysdig_team", "sysdig_service_account", "sysdig_account_has_service_account"}
    for kind in ("entities", "relationships"):
        unchanged = [o for o in before[kind] if o["_type"] not in removed | fed_apart]
        assert [o for o in after[kind] if o["_type"] not in removed | fed_apart] == unchanged
    assert [o["_key"] for o in of_type(after["entities"], "sysdig_service_account")] == [
        f"sysdig_service_account:{50000 + g}" for g in range(spec.service_accounts)]
    assert len(of_type(after["relationships"], "sysdig_account_has_service_account")) == spec.service_accounts
    teams = of_type(after["entities"], "sysdig_team")
    assert len(teams) == spec.teams and not [t for t in teams if "userCount" in t]  # counted from memberships
    assert jupiterone.jobs()[-1]["partialDatasets"] == {"types": []}
    logs = capfd.readouterr().out + caplog.text
    assert "hosts will not be extracted: switched off (disabled_resources)" in logs
    assert "JupiterOne removes every object of" in logs

    connect(sysdig, jupiterone, disabled_resources="account")
    refused = dag.test()
    assert task_states(refused)["validate_config"] == "failed"
    assert "disabled_resources names ['account'], which cannot be switched off" in capfd.readouterr().out + caplog.text


def test_access_key_values_and_sso_client_secrets_never_leave(dag, start_sysdig, jupiterone, connect, tmp_path,
                                                               capfd, caplog):
    spec = OrgSpec()
    sysdig = start_sysdig(spec)
    connect(sysdig, jupiterone)
    org = SysdigOrg(spec)
    served = requests.get(f"{sysdig.url}/platform/v1/access-keys", headers=AUTH, timeout=5).json()["data"]
    secrets = [key["accessKey"] for key in served] + [org.sso_client_secret()]
    assert secrets[0] == org.access_key_value(0) and len(secrets) == spec.access_keys + 1

    assert set(task_states(dag.test()).values()) == {"success"}

    stored = storage_text(tmp_path / "storage")
    logs = capfd.readouterr().out + caplog.text
    published = json.dumps(jupiterone.graph())
    assert "Agent access key 70000" in published and "sysdig-monitor" in stored  # what is not secret is there
    for secret in secrets:
        assert secret not in stored and secret not in logs and secret not in published


@pytest.mark.parametrize(("change", "problem"), [
    (lambda summary: summary.pop("criticalSeverityCount"), "field 'vulnerabilitySummary.criticalSeverityCount' is "
                                                           "missing or null, but Sysdig's published model requires it"),
    (lambda summary: summary.update(critical=summary.pop("criticalSeverityCount")),
     "field 'vulnerabilitySummary.criticalSeverityCount' is missing"),
    (lambda summary: summary.update(highSeverityCount="2"), "field 'vulnerabilitySummary.highSeverityCount' should be "
                                                            "an integer"),
])
def test_an_inventory_summary_without_a_published_count_fails_the_contract_naming_it(change, problem):
    """A renamed count is an error, never a null: the counts were once read under the wrong names."""
    record = SysdigOrg(OrgSpec()).host(0)
    change(record["vulnerabilitySummary"])
    with pytest.raises(ContractError, match=re.escape(problem)):
        raw.encode_page([record], contract_for("hosts"), Scrubber(), "hosts: GET /secure/inventory/v1/resources page 0")
    del record["vulnerabilitySummary"]  # the summary itself may be absent: then there are no counts
    raw.encode_page([record], contract_for("hosts"), Scrubber(), "hosts: GET /secure/inventory/v1/resources page 0")


def test_the_emulator_pages_the_inventory_by_number_and_forbids_without_permission(start_sysdig):
    sysdig = start_sysdig(OrgSpec(), permissions=("users.read",))

    def get(path: str, **params) -> requests.Response:
        return requests.get(f"{sysdig.url}{path}", params=params, headers=AUTH, timeout=5)

    first = get("/secure/inventory/v1/resources", pageNumber=1, pageSize=5, filter='type in ("Host", "Node")').json()
    assert (first["page"], len(first["data"])) == ({"previous": None, "next": 2, "total": 4}, 5)  # total: pages
    last = get("/secure/inventory/v1/resources", pageNumber=4, pageSize=5, filter='type in ("Host", "Node")').json()
    assert (last["page"]["next"], [h["name"] for h in last["data"]]) == (None, ["node-15"])
    clusters = get("/secure/inventory/v1/resources", filter='type = "Cluster"').json()
    assert (clusters["page"]["total"], len(clusters["data"])) == (1, 3)
    assert get("/secure/inventory/v1/resources", filter="type ~ Cluster").status_code == 400
    assert get("/secure/inventory/v1/resources", pageSize=1001).status_code == 400
    for path in ("/platform/v1/roles", "/platform/v1/service-accounts", "/platform/v1/teams/20000/service-accounts",
                 "/platform/v1/access-keys", "/platform/v1/zones", "/platform/v1/sso-settings",
                 "/platform/v1/ip-filters"):
        assert get(path).status_code == 403, path
    whole = requests.get(f"{start_sysdig(OrgSpec()).url}/platform/v1/sso-settings", headers=AUTH, timeout=5).json()
    assert set(whole) == {"data"} and len(whole["data"]) == 2  # SSO settings are one unpaged answer


def test_switching_off_or_lacking_a_resource_takes_what_is_listed_per_record_of_it():
    assert extract.switched_off(["teams"]) == {
        "teams": "switched off (disabled_resources)",
        "team_memberships": "it is listed per teams record, and teams is switched off",
        "team_service_accounts": "it is listed per teams record, and teams is switched off",
    }
    assert extract.unreadable({"users.read", "customer-teams.read", "memberships.read", "roles.read",
                               "global-service-accounts.read", "customer-access-keys.read", "zones.read",
                               "sso-settings.read", "ip-filters.read"}) == {
        "team_service_accounts": "the token lacks the permission team-service-accounts.read"}
    with pytest.raises(ValueError, match=r"disabled_resources names \['zone'\], which cannot be switched off"):
        extract.switched_off(["zone"])


@pytest.mark.parametrize(("hosts", "page_size", "pages"), [
    (16, 1000, 1), (10, 5, 2), (25, 5, 5), (21, 1, 21), (20_500, 1000, 21), (0, 1000, 0)])
def test_page_number_listings_are_complete_whatever_the_page_size(start_sysdig, monkeypatch, hosts, page_size, pages):
    """page.total counts pages, as Sysdig publishes it: every one is read, and no record twice."""
    sysdig = start_sysdig(OrgSpec(hosts=hosts, clusters=0))
    monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(
        {"conn_type": "sysdig", "host": sysdig.url, "password": SYSDIG_TOKEN, "extra": {"region": "us2"}}))
    listing = Listing("/secure/inventory/v1/resources", "hosts", paging="page", limit=page_size,
                      params={"filter": 'type in ("Host", "Node")'})
    found = sorted(SysdigHook().iter_pages([listing]), key=lambda p: p.number)
    names = [h["name"] for page in found for h in page.records]
    assert (len([page for page in found if page.records]), names) == (pages, [f"node-{h}" for h in range(hosts)])


@pytest.mark.parametrize(("scenario", "listing", "problem"), [
    ("short_inventory_pages", Listing("/secure/inventory/v1/resources", "hosts", paging="page", limit=5,
                                      params={"filter": 'type in ("Host", "Node")'}),
     r"incomplete listing: page \d: page \d of 4 \(page.total counts pages\) holds 4 records; every page but the last "
     "must hold 5"),
    ("missing_inventory_page", Listing("/secure/inventory/v1/resources", "hosts", paging="page", limit=5,
                                       params={"filter": 'type in ("Host", "Node")'}),
     r"incomplete listing: page \d: page \d of 5 \(page.total counts pages\) holds [01] records; "),
    ("missing_inventory_page", Listing("/secure/inventory/v1/resources", "hosts", paging="page", limit=1000,
                                       params={"filter": 'type in ("Host", "Node")'}),
     r"incomplete listing: page 0: page 1 of 2 \(page.total counts pages\) holds 16 records; every page but the "
     "last must hold 1000"),
    ("paged_sso_settings", Listing("/platform/v1/sso-settings", "sso_settings", paging="none"),
     r"incomplete listing: page 0: the answer points to a next page of a listing that has no paging"),
])
def test_a_listing_that_drops_rows_or_hides_pages_fails(start_sysdig, monkeypatch, scenario, listing, problem):
    sysdig = start_sysdig(OrgSpec(), scenario=scenario)
    monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(
        {"conn_type": "sysdig", "host": sysdig.url, "password": SYSDIG_TOKEN, "extra": {"region": "us2"}}))
    with pytest.raises(ListingError, match=re.escape(f"GET {listing.path} failed: ") + problem):
        list(SysdigHook().iter_pages([listing]))
