"""Publishing to the JupiterOne emulator over HTTP: batching, abort on failure, idempotent re-runs."""

from __future__ import annotations

import io
import json
import random

import pandas as pd
import pytest
from conftest import J1_ACCOUNT, J1_KEY

from sysdig_j1_emulators.jupiterone import FAILED_ENDS
from sysdig_j1.hooks.http import ApiError
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.load import (
    MAX_STRING,
    MassDeletionError,
    batches,
    body,
    check_mass_deletion,
    graph_objects,
    publish,
    upload,
)

SCOPE = "sysdig-j1:test"


@pytest.fixture
def hook(jupiterone, monkeypatch):
    conn = {"conn_type": "jupiterone", "host": jupiterone.url, "login": J1_ACCOUNT, "password": J1_KEY}
    monkeypatch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(conn))
    return JupiterOneHook(backoff=0.01)


def frames(users: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A small graph in the shape the transform writes (nullable dtypes, list column, raw JSON)."""
    account = "sysdig_account:1"
    user_keys = [f"sysdig_user:{i}" for i in range(users)]
    entities = pd.DataFrame(
        {
            "_key": [account, *user_keys],
            "_type": ["sysdig_account"] + ["sysdig_user"] * users,
            "_class": ["Account"] + ["User"] * users,
            "name": ["acme"] + [f"user{i}@example.com" for i in range(users)],
            "displayName": ["acme"] + [f"User {i}" for i in range(users)],
            "version": pd.array([None] + [i % 3 or None for i in range(users)], dtype="Int64"),
            "products": [None] + [["SDS"] if i % 2 else ["SDC", "SDS"] for i in range(users)],
            "_rawData": [json.dumps({"id": 1})] + [json.dumps({"id": i, "pad": "x" * 50}) for i in range(users)],
        }
    )
    relationships = pd.DataFrame(
        {
            "_key": [f"{account}|has|{k}" for k in user_keys],
            "_type": "sysdig_account_has_user",
            "_class": "HAS",
            "_fromEntityKey": account,
            "_toEntityKey": user_keys,
            "displayName": "HAS",
        }
    )
    return entities, relationships


def parquet_round_trip(frame: pd.DataFrame) -> pd.DataFrame:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return pd.read_parquet(buffer)


def test_graph_objects_are_plain_json_without_nulls():
    entities, _ = frames(3)
    objects = {o["_key"]: o for o in graph_objects(parquet_round_trip(entities))}

    assert "version" not in objects["sysdig_user:0"] and "products" not in objects["sysdig_account:1"]
    assert objects["sysdig_user:1"]["version"] == 1 and type(objects["sysdig_user:1"]["version"]) is int
    assert objects["sysdig_user:0"]["products"] == ["SDC", "SDS"]
    assert objects["sysdig_user:2"]["_rawData"] == [{"name": "default", "rawData": {"id": 2, "pad": "x" * 50}}]
    json.dumps(list(objects.values()))  # serialisable as they are


def test_graph_objects_come_out_the_same_in_slices(monkeypatch):
    entities, _ = frames(40)
    whole = list(graph_objects(entities))

    monkeypatch.setattr("sysdig_j1.load.ROWS_PER_SLICE", 7)

    assert list(graph_objects(entities)) == whole and len(whole) == 41


def test_batches_never_exceed_the_bound_and_keep_every_object():
    rng = random.Random(3)
    objects = [{"_key": f"k{i:08d}", "blob": "y" * rng.randint(0, 700)} for i in range(300)]

    bodies = [body("entities", chunks) for chunks in batches("entities", objects, max_bytes=2_000)]

    assert len(bodies) > 1 and max(len(b) for b in bodies) <= 2_000
    assert [o for b in bodies for o in json.loads(b)["entities"]] == objects
    with pytest.raises(ValueError, match="k-huge: its properties alone exceed"):
        list(batches("entities", [{"_key": "k-huge", "blob": "z" * 3_000}], max_bytes=2_000))


def test_an_object_larger_than_a_batch_loses_raw_data_not_properties():
    big = {"_key": "sysdig_user:big", "name": "n" * 100, "_rawData": [
        {"name": "default", "rawData": {"small": 1, "huge": "h" * 5_000, "large": "l" * 1_500}}]}

    [[data]] = list(batches("entities", [big], max_bytes=2_000))

    trimmed = json.loads(data)
    assert len(body("entities", [data])) <= 2_000
    assert trimmed["name"] == big["name"]
    assert trimmed["_rawData"][0]["rawData"] == {"small": 1, "huge": "TRUNCATED", "large": "l" * 1_500}


def test_long_property_strings_are_cut_to_the_limit():
    frame = pd.DataFrame({"_key": ["sysdig_team:1"], "_type": ["sysdig_team"], "description": ["d" * 5_000],
                          "tags": [["t" * 5_000, "ok"]]})

    [obj] = graph_objects(frame)

    assert len(obj["description"]) == MAX_STRING and obj["description"].endswith("...")
    assert obj["tags"] == ["t" * (MAX_STRING - 3) + "...", "ok"]


def test_publish_in_small_batches(hook, jupiterone):
    entities, relationships = frames()

    result = publish(hook, entities, relationships, SCOPE, max_batch_bytes=1_500, poll_seconds=0.01)

    assert result["status"] == "FINISHED" and result["sent"]["entities"]["batches"] > 3
    assert result["sent"]["entities"]["objects"] == 41
    uploads = [r for r in jupiterone.jobs()[-1]["requests"] if r["action"] in ("entities", "relationships")]
    assert len(uploads) == sum(sent["batches"] for sent in result["sent"].values())
    assert len({u["correlationId"] for u in uploads}) == len(uploads)
    assert jupiterone.summary(SCOPE) == {"entities": {"sysdig_account": 1, "sysdig_user": 40},
                                         "relationships": {"sysdig_account_has_user": 40}}


def test_publishing_the_same_frames_twice_leaves_the_same_graph(hook, jupiterone):
    entities, relationships = frames()
    publish(hook, entities, relationships, SCOPE, poll_seconds=0.01)
    first = jupiterone.graph(SCOPE)

    second = publish(hook, entities, relationships, SCOPE, poll_seconds=0.01)

    assert jupiterone.graph(SCOPE) == first
    counts = second["counts"]
    assert (counts["numEntitiesCreated"], counts["numEntitiesUpdated"], counts["numEntitiesDeleted"]) == (0, 0, 0)


def test_failure_after_create_aborts_the_job_and_changes_nothing(hook, jupiterone):
    entities, relationships = frames()
    publish(hook, entities, relationships, SCOPE, poll_seconds=0.01)
    before = jupiterone.graph(SCOPE)
    jupiterone.configure_faults(fail_uploads_after=2)  # every upload after the second answers 503

    with pytest.raises(ApiError, match="HTTP 503"):
        publish(hook, entities.iloc[:10], relationships.iloc[:9], SCOPE, max_batch_bytes=600, poll_seconds=0.01)

    job = jupiterone.jobs()[-1]
    assert job["status"] == "ABORTED" and "503" in job["abortReason"]
    assert jupiterone.graph(SCOPE) == before

    jupiterone.configure_faults(fail_uploads_after=None)  # the next run, after the outage
    publish(hook, entities.iloc[:10], relationships.iloc[:9], SCOPE, max_batch_bytes=600, poll_seconds=0.01)
    after = jupiterone.graph(SCOPE)
    assert sorted(e["_key"] for e in after["entities"]) == sorted(entities["_key"].iloc[:10])  # no duplicates
    assert len(after["relationships"]) == 9


@pytest.mark.parametrize("status", FAILED_ENDS)
def test_a_job_ending_in_any_failed_status_fails_at_once_with_its_id(hook, jupiterone, status):
    """Every status but the four of a job at work ends the wait: UNKNOWN and ABORTED_... too."""
    jupiterone.configure_faults(fail_finalize=status)

    with pytest.raises(RuntimeError, match=rf"JupiterOne job [0-9a-f-]{{36}} ended with status {status}$"):
        publish(hook, *frames(3), SCOPE, poll_seconds=0.01, timeout_seconds=30)


def test_an_integration_instance_publishes_as_integration_external(jupiterone, monkeypatch):
    conn = {"conn_type": "jupiterone", "host": jupiterone.url, "login": J1_ACCOUNT, "password": J1_KEY,
            "extra": {"integration_instance_id": "5a1f0c3e-6b1d-4d2a-9a57-0c9e2b7f1a11"}}
    monkeypatch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(conn))

    publish(JupiterOneHook(backoff=0.01), *frames(3), SCOPE, poll_seconds=0.01)

    job = jupiterone.jobs()[-1]
    assert (job["source"], job["integrationInstanceId"], job["scope"]) == (
        "integration-external", "5a1f0c3e-6b1d-4d2a-9a57-0c9e2b7f1a11", None)
    assert jupiterone.summary("5a1f0c3e-6b1d-4d2a-9a57-0c9e2b7f1a11")["entities"]["sysdig_user"] == 3


def test_a_413_splits_the_batch_until_it_fits(hook, jupiterone):
    entities, relationships = frames(200)
    jupiterone.configure_faults(max_body_bytes=1_500)  # measured on the gzipped wire bytes

    result = publish(hook, entities, relationships, SCOPE, poll_seconds=0.01)

    statuses = [r["status"] for r in jupiterone.jobs()[-1]["requests"] if r["action"] == "entities"]
    assert 413 in statuses and statuses.count(200) == result["sent"]["entities"]["batches"] > 1
    assert jupiterone.summary(SCOPE)["entities"] == {"sysdig_account": 1, "sysdig_user": 200}


def test_throttled_uploads_are_retried_with_the_same_correlation_id(hook, jupiterone):
    entities, relationships = frames()
    jupiterone.configure_faults(rate_limit_every=2, retry_after=0)

    publish(hook, entities, relationships, SCOPE, max_batch_bytes=1_500, poll_seconds=0.01)

    requests_ = [r for r in jupiterone.jobs()[-1]["requests"] if r["action"] == "entities"]
    throttled = [r for r in requests_ if r["status"] == 429]
    assert throttled
    for answer in throttled:  # each 429 is followed by a success with the same id
        assert any(r["correlationId"] == answer["correlationId"] and r["status"] == 200 for r in requests_)
    assert jupiterone.summary(SCOPE)["entities"]["sysdig_user"] == 40


def test_job_not_awaiting_uploads_is_fatal_and_not_retried(hook, jupiterone):
    entities, _ = frames()
    job_id = hook.create_job(SCOPE)["id"]
    hook.abort(job_id, "closed by JupiterOne")

    with pytest.raises(ApiError, match="JOB_NOT_AWAITING_UPLOADS"):
        upload(hook, job_id, "entities", graph_objects(entities), 100_000)

    [job] = [j for j in jupiterone.jobs() if j["id"] == job_id]
    assert [r["action"] for r in job["requests"]].count("entities") == 1


def test_guard_refuses_to_delete_too_much_and_the_job_is_aborted(hook, jupiterone):
    entities, relationships = frames(40)
    publish(hook, entities, relationships, SCOPE, poll_seconds=0.01)
    before = jupiterone.graph(SCOPE)
    fewer = frames(16)  # 60 % of the users gone

    with pytest.raises(MassDeletionError, match=r"sysdig_user: 40 -> 16 \(60% fewer\)"):
        publish(hook, *fewer, SCOPE, previous_counts={"sysdig_user": 40, "sysdig_account": 1}, poll_seconds=0.01)

    assert jupiterone.jobs()[-1]["status"] == "ABORTED" and "MassDeletionError" in jupiterone.jobs()[-1]["abortReason"]
    assert jupiterone.graph(SCOPE) == before
    publish(hook, *fewer, SCOPE, previous_counts={"sysdig_user": 40}, max_shrink=None, poll_seconds=0.01)
    assert jupiterone.summary(SCOPE)["entities"]["sysdig_user"] == 16


def test_guard_thresholds_and_partial_types():
    check_mass_deletion({"a": 10}, {"a": 5}, 0.5, [])  # exactly half may go
    check_mass_deletion({"a": 10}, {}, 0.5, ["a"])  # a partial dataset is kept by JupiterOne
    with pytest.raises(MassDeletionError, match="a: 10 -> 4"):
        check_mass_deletion({"a": 10, "b": 3}, {"a": 4, "b": 3}, 0.5, [])
