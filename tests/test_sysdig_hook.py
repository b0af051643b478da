"""SysdigHook against the Sysdig emulator over HTTP: paging, completeness, regions, errors, retries,
redirects and scrubbed error messages."""

from __future__ import annotations

import json
import re

import pytest
import requests
from conftest import SYSDIG_TOKEN

from sysdig_j1_emulators.sysdig_org import OrgSpec
from sysdig_j1.hooks.http import ApiError
from sysdig_j1.hooks.sysdig import Listing, ListingError, SysdigHook, _Walk
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


# -- completeness: a listing that cannot be shown complete is an error naming the endpoint ----
def pages_of(hook: SysdigHook, listing: Listing) -> int:
    return sum(len(page.records) for page in hook.iter_pages([listing]))


RUNTIME = Listing("/secure/vulnerability/v1/runtime-results", "scans", paging="cursor", limit=1000)


@pytest.mark.parametrize(("scenario", "org", "listing", "problem"), [
    ("changing_total", OrgSpec(users=450), Listing("/platform/v1/users", "users"),
     "page [12]: the total changed from 450 to 45[12] between pages"),  # pages 1 and 2 race
    ("short_member_pages", OrgSpec(), Listing("/platform/v1/teams/20000/users", "members",
                                              params={"withAdminUsers": "true"}),
     "page 0: 5 records at offset 0, expected 9 of 9"),
    ("endless_empty", OrgSpec(), RUNTIME, "page 2: 3 pages, more than a listing of 15 records can have"),
    ("endless_pages", OrgSpec(), RUNTIME, "page 1: 30 records received, more than the total of 15"),
    ("cursor_loop", OrgSpec(), RUNTIME, "page 1: 30 records received, more than the total of 15"),
])
def test_incomplete_listings_fail_naming_the_endpoint(sysdig_hook, scenario, org, listing, problem):
    hook, emulator = sysdig_hook(org, scenario=scenario)

    with pytest.raises(ListingError, match=re.escape(f"Sysdig GET {listing.path} failed: incomplete listing: ")
                       + problem.replace("(", r"\(")):
        pages_of(hook, listing)
    assert sum(requests_made(emulator).values()) <= 5  # stopped at once, not at a timeout


def walk(bodies: list[dict], listing: Listing = RUNTIME) -> int:
    """Feed answers to the paging rules one by one, as a cursor crawl does; the pages fetched."""
    state, position = _Walk(), None
    for number, body in enumerate(bodies):
        follow = SysdigHook._follow_ups(listing, number, position, state, body, body["data"])
        if not follow:
            return number + 1
        position = follow[0][2]
    raise AssertionError("the listing did not end")


def test_a_cursor_that_points_back_is_a_loop_even_without_a_total():
    page = {"data": [{"resultId": "r"}]}
    with pytest.raises(ListingError, match="page 2: the next page points back to an earlier position: a loop"):
        walk([{**page, "page": {"next": "A"}}, {**page, "page": {"next": "B"}}, {**page, "page": {"next": "A"}}])


def test_empty_pages_that_keep_pointing_on_are_an_error_without_a_total():
    empty = [{"data": [], "page": {"next": f"c{n}"}} for n in range(5)]
    with pytest.raises(ListingError, match="page 2: 3 empty pages in a row"):
        walk(empty)


def test_a_walk_that_ends_short_of_its_total_is_incomplete():
    with pytest.raises(ListingError, match="page 1: the listing ended after 2 records, but its total is 3"):
        walk([{"data": [{}], "page": {"total": 3, "next": "A"}}, {"data": [{}], "page": {"total": 3}}])
    assert walk([{"data": [{}], "page": {"total": 2, "next": "A"}}, {"data": [{}], "page": {"total": 2}}]) == 2


def test_an_offset_listing_without_a_total_cannot_be_verified():
    with pytest.raises(ListingError, match="page 0: no total in the answer"):
        SysdigHook._follow_ups(Listing("/platform/v1/users", "users"), 0, None, _Walk(), {"data": []}, [])


@pytest.mark.parametrize(("scenario", "listing", "problem"), [
    ("data_not_list", Listing("/platform/v1/teams", "teams"), "the answer's 'data' is not a list"),
    ("body_not_object", Listing("/platform/v1/teams", "teams"), "the answer is a JSON list, not an object"),
])
def test_answers_of_the_wrong_shape_are_errors_naming_the_endpoint(sysdig_hook, scenario, listing, problem):
    hook, _ = sysdig_hook(OrgSpec(), scenario=scenario)

    with pytest.raises(ListingError, match=re.escape(f"Sysdig GET {listing.path} failed: {problem}")):
        pages_of(hook, listing)


# -- transport and secrets ---------------------------------------------------------------------
def test_a_redirect_to_another_host_is_refused_and_not_followed(sysdig_hook, start_sysdig):
    elsewhere = start_sysdig(OrgSpec(customer_id=9999999))
    hook, _ = sysdig_hook(OrgSpec(), scenario="redirect", redirect_to=elsewhere.url)

    with pytest.raises(ApiError, match=rf"GET /platform/v1/users failed: HTTP 302: redirect to {elsewhere.url} refused"):
        pages_of(hook, Listing("/platform/v1/users", "users"))
    assert requests_made(elsewhere) == {}


def test_an_error_that_echoes_the_token_is_scrubbed_before_it_is_raised(sysdig_hook):
    hook, _ = sysdig_hook(OrgSpec(), scenario="error_echo")

    with pytest.raises(ApiError) as error:
        pages_of(hook, Listing("/platform/v1/teams", "teams"))
    assert str(error.value) == "Sysdig GET /platform/v1/teams failed: HTTP 400: Invalid parameter 'limit' for token ***"
    assert SYSDIG_TOKEN not in repr(error.value.args)


def test_a_region_typo_is_reported_even_when_a_host_overrides_it(monkeypatch):
    conn = {"conn_type": "sysdig", "host": "https://sysdig.internal", "password": "t", "extra": {"region": "us9"}}
    monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(conn))
    with pytest.raises(ValueError, match="unknown Sysdig region 'us9'"):
        SysdigHook().base_url


def test_airflows_masker_knows_both_connection_secrets_once_read(sysdig_hook, monkeypatch):
    from airflow.sdk._shared.secrets_masker import redact  # what Airflow's log processors apply

    from sysdig_j1.hooks.jupiterone import JupiterOneHook

    hook, _ = sysdig_hook(token="masked-sysdig-token")
    monkeypatch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(
        {"conn_type": "jupiterone", "login": "account", "password": "masked-j1-key"}))
    hook.secret, JupiterOneHook().secret  # noqa: B018 - reading the connection registers its password

    assert redact("token masked-sysdig-token and key masked-j1-key") == "token *** and key ***"


def test_an_optional_listing_gone_after_its_first_page_is_incomplete_not_skipped(sysdig_hook, monkeypatch):
    hook, _ = sysdig_hook(OrgSpec())
    light = Listing("/api/v2/users/light", "users_light", items="users", limit=2, optional=True)

    def get_json(path, params):
        if params["offset"]:
            raise ApiError("Sysdig", "GET", path, 404, "gone")
        return {"users": [{"id": 1}, {"id": 2}], "total": 5}

    monkeypatch.setattr(hook, "get_json", get_json)
    with pytest.raises(ApiError, match="GET /api/v2/users/light failed: HTTP 404"):
        pages_of(hook, light)

    monkeypatch.setattr(hook, "get_json", lambda path, params: (_ for _ in ()).throw(ApiError("S", "GET", path, 410, "")))
    assert pages_of(hook, light) == 0  # gone from the start: a retired endpoint, skipped with a warning


@pytest.mark.parametrize(("body", "problem"), [
    ({"data": [], "page": []}, "the answer's 'page' is not an object"),
    ({"data": [], "page": {"total": "12"}}, "the total is a JSON str, not a count"),
    ({"data": [{}], "page": {"total": 2, "next": {"c": 1}}}, "the next cursor is a JSON dict, not text"),
])
def test_paging_fields_of_the_wrong_type_are_errors(body, problem):
    with pytest.raises(ListingError, match=re.escape(problem)):
        SysdigHook._follow_ups(RUNTIME, 0, None, _Walk(), body, body["data"])


def test_a_secret_at_the_cut_of_a_long_server_message_is_still_scrubbed(sysdig_hook):
    hook, _ = sysdig_hook()
    error = hook._error("GET", "/x", 400, "a" * 495 + f" {SYSDIG_TOKEN} " + "b" * 100)

    assert SYSDIG_TOKEN[:4] not in str(error) and "***" in str(error) and str(error).endswith("...")


def test_validate_config_refuses_an_account_without_a_customer_id(sysdig_hook, monkeypatch, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from sysdig_j1 import pipeline
    from sysdig_j1.hooks.jupiterone import JupiterOneHook
    from sysdig_j1.hooks.storage import RunStorage

    hook, _ = sysdig_hook()
    monkeypatch.setattr(hook, "current_user", lambda: {"customer": {"id": None, "name": "acme"}})
    monkeypatch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps({"conn_type": "jupiterone", "login": "a",
                                                                      "password": "k"}))
    with pytest.raises(AirflowFailException, match=re.escape(
            "Sysdig GET /api/users/me: the account breaks the source contract: required field 'customer.id'")):
        pipeline.validate_config(hook, JupiterOneHook(), RunStorage(f"file://{tmp_path}", "dag", "run"))


@pytest.mark.parametrize(("body", "message"), [
    (b'{"errors": ["bad thing", {"message": "worse"}]}', "bad thing; worse"),
    (b'{"type": "bad_request", "message": "Invalid limit", "details": []}', "Invalid limit"),
    (b"plain text", "plain text"),
])
def test_error_messages_of_every_shape_are_quoted(body, message):
    from sysdig_j1.hooks.http import error_message

    response = requests.Response()
    response._content, response.status_code = body, 400
    assert error_message(response) == message


def test_a_host_carrying_credentials_is_refused(monkeypatch):
    conn = {"conn_type": "sysdig", "host": "https://admin:s3cret@sysdig.internal", "password": "t"}
    monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(conn))
    with pytest.raises(ValueError, match="the Sysdig host must not carry credentials") as error:
        SysdigHook().base_url
    assert "s3cret" not in str(error.value)


SSO = Listing("/platform/v1/sso-settings", "sso_settings", paging="none")


@pytest.mark.parametrize(("body", "problem"), [
    ({"data": [{}], "page": {"next": "2"}}, "page 0: the answer points to a next page of a listing that has no paging"),
    ({"data": [{}], "page": {"total": 3}}, "page 0: 1 records in an answer that states a total of 3"),
])
def test_an_unpaged_answer_that_says_it_holds_more_is_incomplete(body, problem):
    with pytest.raises(ListingError, match=re.escape(problem)):
        SysdigHook._follow_ups(SSO, 0, None, _Walk(), body, body["data"])


def test_an_unpaged_answer_is_whole_with_or_without_a_total():
    for body in ({"data": [{}, {}]}, {"data": [{}, {}], "page": {"total": 2}}):
        assert SysdigHook._follow_ups(SSO, 0, None, _Walk(), body, body["data"]) == []
