"""Permissions first: resources the token may not read are skipped with a warning, not failed
halfway with 403s, and JupiterOne keeps what it holds of them."""

from __future__ import annotations

import requests
from conftest import SYSDIG_TOKEN, task_states

from sysdig_j1_emulators.sysdig import ALL_PERMISSIONS
from sysdig_j1_emulators.sysdig_org import OrgSpec

SCOPE = "sysdig-j1:5000001"
TEAM_TYPES = {"sysdig_team", "sysdig_account_has_team", "sysdig_team_has_user"}
AUTH = {"Authorization": f"Bearer {SYSDIG_TOKEN}"}


def test_the_emulator_answers_403_without_the_permission_and_lists_the_tokens(start_sysdig):
    sysdig = start_sysdig(OrgSpec(), permissions=("users.read",))

    def status(path: str) -> int:
        return requests.get(f"{sysdig.url}{path}", headers=AUTH, timeout=5).status_code

    mine = requests.get(f"{sysdig.url}/api/users/me/permissions", headers=AUTH, timeout=5).json()
    assert mine["permissions"] == ["users.read"] and mine["customerId"] == 5000001
    assert (status("/platform/v1/users"), status("/platform/v1/teams"), status("/platform/v1/teams/20000/users")) == (
        200, 403, 403)
    assert status("/secure/vulnerability/v1/runtime-results") == 200  # no permission is documented for it


def test_a_token_lacking_two_permissions_publishes_the_rest_and_keeps_their_objects(
        dag, start_sysdig, jupiterone, connect, capfd, caplog):
    connect(start_sysdig(OrgSpec()), jupiterone)
    assert set(task_states(dag.test()).values()) == {"success"}
    before = jupiterone.graph(SCOPE)

    # user 10029 has left since
    limited = start_sysdig(OrgSpec(users=29), permissions=[p for p in ALL_PERMISSIONS
                                                           if p not in ("customer-teams.read", "memberships.read")])
    connect(limited, jupiterone)
    run = dag.test()

    states = task_states(run)
    assert set(states.values()) == {"success"} and run.state == "success"  # a warning each, not a failure
    after = jupiterone.graph(SCOPE)
    for kind in ("entities", "relationships"):  # a membership of the user who left goes with the user
        kept = [o for o in before[kind] if o["_type"] in TEAM_TYPES and o.get("_toEntityKey") != "sysdig_user:10029"]
        assert [o for o in after[kind] if o["_type"] in TEAM_TYPES] == kept != []
    assert "sysdig_user:10029" not in {e["_key"] for e in after["entities"]}  # the rest was published
    logs = capfd.readouterr().out + caplog.text
    assert "teams will not be extracted: the token lacks the permission customer-teams.read" in logs
    assert ("team_memberships will not be extracted: the token lacks the permission memberships.read") in logs
    asked = requests.get(f"{limited.url}/_emulator/stats", timeout=5).json()["requests"]
    assert not [route for route in asked if "/platform/v1/teams" in route]  # no 403 was ever asked for
    # and what is listed per team: the team service accounts, so the service accounts
    assert "team_service_accounts will not be extracted: it is listed per teams record, and teams cannot be read" in logs
    kept = TEAM_TYPES | {"sysdig_service_account", "sysdig_account_has_service_account", "sysdig_team_has_service_account",
                         "sysdig_team_has_access_key", "sysdig_team_uses_zone", "sysdig_team_assigned_role"}
    assert jupiterone.jobs()[-1]["partialDatasets"] == {"types": sorted(kept)}
