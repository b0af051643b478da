"""SysdigHook against the Sysdig emulator over HTTP: paging, regions, errors, retries."""

from __future__ import annotations

import json

import pytest
import requests
from conftest import SYSDIG_TOKEN

from sysdig_j1.emulators.sysdig_org import OrgSpec
from sysdig_j1.hooks.http import ApiError
from sysdig_j1.hooks.sysdig import Listing, SysdigHook
from sysdig_j1.regions import SYSDIG_REGIONS


@pytest.fixture
def sysdig_hook(start_sysdig, monkeypatch):
    """Factory: an emulator for the given organisation and a hook pointed at it."""

    def make(org: OrgSpec = OrgSpec(), token: str = SYSDIG_TOKEN, extra: dict | None = None, **options):
        emulator = start_sysdig(org, **options)
        conn = {"conn_type": "sysdig", "host": emulator.url, "password": token, "extra": extra or {}}
        monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(conn))
        return SysdigHook(backoff=0.01), emulator

    return make


def requests_made(emulator) -> dict[str, int]:
    return requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()["requests"]


@pytest.mark.parametrize(("users", "pages"), [(0, 1), (1, 1), (200, 1), (201, 2), (401, 3)])
def test_offset_paging_reads_to_the_end(sysdig_hook, users, pages):
    hook, emulator = sysdig_hook(OrgSpec(users=users, admins=0, teams=1, scans=0))

    fetched = sorted(hook.iter_pages([Listing("/platform/v1/users", "users")]), key=lambda p: p.number)

    assert [u["id"] for page in fetched for u in page.records] == [10000 + i for i in range(users)]
    assert [p.number for p in fetched] == list(range(pages))
    assert requests_made(emulator)["GET /platform/v1/users"] == pages


@pytest.mark.parametrize(("per_stage", "pages"), [(0, 1), (1000, 1), (1001, 2)])
def test_cursor_paging_stops_when_next_is_missing(sysdig_hook, per_stage, pages):
    hook, emulator = sysdig_hook(OrgSpec(users=1, admins=1, teams=1, scans=3 * per_stage))

    listing = Listing("/secure/vulnerability/v1/pipeline-results", "scans", paging="cursor", limit=1000)
    fetched = list(hook.iter_pages([listing]))

    assert sum(len(page.records) for page in fetched) == per_stage
    assert len({r["resultId"] for page in fetched for r in page.records}) == per_stage
    assert requests_made(emulator)["GET /secure/vulnerability/v1/pipeline-results"] == pages


@pytest.mark.parametrize("region", sorted(SYSDIG_REGIONS))
def test_region_table(monkeypatch, region):
    conn = {"conn_type": "sysdig", "password": "t", "extra": {"region": region}}
    monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(conn))
    expected = {"us1": "https://secure.sysdig.com", "us2": "https://us2.app.sysdig.com",
                "eu1": "https://eu1.app.sysdig.com"}.get(region, f"https://app.{region}.sysdig.com")
    assert SysdigHook().base_url == expected


def test_unknown_region_is_a_clear_config_error(monkeypatch):
    conn = {"conn_type": "sysdig", "password": "t", "extra": {"region": "mars1"}}
    monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(conn))
    with pytest.raises(ValueError, match=r"unknown Sysdig region 'mars1'.*us1.*me2"):
        SysdigHook().base_url


def test_bad_token_error_names_endpoint_status_and_message_without_retrying(sysdig_hook):
    hook, emulator = sysdig_hook(token="wrong")

    with pytest.raises(ApiError) as error:
        hook.current_user()

    assert error.value.status == 401
    assert "GET /api/users/me failed: HTTP 401: cannot verify credentials" in str(error.value)
    assert "wrong" not in str(error.value)
    assert requests_made(emulator)["GET /api/users/me"] == 1


def test_unknown_team_is_not_retried(sysdig_hook):
    hook, emulator = sysdig_hook()

    with pytest.raises(ApiError, match="/platform/v1/teams/999/users failed: HTTP 404"):
        list(hook.iter_pages([Listing("/platform/v1/teams/999/users", "members")]))

    assert requests_made(emulator)["GET /platform/v1/teams/{team_id}/users"] == 1


def test_server_errors_are_retried_until_the_answer_comes(sysdig_hook):
    hook, emulator = sysdig_hook(error_rate=0.5)

    teams = [t["id"] for page in hook.iter_pages([Listing("/platform/v1/teams", "teams")]) for t in page.records]

    assert sorted(teams) == [20000, 20001, 20002, 20003]
    assert requests_made(emulator)["GET /platform/v1/teams"] > 1  # some answers were 503


def test_validate_config_names_the_connection_and_region(sysdig_hook, monkeypatch, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from sysdig_j1 import pipeline
    from sysdig_j1.hooks.jupiterone import JupiterOneHook
    from sysdig_j1.hooks.storage import RunStorage

    hook, _ = sysdig_hook(token="revoked", extra={"region": "eu1"})
    monkeypatch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps({"conn_type": "jupiterone", "login": "a",
                                                                      "password": "k"}))
    with pytest.raises(AirflowFailException, match=r"connection 'sysdig_default' \(region eu1, http://127"):
        pipeline.validate_config(hook, JupiterOneHook(), RunStorage(f"file://{tmp_path}", "dag", "run"))
