"""Extraction under load and trouble, against the Sysdig emulator over HTTP: the concurrency bound,
rate limits (client-side gate and Retry-After), faults beyond the retry budget, region detection,
legacy fallbacks, and memory that stays flat as the organisation grows."""

from __future__ import annotations

import json
import time
import tracemalloc
from email.utils import formatdate

import pytest
import requests
from conftest import SYSDIG_TOKEN

from sysdig_j1 import extract
from sysdig_j1_emulators.sysdig_org import OrgSpec
from sysdig_j1.hooks import sysdig as sysdig_module
from sysdig_j1.hooks.http import ApiError, CappedRetry
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import SysdigHook
from sysdig_j1.raw import read_raw
from sysdig_j1.scrub import Scrubber


@pytest.fixture
def sysdig_hook(start_sysdig, monkeypatch):
    def make(org: OrgSpec = OrgSpec(), extra: dict | None = None, **faults):
        emulator = start_sysdig(org, **faults)
        conn = {"conn_type": "sysdig", "host": emulator.url, "password": SYSDIG_TOKEN, "extra": extra or {}}
        monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(conn))
        return SysdigHook(backoff=0.01), emulator

    return make


@pytest.fixture
def storage(tmp_path):
    return RunStorage(f"file://{tmp_path}", "dag", "run")


def stats(emulator) -> dict:
    return requests.get(f"{emulator.url}/_emulator/stats", timeout=5).json()


@pytest.mark.parametrize("bound", [1, 3])
def test_concurrency_never_exceeds_the_configured_bound(sysdig_hook, storage, bound):
    hook, emulator = sysdig_hook(OrgSpec(users=1000, teams=12, scans=30), extra={"max_concurrency": bound},
                                 latency=0.02)
    extract.run("teams", hook, storage, Scrubber([hook.secret]))

    extract.run("users", hook, storage, Scrubber([hook.secret]))
    manifest = extract.run("team_memberships", hook, storage, Scrubber([hook.secret]))

    assert manifest["records"]["team_memberships"] == 998 + 2 * 12
    assert stats(emulator)["peak_in_flight"] == bound  # reached, never passed


def test_requests_are_pages_plus_teams_plus_a_constant(sysdig_hook, storage):
    hook, emulator = sysdig_hook(OrgSpec(users=2000, teams=50, scans=5000))

    for resource in ("account", "users", "teams", "team_memberships", "image_scans"):
        extract.run(resource, hook, storage, Scrubber([hook.secret]))

    made = stats(emulator)["requests"]
    assert made == {
        "GET /api/users/me": 1,
        "GET /platform/v1/users": 10,  # 2000 / 200
        "GET /api/v2/users/light": 2,  # 2000 / 1000
        "GET /platform/v1/teams": 1,
        "GET /platform/v1/teams/{team_id}/users": 50,  # one page per team
        **{f"GET /secure/vulnerability/v1/{stage}-results": 2 for stage in ("runtime", "pipeline", "registry")},
    }


def test_retry_after_is_honoured(sysdig_hook):
    hook, emulator = sysdig_hook(rate_limit_per_minute=2, rate_limit_window=3)
    for _ in range(2):  # another client spends this token's budget
        requests.get(f"{emulator.url}/platform/v1/teams", headers={"Authorization": f"Bearer {SYSDIG_TOKEN}"},
                     timeout=5)
    blocked = requests.get(f"{emulator.url}/platform/v1/teams", headers={"Authorization": f"Bearer {SYSDIG_TOKEN}"},
                           timeout=5)
    retry_after = int(blocked.headers["Retry-After"])

    started = time.monotonic()
    teams = hook.get_json("/platform/v1/teams")
    waited = time.monotonic() - started

    assert len(teams["data"]) == 4
    assert retry_after - 1 <= waited < retry_after + 2  # slept for Retry-After, not for backoff
    assert stats(emulator)["statuses"]["429"] == 2  # ours and the probe above


def test_retry_after_is_capped_and_understands_http_dates():
    retry = CappedRetry()
    assert retry.parse_retry_after("7") == 7
    assert retry.parse_retry_after("86400") == CappedRetry.RETRY_AFTER_CAP
    assert 0 <= retry.parse_retry_after(formatdate(time.time() + 30, usegmt=True)) <= 31


def test_rate_limit_headers_are_followed_so_no_429_happens(sysdig_hook, storage):
    hook, emulator = sysdig_hook(OrgSpec(users=2400, teams=2, scans=3), rate_limit_per_minute=5,
                                 rate_limit_window=1)
    started = time.monotonic()

    manifest = extract.run("users", hook, storage, Scrubber([hook.secret]))

    assert manifest["records"] == {"users": 2400, "users_light": 2400}  # 12 + 3 requests
    assert "429" not in stats(emulator)["statuses"]
    assert time.monotonic() - started >= 2  # 15 requests at 5 per window need three windows


def test_no_retry_on_client_errors(sysdig_hook):
    hook, emulator = sysdig_hook()
    with pytest.raises(ApiError, match="HTTP 404"):
        hook.get_json("/platform/v1/teams/424242/users")
    with pytest.raises(ApiError, match="HTTP 400"):
        hook.get_json("/platform/v1/users", {"limit": 201})
    assert sum(stats(emulator)["requests"].values()) == 2


def test_server_error_storm_beyond_the_retry_budget_fails_clearly(sysdig_hook, storage):
    hook, emulator = sysdig_hook(error_rate=1.0)

    with pytest.raises(ApiError, match=r"Sysdig GET /platform/v1/teams failed: HTTP 503: .+") as error:
        extract.run("teams", hook, storage, Scrubber([hook.secret]))

    assert error.value.status == 503
    assert stats(emulator)["requests"]["GET /platform/v1/teams"] == 6  # first try + 5 retries


def test_dropped_connections_are_retried(sysdig_hook, storage):
    hook, emulator = sysdig_hook(OrgSpec(users=1000), drop_rate=0.3)

    manifest = extract.run("users", hook, storage, Scrubber([hook.secret]))

    assert manifest["records"] == {"users": 1000, "users_light": 1000}
    assert sum(stats(emulator)["requests"].values()) > 5 + 1  # some of the 6 pages were asked again


def test_truncated_body_fails_clearly(sysdig_hook, storage):
    hook, _ = sysdig_hook(truncate_rate=1.0)

    with pytest.raises(ApiError, match=r"Sysdig GET /platform/v1/teams failed: .*(IncompleteRead|invalid JSON)"):
        extract.run("teams", hook, storage, Scrubber([hook.secret]))


def test_read_timeouts_are_retried_then_fail_clearly(sysdig_hook, monkeypatch):
    hook, emulator = sysdig_hook(slow_rate=1.0, slow_seconds=0.5)
    hook.timeout = (1, 0.2)

    with pytest.raises(ApiError, match=r"GET /platform/v1/teams failed: .*(ReadTimeout|Read timed out)"):
        hook.get_json("/platform/v1/teams")
    assert stats(emulator)["requests"]["GET /platform/v1/teams"] == 6


def test_region_is_detected_when_none_is_configured(start_sysdig, monkeypatch):
    # Every region points at a server; only "eu1"'s accepts this token (tokens are region-scoped).
    ours = start_sysdig(OrgSpec())
    stranger = start_sysdig(OrgSpec(), token="someone-elses-token")
    table = {region: stranger.url for region in sysdig_module.SYSDIG_REGIONS} | {"eu1": ours.url}
    monkeypatch.setattr(sysdig_module, "SYSDIG_REGIONS", table)
    monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps({"conn_type": "sysdig", "password": SYSDIG_TOKEN}))

    hook = SysdigHook()

    assert (hook.region, hook.base_url) == ("eu1", ours.url)
    assert hook.current_user()["customer"]["id"] == 5000001

    monkeypatch.setattr(sysdig_module, "SYSDIG_REGIONS", dict.fromkeys(table, stranger.url))
    with pytest.raises(ValueError, match="no Sysdig region accepted its token"):
        SysdigHook().region


def test_gone_legacy_sources_do_not_break_the_run(sysdig_hook, storage):
    hook, _ = sysdig_hook(extra={"image_scan_source": "legacy-scanning"}, users_light="gone",
                          legacy_scanning="gone")

    users = extract.run("users", hook, storage, Scrubber([hook.secret]))
    scans = extract.run("image_scans", hook, storage, Scrubber([hook.secret]))

    assert users["records"] == {"users": 30, "users_light": 0}
    assert scans["records"] == {"image_scans/legacy": 0}


def peak_memory_of_scan_extract(hook: SysdigHook, storage: RunStorage) -> int:
    tracemalloc.start()
    try:
        extract.run("image_scans", hook, storage, Scrubber([hook.secret]))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_extract_memory_stays_flat_as_the_organisation_grows(sysdig_hook, tmp_path):
    hooks = {scans: sysdig_hook(OrgSpec(scans=scans), extra={"max_concurrency": 2})[0] for scans in (3_000, 30_000)}
    storages = {name: RunStorage(f"file://{tmp_path}/{name}", "dag", "run") for name in ("warm-up", 3_000, 30_000)}
    extract.run("image_scans", hooks[3_000], storages["warm-up"], Scrubber())  # one-time allocations (imports, pools)

    small = peak_memory_of_scan_extract(hooks[3_000], storages[3_000])
    large = peak_memory_of_scan_extract(hooks[30_000], storages[30_000])

    assert len(read_raw(storages[30_000], "image_scans")) == 30_000
    assert large < 1.5 * small, (small, large)  # ten times the data, about the same peak


def test_a_long_extract_logs_its_progress_per_listing(sysdig_hook, storage, monkeypatch, caplog):
    hook, _ = sysdig_hook(OrgSpec(scans=6_000), extra={"max_concurrency": 1})
    monkeypatch.setattr(extract, "PROGRESS_SECONDS", 0.0)  # every page, instead of every 15 s

    with caplog.at_level("INFO", logger="sysdig_j1.extract"):
        extract.run("image_scans", hook, storage, Scrubber())

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert len(lines) == 6  # 2,000 scans per stage in pages of 1,000
    assert "image_scans/runtime 1,000 of 2,000 records" in lines[0]
    assert lines[-1].startswith("progress: 6 pages so far;") and lines[-1].count("2,000 of 2,000 records") == 3


def test_progress_of_many_listings_is_summed():
    from collections import Counter

    counts = Counter({f"team_memberships/{n}": 10 for n in range(6)})
    assert extract.progress(counts, dict.fromkeys(counts, 20)) == "6 listings, 60 of 120 records"
    assert extract.progress(counts, {**dict.fromkeys(counts, 20), "team_memberships/0": None}) == "6 listings, 60 records"
