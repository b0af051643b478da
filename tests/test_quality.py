"""quality.validate on a small graph: a correct one passes every expectation; each kind of fault
fails the expectation meant to catch it, naming the offending `_key`s.

The graph is the transform's output for a small generated organisation (raw pages stored with
`raw.write_page`, as the extract tasks store them); each test breaks a copy of it in one way.
"""

from __future__ import annotations

import json
from functools import partial

import pandas as pd
import pytest

from sysdig_j1 import quality
from sysdig_j1.findings import flatten
from sysdig_j1_emulators.sysdig_org import STAGES, TEAM_ID_BASE, OrgSpec, SysdigOrg
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.raw import write_page
from sysdig_j1.scrub import Scrubber
from sysdig_j1.transform import SHARDED_TYPES, Context, build_graph


@pytest.fixture(scope="module")
def frames(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    org = SysdigOrg(OrgSpec(users=6, teams=4, scans=9))  # team 2 has a custom role and a zone
    storage = RunStorage(f"file://{tmp_path_factory.mktemp('quality')}", "sysdig_jupiterone", "manual__test")

    def store(listing: str, records: list[dict]) -> None:
        write_page(storage, listing, 0, records, Scrubber(), endpoint=f"/test/{listing}")

    store("account", [org.legacy_user(0)])
    store("users", [org.public_user(i) for i in org.users()])
    store("users_light", [org.light_user(i) for i in org.users()])
    store("teams", [org.public_team(j) for j in org.teams()])
    for j in org.teams():
        store(f"team_memberships/{TEAM_ID_BASE + j}", list(map(partial(org.membership, j), org.members(j, True))))
    for stage in STAGES:
        store(f"image_scans/{stage}", [org.stage_result(stage, k) for k in org.scans(stage)])
    store("roles", [org.role(r) for r in range(org.spec.roles)])
    store("service_accounts", [org.service_account(g) for g in range(org.spec.service_accounts)])
    for j in org.teams():
        store(f"team_service_accounts/{TEAM_ID_BASE + j}", [org.team_service_account(j, 0)])
    store("access_keys", [org.access_key(a, [TEAM_ID_BASE + j for j in org.teams()]) for a in range(4)])
    store("zones", [org.zone(z) for z in range(org.spec.zones)])
    store("sso_settings", org.sso_settings())
    store("ip_filters", [org.ip_filter(f) for f in range(org.spec.ip_filters)])
    store("clusters", [org.cluster(c) for c in range(org.spec.clusters)])
    store("hosts", [org.host(h) for h in range(org.spec.hosts)])
    scans = [org.stage_result("runtime", k)["resultId"] for k in org.scans("runtime")]
    store("findings/runtime", [record for scan in scans
                               for record in flatten(json.loads(org.full_result(scan)), scan, "runtime", "low")[0]])
    entities, relationships, partial_types = build_graph(Context(storage, app_url="https://app.example"))
    assert partial_types == []
    return entities, relationships


@pytest.fixture
def graph(frames) -> tuple[pd.DataFrame, pd.DataFrame]:
    entities, relationships = frames
    return entities.copy(), relationships.copy()


def failures(report: dict) -> dict[str, dict]:
    assert json.loads(json.dumps(report)) == report  # JSON-safe as written to graph/quality.json
    return {row["check"]: row for row in report["results"] if not row["success"]}


def first_key(frame: pd.DataFrame, type_: str) -> str:
    return frame.loc[frame["_type"] == type_, "_key"].iloc[0]


def test_a_correct_graph_passes_with_every_expectation_evaluated(graph):
    entities, relationships = graph
    report = quality.validate(entities, relationships)

    assert failures(report) == {}
    assert report["success"] is True
    expected = [check.label for check in quality.build_checks()]
    assert sorted(row["check"] for row in report["results"]) == sorted(expected)
    assert report["evaluated"] == len(expected)


def test_duplicate_keys(graph):
    entities, relationships = graph
    user = entities[entities["_type"] == "sysdig_user"].iloc[[0]]
    entities = pd.concat([entities, user], ignore_index=True)

    failed = failures(quality.validate(entities, relationships))

    assert list(failed) == ["entities ExpectColumnValuesToBeUnique(_key)"]
    row = failed["entities ExpectColumnValuesToBeUnique(_key)"]
    assert row["unexpected_count"] == 2
    assert row["keys"] == [user["_key"].iloc[0]] * 2


def test_null_required_property(graph):
    entities, relationships = graph
    key = first_key(entities, "sysdig_user")
    entities.loc[entities["_key"] == key, "email"] = pd.NA

    failed = failures(quality.validate(entities, relationships))

    assert list(failed) == ["entities[sysdig_user] ExpectColumnValuesToNotBeNull(email)"]
    assert failed["entities[sysdig_user] ExpectColumnValuesToNotBeNull(email)"]["keys"] == [key]


def test_null_required_relationship_property(graph):
    entities, relationships = graph
    key = first_key(relationships, "sysdig_team_has_user")
    relationships.loc[relationships["_key"] == key, "role"] = pd.NA

    failed = failures(quality.validate(entities, relationships))

    assert list(failed) == ["relationships[sysdig_team_has_user] ExpectColumnValuesToNotBeNull(role)"]
    assert failed["relationships[sysdig_team_has_user] ExpectColumnValuesToNotBeNull(role)"]["keys"] == [key]


def test_unknown_type(graph):
    entities, relationships = graph
    key = first_key(entities, "sysdig_team")
    entities.loc[entities["_key"] == key, "_type"] = "sysdig_bogus"

    failed = failures(quality.validate(entities, relationships))

    row = failed.pop("entities ExpectColumnValuesToBeInSet(_type)")
    assert (row["keys"], row["examples"]) == ([key], ["sysdig_bogus"])
    assert failed == {}  # the row left the sysdig_team slice; nothing else is wrong with it


def test_endpoint_not_among_the_entity_keys(graph):
    entities, relationships = graph
    gone = first_key(entities, "sysdig_user")
    entities = entities[entities["_key"] != gone]  # its relationships now point at nothing
    dangling = relationships.loc[relationships["_toEntityKey"] == gone, "_key"].tolist()
    stray = first_key(relationships, "sysdig_team_has_user")
    relationships.loc[relationships["_key"] == stray, "_fromEntityKey"] = "sysdig_team:1"

    failed = failures(quality.validate(entities, relationships))

    assert len(dangling) >= 2  # the account's, and at least one team's
    assert sorted(failed) == [
        "relationships ExpectColumnValuesToNotBeNull(_fromEntity._key)",
        "relationships ExpectColumnValuesToNotBeNull(_toEntity._key)",
    ]
    assert failed["relationships ExpectColumnValuesToNotBeNull(_fromEntity._key)"]["keys"] == [stray]
    assert sorted(failed["relationships ExpectColumnValuesToNotBeNull(_toEntity._key)"]["keys"]) == sorted(dangling)


def test_endpoint_lookup_is_data_not_a_verdict(graph):
    entities, relationships = graph
    looked_up = quality.with_endpoint_entities(relationships.iloc[:3], entities.iloc[:0])
    assert looked_up[quality.found("_toEntityKey")].isna().all()  # no entities: nothing found
    looked_up = quality.with_endpoint_entities(relationships, entities)
    assert looked_up[quality.found("_toEntityKey")].tolist() == relationships["_toEntityKey"].tolist()


def test_wrong_key_prefix(graph):
    entities, relationships = graph
    key = first_key(entities, "sysdig_team")
    entities.loc[entities["_key"] == key, "_key"] = "sysdig_user:team-in-disguise"
    relationships = relationships[(relationships[list(quality.ENDS)] != key).all(axis=1)]  # endpoints stay valid

    failed = failures(quality.validate(entities, relationships))

    check = "entities[sysdig_team] ExpectColumnValuesToMatchRegex(_key)"
    assert list(failed) == [check]
    assert failed[check]["keys"] == ["sysdig_user:team-in-disguise"]


def test_wrong_endpoint_prefix_for_the_relationship_type(graph):
    entities, relationships = graph
    key = first_key(relationships, "sysdig_account_has_team")
    user = first_key(entities, "sysdig_user")
    relationships.loc[relationships["_key"] == key, "_toEntityKey"] = user  # present, but not a team

    failed = failures(quality.validate(entities, relationships))

    assert list(failed) == ["relationships[sysdig_account_has_team] ExpectColumnValuesToMatchRegex(_toEntityKey)"]
    row = failed["relationships[sysdig_account_has_team] ExpectColumnValuesToMatchRegex(_toEntityKey)"]
    assert (row["keys"], row["examples"]) == ([key], [user])


def test_negative_count(graph):
    entities, relationships = graph
    key = first_key(entities, "sysdig_image_scan")
    entities.loc[entities["_key"] == key, "criticalVulnerabilities"] = -3
    null_counts = entities["_type"] == "sysdig_team"
    entities.loc[null_counts, "userCount"] = pd.NA  # nulls are not negative

    report = quality.validate(entities, relationships)
    failed = failures(report)

    check = "entities[sysdig_image_scan] ExpectColumnValuesToBeBetween(criticalVulnerabilities)"
    assert list(failed) == [check]
    assert (failed[check]["unexpected_count"], failed[check]["keys"]) == (1, [key])
    assert float(failed[check]["examples"][0]) == -3
    assert check in quality.summary(report) and key in quality.summary(report)


def test_a_missing_column_fails_its_expectations(graph):
    entities, relationships = graph
    failed = failures(quality.validate(entities.drop(columns=["email"]), relationships))

    assert list(failed) == ["entities[sysdig_user] ExpectColumnValuesToNotBeNull(email)"]
    assert failed["entities[sysdig_user] ExpectColumnValuesToNotBeNull(email)"]["error"] == "column is missing"


def test_summary_names_each_failed_expectation_and_its_keys(graph):
    entities, relationships = graph
    user, team = first_key(entities, "sysdig_user"), first_key(entities, "sysdig_team")
    entities.loc[entities["_key"] == user, "name"] = pd.NA
    entities.loc[entities["_key"] == team, "version"] = -1

    text = quality.summary(quality.validate(entities, relationships))

    assert text.splitlines()[0].startswith("2 of ")
    assert f"entities[sysdig_user] ExpectColumnValuesToNotBeNull(name): 1 unexpected" in text
    assert f"entities[sysdig_team] ExpectColumnValuesToBeBetween(version): 1 unexpected" in text
    assert user in text and team in text


def test_in_parts_a_key_in_two_parts_fails_and_a_part_may_name_the_cores_entities(graph):
    """Findings in two parts next to the core, as `check_quality` reads a sharded graph: every check
    passes (a finding's scan is in the core); a finding repeated in the other part is a duplicate."""
    entities, relationships = graph
    findings, linked = entities[entities["_type"].isin(SHARDED_TYPES)], relationships["_type"].isin(SHARDED_TYPES)
    halves = [findings.iloc[: len(findings) // 2], findings.iloc[len(findings) // 2:]]

    def part(of: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        ends = relationships["_fromEntityKey"].isin(of["_key"]) | relationships["_toEntityKey"].isin(of["_key"])
        return of, relationships[linked & ends]

    parts = [(entities[~entities.index.isin(findings.index)], relationships[~linked]), *map(part, halves)]
    assert sum(len(r) for _, r in parts) == len(relationships)
    report = quality.validate_parts(lambda: iter(parts))
    assert failures(report) == {} and report["evaluated"] == len(quality.build_checks())

    repeated = halves[0].iloc[[3]]
    parts[2] = (pd.concat([parts[2][0], repeated]), parts[2][1])
    failed = failures(quality.validate_parts(lambda: iter(parts)))
    assert set(failed) == {"entities ExpectColumnValuesToBeUnique(_key)"}
    assert failed["entities ExpectColumnValuesToBeUnique(_key)"]["keys"] == [repeated["_key"].iloc[0]]
