"""The transform on hand-written raw records: conversions, derivations and the raw reader's contract.

Records are stored with `extract.write_pages`, as the extract tasks store them, in a temporary
RunStorage; every test builds the graph (or reads a resource) from there.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pandas as pd
import pytest

from sysdig_j1 import extract
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.model import IMAGE_SCAN
from sysdig_j1.raw import read_raw
from sysdig_j1.transform import Context, build_graph, entity_frame

ACCOUNT = {"customer": {"id": 5000001, "name": "acme"}}
ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


@pytest.fixture
def storage(tmp_path) -> RunStorage:
    return RunStorage(f"file://{tmp_path}", "sysdig_jupiterone", "manual__test")


def graph(storage: RunStorage, listings: dict[str, list[dict]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Store one page per listing (plus the account) and build the graph from them."""
    for name, records in {"account": [ACCOUNT], **listings}.items():
        extract.write_pages(storage, name, [records])
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


def test_team_user_count_comes_from_memberships(storage):
    def member(team_id: int, user_id: int) -> dict:
        return {"teamId": team_id, "userId": user_id, "standardTeamRole": "ROLE_TEAM_READ"}

    entities, relationships = graph(storage, {
        "teams": [{"id": 1, "name": "one"}, {"id": 2, "name": "two"}],
        "team_memberships/1": [member(1, 10), member(1, 11), member(1, 12)],
        "team_memberships/3": [member(3, 10)],  # a team the team list does not have
    })

    assert [entity(entities, f"sysdig_team:{t}")["userCount"] for t in (1, 2)] == [3, 0]
    assert (relationships["_type"] == "sysdig_team_has_user").sum() == 4


def test_resources_without_records_give_empty_frames(storage):
    entities, relationships = graph(storage, {})  # the account, and nothing else at all

    assert entities["_key"].tolist() == ["sysdig_account:5000001"]
    assert relationships.empty
    scans = entity_frame(IMAGE_SCAN, Context(storage))
    assert scans.empty and {p.name for p in IMAGE_SCAN.properties} <= set(scans.columns)


def test_nested_keys_with_dots_flatten_to_dotted_columns(storage):
    record = {"resultId": "r1", "scope": {"kubernetes.cluster.name": "prod", "asset.type": "workload"}}
    extract.write_pages(storage, "image_scans/runtime", [[record]])

    raw = read_raw(storage, "image_scans")

    row = raw.iloc[0]
    assert (row["scope.kubernetes.cluster.name"], row["scope.asset.type"]) == ("prod", "workload")
    assert json.loads(row["_rawData"]) == record


def test_partition_and_raw_line_stay_with_their_record_across_pages(storage):
    pipeline_pages = [[{"resultId": "p1"}, {"resultId": "p2"}], [{"resultId": "p3"}]]
    extract.write_pages(storage, "image_scans/pipeline", pipeline_pages)
    extract.write_pages(storage, "image_scans/registry", [[{"resultId": "g1", "vendor": "ecr"}]])

    raw = read_raw(storage, "image_scans")

    assert raw["_partition"].tolist() == ["pipeline", "pipeline", "pipeline", "registry"]
    assert [json.loads(line)["resultId"] for line in raw["_rawData"]] == raw["resultId"].tolist()


def test_text_that_looks_like_a_date_stays_text(storage):
    entities, _ = graph(storage, {"teams": [{"id": 1, "name": "2024-01-01", "description": "2024-06-01T00:00:00Z"}]})

    team = entity(entities, "sysdig_team:1")
    assert (team["name"], team["description"]) == ("2024-01-01", "2024-06-01T00:00:00Z")


def test_a_field_with_a_number_in_one_record_and_text_in_another_still_converts(storage):
    entities, _ = graph(storage, {"users": [user(1, version=3), user(2, version="4"), user(3)]})

    assert [entity(entities, f"sysdig_user:{n}")["version"] for n in (1, 2, 3)] == [3, 4, None]
