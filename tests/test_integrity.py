"""The fault matrix: the whole DAG against a Sysdig server that misbehaves, after a good publish.

For every integrity scenario of the Sysdig emulator the run ends in one of two ways, and nothing
in between: it fails, with a message naming the endpoint (and the record, for data problems), and
JupiterOne still holds exactly what the good publish left; or it succeeds and JupiterOne holds
exactly the correct graph. In every case no secret (the Sysdig token, the JupiterOne key, the
planted canaries) reaches JupiterOne, the run's storage, XCom or the logs.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from conftest import J1_ACCOUNT, J1_KEY, SYSDIG_TOKEN, storage_text, task_states

from sysdig_j1_emulators.jupiterone import JupiterOneEmulator
from sysdig_j1_emulators.sysdig import SCENARIOS, SysdigEmulator, nested_secret_canaries
from sysdig_j1_emulators.sysdig_org import OrgSpec

SECRETS = {SYSDIG_TOKEN, J1_KEY, "CANARY", "CANARYPEMBODY", *nested_secret_canaries(OrgSpec().users)}
USERS = "/platform/v1/users"
TEAMS = "/platform/v1/teams"
RUNTIME = "/secure/vulnerability/v1/runtime-results"


@dataclass(frozen=True)
class Fails:
    """The run fails in `task`, its message says `says`, and JupiterOne is left as it was."""

    task: str
    says: str


@dataclass(frozen=True)
class Publishes:
    """The run succeeds; `changed` maps the _keys whose objects change to the properties that do."""

    changed: dict[str, dict[str, object]]


USER_5 = "id='abc'"
OUTCOMES = {
    "short_member_pages": Fails("extract_team_memberships", r"GET /platform/v1/teams/\d+/users failed: incomplete "
                                r"listing: page 0: 5 records at offset 0, expected 9 of 9"),
    # 30 users fit one page, so no second page can disagree: the data is complete and publishes
    # (test_sysdig_hook checks the detection on a listing of several pages).
    "changing_total": Publishes({}),
    # The loop replays the first page, so the count overshoots before the loop closes.
    "cursor_loop": Fails("extract_image_scans", f"GET {RUNTIME} failed: incomplete listing: page 1: 30 records "
                                                "received, more than the total of 15"),
    "endless_empty": Fails("extract_image_scans", f"GET {RUNTIME} failed: incomplete listing: page 2: 3 pages, more "
                                                  "than a listing of 15 records can have"),
    "endless_pages": Fails("extract_image_scans", f"GET {RUNTIME} failed: incomplete listing: page 1: 30 records "
                                                  "received, more than the total of 15"),
    "string_user_id": Fails("extract_users", rf"users: GET {USERS} page 0, record 5 \({USER_5}\) breaks the source "
                                             "contract: field 'id' should be an integer, got string 'abc'"),
    "bool_as_text": Fails("extract_users", rf"record 4 \(id=10004\) breaks the source contract: field 'isAdmin' "
                                           "should be true or false, got string 'true'"),
    "data_not_list": Fails("extract_teams", f"GET {TEAMS} failed: the answer's 'data' is not a list"),
    "item_not_object": Fails("extract_users", rf"GET {USERS} page 0, record 3 \(no id\) breaks the source contract: "
                                              "record is a JSON array, not an object"),
    "body_not_object": Fails("extract_teams", f"GET {TEAMS} failed: the answer is a JSON list, not an object"),
    "deep_nesting": Fails("extract_users", r"record 2 \(id=10002\) breaks the source contract: nested deeper than 32 "
                                           r"levels at preferences\.a\.a"),
    "lone_surrogate": Fails("extract_users", r"record 7 \(id=10007\) breaks the source contract: field 'lastName' "
                                             "holds text that is not valid Unicode"),
    "bad_date": Fails("extract_users", r"record 9 \(id=10009\) breaks the source contract: field 'dateCreated' is "
                                       "not a date: string 'yesterday-ish'"),
    "error_echo": Fails("extract_teams", rf"GET {TEAMS} failed: HTTP 400: Invalid parameter 'limit' for token \*\*\*"),
    "redirect": Fails("extract_users", f"GET {USERS} failed: HTTP 302: redirect to http://127.0.0.1:\\d+ refused"),
    "mixed_dates": Publishes({}),  # the same instants in other forms: nothing changes
    "pre_1970_date": Publishes({"sysdig_user:10008": {"createdOn": -305_164_800_000}}),
    "echo_token": Publishes({
        "sysdig_user:10003": {"lastName": "***"},  # and displayName, "<first name> ***"
        "sysdig_team:20002": {"description": "ask *** for access ***"},
    }),  # the findings' layers quote it too, in build commands that only their _rawData holds
    "nested_secrets": Publishes({}),  # only _rawData gains the profile's harmless remains
    "dangling_reference": Fails("extract_findings", r"GET /secure/vulnerability/v1/results/[0-9a-f]{32}: the scan "
                                                    r"result is inconsistent: package 'p\d+' refers to vulnerability "
                                                    "'v-missing', which the result does not hold"),
    # one page of 1,000: no page but the last to shorten (test_iam_inventory shortens a middle one)
    "short_inventory_pages": Publishes({}),
    "missing_inventory_page": Fails("extract_hosts", r"GET /secure/inventory/v1/resources failed: incomplete "
                                                     r"listing: page 0: page 1 of 2 \(page.total counts pages\) "
                                                     "holds 16 records; every page but the last must hold 1000"),
    "paged_sso_settings": Fails("extract_sso_settings", "GET /platform/v1/sso-settings failed: incomplete listing: "
                                                        "page 0: the answer points to a next page of a listing that "
                                                        "has no paging"),
}
assert set(OUTCOMES) == set(SCENARIOS), "every emulator scenario has an expected outcome"


@pytest.fixture(scope="module")
def good_publish(dag, tmp_path_factory) -> tuple[Path, int]:
    """JupiterOne state and run storage after one good run, and the Sysdig port it used (URLs on
    entities name it); each test starts from a copy, with its Sysdig emulator on that port."""
    folder = tmp_path_factory.mktemp("good-publish")
    sysdig = SysdigEmulator(OrgSpec(), token=SYSDIG_TOKEN)
    jupiterone = JupiterOneEmulator(folder / "j1-state.json", account=J1_ACCOUNT, api_key=J1_KEY)
    sysdig.start(), jupiterone.start()
    port = int(sysdig.url.rsplit(":", 1)[1])
    try:
        with pytest.MonkeyPatch.context() as patch:
            wire(patch, sysdig.url, jupiterone.url, folder / "storage")
            assert set(task_states(dag.test()).values()) == {"success"}
    finally:
        sysdig.stop(), jupiterone.stop()
    return folder, port


def wire(patch: pytest.MonkeyPatch, sysdig_url: str, jupiterone_url: str, storage: Path) -> None:
    patch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(
        {"conn_type": "sysdig", "host": sysdig_url, "password": SYSDIG_TOKEN, "extra": {"region": "us2"}}))
    patch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(
        {"conn_type": "jupiterone", "host": jupiterone_url, "login": J1_ACCOUNT, "password": J1_KEY}))
    patch.setenv("AIRFLOW_VAR_SYSDIG_J1_STORAGE_URL", f"file://{storage}")


def xcom_text(run_id: str) -> str:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return json.dumps([row.value for row in session.query(XComModel).filter_by(run_id=run_id)], default=str)


def by_key(graph: dict) -> dict[str, dict]:
    return {o["_key"]: o for kind in ("entities", "relationships") for o in graph[kind]}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_misbehaving_server_fails_the_run_cleanly_or_publishes_exactly_the_right_graph(
    scenario, dag, good_publish, start_sysdig, tmp_path, monkeypatch, capfd, caplog
):
    folder, port = good_publish
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)  # J1 state and the last publish's counts
    sysdig = SysdigEmulator(OrgSpec(), token=SYSDIG_TOKEN, scenario=scenario, canaries=(J1_KEY,))
    sysdig.start(port=port)  # first, before any emulator on a free port could be given this one
    elsewhere = start_sysdig(OrgSpec(customer_id=9999999))  # a host the redirect points at
    requests.post(f"{sysdig.url}/_emulator/faults", json={"redirect_to": elsewhere.url}, timeout=5).raise_for_status()
    jupiterone = JupiterOneEmulator(tmp_path / "j1-state.json", account=J1_ACCOUNT, api_key=J1_KEY)
    jupiterone.start()
    try:
        wire(monkeypatch, sysdig.url, jupiterone.url, tmp_path / "storage")
        before = by_key(jupiterone.graph())

        run = dag.test()

        after = by_key(jupiterone.graph())
    finally:
        sysdig.stop(), jupiterone.stop()
    states, outcome = task_states(run), OUTCOMES[scenario]
    captured = capfd.readouterr()
    logs = captured.out + captured.err + caplog.text
    if isinstance(outcome, Fails):
        assert states[outcome.task] == "failed" and run.state == "failed"
        assert re.search(outcome.says, logs), f"no {outcome.says!r} in the logs"
        assert after == before
        assert states["load"] == "success"  # the complete resources published; the others were kept
        assert re.search(r"not extracted completely in this run: .*The rest was published; JupiterOne kept its "
                         r"existing objects of .*\(partialDatasets\)", logs)
    else:
        assert set(states.values()) == {"success"}
        changed = {key for key in after if {k: v for k, v in before[key].items() if k != "_rawData"}
                   != {k: v for k, v in after[key].items() if k != "_rawData"}}
        assert after.keys() == before.keys() and changed == set(outcome.changed)
        for key, properties in outcome.changed.items():
            assert {name: after[key].get(name) for name in properties} == properties

    published = json.dumps(list(after.values()))
    stored = storage_text(tmp_path / "storage")
    for secret in SECRETS:
        for where, text in (("JupiterOne", published), ("storage", stored), ("XCom", xcom_text(run.run_id)),
                            ("logs", logs)):
            assert secret not in text, f"{secret!r} reached {where}"


def test_a_looping_listing_stops_after_a_handful_of_requests(dag, start_sysdig, jupiterone, connect):
    for scenario in ("cursor_loop", "endless_empty", "endless_pages"):
        sysdig = start_sysdig(OrgSpec(), scenario=scenario)
        connect(sysdig, jupiterone)

        assert task_states(dag.test())["extract_image_scans"] == "failed"

        asked = requests.get(f"{sysdig.url}/_emulator/stats", timeout=5).json()["requests"]
        assert asked[f"GET {RUNTIME}"] <= 4, (scenario, asked)


@pytest.mark.parametrize(("setting", "says"), [
    ({"jupiterone_extra": {"region": "mars"}}, "unknown JupiterOne region 'mars'; expected one of: us, eu"),
    ({"sysdig_extra": {"region": "us9"}}, "unknown Sysdig region 'us9'"),  # reported although a host is set
    ({"storage": "ftp://x"}, r"the storage URL 'ftp://x' \(Airflow Variable sysdig_j1_storage_url\) is not "
                             r"usable: writing and deleting a probe object failed with gaierror"),
])
def test_configuration_is_checked_before_any_data_moves(
    setting, says, dag, start_sysdig, jupiterone, connect, tmp_path, monkeypatch, capfd, caplog
):
    sysdig = start_sysdig(OrgSpec())
    connect(sysdig, jupiterone, **setting.get("sysdig_extra", {}))
    if "jupiterone_extra" in setting:
        monkeypatch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(
            {"conn_type": "jupiterone", "host": jupiterone.url, "login": J1_ACCOUNT, "password": J1_KEY,
             "extra": setting["jupiterone_extra"]}))
    if "storage" in setting:
        monkeypatch.setenv("AIRFLOW_VAR_SYSDIG_J1_STORAGE_URL", setting["storage"])

    states = task_states(dag.test())

    assert states["validate_config"] == "failed"
    assert {state for task, state in states.items() if task.startswith("extract_")} == {"upstream_failed"}
    assert re.search(says, capfd.readouterr().out + caplog.text)
    assert not list(tmp_path.glob("storage/*/*/raw")) and jupiterone.jobs() == []
    assert requests.get(f"{sysdig.url}/_emulator/stats", timeout=5).json()["requests"].keys() <= {"GET /api/users/me"}


def test_a_count_derived_across_a_failed_resource_keeps_jupiterones_value(dag, good_publish, tmp_path, monkeypatch):
    """The users listing breaks its contract (one id is text), the memberships are complete: each
    team's member count, which counts members that are users, cannot be computed, so sysdig_team
    goes partial and keeps JupiterOne's count, as a failed memberships extract already does."""
    folder, port = good_publish
    shutil.copytree(folder, tmp_path, dirs_exist_ok=True)
    sysdig = SysdigEmulator(OrgSpec(), token=SYSDIG_TOKEN, scenario="string_user_id")
    sysdig.start(port=port)
    jupiterone = JupiterOneEmulator(tmp_path / "j1-state.json", account=J1_ACCOUNT, api_key=J1_KEY)
    jupiterone.start()
    try:
        wire(monkeypatch, sysdig.url, jupiterone.url, tmp_path / "storage")
        counts = {e["_key"]: e["userCount"] for e in jupiterone.graph()["entities"] if e["_type"] == "sysdig_team"}

        states = task_states(dag.test())

        after = {e["_key"]: e["userCount"] for e in jupiterone.graph()["entities"] if e["_type"] == "sysdig_team"}
        last_job = sorted(jupiterone.jobs(), key=lambda job: job["startTimestamp"])[-1]
    finally:
        sysdig.stop(), jupiterone.stop()
    assert (states["extract_users"], states["extract_team_memberships"], states["load"]) == (
        "failed", "success", "success")
    assert {"sysdig_user", "sysdig_team"} <= set(last_job["partialDatasets"]["types"])
    assert after == counts and min(counts.values()) > 0
