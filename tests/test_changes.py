"""What a publish changed: the comparison of two published graphs and the security call-outs."""

from __future__ import annotations

import pandas as pd
import pytest

from sysdig_j1 import changes


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows)).convert_dtypes()


def compare(before: pd.DataFrame | None, after: pd.DataFrame, partial=()) -> dict:
    """As load compares: the previous publish's stored snapshot against the new graph's."""
    previous = None if before is None else changes.frame_reader(changes.snapshot(before))
    return changes.compare(previous, changes.snapshot(after), partial)


def user(n: int, **properties) -> dict:
    return {"_key": f"sysdig_user:{n}", "_type": "sysdig_user", "_class": "User", "admin": False, "enabled": True,
            "name": f"u{n}", "products": ["SDS"], "_rawData": '{"id": %d}' % n, **properties}


def member(team: int, n: int, role: str = "ROLE_TEAM_READ") -> dict:
    return {"_key": f"sysdig_team:{team}|has|sysdig_user:{n}", "_type": "sysdig_team_has_user", "_class": "HAS",
            "role": role}


def test_added_removed_and_changed_properties_with_before_and_after():
    before = frame(user(1), user(2), user(3, products=["SDS"]))
    after = frame(user(1), user(3, admin=True, products=["SDC", "SDS"], _rawData="different"), user(4))

    compared = compare(before, after)

    assert compared == {"sysdig_user": {
        "added": ["sysdig_user:4"],
        "removed": ["sysdig_user:2"],
        "changed": [{"_key": "sysdig_user:3",
                     "properties": {"admin": [False, True], "products": [["SDS"], ["SDC", "SDS"]]}}],
    }}


def test_the_first_publish_reports_everything_as_added():
    compared = compare(None, frame(user(1), user(2)))
    assert compared == {"sysdig_user": {"added": ["sysdig_user:1", "sysdig_user:2"], "removed": [], "changed": []}}


def test_a_property_that_appears_or_disappears_is_a_change_to_or_from_null():
    compared = compare(frame(user(1)), frame(user(1, lastName="Lee")))
    assert compared["sysdig_user"]["changed"] == [{"_key": "sysdig_user:1", "properties": {"lastName": [None, "Lee"]}}]
    assert compare(frame(user(1, lastName="Lee")), frame(user(1)))["sysdig_user"]["changed"][0][
        "properties"] == {"lastName": ["Lee", None]}


def test_types_kept_as_partial_datasets_are_neither_compared_nor_forgotten():
    before = pd.concat([frame(user(1)), frame(member(7, 1))], ignore_index=True)
    after = frame(user(1, admin=True))  # the memberships were not extracted this time

    compared = compare(before, after, partial=["sysdig_team_has_user"])
    snapshot = changes.carried_over(changes.frame_reader(changes.snapshot(before)), changes.snapshot(after),
                                    ["sysdig_team_has_user"])

    assert set(compared) == {"sysdig_user"}  # no membership reported removed
    assert sorted(snapshot["_key"]) == ["sysdig_team:7|has|sysdig_user:1", "sysdig_user:1"]
    assert "_rawData" not in snapshot


def finding(name: str, severity: str, open_: bool) -> dict:
    return {"_key": f"sysdig_finding:{name}", "_type": "sysdig_finding", "severity": severity, "open": open_}


def test_security_call_outs():
    before_users = frame(user(1), user(2, admin=True), user(3), user(4))
    after_users = frame(user(1, admin=True), user(2), user(3, enabled=False), user(5))
    teams_before = frame({"_key": "sysdig_team:7", "_type": "sysdig_team", "name": "a"})
    scans_after = frame({"_key": "sysdig_image_scan:x", "_type": "sysdig_image_scan", "policyStatus": "failed"},
                        {"_key": "sysdig_image_scan:y", "_type": "sysdig_image_scan", "policyStatus": "passed"})
    # a: its risk acceptance ended; b: new; c: accepted now; d: new but accepted; e: new, high
    findings_before = frame(finding("a", "critical", False), finding("c", "high", True))
    findings_after = frame(finding("a", "critical", True), finding("b", "critical", True), finding("c", "high", False),
                           finding("d", "critical", False), finding("e", "high", True))
    before = pd.concat([before_users, teams_before, findings_before], ignore_index=True)
    after = pd.concat([after_users, scans_after, findings_after], ignore_index=True)
    entities = compare(before, after)
    relationships = compare(frame(member(7, 1), member(7, 2, "ROLE_TEAM_EDIT")),
                                    frame(member(7, 2, "ROLE_TEAM_MANAGER"), member(8, 5)))

    listed = {"entities": {}, "relationships": {}}
    changes.merge(listed["entities"], entities)
    changes.merge(listed["relationships"], relationships)
    document = changes.report(listed["entities"], listed["relationships"],
                              changes.security_changes(entities, relationships, changes.snapshot(after)))

    assert document["security"] == {
        "users_added": ["sysdig_user:5"], "users_removed": ["sysdig_user:4"],
        "users_disabled": ["sysdig_user:3"], "users_enabled": [],
        "users_made_admin": ["sysdig_user:1"], "users_no_longer_admin": ["sysdig_user:2"],
        "memberships_added": ["sysdig_team:8|has|sysdig_user:5"],
        "memberships_removed": ["sysdig_team:7|has|sysdig_user:1"],
        "membership_roles_changed": [{"_key": "sysdig_team:7|has|sysdig_user:2",
                                      "role": ["ROLE_TEAM_EDIT", "ROLE_TEAM_MANAGER"]}],
        "teams_added": [], "teams_removed": ["sysdig_team:7"],
        "image_scans_failing_policy": ["sysdig_image_scan:x"],
        "critical_findings_opened": ["sysdig_finding:a", "sysdig_finding:b"],
        "high_findings_opened": ["sysdig_finding:e"],
        "findings_risk_accepted": ["sysdig_finding:c"],
    }
    assert document["totals"] == {"entities": {"added": 6, "removed": 2, "changed": 5},
                                  "relationships": {"added": 1, "removed": 1, "changed": 1}}


@pytest.mark.parametrize("kind", changes.KINDS)
def test_an_empty_graph_compares_cleanly(kind):
    empty = pd.DataFrame({"_key": pd.Series(dtype="string"), "_type": pd.Series(dtype="string")})
    assert compare(empty, empty) == {}


def test_a_row_hash_ignores_column_order_and_columns_without_values():
    a = frame(user(1, lastName="Lee"))
    b = a[list(reversed(a.columns))].assign(notes=pd.Series([None], dtype="string"))

    assert changes.row_hashes(a) == changes.row_hashes(b)
    assert changes.row_hashes(a) != changes.row_hashes(frame(user(1, lastName="Lea")))
    assert changes.row_hashes(a) != changes.row_hashes(a.assign(_type="sysdig_team"))


def test_a_snapshot_written_before_hashes_were_kept_is_hashed_when_read(tmp_path):
    from sysdig_j1 import published
    from sysdig_j1.hooks.storage import RunStorage

    storage = RunStorage(f"file://{tmp_path}", "d", "r")
    path = storage.path("old.parquet")
    old = frame(user(1), user(2)).drop(columns=["_rawData"])
    storage.write_parquet(path, old)  # the older format: no _hash column

    read = published.file_reader(storage, path)

    assert read(columns=["_key", "_hash"]).equals(changes.snapshot(old)[["_key", "_hash"]])
    assert changes.compare(read, changes.snapshot(frame(user(1), user(2)))) == {}


def test_a_whole_snapshot_kept_by_an_older_release_stands_in_for_the_core_without_its_findings(tmp_path):
    from sysdig_j1 import parts, published
    from sysdig_j1.hooks.storage import RunStorage

    storage, scope = RunStorage(f"file://{tmp_path}", "d", "r"), "sysdig-j1:1"
    old = changes.snapshot(frame(user(1), user(2), finding("a", "critical", True)))
    storage.write_parquet(storage.legacy_published_graph(scope, "entities", "latest"), old)

    core = published.reader(storage, scope, "latest", parts.CORE, "entities")
    assert sorted(core(["_key"])["_key"]) == ["sysdig_user:1", "sysdig_user:2"]
    assert changes.compare(core, changes.snapshot(frame(user(1), user(2)))) == {}  # no finding "removed"
    assert published.reader(storage, scope, "latest", "findings/shard-000-of-004", "entities") is None
