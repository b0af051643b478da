"""The JupiterOne sync-job emulator, exercised over real HTTP the way the pipeline's hook uses it."""

from __future__ import annotations

import dataclasses
import gzip
import json
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from sysdig_j1_emulators.jupiterone import FaultSettings, JupiterOneEmulator

ACCOUNT, API_KEY = "test-account", "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}", "JupiterOne-Account": ACCOUNT}
JOBS = "/persister/synchronization/jobs"


class J1:
    """A thin client: one method per sync call, answering (status, JSON body)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        response = self.session.request(method, f"{self.base_url}{JOBS}{path}", json=body,
                                        headers={**AUTH, **headers}, timeout=5)
        return response.status_code, response.json()

    def create(self, **body: Any) -> dict[str, Any]:
        status, answer = self.call("POST", "", body or {"source": "api", "scope": "sysdig"})
        assert status == 200, answer
        return answer["job"]

    def upload(self, job_id: str, entities: list | None = None,
               relationships: list | None = None) -> tuple[int, Any]:
        """To /entities or /relationships when given one kind, to /upload when given both."""
        if relationships is None:
            return self.call("POST", f"/{job_id}/entities", {"entities": entities})
        if entities is None:
            return self.call("POST", f"/{job_id}/relationships", {"relationships": relationships})
        return self.call("POST", f"/{job_id}/upload",
                         {"entities": entities, "relationships": relationships})

    def finalize(self, job_id: str, partial_types: list[str] | None = None) -> tuple[int, Any]:
        body = {} if partial_types is None else {"partialDatasets": {"types": partial_types}}
        return self.call("POST", f"/{job_id}/finalize", body)

    def status(self, job_id: str) -> dict[str, Any]:
        return self.call("GET", f"/{job_id}")[1]["job"]

    def sync(self, entities: list, relationships: list, partial_types: list[str] | None = None,
             scope: str = "sysdig") -> dict[str, Any]:
        """One full DIFF run; answers the FINISHED job."""
        job_id = self.create(source="api", scope=scope)["id"]
        assert self.upload(job_id, entities=entities)[0] == 200
        assert self.upload(job_id, relationships=relationships)[0] == 200
        assert self.finalize(job_id, partial_types)[0] == 200
        return self.poll(job_id)

    def poll(self, job_id: str) -> dict[str, Any]:
        for _ in range(5):
            job = self.status(job_id)
            if job["done"]:
                return job
        raise AssertionError(f"job {job_id} never finished: {job}")


def user(n: int, **properties: Any) -> dict[str, Any]:
    return {"_key": f"sysdig_user:{n}", "_type": "sysdig_user", "_class": ["User"],
            "name": f"user{n}", "displayName": f"User {n}", **properties}


ACCOUNT_ENTITY = {"_key": "sysdig_account:1", "_type": "sysdig_account", "_class": "Account",
                  "name": "acme", "displayName": "Acme"}


def has_user(n: int) -> dict[str, Any]:
    return {"_key": f"sysdig_account:1|has|sysdig_user:{n}", "_type": "sysdig_account_has_user",
            "_class": "HAS", "_fromEntityKey": "sysdig_account:1", "_toEntityKey": f"sysdig_user:{n}"}


def keys(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(obj["_key"] for obj in objects)


@pytest.fixture(scope="module")
def running_emulator() -> Iterator[JupiterOneEmulator]:
    emulator = JupiterOneEmulator(account=ACCOUNT, api_key=API_KEY)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def emu(running_emulator: JupiterOneEmulator) -> JupiterOneEmulator:
    """The module's server, emptied and with default fault settings (its counters restart too)."""
    running_emulator.reset()
    running_emulator.configure_faults(**dataclasses.asdict(FaultSettings()))
    return running_emulator


@pytest.fixture
def j1(emu: JupiterOneEmulator) -> J1:
    return J1(emu.url)


# -- auth and job creation ------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong", "JupiterOne-Account": ACCOUNT},
    {"Authorization": f"Bearer {API_KEY}", "JupiterOne-Account": "other-account"},
    {"Authorization": f"Bearer {API_KEY}"},
    {"Authorization": API_KEY, "JupiterOne-Account": ACCOUNT},
])
def test_sync_routes_need_bearer_key_and_account(emu: JupiterOneEmulator, headers: dict) -> None:
    response = requests.post(f"{emu.url}{JOBS}", json={"source": "api", "scope": "s"},
                             headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.json() == {"error": {
        "code": "UNAUTHORIZED",
        "message": "401: Unauthorized. Please supply a valid account id and API token."}}
    assert emu.jobs() == []


def test_header_names_are_case_insensitive(emu: JupiterOneEmulator) -> None:
    headers = {"authorization": f"Bearer {API_KEY}", "jupiterone-account": ACCOUNT}
    response = requests.post(f"{emu.url}{JOBS}", json={"source": "api", "scope": "s"},
                             headers=headers, timeout=5)
    assert response.status_code == 200


def test_created_job_has_the_j1_fields(j1: J1) -> None:
    job = j1.create(source="api", scope="sysdig")
    assert uuid.UUID(job["id"]).version == 4
    assert job["status"] == "AWAITING_UPLOADS" and job["done"] is False
    assert (job["source"], job["scope"], job["syncMode"]) == ("api", "sysdig", "DIFF")
    assert job["integrationInstanceId"] is None and job["startTimestamp"] > 1_600_000_000_000
    counters = {name: value for name, value in job.items() if name.startswith("num")}
    assert len(counters) == 13 and set(counters.values()) == {0}  # 4 of them count mapped relationships
    assert j1.status(job["id"]) == job  # nothing to advance before finalize


def test_integration_external_job_is_diffed_within_its_instance(emu: JupiterOneEmulator,
                                                                 j1: J1) -> None:
    j1.sync([user(1)], [], scope="instance-2")
    job = j1.create(source="integration-external", integrationInstanceId="instance-1")
    assert (job["scope"], job["integrationInstanceId"]) == (None, "instance-1")
    j1.upload(job["id"], entities=[user(2)])
    j1.finalize(job["id"])
    assert j1.poll(job["id"])["numEntitiesDeleted"] == 0
    assert emu.graph("instance-1")["entities"] == [user(2)]


@pytest.mark.parametrize("body, code", [
    ({"source": "api"}, "SCOPE_REQUIRED"),
    ({"source": "api", "scope": ""}, "SCOPE_REQUIRED"),
    ({"source": "integration-external", "integrationInstanceId": "i-1", "scope": "s"},
     "SCOPE_NOT_ALLOWED"),
    ({"source": "integration-external"}, "INTEGRATION_INSTANCE_ID_REQUIRED"),
    ({"source": "system-internal", "scope": "s"}, "UNSUPPORTED_SOURCE"),
    ({"source": "api", "scope": "s", "syncMode": "PATCH"}, "UNSUPPORTED_SYNC_MODE"),
    (["not", "an", "object"], "INVALID_JSON"),
])
def test_create_rejects_bad_configuration(j1: J1, body: Any, code: str) -> None:
    status, answer = j1.call("POST", "", body)
    assert (status, answer["error"]["code"]) == (400, code)


def test_unknown_job_is_404(j1: J1) -> None:
    status, answer = j1.call("GET", f"/{uuid.uuid4()}")
    assert (status, answer["error"]["code"]) == (404, "JOB_NOT_FOUND")


# -- life cycle and DIFF ----------------------------------------------------------------------------
def test_full_lifecycle_steps_through_the_finalize_statuses(emu: JupiterOneEmulator, j1: J1) -> None:
    created = j1.create()
    job_id = created["id"]
    assert created["endTimestamp"] is None  # open
    status, answer = j1.upload(job_id, entities=[ACCOUNT_ENTITY, user(1), user(2)])
    assert status == 200 and answer["job"]["numEntitiesUploaded"] == 3
    assert j1.upload(job_id, relationships=[has_user(1), has_user(2)])[1]["job"][
        "numRelationshipsUploaded"] == 2
    assert emu.graph() == {"entities": [], "relationships": []}  # nothing before finalize

    status, answer = j1.finalize(job_id, [])
    assert (status, answer["job"]["status"]) == (200, "FINALIZE_PENDING")
    seen = [j1.status(job_id)["status"] for _ in range(4)]
    assert seen == ["FINALIZING_ENTITIES", "FINALIZING_RELATIONSHIPS", "FINISHED", "FINISHED"]

    job = j1.status(job_id)
    assert job["done"] is True and job["endTimestamp"] >= job["startTimestamp"]  # when it stopped being open
    assert (job["numEntitiesCreated"], job["numRelationshipsCreated"]) == (3, 2)
    assert emu.graph("sysdig") == {"entities": sorted([ACCOUNT_ENTITY, user(1), user(2)],
                                                      key=lambda e: e["_key"]),
                                   "relationships": [has_user(1), has_user(2)]}


def test_diff_second_run_deletes_exactly_what_was_not_reuploaded(emu: JupiterOneEmulator,
                                                                 j1: J1) -> None:
    first = j1.sync([ACCOUNT_ENTITY, user(1), user(2), user(3)], [has_user(1), has_user(2),
                                                                  has_user(3)])
    assert (first["numEntitiesCreated"], first["numRelationshipsCreated"]) == (4, 3)
    j1.sync([user(9)], [], scope="other-scope")

    second = j1.sync([ACCOUNT_ENTITY, user(1), user(2, active=False)], [has_user(1), has_user(2)])

    assert {name: second[f"numEntities{name}"] for name in ("Created", "Updated", "Deleted")} == \
        {"Created": 0, "Updated": 1, "Deleted": 1}
    assert {name: second[f"numRelationships{name}"] for name in ("Created", "Updated", "Deleted")} \
        == {"Created": 0, "Updated": 0, "Deleted": 1}
    graph = emu.graph("sysdig")
    assert keys(graph["entities"]) == ["sysdig_account:1", "sysdig_user:1", "sysdig_user:2"]
    assert keys(graph["relationships"]) == [has_user(1)["_key"], has_user(2)["_key"]]
    assert user(2, active=False) in graph["entities"]
    assert keys(emu.graph("other-scope")["entities"]) == ["sysdig_user:9"]  # other scope untouched


def test_partial_dataset_type_is_kept_and_other_types_still_diffed(emu: JupiterOneEmulator,
                                                                   j1: J1) -> None:
    j1.sync([ACCOUNT_ENTITY, user(1), user(2)], [has_user(1), has_user(2)])

    job = j1.sync([ACCOUNT_ENTITY, user(3)], [], partial_types=["sysdig_user"])

    assert (job["numEntitiesCreated"], job["numEntitiesDeleted"]) == (1, 0)
    assert keys(emu.graph()["entities"]) == [
        "sysdig_account:1", "sysdig_user:1", "sysdig_user:2", "sysdig_user:3"]
    assert emu.graph()["relationships"] == []  # their type was not listed as partial
    assert emu.jobs()[-1]["partialDatasets"] == {"types": ["sysdig_user"]}


def test_kept_relationship_to_a_deleted_entity_is_deleted(emu: JupiterOneEmulator, j1: J1) -> None:
    j1.sync([ACCOUNT_ENTITY, user(1), user(2)], [has_user(1), has_user(2)])

    job = j1.sync([ACCOUNT_ENTITY, user(1)], [], partial_types=["sysdig_account_has_user"])

    assert (job["numEntitiesDeleted"], job["numRelationshipsDeleted"]) == (1, 1)
    assert keys(emu.graph()["relationships"]) == [has_user(1)["_key"]]


def test_relationship_to_a_missing_entity_is_a_create_error(emu: JupiterOneEmulator, j1: J1) -> None:
    job = j1.sync([ACCOUNT_ENTITY, user(1)], [has_user(1), has_user(404)])

    assert (job["numRelationshipsCreated"], job["numRelationshipCreateErrors"]) == (1, 1)
    assert keys(emu.graph()["relationships"]) == [has_user(1)["_key"]]


def test_combined_upload_route_accepts_both_kinds(emu: JupiterOneEmulator, j1: J1) -> None:
    job_id = j1.create()["id"]
    status, answer = j1.upload(job_id, entities=[ACCOUNT_ENTITY, user(1)], relationships=[has_user(1)])
    assert status == 200
    assert (answer["job"]["numEntitiesUploaded"], answer["job"]["numRelationshipsUploaded"]) == (2, 1)
    j1.finalize(job_id)
    j1.poll(job_id)
    assert emu.summary() == {"entities": {"sysdig_account": 1, "sysdig_user": 1},
                             "relationships": {"sysdig_account_has_user": 1}}


# -- upload validation ------------------------------------------------------------------------------
def _without(obj: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key != name}


RAW = {"name": "default", "rawData": {"id": 1}}
BAD_ENTITIES = [  # (object, the property the message must name)
    (user(1, _key="short:1"), "_key"),
    ({**user(1), "_key": 1234567890123}, "_key"),
    (user(1, _type="ab"), "_type"),
    (user(1, _type="Sysdig-User"), "_type"),
    (user(1, _class=[]), "_class"),
    (user(1, _class=["User", "U"]), "_class"),
    (user(1, _class=None), "_class"),
    (_without(user(1), "name"), "name"),
    (user(1, displayName=7), "displayName"),
    (user(1, **{"label:team": "x"}), "label:team"),
    (user(1, **{"tag.k8s/app": "x"}), "tag.k8s/app"),
    (user(1, created_on=1), "created_on"),
    (user(1, _scope="mine"), "_scope"),
    (user(1, nested={"a": 1}), "nested"),
    (user(1, mixed=["a", 1]), "mixed"),
    (user(1, flags=[True, 1]), "flags"),  # a bool is not a number in J1
    (user(1, objects=[{"a": 1}]), "objects"),
    (user(1, _rawData={"name": "default"}), "_rawData"),
    (user(1, _rawData=[{"name": "default", "rawData": [1]}]), "_rawData"),
    (user(1, _rawData=[{"rawData": {}}]), "_rawData"),
    (user(1, _rawData=[RAW, RAW]), "_rawData"),
]
BAD_RELATIONSHIPS = [
    (has_user(1) | {"count": [1, 2]}, "count"),
    (has_user(1) | {"meta": {"a": 1}}, "meta"),
    (_without(has_user(1), "_toEntityKey"), "_toEntityKey"),
    (has_user(1) | {"_fromEntityKey": 5}, "_fromEntityKey"),
    (has_user(1) | {"_mapping": "x"}, "_mapping"),
    (has_user(1) | {"_type": "Has_User"}, "_type"),
]


@pytest.mark.parametrize("bad, prop", BAD_ENTITIES, ids=[p for _, p in BAD_ENTITIES])
def test_invalid_entity_rejects_the_whole_request(emu: JupiterOneEmulator, j1: J1,
                                                  bad: dict, prop: str) -> None:
    job_id = j1.create()["id"]
    status, answer = j1.upload(job_id, entities=[user(2), bad])
    assert (status, answer["error"]["code"]) == (400, "INVALID_GRAPH_OBJECT")
    assert repr(bad.get("_key")) in answer["error"]["message"]
    assert repr(prop) in answer["error"]["message"]
    assert j1.status(job_id)["numEntitiesUploaded"] == 0
    j1.finalize(job_id)
    j1.poll(job_id)
    assert emu.graph()["entities"] == []  # the valid user(2) of that request was dropped too


@pytest.mark.parametrize("bad, prop", BAD_RELATIONSHIPS, ids=[p for _, p in BAD_RELATIONSHIPS])
def test_invalid_relationship_is_rejected(j1: J1, bad: dict, prop: str) -> None:
    job_id = j1.create()["id"]
    status, answer = j1.upload(job_id, relationships=[bad])
    assert (status, answer["error"]["code"]) == (400, "INVALID_GRAPH_OBJECT")
    assert repr(bad["_key"]) in answer["error"]["message"]
    assert repr(prop) in answer["error"]["message"]


def test_valid_values_are_accepted(j1: J1) -> None:
    entity = user(1, **{"tag.AccountName": "prod", "tags": ["a", "b"], "emailDomain": [],
                        "scores": [1, 2.5], "nothing": None, "id": "7", "my prop-1.x": True,
                        "_rawData": [RAW, {"name": "csv", "rawData": "a,b"}]})
    relationship = has_user(1) | {"displayName": "HAS", "weight": 1.5, "note": None}
    job_id = j1.create()["id"]
    assert j1.upload(job_id, entities=[entity])[0] == 200
    assert j1.upload(job_id, relationships=[relationship])[0] == 200


def test_object_that_is_not_a_dict_is_rejected(j1: J1) -> None:
    status, answer = j1.upload(j1.create()["id"], entities=[user(1), "sysdig_user:2"])
    assert status == 400 and "index 1" in answer["error"]["message"]


@pytest.mark.parametrize("route, body, code", [
    ("entities", {"entities": {"_key": "x"}}, "ENTITY_IS_NOT_ARRAY"),
    ("entities", {}, "ENTITY_IS_NOT_ARRAY"),
    ("relationships", {"relationships": None}, "RELATIONSHIP_IS_NOT_ARRAY"),
    ("upload", {"relationships": "x"}, "RELATIONSHIP_IS_NOT_ARRAY"),
    ("upload", {"entities": 1}, "ENTITY_IS_NOT_ARRAY"),
])
def test_upload_fields_must_be_arrays(j1: J1, route: str, body: dict, code: str) -> None:
    status, answer = j1.call("POST", f"/{j1.create()['id']}/{route}", body)
    assert (status, answer["error"]["code"]) == (400, code)


def test_entity_is_not_array_message_matches_j1(j1: J1) -> None:
    answer = j1.call("POST", f"/{j1.create()['id']}/entities", {"entities": "x"})[1]
    assert answer == {"error": {"code": "ENTITY_IS_NOT_ARRAY", "message": '"entities" should be an array'}}


def test_duplicate_key_in_one_job_is_rejected(j1: J1) -> None:
    job_id = j1.create()["id"]
    assert j1.upload(job_id, entities=[user(1)])[0] == 200
    status, answer = j1.upload(job_id, entities=[user(2), user(1)])
    assert (status, answer["error"]["code"]) == (400, "DUPLICATE_KEY")
    assert "'sysdig_user:1'" in answer["error"]["message"]
    status, answer = j1.upload(job_id, entities=[user(3), user(3)])
    assert (status, answer["error"]["code"]) == (400, "DUPLICATE_KEY")
    assert j1.status(job_id)["numEntitiesUploaded"] == 1


def test_parallel_uploads_are_all_counted(emu: JupiterOneEmulator, j1: J1) -> None:
    job_id = j1.create()["id"]  # the J1 SDK uploads six batches at a time
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(lambda n: J1(emu.url).upload(job_id, entities=[user(n)])[0],
                                 range(60)))
    assert statuses == [200] * 60
    assert j1.status(job_id)["numEntitiesUploaded"] == 60


def test_same_key_in_two_jobs_is_fine(j1: J1) -> None:
    j1.sync([user(1)], [])
    assert j1.sync([user(1)], [])["numEntitiesUpdated"] == 0


# -- size limit -------------------------------------------------------------------------------------
@pytest.fixture
def small_emu(emu: JupiterOneEmulator) -> JupiterOneEmulator:
    emu.configure_faults(max_body_bytes=4_000)
    return emu


def test_body_over_the_limit_is_413(small_emu: JupiterOneEmulator) -> None:
    j1 = J1(small_emu.url)
    job_id = j1.create()["id"]
    status, answer = j1.upload(job_id, entities=[user(n, bio="x" * 50) for n in range(40)])
    assert (status, answer["error"]["code"]) == (413, "RequestEntityTooLargeException")
    assert j1.upload(job_id, entities=[user(1)])[0] == 200  # smaller batches still go through


def test_gzip_body_is_measured_by_its_wire_size(small_emu: JupiterOneEmulator) -> None:
    j1 = J1(small_emu.url)
    job_id = j1.create()["id"]
    entities = [user(n, bio="x" * 50) for n in range(40)]
    raw = json.dumps({"entities": entities}).encode()
    assert len(raw) > 4_000 > len(gzip.compress(raw))

    def post(body: bytes) -> requests.Response:
        headers = {**AUTH, "Content-Type": "application/json", "Content-Encoding": "gzip"}
        return requests.post(f"{small_emu.url}{JOBS}/{job_id}/entities", data=body,
                             headers=headers, timeout=5)

    response = post(gzip.compress(raw))
    assert response.status_code == 200 and response.json()["job"]["numEntitiesUploaded"] == 40
    noise = "".join(uuid.uuid4().hex for _ in range(400))  # random, so gzip cannot shrink it
    too_big = json.dumps({"entities": [user(99, noise=noise)]}).encode()
    assert len(gzip.compress(too_big)) > 4_000
    assert post(gzip.compress(too_big)).status_code == 413


def test_body_that_is_not_gzip_is_a_client_error(emu: JupiterOneEmulator) -> None:
    headers = {**AUTH, "Content-Encoding": "gzip"}
    for body in (b"not gzip", gzip.compress(b'{"source": "api"}')[:-12]):  # bad magic, truncated
        response = requests.post(f"{emu.url}{JOBS}", data=body, headers=headers, timeout=5)
        assert response.status_code == 400
    assert emu.jobs() == []


# -- abort and closed jobs ----------------------------------------------------------------------------
def test_abort_stores_nothing_and_closes_the_job(emu: JupiterOneEmulator, j1: J1) -> None:
    job_id = j1.create()["id"]
    j1.upload(job_id, entities=[user(1)])
    status, answer = j1.call("POST", f"/{job_id}/abort", {"reason": "Sysdig extract failed"})
    assert (status, answer["job"]["status"], answer["job"]["done"]) == (200, "ABORTED", True)
    assert answer["job"]["abortReason"] == "Sysdig extract failed"

    status, answer = j1.upload(job_id, entities=[user(2)])
    assert (status, answer["error"]["code"]) == (400, "JOB_NOT_AWAITING_UPLOADS")
    assert j1.finalize(job_id)[1]["error"]["code"] == "JOB_NOT_AWAITING_UPLOADS"
    assert emu.graph() == {"entities": [], "relationships": []}
    assert emu.jobs()[0]["abortReason"] == "Sysdig extract failed"


def test_finalized_job_takes_no_more_uploads(j1: J1) -> None:
    job_id = j1.create()["id"]
    j1.finalize(job_id)
    for status, answer in (j1.upload(job_id, entities=[user(1)]), j1.finalize(job_id),
                           j1.call("POST", f"/{job_id}/abort", {})):
        assert (status, answer["error"]["code"]) == (400, "JOB_NOT_AWAITING_UPLOADS")


@pytest.mark.parametrize("route, body, code", [
    ("finalize", {"partialDatasets": ["sysdig_user"]}, "INVALID_PARTIAL_DATASETS"),
    ("finalize", {"partialDatasets": {"types": [1]}}, "INVALID_PARTIAL_DATASETS"),
    ("upload", {"deleteEntities": [{"_id": "x"}]}, "UNSUPPORTED_UPLOAD_FIELD"),
    ("abort", {"reason": ["x"]}, "INVALID_ABORT_REASON"),
])
def test_malformed_job_calls_are_rejected_and_leave_the_job_open(j1: J1, route: str, body: dict,
                                                                  code: str) -> None:
    job_id = j1.create()["id"]
    status, answer = j1.call("POST", f"/{job_id}/{route}", body)
    assert (status, answer["error"]["code"]) == (400, code)
    assert j1.status(job_id)["status"] == "AWAITING_UPLOADS"


def test_correlation_ids_are_recorded_per_request(emu: JupiterOneEmulator, j1: J1) -> None:
    job_id = j1.create()["id"]
    j1.call("POST", f"/{job_id}/entities", {"entities": [user(1)]},
            **{"JupiterOne-Correlation-Id": "corr-1"})
    j1.call("POST", f"/{job_id}/entities", {"entities": [user(1)]},
            **{"JupiterOne-Correlation-Id": "corr-2"})
    j1.finalize(job_id)
    assert emu.jobs()[0]["requests"] == [
        {"action": "entities", "status": 200, "correlationId": "corr-1"},
        {"action": "entities", "status": 400, "correlationId": "corr-2"},
        {"action": "finalize", "status": 200, "correlationId": None},
    ]


# -- read endpoints and persistence -------------------------------------------------------------------
def test_read_endpoints_match_the_python_methods(emu: JupiterOneEmulator, j1: J1) -> None:
    j1.sync([ACCOUNT_ENTITY, user(1)], [has_user(1)])
    j1.sync([user(2)], [], scope="b")

    def get(path: str) -> Any:
        return requests.get(f"{emu.url}/_emulator/{path}", timeout=5).json()

    assert get("graph?scope=b") == emu.graph("b") == {"entities": [user(2)], "relationships": []}
    assert keys(get("graph")["entities"]) == ["sysdig_account:1", "sysdig_user:1", "sysdig_user:2"]
    assert get("summary?scope=sysdig") == {"entities": {"sysdig_account": 1, "sysdig_user": 1},
                                           "relationships": {"sysdig_account_has_user": 1}}
    assert get("graph?scope=nope") == {"entities": [], "relationships": []}
    assert [job["scope"] for job in get("jobs")] == ["sysdig", "b"] == \
        [job["scope"] for job in emu.jobs()]

    assert requests.post(f"{emu.url}/_emulator/reset", timeout=5).status_code == 200
    assert get("jobs") == [] and get("graph") == {"entities": [], "relationships": []}


def test_state_file_carries_graph_and_jobs_to_the_next_emulator(tmp_path: Path) -> None:
    state = tmp_path / "j1" / "state.json"
    first = JupiterOneEmulator(state, account=ACCOUNT, api_key=API_KEY)
    first.start()
    J1(first.url).sync([ACCOUNT_ENTITY, user(1), user(2)], [has_user(1), has_user(2)])
    left_open = J1(first.url).create()["id"]
    J1(first.url).upload(left_open, entities=[user(5)])
    J1(first.url).sync([user(7)], [], scope="unrelated")  # saves the open job too
    first.stop()

    second = JupiterOneEmulator(state, account=ACCOUNT, api_key=API_KEY)
    second.start()
    try:
        assert second.graph("sysdig") == first.graph("sysdig")
        job = J1(second.url).sync([ACCOUNT_ENTITY, user(1)], [has_user(1)])
        assert (job["numEntitiesDeleted"], job["numRelationshipsDeleted"]) == (1, 1)
        reopened = J1(second.url).status(left_open)
        assert reopened["status"] == "ABORTED" and "restarted" in reopened["abortReason"]
    finally:
        second.stop()

    third = JupiterOneEmulator(state)
    assert keys(third.graph("sysdig")["entities"]) == ["sysdig_account:1", "sysdig_user:1"]
    assert len(third.jobs()) == 4
    assert [path.name for path in state.parent.iterdir()] == ["state.json"]  # no temp files left


def test_cli_serves_with_state_file_and_fault_flags(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "sysdig_j1_emulators.jupiterone", "--port", "0", "--state", str(state),
         "--account", ACCOUNT, "--api-key", API_KEY, "--rate-limit-every", "5"],
        stdout=subprocess.PIPE, text=True)
    try:
        url = process.stdout.readline().split()[-1]  # "JupiterOneEmulator listening on http://..."
        j1 = J1(url)
        job_id = j1.create()["id"]
        assert j1.upload(job_id, entities=[user(1)])[0] == 200
        assert j1.finalize(job_id)[0] == 200
        assert [j1.call("GET", f"/{job_id}")[0] for _ in range(2)] == [200, 429]
        saved = json.loads(state.read_text())
        assert list(saved["graph"]["sysdig"]["entities"]) == ["sysdig_user:1"]
    finally:
        process.terminate()
        process.wait(timeout=5)


# -- phase 2: faults ------------------------------------------------------------------------------------
def test_rate_limit_every_nth_request_with_retry_after(emu: JupiterOneEmulator, j1: J1) -> None:
    emu.configure_faults(rate_limit_every=3, retry_after=2)
    responses = [requests.get(f"{emu.url}{JOBS}/missing", headers=AUTH, timeout=5) for _ in range(6)]
    assert [r.status_code for r in responses] == [404, 404, 429, 404, 404, 429]
    assert responses[2].headers["Retry-After"] == "2"


def test_error_rate_is_seeded(emu: JupiterOneEmulator, j1: J1) -> None:
    def pattern() -> list[int]:
        emu.configure_faults(error_rate=0.5, seed=7)
        return [j1.call("GET", "/missing")[0] for _ in range(20)]

    first = pattern()
    assert set(first) == {404, 503}
    assert pattern() == first
    emu.configure_faults(error_rate=0.0)
    assert j1.call("GET", "/missing")[0] == 404


def test_fail_uploads_after_n_successes(emu: JupiterOneEmulator, j1: J1) -> None:
    emu.configure_faults(fail_uploads_after=2)
    job_id = j1.create()["id"]
    statuses = [j1.upload(job_id, entities=[user(n)])[0] for n in range(4)]
    assert statuses == [200, 200, 503, 503]
    assert j1.status(job_id)["numEntitiesUploaded"] == 2
    assert j1.finalize(job_id)[0] == 200  # only uploads fail


def test_bad_data_ends_in_error_and_changes_nothing(emu: JupiterOneEmulator, j1: J1) -> None:
    j1.sync([user(1)], [])
    emu.configure_faults(fail_finalize="ERROR_BAD_DATA")
    job = j1.sync([user(2)], [])
    assert (job["status"], job["done"]) == ("ERROR_BAD_DATA", True)
    assert keys(emu.graph()["entities"]) == ["sysdig_user:1"]


def test_faults_can_be_set_over_http(emu: JupiterOneEmulator, j1: J1) -> None:
    response = requests.post(f"{emu.url}/_emulator/faults",
                             json={"max_body_bytes": 100, "rate_limit_every": 0}, timeout=5)
    assert response.status_code == 200 and response.json()["max_body_bytes"] == 100
    status, answer = j1.call("POST", "", {"source": "api", "scope": "a-long-scope-" + "x" * 100})
    assert (status, answer["error"]["code"]) == (413, "RequestEntityTooLargeException")
    for bad_setting in ({"explode": True}, {"error_rate": "often"}, {"rate_limit_every": True}):
        bad = requests.post(f"{emu.url}/_emulator/faults", json=bad_setting, timeout=5)
        assert bad.status_code == 400 and next(iter(bad_setting)) in bad.json()["error"]["message"]
    assert emu.faults.max_body_bytes == 100  # a rejected change leaves the settings alone


def test_constructor_takes_fault_settings() -> None:
    emulator = JupiterOneEmulator(fail_finalize="UNKNOWN", fail_uploads_after=3)
    assert (emulator.faults.fail_finalize, emulator.faults.fail_uploads_after) == ("UNKNOWN", 3)
    with pytest.raises(TypeError):
        JupiterOneEmulator(no_such_fault=1)


# -- mapped relationships ----------------------------------------------------------------------------
def is_cve(n: int, cve: str, direction: str = "FORWARD", **mapping: Any) -> dict[str, Any]:
    target = {"_type": "cve", "_key": cve.lower(), "_class": "Vulnerability", "name": cve, "displayName": cve}
    return {"_key": f"sysdig_user:{n}|is|{cve.lower()}", "_type": "sysdig_user_is_cve", "_class": "IS",
            "displayName": "IS", "_mapping": {"relationshipDirection": direction, "sourceEntityKey": f"sysdig_user:{n}",
                                              "targetFilterKeys": [["_type", "_key"]], "targetEntity": target,
                                              **mapping}}


@pytest.mark.parametrize(("change", "problem"), [
    ({"relationshipDirection": "SIDEWAYS"}, "relationshipDirection' must be one of FORWARD, REVERSE"),
    ({"sourceEntityKey": ""}, "sourceEntityKey' must be a non-empty string"),
    ({"targetFilterKeys": [["_type", "cveId"]]}, "lacks the filter key(s) ['cveId']"),
    ({"targetFilterKeys": []}, "targetFilterKeys' must be a non-empty array"),
    ({"targetEntity": {"_type": "cve", "_key": "cve-1", "nested": {"a": 1}}}, "an object of primitive properties"),
    ({"skipTargetCreation": "no"}, "skipTargetCreation' must be a boolean"),
])
def test_a_malformed_mapped_relationship_is_refused(j1: J1, change: dict, problem: str) -> None:
    relationship = is_cve(1, "CVE-2024-0001")
    relationship["_mapping"].update(change)
    job_id = j1.create()["id"]
    status, answer = j1.upload(job_id, relationships=[relationship])
    assert status == 400 and problem in answer["error"]["message"], answer


def test_mapped_targets_are_found_created_once_or_skipped_and_diffed_like_relationships(
        j1: J1, emu: JupiterOneEmulator) -> None:
    theirs = {"_key": "cve-2024-0002", "_type": "cve", "_class": "Vulnerability", "name": "CVE-2024-0002",
              "displayName": "CVE-2024-0002", "owner": "another integration"}
    j1.sync([theirs], [], scope="other-scanner")
    mapped = [is_cve(1, "CVE-2024-0001"), is_cve(2, "CVE-2024-0001", "REVERSE"), is_cve(1, "CVE-2024-0002"),
              is_cve(2, "CVE-2024-0003", skipTargetCreation=True)]

    job = j1.sync([user(1), user(2)], mapped)

    assert (job["numMappedRelationshipsCreated"], job["numMappedRelationshipCreateErrors"]) == (3, 1)
    created = emu.graph("system-mapper")["entities"]
    assert [c["_key"] for c in created] == ["cve-2024-0001"]  # once, for two relationships
    assert emu.graph("other-scanner")["entities"] == [theirs]  # found, not copied or changed
    ends = {r["_key"]: (r["_fromEntityKey"], r["_toEntityKey"]) for r in emu.graph("sysdig")["relationships"]}
    assert ends == {"sysdig_user:1|is|cve-2024-0001": ("sysdig_user:1", "cve-2024-0001"),
                    "sysdig_user:2|is|cve-2024-0001": ("cve-2024-0001", "sysdig_user:2"),
                    "sysdig_user:1|is|cve-2024-0002": ("sysdig_user:1", "cve-2024-0002")}

    kept = j1.sync([user(1), user(2)], [], partial_types=["sysdig_user_is_cve"])
    assert kept["numMappedRelationshipsDeleted"] == 0 and len(emu.graph("sysdig")["relationships"]) == 3  # REVERSE too

    again = j1.sync([user(1), user(2)], mapped[:1])
    assert (again["numMappedRelationshipsCreated"], again["numMappedRelationshipsDeleted"]) == (0, 2)
    assert again["numRelationshipsDeleted"] == 0  # mapped ones are counted apart
    assert [c["_key"] for c in emu.graph("system-mapper")["entities"]] == ["cve-2024-0001"]
