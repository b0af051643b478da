"""The transform on hand-written raw records: conversions, derivations and the typed raw reader.

Records are stored with `raw.write_page`, as the extract tasks store them (scrubbed and checked
against the source contract), in a temporary RunStorage; every test builds the graph (or reads a
resource) from there.
"""

from __future__ import annotations

import io
import json
import math
import re
from datetime import UTC, datetime

import pandas as pd
import pytest

from sysdig_j1.contract import ContractError
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.model import IMAGE_SCAN
from sysdig_j1.raw import read_raw, write_page
from sysdig_j1.scrub import Scrubber
from sysdig_j1.transform import Context, build_graph, entity_frame

ACCOUNT = {"customer": {"id": 5000001, "name": "acme"}}
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


@pytest.fixture
def storage(tmp_path) -> RunStorage:
    return RunStorage(f"file://{tmp_path}", "sysdig_jupiterone", "manual__test")


def store(storage: RunStorage, listing: str, pages: list[list[dict]]) -> None:
    for number, records in enumerate(pages):
        write_page(storage, listing, number, records, Scrubber(), endpoint=f"/test/{listing}")


def graph(storage: RunStorage, listings: dict[str, list[dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Store one page per listing (plus the account) and build the graph from them."""
    for name, records in {"account": [ACCOUNT], **listings}.items():
        store(storage, name, [records])
    entities, relationships, partial = build_graph(Context(storage, app_url="https://app.example"))
    assert partial == []
    return entities, relationships


def entity(entities: pd.DataFrame, key: str) -> dict:
    [row] = entities[entities["_key"] == key].to_dict("records")
    return {name: None if _is_null(value) else value for name, value in row.items()}


def _is_null(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def epoch_ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)


def user(user_id: int, **fields: object) -> dict:
    return {"id": user_id, "email": f"u{user_id}@example.com", "isAdmin": False, **fields}


def test_timestamps_from_iso_text_epoch_ms_and_epoch_seconds_become_epoch_ms(storage):
    entities, _ = graph(storage, {
        "users": [user(1, dateCreated="2024-01-01T00:00:00Z", lastUpdated="2024-06-01T00:01:00.250000Z")],
        "users_light": [{"id": 1, "lastSeenOnSecure": 1_700_000_000_123}],
        "image_scans/legacy": [{"imageId": "abc", "fullTag": "nginx:1", "createdAt": 1_717_200_060}],
    })

    created = entity(entities, "sysdig_user:1")
    assert created["createdOn"] == epoch_ms(2024, 1, 1)
    assert created["updatedOn"] == epoch_ms(2024, 6, 1, 0, 1) + 250
    assert created["lastSeenOnSecure"] == 1_700_000_000_123
    assert entity(entities, "sysdig_image_scan:abc")["createdOn"] == 1_717_200_060_000  # seconds -> ms


def test_timestamp_forms_may_be_mixed_in_one_column_and_predate_1970(storage):
    instant = epoch_ms(2024, 1, 1, 1)
    entities, _ = graph(storage, {"users": [
        user(1, dateCreated="2024-01-01T01:00:00Z"),
        user(2, dateCreated=instant // 1000),  # epoch seconds
        user(3, dateCreated=instant),  # epoch milliseconds
        user(4, dateCreated="2024-01-01T02:00:00+01:00"),
        user(5, dateCreated="1960-05-01T00:00:00Z"),
    ]})

    created = [entity(entities, f"sysdig_user:{n}")["createdOn"] for n in range(1, 6)]
    assert created == [instant] * 4 + [-305_164_800_000]


@pytest.mark.parametrize("record, who, problem", [
    (user(1, dateCreated="yesterday"), "id=1", "field 'dateCreated' is not a date: string 'yesterday'"),
    (user(1, dateCreated="1700000000"), "id=1", "field 'dateCreated' is not a date"),  # digits as text
    (user(1, version="4"), "id=1", "field 'version' should be an integer, got string '4'"),
    (user(1, isAdmin="true"), "id=1", "field 'isAdmin' should be true or false, got string 'true'"),
    ({"id": "abc", "email": "a@example.com", "isAdmin": False}, "id='abc'", "field 'id' should be an integer"),
    ({"id": 1, "isAdmin": False}, "id=1", "required field 'email' is missing or null"),
    (["10003", "user3@example.com"], "no id", "record is a JSON array, not an object"),
    (user(1, version=2**70), "id=1", "field 'version' should be an integer, got number"),  # beyond int64
    (user(1, dateCreated=1e300), "id=1", "field 'dateCreated' is not a date"),
])
def test_records_that_break_the_contract_are_refused_with_where_and_why(storage, record, who, problem):
    where = re.escape(f"users: GET /test/users page 0, record 0 ({who}) breaks the source contract: ")
    with pytest.raises(ContractError, match=where + problem):
        store(storage, "users", [[record]])

    assert read_raw(storage, "users").empty  # nothing of the page was stored


def test_pull_strings_split_into_registry_repository_and_tag(storage):
    pulls = {
        "nginx:latest": (None, "nginx", "latest"),
        "localhost:5000/team/app:1.2": ("localhost:5000", "team/app", "1.2"),
        "quay.io/org/app@sha256:" + "0" * 64: ("quay.io", "org/app", None),
        f"{ECR}/a/b:c": (ECR, "a/b", "c"),
    }
    scans = [{"resultId": f"r{n}", "pullString": pull} for n, pull in enumerate(pulls)]

    entities, _ = graph(storage, {"image_scans/pipeline": scans})

    parsed = {}
    for n, pull in enumerate(pulls):
        scan = entity(entities, f"sysdig_image_scan:r{n}")
        parsed[pull] = (scan["registry"], scan["repository"], scan["tag"])
    assert parsed == pulls


def test_first_non_null_source_wins(storage):
    entities, _ = graph(storage, {
        "image_scans/runtime": [
            {"resultId": "both", "pullString": "a/pull:1", "mainAssetName": "a/asset:1"},
            {"resultId": "asset-only", "pullString": None, "mainAssetName": "a/asset:2"},
        ],
        "image_scans/legacy": [{"imageId": "legacy", "fullTag": "a/legacy:3"}],
    })

    names = {key: entity(entities, f"sysdig_image_scan:{key}")["name"] for key in ("both", "asset-only", "legacy")}
    assert names == {"both": "a/pull:1", "asset-only": "a/asset:2", "legacy": "a/legacy:3"}


def test_user_is_active_only_when_confirmed_and_enabled(storage):
    entities, _ = graph(storage, {
        "users": [
            user(1, activationStatus="confirmed", isEnabled=True),
            user(2, activationStatus="pending", isEnabled=True),
            user(3, activationStatus="confirmed", isEnabled=False),
            user(4),  # status and enabled only in the light list
            user(5),  # in neither list
        ],
        "users_light": [{"id": 4, "status": "confirmed", "enabled": True}],
    })

    active = {n: entity(entities, f"sysdig_user:{n}")["active"] for n in range(1, 6)}
    assert active == {1: True, 2: False, 3: False, 4: True, 5: False}


def test_team_user_count_counts_the_members_that_are_users(storage):
    def member(team_id: int, user_id: int) -> dict:
        return {"teamId": team_id, "userId": user_id, "standardTeamRole": "ROLE_TEAM_READ"}

    entities, relationships = graph(storage, {
        "users": [{"id": i, "email": f"u{i}@x", "isAdmin": False} for i in (10, 11)],
        "teams": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
        "team_memberships/1": [member(1, 10), member(1, 11), member(1, 12)],  # 12: removed between the listings
        "team_memberships/3": [member(3, 10)],  # a team the team list does not have
    })

    assert [entity(entities, f"sysdig_team:{t}")["userCount"] for t in (1, 2)] == [2, 0]
    assert (relationships["_type"] == "sysdig_team_has_user").sum() == 4


def test_resources_without_records_give_empty_frames(storage):
    entities, relationships = graph(storage, {})  # the account, and nothing else at all

    assert entities["_key"].tolist() == ["sysdig_account:5000001"]
    assert relationships.empty
    scans = entity_frame(IMAGE_SCAN, Context(storage))
    assert scans.empty and {p.name for p in IMAGE_SCAN.properties} <= set(scans.columns)


def test_contract_fields_become_typed_dotted_columns_and_the_record_stays_whole(storage):
    record = {"resultId": "r1", "mainAssetName": "nginx:1", "vulnTotalBySeverity": {"critical": 2},
              "scope": {"kubernetes.cluster.name": "prod", "asset.type": "workload"}}
    store(storage, "image_scans/runtime", [[record]])

    raw = read_raw(storage, "image_scans")

    row = raw.iloc[0]
    assert row["vulnTotalBySeverity.critical"] == 2 and str(raw["vulnTotalBySeverity.critical"].dtype) == "Int64"
    assert "scope.asset.type" not in raw.columns  # not in the model, so only in _rawData
    assert json.loads(row["_rawData"]) == record


def scan(result_id: str) -> dict:
    return {"resultId": result_id, "pullString": f"acme/{result_id}:1"}


def test_partition_and_raw_line_stay_with_their_record_across_pages(storage):
    pipeline_pages = [[scan("p1"), scan("p2")], [scan("p3")]]
    store(storage, "image_scans/pipeline", pipeline_pages)
    store(storage, "image_scans/registry", [[{**scan("g1"), "vendor": "ecr"}]])

    raw = read_raw(storage, "image_scans")

    assert raw["_partition"].tolist() == ["pipeline", "pipeline", "pipeline", "registry"]
    assert [json.loads(line)["resultId"] for line in raw["_rawData"]] == raw["resultId"].tolist()


def test_text_that_looks_like_a_date_stays_text(storage):
    entities, _ = graph(storage, {"teams": [{"id": 1, "name": "2024-01-01", "description": "2024-06-01T00:00:00Z"}]})

    team = entity(entities, "sysdig_team:1")
    assert (team["name"], team["description"]) == ("2024-01-01", "2024-06-01T00:00:00Z")


def test_a_page_written_under_another_contract_is_refused_when_read(storage):
    store(storage, "teams", [[{"id": 1, "name": "one"}]])
    [(_, page)] = storage.pages(storage.raw("teams"), ".parquet")
    frame = pd.read_parquet(io.BytesIO(page.read_bytes())).drop(columns=["version"])
    page.write_bytes(frame.to_parquet(index=False))

    with pytest.raises(ContractError, match=r"teams: .*part-00000.parquet was not written under the current"):
        read_raw(storage, "teams")


def test_a_membership_needs_a_standard_or_a_custom_role(storage):
    store(storage, "team_memberships/1", [[{"teamId": 1, "userId": 2, "customTeamRoleId": 7}]])
    with pytest.raises(ContractError, match=re.escape(
            "(teamId=1 userId=3) breaks the source contract: required field 'standardTeamRole' or "
            "'customTeamRoleId' is missing or null")):
        store(storage, "team_memberships/1", [[{"teamId": 1, "userId": 3, "standardTeamRole": None}]])


def test_optional_references_to_what_this_run_did_not_list_are_dropped_with_a_warning(storage, caplog):
    """A host naming a cluster the inventory did not list (created in between), a team listing a zone
    twice, a node whose provider id is no EC2 instance id: no relationship, and a warning each."""
    required = {"platform": "Kubernetes", "type": "Node", "category": "Compute", "lastSeen": 1, "zones": []}
    cluster = {**required, "hash": "c1", "name": "prod-0", "type": "Cluster"}
    hosts = [{**required, "hash": "h1", "name": "node-1",
              "metadata": {"cluster": "prod-0", "providerID": "aws:///z/i-0abc12345"}},
             {**required, "hash": "h2", "name": "node-2",
              "metadata": {"cluster": "prod-9", "providerID": "aws:///z/i-NOTHEX"}},
             {**required, "hash": "h3", "name": "bare-metal"}]  # no cluster: no relationship, nothing to warn about
    team = {"id": 20000, "name": "ops", "zoneIds": [40000, 40000, 40001]}
    zones = [{"id": 40000, "name": "a"}, {"id": 40001, "name": "b"}]
    _, relationships = graph(storage, {"clusters": [cluster], "hosts": hosts, "teams": [team], "zones": zones})

    def ends(type_: str) -> list[tuple[str, str]]:
        found = relationships[relationships["_type"] == type_]
        return sorted(zip(found["_fromEntityKey"], found["_toEntityKey"]))

    assert ends("sysdig_cluster_has_host") == [("sysdig_cluster:prod-0", "sysdig_host:h1")]
    assert ends("sysdig_team_uses_zone") == [("sysdig_team:20000", "sysdig_zone:40000"),
                                             ("sysdig_team:20000", "sysdig_zone:40001")]
    assert ends("sysdig_host_is_aws_instance") == [("sysdig_host:h1", "i-0abc12345")]
    assert "sysdig_cluster_has_host: 1 records name a sysdig_cluster this run did not list (e.g. sysdig_cluster:prod-9)" \
        in caplog.text
