"""Findings: one record per vulnerability of a package in a full scan result, references resolved.

`GET /secure/vulnerability/v1/results/{resultId}` answers with maps keyed by reference ids that
only mean something inside that answer: packages list their vulnerabilities, vulnerabilities and
packages list their risk acceptances, packages name their layer, layers their base images. A
finding record is one (package, vulnerability) pair with everything it references inlined:

    {"findingId", "resultId", "package": {...}, "vulnerability": {...}, "epss": {...},
     "cisaKev": bool, "riskAccept": {...}, "layer": {..., "baseImages": [pull strings]}}

The objects are Sysdig's own, referenced as they are (findings keep no `_rawData`, so nothing
reads the reference lists they still hold); two values are lifted because their
place in Sysdig's shape cannot be named by a dotted path: `epss` (FIRST.org's score sits under
`providersMetadata["first.org"]`) and `cisaKev` (whether the vulnerability has a KEV entry; the
entry itself stays in `vulnerability.cisaKev`). These records then go through the source contract
like every other page.

A result that does not hold together (a reference to nothing, a vulnerability no package has, a
map that is not a map) is an error naming the result and the reference: publishing it would
silently drop findings.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec

from sysdig_j1 import raw
from sysdig_j1.contract import ContractError
from sysdig_j1.model import SEVERITIES
from sysdig_j1.scrub import Scrubber

RESULT_PATH = "/secure/vulnerability/v1/results/{}"
ACTIVE = "active"  # the status of a risk acceptance in force (the others: expired, ...)


class ResultError(ContractError):
    """A full scan result that is not a consistent whole; the message names the result."""


def finding_id(result_id: str, package: dict, vulnerability_name: str) -> str:
    """Stable and unique: Sysdig's reference ids change between answers, what the finding is does
    not. Two findings of one result differ in the package (type, name, version, path) or in the
    vulnerability, and the result id keeps findings of different results apart."""
    parts = (result_id, package.get("type"), package.get("name"), package.get("version"), package.get("path"),
             vulnerability_name)
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).hexdigest()[:32]


def _map(body: dict, name: str, fail) -> dict:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"its {name!r} is not an object of reference id -> {name[:-1]}")
    return value


def _refs(owner: dict, field: str, where: str, fail) -> list[str]:
    """A list of text (reference ids, pull strings), empty when absent."""
    refs = owner.get(field)
    if refs is None:
        return []
    if not isinstance(refs, list) or not all(isinstance(ref, str) for ref in refs):
        raise fail(f"{where}: {field!r} is not a list of reference ids")
    return refs


def _resolved(refs: list[str], table: dict, what: str, where: str, fail) -> list[dict]:
    found = []
    for ref in refs:
        item = table.get(ref)
        if not isinstance(item, dict):
            raise fail(f"{where} refers to {what} {ref!r}, which the result does not hold")
        found.append(item)
    return found


def _chosen_acceptance(acceptances: list[dict]) -> dict | None:
    """The acceptance that decides whether the finding is open: an active one if any (the one
    expiring last; no expiry is forever), else the latest-expiring other one, for its reason."""
    if not acceptances:
        return None
    def rank(acceptance: dict) -> tuple:
        expiry = acceptance.get("expirationDate")
        return acceptance.get("status") == ACTIVE, expiry is None, str(expiry or "")

    return max(acceptances, key=rank)


def flatten(body: Any, result_id: str, stage: str, min_severity: str) -> tuple[list[dict], int]:
    """The finding records of one full result at or above `min_severity`, and how many were below."""
    def fail(problem: str) -> ResultError:
        return ResultError(f"GET {RESULT_PATH.format(result_id)}: the scan result is inconsistent: {problem}")

    if not isinstance(body, dict):
        raise fail(f"the answer is a JSON {type(body).__name__}, not an object")
    if body.get("stage") not in (None, stage):
        raise fail(f"it is a {body.get('stage')!r} result, but was listed as {stage!r}")
    packages, vulnerabilities = _map(body, "packages", fail), _map(body, "vulnerabilities", fail)
    accepts, layers, bases = (_map(body, name, fail) for name in ("riskAccepts", "layers", "baseImages"))
    threshold = SEVERITIES[min_severity]
    records, below, reached = [], 0, set()
    for package_ref, package in packages.items():
        where = f"package {package_ref!r}"
        if not isinstance(package, dict):
            raise fail(f"{where} is not an object")
        vulnerability_refs = _refs(package, "vulnerabilitiesRefs", where, fail)
        if not vulnerability_refs:
            continue
        layer = _layer(package, layers, bases, where, fail)
        package_accepts = _resolved(_refs(package, "riskAcceptRefs", where, fail), accepts, "risk acceptance",
                                    where, fail)
        for ref, vulnerability in zip(vulnerability_refs, _resolved(vulnerability_refs, vulnerabilities,
                                                                      "vulnerability", where, fail)):
            reached.add(ref)
            own_accepts = _resolved(_refs(vulnerability, "riskAcceptRefs", f"vulnerability {ref!r}", fail),
                                    accepts, "risk acceptance", f"vulnerability {ref!r}", fail)
            severity = vulnerability.get("severity")
            if isinstance(severity, str) and SEVERITIES.get(severity, threshold) < threshold:  # unknown: kept, for the contract
                below += 1
                continue
            records.append(_record(result_id, package, vulnerability, layer, package_accepts + own_accepts))
    orphans = vulnerabilities.keys() - reached
    if orphans:
        raise fail(f"{len(orphans)} vulnerabilities belong to no package, e.g. {sorted(orphans)[0]!r}")
    return records, below


def _layer(package: dict, layers: dict, bases: dict, where: str, fail) -> dict | None:
    ref = package.get("layerRef")
    if ref is None:
        return None
    if not isinstance(ref, str):
        raise fail(f"{where}: 'layerRef' is not a reference id")
    (layer,) = _resolved([ref], layers, "layer", where, fail)
    base_refs = _refs(layer, "baseImagesRef", f"layer {ref!r}", fail)
    pull_strings = [pull for base in _resolved(base_refs, bases, "base image", f"layer {ref!r}", fail)
                    for pull in _refs(base, "pullStrings", f"a base image of layer {ref!r}", fail)]
    return {**layer, "baseImages": pull_strings}


def _record(result_id: str, package: dict, vulnerability: dict, layer: dict | None, acceptances: list[dict]) -> dict:
    provider_data = vulnerability.get("providersMetadata")
    first_org = provider_data.get("first.org") if isinstance(provider_data, dict) else None
    record = {
        "findingId": finding_id(result_id, package, str(vulnerability.get("name"))),
        "resultId": result_id,
        "package": package,
        "vulnerability": vulnerability,
        "cisaKev": bool(vulnerability.get("cisaKev")),
    }
    if isinstance(first_org, dict) and first_org.get("epssScore") is not None:
        record["epss"] = first_org["epssScore"]
    if layer is not None:
        record["layer"] = layer
    accepted = _chosen_acceptance(acceptances)
    if accepted is not None:
        record["riskAccept"] = accepted
    return record


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count`: the full results whose id hashes to it. A result stays in its
    shard from run to run (for a given count), so a shard's findings, and what changed in them,
    line up across runs; the shards of one run never share a result, so never a finding."""

    index: int
    count: int

    def holds(self, result_id: str) -> bool:
        return int.from_bytes(hashlib.sha256(result_id.encode()).digest()[:8], "big") % self.count == self.index

    @property
    def folder(self) -> str:
        """Its folder under the run's raw/ and graph/ folders (and its published snapshots'); the
        count is part of it, as a result's shard depends on it."""
        return f"findings/shard-{self.index:03d}-of-{self.count:03d}"


def result_ids(scans, stage: str) -> list[str]:
    """The resultIds of the extracted image scans of a stage, in listing order."""
    return scans.loc[scans["_partition"] == stage, "resultId"].dropna().tolist()


def encode_results(stage: str, number: int, results: list[tuple[str, bytes]], min_severity: str,
                   scrubber: Scrubber) -> tuple[bytes | None, int, int]:
    """Decode and flatten one page of full results (in listing order) and encode the findings as
    raw page `number` of `findings/<stage>` (None when there are none); returns it with the number
    of findings and of findings below `min_severity`."""
    records, below = [], 0
    with _without_cycle_collection():
        for result_id, content in results:
            found, skipped = flatten(_decoded(content, result_id), result_id, stage, min_severity)
            records += found
            below += skipped
        if not records:
            return None, 0, below
        return raw.encode_listing_page(f"findings/{stage}", number, records, scrubber, RESULT_PATH), len(records), below


@contextmanager
def _without_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused while a page is decoded and flattened: the page's tens of
    thousands of dicts and lists would be traversed again at every collection they trigger (half
    a findings extract's CPU, measured), while decoded JSON holds no cycles, so reference counting
    frees all of it. Paused only where it was running; other threads' cycles wait until after."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# Airflow's own JSON library: the same values as the json module for any JSON text (it refuses the
# module's NaN and Infinity extensions, which are not JSON), in two thirds of the time, on the
# answers that make up most of a findings extract's CPU.
_JSON = msgspec.json.Decoder()


def _decoded(content: bytes, result_id: str) -> Any:
    try:
        return _JSON.decode(content)
    except (ValueError, RecursionError) as exc:  # a whole answer (its length was checked) that is not JSON
        raise ResultError(f"GET {RESULT_PATH.format(result_id)}: the answer is not valid JSON: "
                          f"{type(exc).__name__}: {str(exc)[:200]}") from None
