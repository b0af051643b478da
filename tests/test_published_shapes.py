"""The emulator and the source contract held to Sysdig's published response models, for good.

Every endpoint the pipeline reads is walked over HTTP, every page and every full result, for the
default organisation, a bigger one and every scenario that keeps the published shapes, and each
answer is validated against its endpoint's published model (`published_models`). The four ways
the emulator once differed from the models are re-introduced one at a time: each must fail, with
the field named. The source contract is checked against the same models: every field the data
model reads is published (or declared in `model.UNPUBLISHED`, with why) with a compatible type,
and every one the published model requires is required by the contract too.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
import requests
from conftest import SYSDIG_TOKEN
from published_models import FACTS, MODELS, inventory_page_problems, problems, response_model

from sysdig_j1 import audit
from sysdig_j1.contract import contracts
from sysdig_j1_emulators.sysdig import SCENARIOS, SHAPE_BREAKING, SysdigEmulator
from sysdig_j1_emulators.sysdig_org import OrgSpec, PlatformMixin, SysdigOrg
from sysdig_j1.extract import EXTRACTS, Endpoint
from sysdig_j1.model import ENTITIES, UNPUBLISHED, EntityType

MAX_PAGES = 50  # a scenario that never ends is still walked (and its pages validated) this far
BIGGER = OrgSpec(seed=11, users=450, teams=12, admins=3, scans=90, roles=5, service_accounts=4,
                 team_service_accounts=2, access_keys=9, zones=5, ip_filters=6, clusters=6, hosts=45)
INVENTORY_PAGE_SIZES = (1, 5)  # besides the declared 1,000: several pages, so page.total's meaning shows


def walk(emulator: SysdigEmulator, models: set[str] | None = None) -> list[str]:
    """Every answer of every declared endpoint with a published model (or only of `models`),
    validated; the problems, each naming the request and the field."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {SYSDIG_TOKEN}"
    found, records = [], {}
    read = [(declared.resource, endpoint) for declared in EXTRACTS.values() for endpoint in declared.endpoints]
    for resource, endpoint in [*read, ("audit", audit.AUDIT_EVENTS)]:  # and the trail the watcher reads
        if endpoint.model is None:
            continue
        listed = records.setdefault(resource, [])
        for path in _paths(endpoint, records):
            for where, body in _answers(session, emulator.url, path, endpoint):
                if not isinstance(body, dict):
                    found.append(f"{where}: {body}")
                    break
                items = body.get(endpoint.items)
                listed += items if isinstance(items, list) else []
                if models is None or endpoint.model in models:
                    found += [f"{where}: {problem}" for problem in problems(endpoint.model, body)]
        # (a scenario's lies about paging are the point of it, and the hook's to catch)
        if endpoint.paging == "page" and emulator.faults.scenario is None and (models is None
                                                                                 or endpoint.model in models):
            found += _inventory_meaning(session, emulator.url, endpoint)
    return found


def _paths(endpoint: Endpoint, records: dict[str, list[dict]]) -> list[str]:
    if endpoint.per is None:
        return [endpoint.path]
    field = endpoint.path[endpoint.path.index("{") + 1:endpoint.path.index("}")]
    return [endpoint.path.format(**{field: record[field]}) for record in records[endpoint.per]
            if isinstance(record, dict) and record.get(field) is not None]


def _answers(session: requests.Session, url: str, path: str, endpoint: Endpoint,
             page_size: int | None = None) -> Iterator[tuple[str, dict]]:
    """(request, answer) for every page of the listing, as its paging style walks it."""
    limit, params, position = page_size or endpoint.limit, dict(endpoint.params), None
    for _ in range(MAX_PAGES):
        if endpoint.paging == "offset":
            query = {**params, "offset": position or 0, "limit": limit}
        elif endpoint.paging == "cursor":
            query = {**params, "limit": limit, **({"cursor": position} if position else {})}
        elif endpoint.paging == "page":
            query = {**params, "pageNumber": position or 1, "pageSize": limit}
        else:
            query = params
        response = session.get(url + path, params=query, timeout=30, allow_redirects=False)
        where = f"GET {path} {query}"
        if response.status_code != 200:
            yield where, f"HTTP {response.status_code}, not an answer"
            return
        body = response.json()
        yield where, body if isinstance(body, dict) else "not a JSON object"
        if not isinstance(body, dict):
            return
        page = body.get("page") or {}
        if endpoint.paging == "offset":
            position = (position or 0) + limit
            if position >= (page.get("total") or 0):
                return
        elif endpoint.paging in ("cursor", "page") and page.get("next"):
            position = page["next"]
        else:
            return


def _inventory_meaning(session: requests.Session, url: str, endpoint: Endpoint) -> list[str]:
    """page.total counts pages: the walk at several page sizes must agree with what it holds."""
    found = []
    for size in (*INVENTORY_PAGE_SIZES, endpoint.limit):
        pages = [body for _, body in _answers(session, url, endpoint.path, endpoint, size)]
        found += [f"GET {endpoint.path} pageSize={size}: {p}" for p in inventory_page_problems(pages, size)]
    return found


@pytest.fixture
def emulator(start_sysdig, request) -> SysdigEmulator:
    org, options = request.param
    return start_sysdig(org, **options)


SHAPED_SCENARIOS = sorted(set(SCENARIOS) - SHAPE_BREAKING)


@pytest.mark.parametrize("emulator", [
    pytest.param((OrgSpec(), {}), id="default"),
    pytest.param((BIGGER, {}), id="bigger"),
    *(pytest.param((OrgSpec(), {"scenario": s}), id=s) for s in SHAPED_SCENARIOS),
], indirect=True)
def test_every_emulated_answer_is_shaped_as_sysdig_publishes_it(emulator):
    for path, body in (("/_emulator/users/10005/update", {"isAdmin": True}), ("/_emulator/teams/20000/users/10006/add", None),
                       ("/_emulator/service-accounts", {"name": "bot"}), ("/_emulator/access-keys", {}),
                       ("/_emulator/users/10007/remove", None)):  # so that the audit trail has events
        requests.post(emulator.url + path, json=body, timeout=5).raise_for_status()
    assert walk(emulator) == []


@pytest.mark.parametrize("scenario", sorted(SHAPE_BREAKING))
def test_every_scenario_declared_shape_breaking_is_caught_by_the_check(start_sysdig, scenario):
    assert walk(start_sysdig(OrgSpec(), scenario=scenario)) != []


def test_the_check_names_the_request_and_the_field(start_sysdig):
    found = walk(start_sysdig(OrgSpec(), scenario="bool_as_text"), {"GetUsersPaginatedResponseV1"})
    assert found == ["GET /platform/v1/users {'offset': 0, 'limit': 200}: $.data[4].isAdmin: 'true' is not of type "
                     "'boolean'"]


def test_every_declared_endpoint_names_the_model_sysdig_publishes_for_it():
    declared = {endpoint.path: endpoint.model for extract in EXTRACTS.values() for endpoint in extract.endpoints}
    declared[audit.AUDIT_EVENTS.path] = audit.AUDIT_EVENTS.model
    assert {path: response_model(path) for path in declared} == declared
    assert all(model in MODELS for model in FACTS["endpoints"].values())


# -- the four differences the official client found, each re-introduced -----------------------------
def _mutated_results(monkeypatch, change) -> None:
    original = SysdigOrg.full_result

    def full_result(self, result_id):
        body = original(self, result_id)
        if body is None:
            return None
        result = json.loads(body)
        change(result)
        return json.dumps(result).encode()

    monkeypatch.setattr(SysdigOrg, "full_result", full_result)


def _severity_counts_named_by_level(monkeypatch) -> None:
    original = PlatformMixin._inventory_item

    def item(self, *args):
        record = original(self, *args)
        for name in ("vulnerabilitySummary", "inUseVulnerabilitySummary"):
            summary = record[name]
            record[name] = {key.removesuffix("SeverityCount"): value for key, value in summary.items()}
        return record

    monkeypatch.setattr(PlatformMixin, "_inventory_item", item)


def _inventory_total_counting_records(monkeypatch) -> None:
    original = SysdigEmulator._inventory

    def inventory(self, request):
        response = original(self, request)
        one_per_page = dataclasses.replace(request, query={**request.query, "pageSize": "1", "pageNumber": "1"})
        response.body["page"]["total"] = original(self, one_per_page).body["page"]["total"]  # = records
        return response

    monkeypatch.setattr(SysdigEmulator, "_inventory", inventory)


def _rules_without_failure_type(result: dict) -> None:
    for evaluation in result["policies"]["evaluations"]:
        for bundle in evaluation["bundles"]:
            for rule in bundle["rules"]:
                del rule["failureType"], rule["description"]
                rule["evaluationResult"] = "noPolicy"


def _acceptances_of_packages(result: dict) -> None:
    for acceptance in result["riskAccepts"].values():
        if any(context["type"] == "packageName" for context in acceptance["context"]):
            acceptance["entityType"] = "package"


@pytest.mark.parametrize(("mutate", "model", "named"), [
    (_severity_counts_named_by_level, "InventoryResourceResponse",
     ["$.data[0].vulnerabilitySummary: 'criticalSeverityCount' is a required property",
      "$.data[0].inUseVulnerabilitySummary: Additional properties are not allowed ('critical', "]),
    (_inventory_total_counting_records, "InventoryResourceResponse",
     ["pageSize=5: page 1: page.total is 16, but the listing has 4 pages"]),
    (lambda patch: _mutated_results(patch, _rules_without_failure_type), "ScanResultResponse",
     ["$.policies.evaluations[0].bundles[0].rules[0]: 'failureType' is a required property",
      "$.policies.evaluations[0].bundles[0].rules[0]: 'description' is a required property",
      "$.policies.evaluations[0].bundles[0].rules[0].evaluationResult: 'noPolicy' is not one of"]),
    (lambda patch: _mutated_results(patch, _acceptances_of_packages), "ScanResultResponse",
     [".entityType: 'package' is not one of ['imageName'"]),
], ids=["severity-counts", "page-total", "policy-rules", "risk-acceptance-entity"])
def test_each_difference_found_comes_back_as_a_failure_naming_the_field(start_sysdig, monkeypatch, mutate, model,
                                                                        named):
    mutate(monkeypatch)
    found = walk(start_sysdig(OrgSpec()), {model})
    for text in named:
        assert any(text in problem for problem in found), (text, found[:5])


# -- the source contract against the same models ---------------------------------------------------
# A finding record (`findings.py`'s docstring) holds objects of the full result under these published
# models, and fields of its own (computed, or lifted from `providersMetadata`).
FINDING_PARTS = {"package": "Package", "vulnerability": "Vulnerability", "riskAccept": "RiskAcceptanceDefinition",
                 "layer": "Layer"}
FINDING_OWN_FIELDS = ("findingId", "resultId", "cisaKev", "epss", "layer.baseImages")
COMPATIBLE = {  # our property types -> the published types a source field may have
    "string": ("string",), "integer": ("integer",), "number": ("number | integer", "integer"),
    "boolean": ("boolean",), "timestamp": ("datetime", "date", "integer", "string"),
    "string[]": ("array<string>",), "integer[]": ("array<integer>",),
}


def _declared(model: str, path: str) -> bool:
    return any(u.model == model and (u.field in (path, "*") or u.field.endswith(".*")
                                     and path.startswith(u.field[:-1])) for u in UNPUBLISHED)


def published_field(model: str, path: str) -> dict | str | None:
    """The published facts of `path` (dotted, `[]` into lists) in `model`: the field's facts, the
    text "declared" for a declared reading, or None where it is neither."""
    if _declared(model, path):
        return "declared"
    head, _, rest = path.partition(".")
    facts = MODELS[model].get(head.removesuffix("[]"))
    if facts is None:
        return None
    kind = facts["type"].removesuffix(" | null")
    if head.endswith("[]"):
        kind = kind.removeprefix("array<").removesuffix(">")
    if not rest:
        return {**facts, "type": kind}
    return published_field(kind, rest) if kind in MODELS else None


def _item_models(resource: str) -> list[str]:
    """The published models of a raw resource's records, one per endpoint that has one."""
    if resource == "findings":
        return []
    models = []
    for extract in EXTRACTS.values():
        for endpoint in extract.endpoints:
            if (endpoint.into or extract.resource) == resource and endpoint.model:
                items = MODELS[endpoint.model][endpoint.items]["type"]
                models.append(items.removesuffix(" | null").removeprefix("array<").removesuffix(">"))
    return models


def _published(resource: str, path: str) -> list[dict | str]:
    """What every published model of the resource says of the field (findings: by record part)."""
    if resource == "findings":
        if any(path == own or path.startswith(own + ".") for own in FINDING_OWN_FIELDS):
            return ["declared"]
        part, _, rest = path.partition(".")
        return [published_field(FINDING_PARTS[part], rest)] if part in FINDING_PARTS else [None]
    found = [published_field(model, path) for model in _item_models(resource)]
    unpublished_endpoints = [endpoint.path for extract in EXTRACTS.values() for endpoint in extract.endpoints
                             if (endpoint.into or extract.resource) == resource and not endpoint.model]
    return found + ["declared" for endpoint in unpublished_endpoints if _declared(endpoint, path)]


def test_every_field_the_model_reads_is_published_with_a_compatible_type_or_declared():
    wrong = []
    for resource, contract in contracts().items():
        if not _item_models(resource) and resource != "findings":
            continue  # no published model at all (the legacy /api endpoints): our reading throughout
        for path, type_ in contract.fields.items():
            said = [facts for facts in _published(resource, path) if facts is not None]
            if not said:
                wrong.append(f"{resource}: {path} is in no published model and not declared in UNPUBLISHED")
            leaf = type_.removesuffix("[]") if "[]" in path else type_
            for facts in said:
                if facts != "declared" and not (facts["type"] in COMPATIBLE[leaf]
                                                or leaf == "string" and facts["type"].startswith("enum(")):
                    wrong.append(f"{resource}: {path} is {type_} here, {facts['type']} in the published model")
    assert wrong == []


def _sources(entity: EntityType) -> Iterator[tuple[str, str, bool]]:
    for prop in entity.properties:
        if len(prop.sources) == 1 and not prop.sources[0].startswith("_"):
            yield prop.sources[0], prop.name, prop.api_required


def test_a_field_the_published_model_requires_is_required_by_the_contract():
    """So a renamed field fails the contract instead of publishing nulls (the inventory's counts)."""
    loose = []
    for entity in ENTITIES:
        for resource in entity.resources:
            present = contracts()[resource].present
            for path in {path for path, _, _ in _sources(entity)}:
                said = [facts for facts in _published(resource, path) if isinstance(facts, dict)]
                if any(facts["required"] and not facts["nullable"] for facts in said) and path not in present:
                    loose.append(f"{entity.type} reads {resource} {path}, which the contract does not require")
            assert {path for path, _, api_required in _sources(entity) if api_required} <= set(present)
    assert loose == []


def test_a_declared_reading_extends_a_published_model_or_names_an_endpoint_without_one():
    without_model = {endpoint.path for extract in EXTRACTS.values() for endpoint in extract.endpoints
                     if not endpoint.model}
    for u in UNPUBLISHED:
        if u.model not in MODELS:  # an endpoint: one without a published model, or a query parameter
            assert u.model in without_model or u.field.startswith("?"), u
        elif "." in u.field:  # inside a field the model publishes only as a map
            assert MODELS[u.model][u.field.partition(".")[0]]["type"].startswith("map<"), u
        else:  # a field the model lacks
            assert u.field == "*" or u.field not in MODELS[u.model], u
