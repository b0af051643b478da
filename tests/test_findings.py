"""Vulnerability findings end to end: the DAG against both emulators over loopback HTTP.

Expected numbers come from the emulator's full results, counted from their vulnerability maps
(`expected_findings`); the pipeline walks the packages instead. Sample findings are checked
against the emulator's own answer for one scan, with the key rule recomputed here.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
from conftest import SYSDIG_TOKEN, expected_findings, task_states

from sysdig_j1 import extract, pipeline
from sysdig_j1.contract import ContractError
from sysdig_j1_emulators.jupiterone import MAPPER_SCOPE
from sysdig_j1_emulators.sysdig_org import OrgSpec, SysdigOrg
from sysdig_j1.findings import Shard
from sysdig_j1.extract import EXTRACTS
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import SysdigHook
from sysdig_j1.model import RESOURCES
from sysdig_j1.raw import read_raw
from sysdig_j1.scrub import Scrubber

SCOPE = "sysdig-j1:5000001"
FINDING_TYPES = {"sysdig_finding", "sysdig_image_scan_identified_finding", "sysdig_finding_is_cve"}
NUMERIC = {"critical": 9, "high": 7, "medium": 4, "low": 1}


def day_ms(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp() * 1000)


def finding_key(result_id: str, package: dict, name: str) -> str:
    """The documented key rule: SHA-256 of the result, package type/name/version/path and the
    vulnerability name, NUL-separated; the first 32 hex digits."""
    parts = [result_id, package["type"], package["name"], package["version"], str(package.get("path")), name]
    return "sysdig_finding:" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def of_type(objects: list[dict], type_: str) -> list[dict]:
    return [o for o in objects if o["_type"] == type_]


def test_findings_publish_with_exact_counts_resolved_cves_and_a_no_op_rerun(dag, start_sysdig, jupiterone, connect):
    spec = OrgSpec()
    sysdig = start_sysdig(spec)
    connect(sysdig, jupiterone)
    expected = expected_findings(spec)

    assert set(task_states(dag.test()).values()) == {"success"}

    graph = jupiterone.graph(SCOPE)
    findings = {f["_key"]: f for f in of_type(graph["entities"], "sysdig_finding")}
    identified = of_type(graph["relationships"], "sysdig_image_scan_identified_finding")
    is_cve = of_type(graph["relationships"], "sysdig_finding_is_cve")
    assert len(findings) == len(identified) == expected["findings"] > 500
    assert len(is_cve) == expected["cve_relationships"] < expected["findings"]  # GHSA findings have none
    assert {r["_toEntityKey"] for r in identified} == findings.keys()
    assert {r["_fromEntityKey"] for r in identified} <= {e["_key"] for e in graph["entities"]}

    # Every CVE resolved once: one target per distinct CVE, created by the mapper, shared by findings.
    cves = {e["_key"]: e for e in jupiterone.graph(MAPPER_SCOPE)["entities"]}
    assert len(cves) == expected["cves"] < len(is_cve)
    assert {r["_toEntityKey"] for r in is_cve} == cves.keys()
    cve = next(iter(cves.values()))
    assert re.fullmatch(r"cve-\d{4}-\d{4,}", cve["_key"]) and cve["_class"] == "Vulnerability"
    assert cve["name"] == cve["displayName"] == cve["_key"].upper()
    assert cve["webLink"] == f"https://nvd.nist.gov/vuln/detail/{cve['name']}"
    for rel in is_cve:
        mapping = rel["_mapping"]
        assert mapping["sourceEntityKey"] == rel["_fromEntityKey"] in findings
        assert mapping["targetFilterKeys"] == [["_type", "_key"]] and mapping["targetEntity"]["_type"] == "cve"
        assert findings[rel["_fromEntityKey"]]["name"].lower() == rel["_toEntityKey"]
    job = jupiterone.jobs()[-1]
    # the 18 hosts' and clusters' IS relationships find no AWS/Azure/GCP/Kubernetes entity here and create none
    assert (job["numMappedRelationshipsCreated"], job["numMappedRelationshipCreateErrors"]) == (len(is_cve), 18)

    # Sample findings, checked against the emulator's own answer for the first runtime scan.
    org = SysdigOrg(spec)
    result_id = org.stage_result("runtime", 0)["resultId"]
    result = json.loads(org.full_result(result_id))
    checked = set()
    for ref, vulnerability in result["vulnerabilities"].items():
        package = result["packages"][vulnerability["packageRef"]]
        key = finding_key(result_id, package, vulnerability["name"])
        if vulnerability["severity"] == "negligible":
            assert key not in findings  # below the default minimum severity
            continue
        finding = findings[key]
        accepts = [result["riskAccepts"][r] for r in vulnerability["riskAcceptRefs"] + package["riskAcceptRefs"]]
        active = [a for a in accepts if a["status"] == "active"]
        assert finding["open"] is (not active) and finding["riskAccepted"] is bool(active)
        if accepts:
            chosen = (active or accepts)[0]
            assert finding["riskAcceptReason"] == chosen["reason"]
            assert finding["riskAcceptExpiresOn"] == day_ms(chosen["expirationDate"])
        assert finding["fixable"] is bool(vulnerability["fixVersion"])
        assert finding.get("fixVersion") == vulnerability["fixVersion"]
        assert finding["severity"] == vulnerability["severity"]
        assert finding["numericSeverity"] == NUMERIC[vulnerability["severity"]]
        assert (finding["packageName"], finding["packageVersion"]) == (package["name"], package["version"])
        assert finding["inUse"] is package["isRunning"] and finding["imageScanId"] == result_id
        assert finding["displayName"] == f"{vulnerability['name']} in {package['name']} {package['version']}"
        assert finding["cvssScore"] == vulnerability["cvssScore"]["score"]
        assert finding["epssScore"] == vulnerability["providersMetadata"]["first.org"]["epssScore"]["score"]
        assert finding["fromBaseImage"] is bool(result["layers"][package["layerRef"]]["baseImagesRef"])
        assert finding["cisaKev"] is ("cisaKev" in vulnerability)
        checked.add(key)
    assert len(checked) > 10
    samples = list(findings.values())
    assert any(not f["open"] for f in samples) and any(f["open"] and "riskAcceptReason" in f for f in samples)
    assert any(f["fixable"] for f in samples) and any(not f["fixable"] for f in samples)

    # Re-running changes nothing: a no-op DIFF, and no CVE is created twice.
    assert set(task_states(dag.test()).values()) == {"success"}
    job = jupiterone.jobs()[-1]
    changes = {k: v for k, v in job.items() if re.match(r"num\w*(Created|Updated|Deleted|Errors?)$", k) and v}
    assert changes == {"numMappedRelationshipCreateErrors": 18}  # the hosts and clusters find no target, every time
    assert jupiterone.graph(MAPPER_SCOPE)["entities"] == list(cves.values())


def test_stages_and_minimum_severity_are_settings(dag, start_sysdig, jupiterone, connect, capfd, caplog):
    spec = OrgSpec()
    connect(start_sysdig(spec), jupiterone, finding_stages="runtime, pipeline", finding_min_severity="high")

    assert set(task_states(dag.test()).values()) == {"success"}

    expected = expected_findings(spec, ("runtime", "pipeline"), ("critical", "high"))
    summary = jupiterone.summary(SCOPE)
    assert summary["entities"]["sysdig_finding"] == expected["findings"]
    assert summary["relationships"]["sysdig_finding_is_cve"] == expected["cve_relationships"]
    stages = {f["stage"] for f in of_type(jupiterone.graph(SCOPE)["entities"], "sysdig_finding")}
    assert stages == {"runtime", "pipeline"}

    connect(start_sysdig(spec), jupiterone, finding_min_severity="severe")
    states = task_states(dag.test())
    assert states["validate_config"] == "failed"
    assert "extra finding_min_severity is 'severe'; choose from critical, high, medium, low, negligible" in (
        capfd.readouterr().out + caplog.text)


def test_a_failed_findings_extract_keeps_the_findings_and_publishes_the_rest(dag, start_sysdig, jupiterone, connect):
    sysdig = start_sysdig(OrgSpec())
    connect(sysdig, jupiterone)
    assert set(task_states(dag.test()).values()) == {"success"}
    before = jupiterone.graph(SCOPE)

    requests.post(f"{sysdig.url}/_emulator/users/10005/remove", timeout=5).raise_for_status()
    # one result answers 500 through every retry
    broken = next(e["imageScanId"] for e in before["entities"] if e["_type"] == "sysdig_finding")
    requests.post(f"{sysdig.url}/_emulator/faults", json={"fail_path": f"/secure/vulnerability/v1/results/{broken}"},
                  timeout=5).raise_for_status()
    run = dag.test()

    shards = sorted(ti.state for ti in run.get_task_instances() if ti.task_id == "extract_findings")
    assert len(shards) > 1 and shards.count("failed") == 1  # the broken result's shard alone
    states = task_states(run)
    assert (states["load"], run.state) == ("success", "failed")
    after = jupiterone.graph(SCOPE)
    for kind in ("entities", "relationships"):
        kept = [o for o in before[kind] if o["_type"] in FINDING_TYPES]
        assert [o for o in after[kind] if o["_type"] in FINDING_TYPES] == kept != []
    assert "sysdig_user:10005" not in {e["_key"] for e in after["entities"]}  # the rest updated
    assert jupiterone.jobs()[-1]["partialDatasets"] == {"types": sorted(FINDING_TYPES)}


def test_shards_split_the_results_stably_and_together_store_exactly_the_unsharded_findings(
        start_sysdig, tmp_path, monkeypatch):
    spec = OrgSpec(scans=330)  # 110 runtime results: 3 pages unsharded
    sysdig = start_sysdig(spec)
    monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(
        {"conn_type": "sysdig", "host": sysdig.url, "password": SYSDIG_TOKEN}))
    hook, scrubber = SysdigHook(), Scrubber([SYSDIG_TOKEN])

    def run(folder: str, shards: int) -> tuple[list[dict], list[set[str]]]:
        """Every shard's manifest, and the finding ids each shard stored."""
        storage = RunStorage(f"file://{tmp_path / folder}", "d", "r")
        extract.run("image_scans", hook, storage, scrubber)
        manifests = [extract.run("findings", hook, storage, scrubber, Shard(n, shards)) for n in range(shards)]
        assert "findings" not in extract.missing_resources(storage)
        return manifests, [set(read_raw(storage, "findings", ["findingId"], Shard(n, shards).folder)["findingId"])
                           for n in range(shards)]

    (whole,), (unsharded,) = run("one", 1)
    manifests, by_shard = run("four", 4)
    assert sum(m["records"]["results"] for m in manifests) == whole["records"]["results"] == 110
    assert all(m["records"]["results"] > 10 for m in manifests)  # spread, not piled up
    assert set().union(*by_shard) == unsharded and sum(map(len, by_shard)) == len(unsharded)
    assert len(unsharded) == expected_findings(spec)["findings"]
    assert run("again", 4)[1] == by_shard  # a result stays in its shard

    storage = RunStorage(f"file://{tmp_path / 'four'}", "d", "r")
    storage.manifest(Shard(2, 4).folder).unlink()  # shard 2 did not finish
    assert "findings" in extract.missing_resources(storage)


def test_in_shards_and_parts_it_publishes_exactly_what_one_shard_in_one_part_does(
        start_sysdig, jupiterone, connect, tmp_path, monkeypatch):
    """The default organisation through every task function, first unsharded in one part per
    kind, then in 4 shards of many parts: JupiterOne holds the same graph, byte for byte, and
    the second publish of the sharded graph changes nothing at all."""
    connect(start_sysdig(OrgSpec()), jupiterone)
    sysdig, j1 = SysdigHook(), JupiterOneHook()

    def publish(shards: int, part_rows: int, run: str) -> tuple[str, dict]:
        monkeypatch.setattr(pipeline, "PART_ROWS", part_rows)
        monkeypatch.setattr(extract, "RESULTS_PER_PAGE", 50 if shards == 1 else 1)  # a part is whole pages
        storage = RunStorage(f"file://{tmp_path}/storage", "sysdig_jupiterone", run)
        config = pipeline.validate_config(sysdig, j1, storage)
        for resource in RESOURCES:
            for shard in [Shard(n, shards) for n in range(shards)] if EXTRACTS[resource].sharded else [None]:
                pipeline.extract(resource, sysdig, j1, storage, shard=shard)
        graph = pipeline.transform(storage, config)
        pipeline.check_quality(storage, graph)
        loaded = pipeline.load(j1, storage, graph, params={})
        held = jupiterone.graph(SCOPE)
        return json.dumps({kind: sorted(held[kind], key=lambda o: o["_key"]) for kind in held}, sort_keys=True), \
            {**loaded, "parts": len(list(Path(str(storage.path("graph")).removeprefix("file://")).rglob(
                "*.entities.parquet")))}

    one, unsharded = publish(1, 10**9, "one")
    many, sharded = publish(4, 50, "many")
    assert (unsharded["parts"], sharded["parts"] > 8) == (1, True)  # besides the core: one; many per shard
    assert many == one and sharded["published"] == unsharded["published"]
    assert sum(sharded["published"][t] for t in FINDING_TYPES) > 1000
    again, repeated = publish(4, 50, "again")
    assert again == one
    assert {n: v for n, v in repeated["counts"].items() if n.endswith(("Created", "Updated", "Deleted"))} == \
        dict.fromkeys((n for n in repeated["counts"] if n.endswith(("Created", "Updated", "Deleted"))), 0)
    assert repeated["changes"]["totals"] == {kind: {"added": 0, "removed": 0, "changed": 0}
                                             for kind in ("entities", "relationships")}
    # Back to one shard: JupiterOne changes nothing; the report, whose shards no longer line up,
    # says every finding left the 4 old shards and came in the new one.
    recounted, back = publish(1, 10**9, "recounted")
    assert recounted == one and back["counts"] == repeated["counts"]
    moved = {"entities": sharded["published"]["sysdig_finding"],
             "relationships": sum(sharded["published"][t] for t in FINDING_TYPES - {"sysdig_finding"})}
    assert back["changes"]["totals"] == {kind: {"added": n, "removed": n, "changed": 0} for kind, n in moved.items()}
