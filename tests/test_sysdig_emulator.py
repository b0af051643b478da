"""The Sysdig emulator over real HTTP: shapes, paging, limits, errors, injected faults and
integrity scenarios."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pytest
import requests

from sysdig_j1_emulators.sysdig import (SCENARIOS, SysdigEmulator, encode_cursor,
                                        nested_secret_canaries)
from sysdig_j1_emulators.sysdig_org import OrgSpec

TOKEN = "emulator-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STAGES = ("runtime", "pipeline", "registry")


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The default organisation, shared by the tests that only read."""
    emulator = SysdigEmulator()
    yield emulator.start()
    emulator.stop()


@pytest.fixture
def start() -> Iterator[Any]:
    """Start an emulator private to one test (for mutations, faults and odd organisations)."""
    started: list[SysdigEmulator] = []

    def _start(**kwargs: Any) -> str:
        emulator = SysdigEmulator(**kwargs)
        started.append(emulator)
        return emulator.start()

    yield _start
    for emulator in started:
        emulator.stop()


def get(base: str, path: str, **params: Any) -> requests.Response:
    return requests.get(base + path, params=params, headers=AUTH, timeout=10)


def set_faults(base: str, **faults: Any) -> None:
    requests.post(f"{base}/_emulator/faults", json=faults, timeout=5).raise_for_status()


def offset_pages(base: str, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    """Follow page.next of a /platform/v1 endpoint to the end, checking every envelope."""
    pages, offset = [], 0
    while True:
        body = get(base, path, offset=offset, limit=limit, **params).json()
        pages.append(body)
        assert len(body["data"]) <= limit
        if body["page"]["next"] is None:
            return pages
        assert body["page"]["next"] == str(offset + limit)
        offset = int(body["page"]["next"])


def offset_items(base: str, path: str, limit: int, **params: Any) -> list[dict[str, Any]]:
    return [item for body in offset_pages(base, path, limit, **params) for item in body["data"]]


def cursor_items(base: str, stage: str, limit: int) -> list[dict[str, Any]]:
    items, params = [], {"limit": limit}
    while True:
        body = get(base, f"/secure/vulnerability/v1/{stage}-results", **params).json()
        items.extend(body["data"])
        if "next" not in body["page"]:
            return items
        params["cursor"] = body["page"]["next"]


def result_id(k: int, seed: int = 7) -> str:
    return hashlib.sha256(f"{seed}:scan:{k}".encode()).hexdigest()[:32]


# -- authentication ----------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}])
def test_legacy_401_is_json_served_as_text_plain(base_url: str, headers: dict[str, str]) -> None:
    response = requests.get(f"{base_url}/api/users/me", headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    body = json.loads(response.text)
    assert body["message"] == "cannot verify credentials"
    assert body["referenceId"] == response.headers["x-request-id"]


@pytest.mark.parametrize("path", ["/platform/v1/users", "/platform/v1/teams/20000/users",
                                  "/secure/vulnerability/v1/runtime-results"])
def test_public_401_uses_the_error_schema(base_url: str, path: str) -> None:
    response = requests.get(base_url + path, headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json() == {"type": "unauthorized", "message": "Access denied.", "details": []}


def test_a_custom_token_replaces_the_default(start: Any) -> None:
    base = start(token="s3cret")
    assert get(base, "/platform/v1/users").status_code == 401
    ok = requests.get(f"{base}/platform/v1/users", headers={"Authorization": "Bearer s3cret"},
                      timeout=5)
    assert ok.status_code == 200


# -- users, teams, memberships -----------------------------------------------------------------
def test_users_paged_to_the_end_are_exactly_the_org(base_url: str) -> None:
    users = offset_items(base_url, "/platform/v1/users", limit=7)
    assert [u["id"] for u in users] == list(range(10000, 10030))
    assert [u["email"] for u in users] == [f"user{i}@example.com" for i in range(30)]
    assert [u["id"] for u in users if u["isAdmin"]] == [10000, 10001]
    assert set(users[0]) == {"id", "email", "firstName", "lastName", "isAdmin", "isEnabled",
                             "activationStatus", "dateCreated", "lastUpdated", "version"}
    assert users[16]["lastName"] is None and users[15]["lastName"] is not None
    assert users[4]["lastUpdated"] is None
    assert users[3]["dateCreated"] == "2024-01-01T03:00:00Z"
    assert users[3]["lastUpdated"] == "2024-01-02T03:03:00Z"
    assert [u["isEnabled"] for u in users[5:8]] == [True, False, True]
    assert users[10]["activationStatus"] == "pending" and users[9]["activationStatus"] == "confirmed"
    assert [u["version"] for u in users[:4]] == [1, 2, 3, 1]


def test_light_users_match_the_public_users(base_url: str) -> None:
    first = get(base_url, "/api/v2/users/light", limit=20).json()
    second = get(base_url, "/api/v2/users/light", offset=20, limit=20).json()
    assert (first["total"], first["offset"], second["offset"]) == (30, 0, 20)
    light = first["users"] + second["users"]
    assert [u["id"] for u in light] == list(range(10000, 10030))
    assert light[0]["systemRole"] == "ROLE_CUSTOMER" and light[2]["systemRole"] == "ROLE_USER"
    assert light[3]["lastSeenOnSecure"] is None
    assert light[2]["lastSeenOnSecure"] == 1_700_000_000_000 + 2 * 60_000
    assert light[1]["dateCreated"] == 1704067200000 + 3_600_000
    assert light[0]["products"] == ["SDC", "SDS"] and light[1]["products"] == ["SDS"]
    assert light[6]["enabled"] is False and light[10]["status"] == "pending"


def test_teams_paged_to_the_end(base_url: str) -> None:
    teams = offset_items(base_url, "/platform/v1/teams", limit=3)
    assert [t["id"] for t in teams] == [20000, 20001, 20002, 20003]
    assert [t["name"] for t in teams] == ["Secure Operations", "Monitor Operations",
                                          "team-0002", "team-0003"]
    assert [t["isDefaultTeam"] for t in teams] == [True, False, False, False]
    assert [t["isImmutableTeam"] for t in teams] == [True, True, False, False]
    assert [t["product"] for t in teams] == ["secure", "monitor", "secure", "monitor"]
    assert [t["description"] for t in teams[2:]] == ["Team number 2", None]
    assert teams[3]["additionalTeamPermissions"]["hasAgentCli"] is True
    assert teams[1]["dateCreated"] == "2023-06-02T00:00:00Z"
    assert teams[1]["lastUpdated"] == "2023-06-04T00:00:00Z"


def test_memberships_without_and_with_admins(base_url: str) -> None:
    plain = {j: offset_items(base_url, f"/platform/v1/teams/{20000 + j}/users", limit=3)
             for j in range(4)}
    assert sum(len(items) for items in plain.values()) == 28
    assert [m["userId"] for m in plain[1]] == [10005, 10009, 10013, 10017, 10021, 10025, 10029]
    custom = next(m for m in plain[0] if m["userId"] == 10012)
    assert (custom["standardTeamRole"], custom["customTeamRoleId"]) == (None, 7)
    assert plain[1][0]["standardTeamRole"] == "ROLE_TEAM_EDIT"  # i=5 -> roles[5 % 3]

    with_admins = [offset_items(base_url, f"/platform/v1/teams/{20000 + j}/users", limit=4,
                                withAdminUsers="true") for j in range(4)]
    assert sum(len(items) for items in with_admins) == 36
    assert [m["standardTeamRole"] for m in with_admins[2][:2]] == ["ROLE_TEAM_MANAGER"] * 2
    assert with_admins[2][2:] == plain[2]


def test_unknown_team_is_404_with_the_error_schema(base_url: str) -> None:
    for team_id in ("20004", "19999", "abc"):
        response = get(base_url, f"/platform/v1/teams/{team_id}/users")
        assert response.status_code == 404
        assert response.json()["type"] == "not_found"


@pytest.mark.parametrize("params, name", [
    ({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"limit": -1}, "limit"),
    ({"limit": "ten"}, "limit"), ({"limit": "1.5"}, "limit"), ({"offset": -1}, "offset"),
    ({"offset": "x"}, "offset"),
])
def test_bad_paging_parameters_are_400(base_url: str, params: dict[str, Any], name: str) -> None:
    for path in ("/platform/v1/users", "/platform/v1/teams", "/platform/v1/teams/20000/users"):
        response = get(base_url, path, **params)
        assert response.status_code == 400, path
        assert response.json()["type"] == "bad_request" and name in response.json()["message"]


def test_with_admin_users_accepts_only_true_or_false(base_url: str) -> None:
    response = get(base_url, "/platform/v1/teams/20000/users", withAdminUsers="yes")
    assert response.status_code == 400 and "withAdminUsers" in response.json()["message"]
    assert get(base_url, "/platform/v1/teams/20000/users", withAdminUsers="false").ok


def test_limit_boundaries_and_defaults(base_url: str) -> None:
    assert len(get(base_url, "/platform/v1/users").json()["data"]) == 25
    assert len(get(base_url, "/platform/v1/users", limit=200).json()["data"]) == 30
    assert len(get(base_url, "/api/v2/users/light", limit=1000).json()["users"]) == 30
    assert get(base_url, "/api/v2/users/light", limit=1001).status_code == 400
    assert get(base_url, "/api/scanning/v1/resultsDirect", limit=0).status_code == 400
    assert "message" in get(base_url, "/api/v2/users/light", limit=0).json()


def test_page_edges_exactly_one_page_and_one_over(base_url: str) -> None:
    exact = get(base_url, "/platform/v1/users", limit=30).json()
    assert exact["page"] == {"previous": None, "next": None, "total": 30}
    over = offset_pages(base_url, "/platform/v1/users", limit=29)
    assert [len(body["data"]) for body in over] == [29, 1]
    assert over[1]["page"] == {"previous": "0", "next": None, "total": 30}
    beyond = get(base_url, "/platform/v1/users", offset=500).json()
    assert beyond["data"] == [] and beyond["page"]["next"] is None


def test_an_empty_org_pages_cleanly(start: Any) -> None:
    base = start(org=OrgSpec(users=0, teams=0, admins=0, scans=0))
    for path in ("/platform/v1/users", "/platform/v1/teams"):
        assert get(base, path).json() == {"page": {"previous": None, "next": None, "total": 0},
                                          "data": []}
    assert get(base, "/secure/vulnerability/v1/pipeline-results").json() == {
        "page": {"total": 0}, "data": []}
    assert get(base, "/api/scanning/v1/resultsDirect").json()["totalRows"] == 0
    assert get(base, "/api/users/me").status_code == 401  # nobody holds the token


# -- vulnerability management ------------------------------------------------------------------
@pytest.mark.parametrize("stage_index, stage", enumerate(STAGES))
def test_each_stage_pages_to_its_fifteen_scans(base_url: str, stage_index: int, stage: str) -> None:
    items = cursor_items(base_url, stage, limit=4)
    scan_indices = range(stage_index, 45, 3)
    assert [item["resultId"] for item in items] == [result_id(k) for k in scan_indices]
    for item in items:
        totals = item["vulnTotalBySeverity"]
        assert set(totals) == {"critical", "high", "medium", "low", "negligible"}
        assert all(n >= 0 for n in totals.values())
        if stage == "runtime":
            assert all(item["runningVulnTotalBySeverity"][s] <= n for s, n in totals.items())
    assert ("policyEvaluationResult" in items[0]) is (stage != "registry")
    assert ("createdAt" in items[0]) is (stage != "runtime")


def test_scan_item_shapes(base_url: str) -> None:
    runtime = get(base_url, "/secure/vulnerability/v1/runtime-results", limit=1).json()["data"][0]
    image = "sha256:" + hashlib.sha256(b"7:image:0").hexdigest()
    assert runtime["resourceId"] == image and runtime["sbomId"] == "sbom-0"
    assert runtime["mainAssetName"] == "docker.io/acme/service-0:1.0.0"
    assert runtime["scope"]["kubernetes.cluster.name"] == "prod-0"
    pipeline = get(base_url, "/secure/vulnerability/v1/pipeline-results", limit=3).json()["data"]
    assert pipeline[2]["createdAt"] == "2024-06-01T00:07:00.000000Z"  # k = 7
    assert pipeline[2]["pullString"] == "gcr.io/acme/service-7:1.7.0"
    registry = get(base_url, "/secure/vulnerability/v1/registry-results", limit=1).json()["data"][0]
    assert registry["vendor"] == "ecr"  # k = 2


def test_next_cursor_is_omitted_only_on_the_last_page(base_url: str) -> None:
    path = "/secure/vulnerability/v1/runtime-results"
    assert get(base_url, path, limit=15).json()["page"] == {"total": 15}
    assert get(base_url, path).json()["page"] == {"total": 15}  # default limit 1000
    first = get(base_url, path, limit=14).json()
    assert len(first["page"]["next"]) <= 300
    last = get(base_url, path, limit=14, cursor=first["page"]["next"]).json()
    assert len(last["data"]) == 1 and "next" not in last["page"]


# -- full scan results -------------------------------------------------------------------------
def full_result(base: str, result: str) -> dict:
    response = get(base, f"/secure/vulnerability/v1/results/{result}")
    assert response.status_code == 200
    return response.json()


@pytest.mark.parametrize("stage", STAGES)
def test_a_full_result_holds_together_and_agrees_with_its_listing(base_url: str, stage: str) -> None:
    for item in cursor_items(base_url, stage, limit=1000):
        result = full_result(base_url, item["resultId"])
        assert (result["stage"], result["assetType"]) == (stage, "containerImage")
        packages, vulnerabilities = result["packages"], result["vulnerabilities"]
        listed = [ref for package in packages.values() for ref in package["vulnerabilitiesRefs"]]
        assert sorted(listed) == sorted(vulnerabilities)  # each vulnerability in exactly one package
        for ref, vulnerability in vulnerabilities.items():
            assert ref in packages[vulnerability["packageRef"]]["vulnerabilitiesRefs"]
        for owner in (*packages.values(), *vulnerabilities.values()):
            assert set(owner["riskAcceptRefs"]) <= set(result["riskAccepts"])
        for package in packages.values():
            assert set(result["layers"][package["layerRef"]]["baseImagesRef"]) <= set(result["baseImages"])
        severities = [v["severity"] for v in vulnerabilities.values()]
        assert item["vulnTotalBySeverity"] == {s: severities.count(s) for s in item["vulnTotalBySeverity"]}
        if stage == "runtime":
            running = [v["severity"] for v in vulnerabilities.values() if packages[v["packageRef"]]["isRunning"]]
            assert item["runningVulnTotalBySeverity"] == {s: running.count(s) for s in item["vulnTotalBySeverity"]}


def test_full_results_look_like_a_fleet(start: Any) -> None:
    base = start(org=OrgSpec(scans=90))
    results = [full_result(base, item["resultId"]) for item in cursor_items(base, "runtime", limit=1000)]
    sizes = [len(result["vulnerabilities"]) for result in results]
    assert min(sizes) < 30 and max(sizes) >= 100  # tens to hundreds
    names = [{v["name"] for v in result["vulnerabilities"].values()} for result in results]
    shared = set.intersection(*names[:2]) | {n for a, b in zip(names, names[1:]) for n in a & b}
    assert shared  # images share CVEs
    every = set().union(*names)
    assert any(n.startswith("GHSA-") for n in every) and sum(n.startswith("CVE-") for n in every) > 100
    accepts = [a for result in results for a in result["riskAccepts"].values()]
    assert {a["status"] for a in accepts} == {"active", "expired"}
    assert any(v.get("fixVersion") for r in results for v in r["vulnerabilities"].values())
    assert any(not v.get("fixVersion") for r in results for v in r["vulnerabilities"].values())


def test_an_unknown_result_is_404_and_a_wrong_token_401(base_url: str) -> None:
    assert get(base_url, "/secure/vulnerability/v1/results/nope").status_code == 404
    wrong = requests.get(f"{base_url}/secure/vulnerability/v1/results/{result_id(0)}",
                         headers={"Authorization": "Bearer wrong"}, timeout=5)
    assert wrong.status_code == 401


@pytest.mark.parametrize("cursor", ["!!!", "bm9wZQ", encode_cursor("pipeline", 3), "x" * 301,
                                    encode_cursor("runtime", -1)])
def test_bad_cursor_is_400(base_url: str, cursor: str) -> None:
    response = get(base_url, "/secure/vulnerability/v1/runtime-results", cursor=cursor)
    assert response.status_code == 400 and "cursor" in response.json()["message"]


@pytest.mark.parametrize("limit", [0, 1001, "many"])
def test_bad_vm_limit_is_400(base_url: str, limit: Any) -> None:
    assert get(base_url, "/secure/vulnerability/v1/registry-results", limit=limit).status_code == 400


def test_legacy_scans_page_to_the_end(base_url: str) -> None:
    rows, offset = [], 0
    while True:
        body = get(base_url, "/api/scanning/v1/resultsDirect", offset=offset, limit=20).json()
        assert body["totalRows"] == body["metadata"]["total"] == 45
        rows.extend(body["results"])
        if not body["options"]["canLoadMore"]:
            break
        offset += 20
    assert len(rows) == 45 and offset == 40
    assert [r["imageId"] for r in rows] == [hashlib.sha256(f"7:image:{k}".encode()).hexdigest()
                                            for k in range(45)]
    assert [r["policyStatus"] for r in rows[:3]] == ["PASS", "STOP", "WARN"]
    assert rows[1]["createdAt"] == 1717200060 and rows[1]["fullTag"] == "quay.io/acme/service-1:1.1.1"


# -- account and legacy details -------------------------------------------------------------------
def test_me_carries_customer_and_sensitive_fields(base_url: str) -> None:
    user = get(base_url, "/api/users/me").json()["user"]
    assert (user["id"], user["systemRole"], user["currentTeam"]) == (10000, "ROLE_CUSTOMER", 20000)
    assert user["customer"]["id"] == 5000001 and user["customer"]["name"] is None
    assert user["accessKey"] and user["agentInstallParams"]["accessKey"] == user["accessKey"]
    assert user["intercomUserIdHash"] and user["customer"]["accessKey"]
    assert [r["teamId"] for r in user["teamRoles"]] == [20000, 20001, 20002, 20003]
    assert {r["role"] for r in user["teamRoles"]} == {"ROLE_TEAM_MANAGER"}


def test_customer_name_is_configurable(start: Any) -> None:
    base = start(org=OrgSpec(customer_name="Acme Corp", customer_id=42))
    customer = get(base, "/api/users/me").json()["user"]["customer"]
    assert (customer["id"], customer["name"]) == (42, "Acme Corp")


def test_legacy_user_detail_and_team_light(base_url: str) -> None:
    member = get(base_url, "/api/users/10012").json()["user"]
    assert member["teamRoles"] == [{"teamId": 20000, "teamName": "Secure Operations",
                                    "teamTheme": "#7BB0B2", "userId": 10012,
                                    "userName": "user12@example.com", "role": "7", "admin": False}]
    assert get(base_url, "/api/users/10030").status_code == 404
    body = get(base_url, "/api/v2/teams/light", limit=3).json()
    assert (body["total"], body["offset"], len(body["teams"])) == (4, 0, 3)
    team = body["teams"][0]
    assert (team["name"], team["default"], team["immutable"]) == ("Secure Operations", True, True)
    assert team["userCount"] == 9 and team["products"] == ["SDS"] and team["customerId"] == 5000001


# -- mutations and organisation variants ----------------------------------------------------------
def test_removed_users_disappear_everywhere_and_paging_stays_correct(start: Any) -> None:
    base = start()
    for user_id in (10001, 10005, 10006, 10009, 10029):
        assert requests.post(f"{base}/_emulator/users/{user_id}/remove", timeout=5).ok
    assert requests.post(f"{base}/_emulator/users/99999/remove", timeout=5).status_code == 404
    expected = [10000 + i for i in range(30) if i not in (1, 5, 6, 9, 29)]
    assert [u["id"] for u in offset_items(base, "/platform/v1/users", limit=2)] == expected
    light = get(base, "/api/v2/users/light", offset=3, limit=4).json()
    assert light["total"] == 25 and [u["id"] for u in light["users"]] == expected[3:7]
    team1 = offset_items(base, "/platform/v1/teams/20001/users", limit=2, withAdminUsers="true")
    assert [m["userId"] for m in team1] == [10000, 10013, 10017, 10021, 10025]
    assert get(base, "/api/users/10005").status_code == 404


def test_duplicate_users_repeat_the_first_ids(start: Any) -> None:
    base = start(org=OrgSpec(duplicate_users=3))
    users = offset_items(base, "/platform/v1/users", limit=25)
    assert [u["id"] for u in users] == list(range(10000, 10027)) + [10000, 10001, 10002]
    assert users[27]["email"] == "user27@example.com"
    team3 = offset_items(base, "/platform/v1/teams/20003/users", limit=25)
    assert [m["userId"] for m in team3][-2:] == [10023, 10000]  # user 27 repeats id 10000
    requests.post(f"{base}/_emulator/users/10001/remove", timeout=5).raise_for_status()
    remaining = [u["id"] for u in offset_items(base, "/platform/v1/users", limit=25)]
    assert 10001 not in remaining and len(remaining) == 28


@pytest.mark.parametrize("mode, status", [("gone", 410), ("missing", 404)])
def test_users_light_can_be_absent(start: Any, mode: str, status: int) -> None:
    base = start(users_light=mode)
    assert get(base, "/api/v2/users/light").status_code == status
    assert get(base, "/platform/v1/users").status_code == 200


def test_legacy_scanning_modes(start: Any) -> None:
    assert get(start(legacy_scanning="gone"), "/api/scanning/v1/resultsDirect").status_code == 410
    empty = get(start(legacy_scanning="empty"), "/api/scanning/v1/resultsDirect").json()
    assert (empty["results"], empty["totalRows"], empty["options"]["canLoadMore"]) == ([], 0, False)


def test_big_org_serves_pages_from_the_end(start: Any) -> None:
    spec = OrgSpec(users=100_000, teams=2_000, scans=1_000_000)
    base = start(org=spec)
    users = get(base, "/platform/v1/users", offset=99_990, limit=200).json()
    assert users["page"]["total"] == 100_000
    assert [u["id"] for u in users["data"]] == list(range(109_990, 110_000))
    cursor = encode_cursor("registry", 333_330)  # registry holds k = 2, 5, ... 999_998
    scans = get(base, "/secure/vulnerability/v1/registry-results", cursor=cursor).json()
    assert scans["page"] == {"total": 333_333}
    assert [s["resultId"] for s in scans["data"]] == [result_id(k) for k in (999_992, 999_995, 999_998)]
    members = get(base, "/platform/v1/teams/21999/users", withAdminUsers="true", offset=50).json()
    assert members["page"]["total"] == 52
    assert [m["userId"] for m in members["data"]] == [10000 + 97_999, 10000 + 99_999]
    legacy = get(base, "/api/scanning/v1/resultsDirect", offset=999_999).json()
    assert len(legacy["results"]) == 1 and legacy["options"]["canLoadMore"] is False


def test_stats_count_by_route_pattern_and_reset(start: Any) -> None:
    base = start()
    get(base, "/platform/v1/users")
    get(base, "/platform/v1/teams/20000/users")
    get(base, "/platform/v1/teams/20001/users")
    stats = requests.get(f"{base}/_emulator/stats", timeout=5).json()["requests"]
    assert stats["GET /platform/v1/users"] == 1
    assert stats["GET /platform/v1/teams/{team_id}/users"] == 2
    requests.post(f"{base}/_emulator/stats/reset", timeout=5).raise_for_status()
    assert requests.get(f"{base}/_emulator/stats", timeout=5).json()["requests"] == {}


# -- phase 2: faults ---------------------------------------------------------------------------
def test_rate_limit_headers_and_429(start: Any) -> None:
    base = start(rate_limit_per_minute=3)
    before = time.time()
    remaining = []
    for path in ("/platform/v1/users", "/api/users/me", "/secure/vulnerability/v1/runtime-results"):
        response = get(base, path)
        assert response.status_code == 200
        remaining.append(response.headers["X-RateLimit-Remaining"])
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert before + 59 <= int(response.headers["X-RateLimit-Reset"]) <= time.time() + 61
    assert remaining == ["2", "1", "0"]
    throttled = get(base, "/platform/v1/teams")
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert throttled.json()["type"] == "too_many_requests"
    assert throttled.json()["message"] == "Rate limit exceeded"
    assert throttled.headers["X-RateLimit-Remaining"] == "0"
    assert get(base, "/platform/v1/teams").headers["X-RateLimit-Remaining"] == "0"
    other_token = requests.get(f"{base}/platform/v1/users", headers={"Authorization": "Bearer b"},
                               timeout=5)
    assert other_token.status_code == 401  # its own window, so not throttled


def test_rate_limit_holds_under_concurrent_requests(start: Any) -> None:
    base = start(rate_limit_per_minute=10)
    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(lambda _: get(base, "/platform/v1/teams").status_code, range(20)))
    assert sorted(statuses) == [200] * 10 + [429] * 10


def test_error_rate_one_answers_503_but_control_routes_still_work(start: Any) -> None:
    base = start()
    set_faults(base, error_rate=1.0)
    assert get(base, "/platform/v1/users").status_code == 503
    assert get(base, "/api/users/me").status_code == 503
    assert requests.get(f"{base}/_emulator/stats", timeout=5).ok
    set_faults(base, error_rate=0.0)
    assert get(base, "/platform/v1/users").status_code == 200


def test_error_rate_is_reproducible(start: Any) -> None:
    def statuses(base: str) -> list[int]:
        return [get(base, "/platform/v1/teams").status_code for _ in range(20)]

    first, second = statuses(start(error_rate=0.5)), statuses(start(error_rate=0.5))
    assert first == second and {200, 503} == set(first)


def test_truncated_body(start: Any) -> None:
    base = start(truncate_rate=1.0)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        get(base, "/platform/v1/users")


def test_dropped_connection(start: Any) -> None:
    base = start(drop_rate=1.0)
    with pytest.raises(requests.exceptions.ConnectionError):
        get(base, "/platform/v1/users")


def test_slow_response_outlasts_a_client_timeout(start: Any) -> None:
    base = start(slow_rate=1.0, slow_seconds=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{base}/platform/v1/users", headers=AUTH, timeout=0.2)


def test_latency_delays_every_response(start: Any) -> None:
    base = start(latency=0.3, jitter=0.1)
    began = time.monotonic()
    assert get(base, "/platform/v1/users").ok
    assert time.monotonic() - began >= 0.3


def test_faults_endpoint_rejects_unknown_names_and_bad_values(start: Any) -> None:
    base = start()
    for body in ({"nonsense": 1}, {"error_rate": 2}, {"rate_limit_per_minute": 0}):
        assert requests.post(f"{base}/_emulator/faults", json=body, timeout=5).status_code == 400
    set_faults(base, rate_limit_per_minute=10)
    assert requests.get(f"{base}/_emulator/faults", timeout=5).json()["rate_limit_per_minute"] == 10


def test_constructor_rejects_bad_options() -> None:
    with pytest.raises(ValueError):
        SysdigEmulator(users_light="sometimes")
    with pytest.raises(TypeError):
        SysdigEmulator(no_such_fault=1)
    with pytest.raises(ValueError):
        OrgSpec(users=1, admins=2)


# -- phase 3: integrity scenarios --------------------------------------------------------------
USERS, TEAMS, ME = "/platform/v1/users", "/platform/v1/teams", "/api/users/me"
TEAM_USERS = "/platform/v1/teams/20001/users"
RUNTIME = "/secure/vulnerability/v1/runtime-results"
RESULT = f"/secure/vulnerability/v1/results/{result_id(0)}"
# the routes each scenario may change; written from the brief, independently of the emulator
INVENTORY, SSO_SETTINGS = "/secure/inventory/v1/resources", "/platform/v1/sso-settings"
TOUCHED = {
    "short_member_pages": {TEAM_USERS}, "changing_total": {USERS}, "cursor_loop": {RUNTIME},
    "endless_empty": {RUNTIME}, "endless_pages": {RUNTIME}, "string_user_id": {USERS},
    "bool_as_text": {USERS}, "data_not_list": {TEAMS}, "item_not_object": {USERS},
    "body_not_object": {TEAMS}, "deep_nesting": {USERS}, "lone_surrogate": {USERS},
    "mixed_dates": {USERS, TEAMS}, "pre_1970_date": {USERS}, "bad_date": {USERS},
    "echo_token": {USERS, TEAMS, RUNTIME, ME}, "nested_secrets": {USERS, ME},
    "error_echo": {TEAMS}, "redirect": {USERS}, "dangling_reference": {RESULT},
    "short_inventory_pages": {INVENTORY}, "missing_inventory_page": {INVENTORY}, "paged_sso_settings": {SSO_SETTINGS},
}
TOUCHED["echo_token"].add(RESULT)
READ_ROUTES = (USERS, TEAMS, TEAM_USERS, RUNTIME, RESULT, ME, "/secure/vulnerability/v1/pipeline-results",
               "/api/users/10003", "/api/v2/users/light", "/api/v2/teams/light",
               "/api/scanning/v1/resultsDirect", INVENTORY, SSO_SETTINGS, "/platform/v1/roles",
               "/platform/v1/service-accounts", "/platform/v1/teams/20000/service-accounts", "/platform/v1/access-keys",
               "/platform/v1/zones", "/platform/v1/ip-filters")


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def all_users(base: str) -> list[Any]:
    return get(base, USERS, limit=30).json()["data"]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_scenario_leaves_every_other_route_alone(start: Any, base_url: str,
                                                  scenario: str) -> None:
    assert set(TOUCHED) == set(SCENARIOS)
    base = start(scenario=scenario)
    for path in READ_ROUTES:
        if path not in TOUCHED[scenario]:
            assert get(base, path).json() == get(base_url, path).json(), path


def test_unknown_scenario_and_bad_scenario_options_are_rejected(start: Any) -> None:
    with pytest.raises(ValueError):
        SysdigEmulator(scenario="no_such_scenario")
    base = start()
    for body in ({"scenario": "no_such_scenario"}, {"canaries": "not-a-list"},
                 {"canaries": [1]}, {"redirect_to": "ftp://elsewhere"}):
        assert requests.post(f"{base}/_emulator/faults", json=body, timeout=5).status_code == 400


def test_scenarios_spare_control_routes_and_unauthorised_callers(start: Any, base_url: str) -> None:
    base = start()
    set_faults(base, scenario="redirect", canaries=["c4n-1", "c4n-2"])
    faults = requests.get(f"{base}/_emulator/faults", timeout=5).json()
    assert (faults["scenario"], faults["canaries"]) == ("redirect", ["c4n-1", "c4n-2"])
    assert requests.get(f"{base}/_emulator/stats", timeout=5).ok
    wrong = requests.get(f"{base}{USERS}", headers={"Authorization": "Bearer wrong"},
                         allow_redirects=False, timeout=5)
    assert wrong.status_code == 401
    set_faults(base, scenario=None)  # clearing the scenario restores the usual answers
    assert get(base, USERS).json() == get(base_url, USERS).json()


def test_short_member_pages_drop_rows_but_keep_total_and_next(start: Any, base_url: str) -> None:
    base = start(scenario="short_member_pages")
    first = get(base, TEAM_USERS, withAdminUsers="true", limit=7).json()
    assert len(first["data"]) == 5 and first["page"] == {"previous": None, "next": "7", "total": 9}
    for offset, limit in ((0, 7), (0, 25), (7, 7)):
        params = {"withAdminUsers": "true", "offset": offset, "limit": limit}
        normal = get(base_url, TEAM_USERS, **params).json()
        assert get(base, TEAM_USERS, **params).json() == {"page": normal["page"],
                                                          "data": normal["data"][:5]}


def test_changing_total_differs_on_every_page_until_the_faults_are_set(start: Any,
                                                                        base_url: str) -> None:
    base = start(scenario="changing_total")
    for extra, offset in enumerate((0, 10, 20, 0)):
        body = get(base, USERS, offset=offset, limit=10).json()
        normal = get(base_url, USERS, offset=offset, limit=10).json()
        assert body == {**normal, "page": {**normal["page"], "total": 30 + extra}}
    set_faults(base, scenario="changing_total")  # setting faults restarts the count
    assert get(base, USERS).json()["page"]["total"] == 30


def test_cursor_loop_alternates_two_valid_cursors_forever(start: Any, base_url: str) -> None:
    base = start(scenario="cursor_loop")
    first_page = get(base_url, RUNTIME, limit=4).json()["data"]
    cursors: list[str] = []
    params: dict[str, Any] = {"limit": 4}
    for _ in range(5):
        response = get(base, RUNTIME, **params)
        assert response.status_code == 200
        assert response.json()["data"] == first_page and response.json()["page"]["total"] == 15
        params["cursor"] = response.json()["page"]["next"]
        cursors.append(params["cursor"])
    a, b = cursors[:2]
    assert a != b and cursors == [a, b, a, b, a]
    assert get(base, RUNTIME, cursor="!!!").status_code == 400  # other cursors still checked


def test_endless_empty_pages_carry_new_cursors_forever(start: Any, base_url: str) -> None:
    base = start(scenario="endless_empty")
    assert "next" in get(base, RUNTIME).json()["page"]  # even when one page holds everything
    first = get(base, RUNTIME, limit=4).json()
    assert first["data"] == get(base_url, RUNTIME, limit=4).json()["data"]
    cursors = [first["page"]["next"]]
    for _ in range(6):
        body = get(base, RUNTIME, limit=4, cursor=cursors[-1]).json()
        assert body["data"] == [] and body["page"]["total"] == 15
        cursors.append(body["page"]["next"])
    assert len(set(cursors)) == 7


def test_endless_pages_replay_full_pages_under_new_cursors(start: Any, base_url: str) -> None:
    base = start(scenario="endless_pages")
    first_page = get(base_url, RUNTIME, limit=4).json()["data"]
    cursors: list[str] = []
    params: dict[str, Any] = {"limit": 4}
    for _ in range(6):
        body = get(base, RUNTIME, **params).json()
        assert body["data"] == first_page and body["page"]["total"] == 15
        params["cursor"] = body["page"]["next"]
        cursors.append(params["cursor"])
    assert len(set(cursors)) == 6


@pytest.mark.parametrize("scenario, index, replace", [
    ("string_user_id", 5, lambda user: {**user, "id": "abc"}),
    ("bool_as_text", 4, lambda user: {**user, "isAdmin": "true"}),
    ("item_not_object", 3, lambda user: ["10003", "user3@example.com"]),
    ("deep_nesting", 2, lambda user: {**user, "preferences": nested(500)}),
    ("lone_surrogate", 7, lambda user: {**user, "lastName": "Lovelace\ud800"}),
    ("pre_1970_date", 8, lambda user: {**user, "dateCreated": "1960-05-01T00:00:00Z"}),
    ("bad_date", 9, lambda user: {**user, "dateCreated": "yesterday-ish"}),
])
def test_one_user_record_is_malformed(start: Any, base_url: str, scenario: str, index: int,
                                      replace: Callable[[dict[str, Any]], Any]) -> None:
    base = start(scenario=scenario)
    expected = all_users(base_url)
    expected[index] = replace(expected[index])
    assert all_users(base) == expected
    # the org's user, wherever it falls on a page
    assert get(base, USERS, offset=index - 1, limit=3).json()["data"][1] == expected[index]


def test_wire_text_of_a_lone_surrogate_and_deep_nesting(start: Any) -> None:
    surrogate = get(start(scenario="lone_surrogate"), USERS).content
    assert b'"lastName":"Lovelace\\ud800"' in surrogate
    deep = get(start(scenario="deep_nesting"), USERS).content
    assert b'"preferences":' + b'{"a":' * 500 + b"1" + b"}" * 500 in deep


def test_mixed_dates_give_the_same_instants_in_three_forms(start: Any, base_url: str) -> None:
    base = start(scenario="mixed_dates")
    normal = all_users(base_url)
    users = all_users(base)
    for i, (user, plain) in enumerate(zip(users, normal, strict=True)):
        seconds = int(datetime.fromisoformat(plain["dateCreated"]).timestamp())
        forms = (plain["dateCreated"], seconds, seconds * 1000)
        assert user == {**plain, "dateCreated": forms[i % 3]}
    assert [u["dateCreated"] for u in users[:3]] == ["2024-01-01T00:00:00Z", 1704070800,
                                                     1704074400000]
    teams = get(base, TEAMS).json()["data"]
    normal_teams = get(base_url, TEAMS).json()["data"]
    normal_teams[1]["dateCreated"] = 1685664000000  # 2023-06-02T00:00:00Z
    assert teams == normal_teams


def test_data_not_list_serves_teams_as_an_object(start: Any, base_url: str) -> None:
    normal = get(base_url, TEAMS).json()
    body = get(start(scenario="data_not_list"), TEAMS).json()
    assert body == {"page": normal["page"],
                    "data": {str(j): team for j, team in enumerate(normal["data"])}}


def test_body_not_object_serves_teams_as_an_array(start: Any, base_url: str) -> None:
    response = get(start(scenario="body_not_object"), TEAMS)
    assert response.status_code == 200
    assert response.json() == get(base_url, TEAMS).json()["data"]


@pytest.mark.parametrize("canaries", [[], ["c4n-1", "c4n-2"]])
def test_echo_token_plants_the_token_in_values(start: Any, base_url: str,
                                               canaries: list[str]) -> None:
    base = start(scenario="echo_token", canaries=canaries)
    users = all_users(base_url)
    users[3]["lastName"] = TOKEN
    assert all_users(base) == users
    teams = get(base_url, TEAMS).json()["data"]
    teams[2]["description"] = " ".join([f"ask {TOKEN} for access", *canaries])
    assert get(base, TEAMS).json()["data"] == teams
    scans = get(base_url, RUNTIME).json()["data"]
    for scan in scans:
        scan["scope"]["kubernetes.workload.name"] = f"svc-{TOKEN}"
    assert get(base, RUNTIME).json()["data"] == scans
    assert get(base, ME).json() == {"user": {**get(base_url, ME).json()["user"], "notes": TOKEN}}


def test_nested_secrets_hide_canaries_under_secret_looking_keys(start: Any) -> None:
    base = start(scenario="nested_secrets", canaries=["hunter2"])
    users_response, me_response = get(base, USERS, limit=30), get(base, ME)
    users = users_response.json()["data"]
    canary = "CANARY-user-4"
    assert users[4]["profile"] == {
        "access-key": canary, "API_KEY": canary, "pwd": canary, "passphrase": canary,
        "Authorization": canary, "bearer": canary, "sshKey": canary, "client_secret": canary,
        "Cookie": canary, "session-id": canary, "privateKey": canary,
        "items": [{"X-Auth-Token": canary}], "note": f"Bearer {canary}",
        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDQU5BUlkifQ.c2lnbmF0dXJlLWNhbmFyeQ",
        "pem": "-----BEGIN PRIVATE KEY-----\nCANARYPEMBODY\n-----END PRIVATE KEY-----",
        "password": "hunter2",
    }
    assert all(u["profile"]["session-id"] == f"CANARY-user-{i}" for i, u in enumerate(users))
    assert me_response.json()["user"]["profile"]["Cookie"] == "CANARY-me-0"
    wire = users_response.text + me_response.text
    assert all(planted in wire for planted in nested_secret_canaries(30))
    without = get(start(scenario="nested_secrets"), ME).json()["user"]["profile"]
    assert "password" not in without


@pytest.mark.parametrize("canaries", [[], ["c4nary"]])
def test_error_echo_quotes_the_credentials_in_a_400(start: Any, canaries: list[str]) -> None:
    response = get(start(scenario="error_echo", canaries=canaries), TEAMS)
    assert response.status_code == 400
    assert response.json() == {"type": "bad_request",
                               "message": f"Invalid parameter 'limit' for token {TOKEN}",
                               "details": [f"Authorization: Bearer {TOKEN}", *canaries]}


@pytest.mark.parametrize("redirect_to, location", [
    ("http://other.invalid:8443", "http://other.invalid:8443/platform/v1/users?offset=10&limit=5"),
    (None, "http://127.0.0.1:9/platform/v1/users?offset=10&limit=5"),
])
def test_redirect_answers_302_to_the_same_path_elsewhere(start: Any, redirect_to: str | None,
                                                         location: str) -> None:
    base = start(scenario="redirect", redirect_to=redirect_to)
    response = requests.get(f"{base}{USERS}", params={"offset": 10, "limit": 5}, headers=AUTH,
                            allow_redirects=False, timeout=5)
    assert response.status_code == 302 and response.headers["Location"] == location
    assert response.history == [] and response.url.startswith(base)  # not followed
    bare = requests.get(f"{base}{USERS}", headers=AUTH, allow_redirects=False, timeout=5)
    assert bare.headers["Location"] == location.split("?")[0]


# -- command line ------------------------------------------------------------------------------
@contextmanager
def serve_cli(*args: str) -> Iterator[str]:
    """Run the emulator's command line on a free port; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "sysdig_j1_emulators.sysdig", "--port", str(port), *args],
        stdout=subprocess.PIPE, text=True)
    try:
        assert "listening on" in process.stdout.readline()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=5)


def test_cli_serves_the_requested_org() -> None:
    with serve_cli("--users", "5", "--teams", "2", "--admins", "1", "--token", "cli-token",
                   "--users-light", "gone") as base:
        auth = {"Authorization": "Bearer cli-token"}
        users = requests.get(f"{base}/platform/v1/users", headers=auth, timeout=5).json()
        assert users["page"]["total"] == 5
        assert requests.get(f"{base}/api/v2/users/light", headers=auth, timeout=5).status_code == 410


def test_cli_sets_a_scenario_and_its_options() -> None:
    with serve_cli("--scenario", "redirect", "--canaries", "c4n-1", "c4n-2",
                   "--redirect-to", "http://elsewhere.invalid") as base:
        faults = requests.get(f"{base}/_emulator/faults", timeout=5).json()
        assert faults["scenario"] == "redirect" and faults["canaries"] == ["c4n-1", "c4n-2"]
        response = requests.get(f"{base}{USERS}", headers=AUTH, allow_redirects=False, timeout=5)
        assert response.headers["Location"] == "http://elsewhere.invalid/platform/v1/users"
    unknown = subprocess.run([sys.executable, "-m", "sysdig_j1_emulators.sysdig", "--scenario",
                              "no_such_scenario"], capture_output=True, text=True, timeout=30)
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


def test_changes_between_syncs_promote_disable_leave_and_remove(start: Any) -> None:
    base = start()

    def post(path: str, body: Any = None) -> requests.Response:
        return requests.post(f"{base}/_emulator{path}", json=body, timeout=5)

    def members(team: int) -> list[int]:
        return [m["userId"] for m in get(base, f"/platform/v1/teams/{team}/users", limit=200,
                                         withAdminUsers="true").json()["data"]]

    assert post("/users/10007/update", {"isAdmin": True}).ok and post("/users/10008/update", {"isEnabled": False}).ok
    assert post("/teams/20001/users/10009/remove").ok and post("/teams/20003/remove").ok
    assert post("/users/10007/update", {"name": "x"}).status_code == 400
    assert post("/teams/20003/remove").status_code == 404  # already gone

    users = {u["id"]: u for u in get(base, "/platform/v1/users", limit=200).json()["data"]}
    assert users[10007]["isAdmin"] is True and users[10008]["isEnabled"] is False
    light = {u["id"]: u for u in get(base, "/api/v2/users/light", limit=1000).json()["users"]}
    assert light[10007]["systemRole"] == "ROLE_CUSTOMER" and light[10008]["enabled"] is False
    assert [t["id"] for t in get(base, "/platform/v1/teams", limit=200).json()["data"]] == [20000, 20001, 20002]
    assert get(base, "/platform/v1/teams/20003/users").status_code == 404
    assert all(10007 in members(team) for team in (20000, 20001, 20002))  # an admin is in every team
    assert 10009 not in members(20001) and 10005 in members(20001)
    roles = {m["userId"]: m["standardTeamRole"] for m in get(base, "/platform/v1/teams/20000/users",
                                                               withAdminUsers="true").json()["data"]}
    assert roles[10007] == "ROLE_TEAM_MANAGER"
