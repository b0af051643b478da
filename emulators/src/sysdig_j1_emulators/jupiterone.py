"""A JupiterOne synchronization-job API emulator (the "bulk upload" API the pipeline writes to).

Follows the J1 reference notes (jupiterone-api.md) §2-§4 and their §7 checklist: the job life
cycle, DIFF finalize within a scope, partialDatasets, the body-size limit and the graph-object
rules (in `jupiterone_rules`). Only DIFF is implemented, and only the routes the pipeline uses:
no `/events`, no `/uploadUrl`, no deletes through `/upload`.

It also serves the GraphQL operations for questions and rule instances, keeps JupiterOne's metadata
on objects (`_createdOn`, `_beginOn`, deleted objects marked `_deleted`) and evaluates rules on
demand (`jupiterone_graphql`).

Error codes marked "emulator-specific" are not documented by J1; they were chosen here. Besides
the J1 routes it serves `/_emulator/*` (no auth) so tests and the demo can look inside, and it can
misbehave on request (429, 503, 413, ERROR_BAD_DATA) to exercise the client's error handling.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import random
import tempfile
import threading
import time
import typing
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sysdig_j1_emulators.http import Emulator, Request, Response
from sysdig_j1_emulators.jupiterone_graphql import Monitoring
from sysdig_j1_emulators.jupiterone_rules import (
    ENTITY,
    RELATIONSHIP,
    InvalidGraphObject,
    check_graph_object,
    diff_collection,
)

JOBS = "/persister/synchronization/jobs"
JOB = JOBS + "/(?P<job_id>[^/]+)"
UPLOAD_ACTIONS = ("entities", "relationships", "upload")
IN_PROGRESS = ("AWAITING_UPLOADS", "FINALIZE_PENDING", "FINALIZING_ENTITIES", "FINALIZING_RELATIONSHIPS")
# How a job can end (the SDK's status enum): FINISHED, or a failure that leaves the graph untouched.
FAILED_ENDS = ("ABORTED", "ABORTED_DUE_TO_INVALID_CONFIGURATION", "ERROR_BAD_DATA", "ERROR_UNEXPECTED_FAILURE",
               "UNKNOWN")
COUNTERS = tuple(
    f"num{kind}{event}"
    for kind in ("Entities", "Relationships")
    for event in ("Uploaded", "Created", "Updated", "Deleted")
) + ("numRelationshipCreateErrors", "numMappedRelationshipsCreated", "numMappedRelationshipsUpdated",
     "numMappedRelationshipsDeleted", "numMappedRelationshipCreateErrors")
# The body field each kind is uploaded in, and J1's error code when that field is not an array.
UPLOAD_FIELDS = {
    ENTITY: ("entities", "ENTITY_IS_NOT_ARRAY"),
    RELATIONSHIP: ("relationships", "RELATIONSHIP_IS_NOT_ARRAY"),
}
UNAUTHORIZED = "401: Unauthorized. Please supply a valid account id and API token."
MAPPER_SCOPE = "system-mapper"  # where targets the mapper creates live (emulator-specific name)
RESTART_ABORT_REASON = "emulator restarted before finalize; uploads are kept in memory only"

Collection = dict[str, dict[str, Any]]  # _key -> graph object


def _empty_scope() -> dict[str, Collection]:
    return {"entities": {}, "relationships": {}}


class ApiError(Exception):
    """Ends a request with a J1-style error body."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        body = {"error": {"code": code, "message": message}}
        self.response = Response(status, body, headers or {})


@dataclass
class FaultSettings:
    """Limits and deliberate misbehaviour; set per start or at runtime (POST /_emulator/faults)."""

    max_body_bytes: int = 6_000_000  # 413 above this many bytes on the wire (J1: "about 6 MB")
    rate_limit_every: int = 0  # every Nth sync request answers 429; 0 = never
    retry_after: int = 1  # seconds, sent as Retry-After with each 429
    error_rate: float = 0.0  # fraction of sync requests answering 503
    seed: int = 0  # for error_rate, so a test sees the same failures on every run
    fail_finalize: str | None = None  # finalize ends in this status (one of FAILED_ENDS), graph untouched
    fail_uploads_after: int | None = None  # after N successful uploads every upload answers 503
    finalize_seconds: float = 0.0  # a finalized job stays FINALIZE_PENDING (open) at least this long

    def __post_init__(self) -> None:  # settings also arrive as JSON, so check their types
        for name, hint in typing.get_type_hints(FaultSettings).items():
            value = getattr(self, name)
            allowed = (int, float) if hint is float else hint
            if isinstance(value, bool) != (hint is bool) or not isinstance(value, allowed):
                raise TypeError(f"fault setting {name}={value!r} should be {hint}")
        if self.fail_finalize not in (None, *FAILED_ENDS):
            raise TypeError(f"fault setting fail_finalize={self.fail_finalize!r} should be one of {FAILED_ENDS}")


@dataclass
class SyncJob:
    fields: dict[str, Any]  # the job object exactly as the API returns it
    # Uploaded but not yet finalized, per collection; in memory only.
    uploads: dict[str, Collection] = field(default_factory=_empty_scope)
    next_statuses: list[str] = field(default_factory=list)  # stepped through by status GETs
    partial_datasets: Any = None
    requests: list[dict[str, Any]] = field(default_factory=list)  # POSTs, with correlation ids
    finalized_at: float = 0.0  # time.monotonic() of the finalize, in memory only

    @property
    def status(self) -> str:
        return self.fields["status"]

    @property
    def scope_key(self) -> str:
        """DIFF compares within the `scope` (api) or the integration instance (external)."""
        return self.fields["scope"] or self.fields["integrationInstanceId"]

    def set_status(self, status: str) -> None:
        self.fields.update(status=status, done=status not in IN_PROGRESS)
        if self.fields["done"] and self.fields.get("endTimestamp") is None:
            # Emulator-specific: when the job stopped being open, so tests can check that no two
            # jobs of a scope were ever open at the same moment.
            self.fields["endTimestamp"] = int(time.time() * 1000)

    def advance(self) -> None:
        if self.next_statuses:
            self.set_status(self.next_statuses.pop(0))

    def view(self) -> dict[str, Any]:
        return {**self.fields, "partialDatasets": self.partial_datasets, "requests": self.requests}

    def to_state(self) -> dict[str, Any]:
        return {"fields": self.fields, "nextStatuses": self.next_statuses,
                "partialDatasets": self.partial_datasets, "requests": self.requests}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SyncJob:
        return cls(state["fields"], next_statuses=state["nextStatuses"],
                   partial_datasets=state["partialDatasets"], requests=state["requests"])


class JupiterOneEmulator(Emulator):
    def __init__(
        self,
        state_path: Path | None = None,
        account: str = "j1-emulator-account",
        api_key: str = "j1-emulator-key",
        max_body_bytes: int = 6_000_000,
        **faults: Any,
    ) -> None:
        super().__init__()
        self.state_path = Path(state_path) if state_path else None
        self.account = account
        self.api_key = api_key
        self.faults = FaultSettings(max_body_bytes=max_body_bytes, **faults)
        self._state_lock = threading.RLock()
        self._graph: dict[str, dict[str, Collection]] = {}  # scope -> collection name -> objects
        # JupiterOne's metadata per object (_createdOn, _beginOn), and what DIFF deleted, kept
        # marked `_deleted` as JupiterOne keeps it for queries that include deleted objects.
        self._metadata: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}  # scope -> collection -> _key -> meta
        self._deleted: dict[str, dict[str, Collection]] = {}
        self._monitoring = Monitoring(graph=self._rule_graph)  # questions, rules (GraphQL)
        self._jobs: dict[str, SyncJob] = {}
        self._reset_fault_counters()
        self._load()

        self._sync_route("POST", JOBS + "/?", self._create_job)
        self._sync_route("GET", JOB, self._get_job)
        self._sync_route("POST", JOB + "/(?P<action>entities|relationships|upload)", self._upload)
        self._sync_route("POST", JOB + "/finalize", self._finalize)
        self._sync_route("POST", JOB + "/abort", self._abort)
        self.route("GET", "/_emulator/graph", lambda r: Response(body=self.graph(r.query.get("scope"))))
        self.route("GET", "/_emulator/summary",
                   lambda r: Response(body=self.summary(r.query.get("scope"))))
        self.route("GET", "/_emulator/jobs", lambda r: Response(body=self.jobs()))
        self._sync_route("POST", "/graphql", self._graphql)
        self.route("POST", "/_emulator/rules/evaluate", lambda r: Response(body=self.evaluate_rules()))
        self.route("GET", "/_emulator/alerts", lambda r: Response(body=self.alerts()))
        self.route("POST", "/_emulator/reset", self._reset_route)
        self.route("POST", "/_emulator/faults", self._faults_route)

    # -- Python read API (the same data as the /_emulator routes) ---------------------------------
    def graph(self, scope: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """Stored objects of one scope, or of all scopes, each list sorted by `_key`."""
        with self._state_lock:
            scopes = [self._graph.get(scope, {})] if scope is not None else self._graph.values()
            return {
                name: sorted((copy.deepcopy(obj) for s in scopes for obj in s.get(name, {}).values()),
                             key=lambda obj: obj["_key"])
                for name in ("entities", "relationships")
            }

    def summary(self, scope: str | None = None) -> dict[str, dict[str, int]]:
        """The number of stored objects per `_type`."""
        return {name: dict(Counter(obj["_type"] for obj in objects))
                for name, objects in self.graph(scope).items()}

    def jobs(self) -> list[dict[str, Any]]:
        with self._state_lock:
            return [copy.deepcopy(job.view()) for job in self._jobs.values()]

    def reset(self) -> None:
        with self._state_lock:
            self._graph.clear()
            self._jobs.clear()
            self._metadata.clear()
            self._deleted.clear()
            self._monitoring = Monitoring(graph=self._rule_graph)
            self._save()

    def questions(self) -> list[dict[str, Any]]:
        with self._state_lock:
            return copy.deepcopy(sorted(self._monitoring.questions.values(), key=lambda q: q["name"]))

    def rules(self) -> list[dict[str, Any]]:
        with self._state_lock:
            return copy.deepcopy(sorted(self._monitoring.rules.values(), key=lambda r: r["name"]))

    def graph_with_metadata(self) -> dict[str, list[dict[str, Any]]]:
        """Every object of every scope as J1QL sees it: with _createdOn, _beginOn and _deleted, the
        deleted ones included (marked `_deleted: true`, with `_endOn`)."""
        with self._state_lock:
            view: dict[str, list[dict[str, Any]]] = {"entities": [], "relationships": []}
            for scope, collections in self._graph.items():
                for name, objects in collections.items():
                    metadata = self._metadata.get(scope, {}).get(name, {})
                    view[name] += [{**obj, **metadata.get(key, {}), "_deleted": False} for key, obj in objects.items()]
                    view[name] += list(self._deleted.get(scope, {}).get(name, {}).values())
            return copy.deepcopy(view)

    def evaluate_rules(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Emulator-specific: what JupiterOne's rule engine does at a polling interval, now, for
        every rule instance: which results are new since its previous evaluation, and its alert."""
        with self._state_lock:
            evaluations = self._monitoring.evaluate(*self._rule_graph(), now_ms or int(time.time() * 1000))
            self._save()
            return evaluations

    def alerts(self) -> list[dict[str, Any]]:
        """Emulator-specific: every alert a rule evaluation raised, oldest first, with when (`at`, ms)."""
        with self._state_lock:
            return copy.deepcopy(self._monitoring.alerts)

    def _rule_graph(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """What a rule's query sees: every entity (deleted ones marked) and the live relationships."""
        graph = self.graph_with_metadata()
        return graph["entities"], [r for r in graph["relationships"] if not r["_deleted"]]

    def configure_faults(self, **settings: Any) -> FaultSettings:
        """Change fault settings (a bad name or type raises TypeError); restarts their counters."""
        with self._state_lock:
            self.faults = dataclasses.replace(self.faults, **settings)
            self._reset_fault_counters()
            return self.faults

    # -- what every sync route goes through ---------------------------------------------------------
    def _sync_route(self, method: str, pattern: str, handler: Callable[[Request], Response]) -> None:
        def guarded(request: Request) -> Response:
            with self._state_lock:
                try:
                    self._check_auth(request)
                    self._inject_faults(request)
                    self._check_body_size(request)
                    response = handler(request)
                except ApiError as error:
                    response = error.response
                self._log_request(request, response)
                return response

        self.route(method, pattern, guarded)

    def _check_auth(self, request: Request) -> None:
        key_ok = request.headers.get("authorization") == f"Bearer {self.api_key}"
        if not (key_ok and request.headers.get("jupiterone-account") == self.account):
            raise ApiError(401, "UNAUTHORIZED", UNAUTHORIZED)

    def _inject_faults(self, request: Request) -> None:
        # All fault codes are emulator-specific.
        self._sync_requests += 1
        every = self.faults.rate_limit_every
        if every and self._sync_requests % every == 0:
            raise ApiError(429, "RATE_LIMIT_EXCEEDED", "Too many requests (emulator fault)",
                           {"Retry-After": str(self.faults.retry_after)})
        if self._rng.random() < self.faults.error_rate:
            raise ApiError(503, "SERVICE_UNAVAILABLE", "Service unavailable (emulator fault)")
        limit = self.faults.fail_uploads_after
        is_upload = request.params.get("action") in UPLOAD_ACTIONS
        if is_upload and limit is not None and self._successful_uploads >= limit:
            raise ApiError(503, "SERVICE_UNAVAILABLE", "Uploads are failing (emulator fault)")

    def _check_body_size(self, request: Request) -> None:
        # Content-Length is what crossed the wire: the gzipped size when the body was gzipped.
        wire_bytes = int(request.headers.get("content-length") or 0)
        limit = self.faults.max_body_bytes
        if wire_bytes > limit:
            raise ApiError(413, "RequestEntityTooLargeException",
                           f"Request body of {wire_bytes} bytes exceeds the {limit} byte limit")

    def _log_request(self, request: Request, response: Response) -> None:
        job = self._jobs.get(request.params.get("job_id", ""))
        if job is not None and request.method == "POST":
            job.requests.append({
                "action": request.path.rsplit("/", 1)[-1],
                "status": response.status,
                "correlationId": request.headers.get("jupiterone-correlation-id"),
            })

    # -- sync routes --------------------------------------------------------------------------------
    def _create_job(self, request: Request) -> Response:
        body = _json_object(request)
        source, scope = body.get("source"), body.get("scope")
        instance_id = body.get("integrationInstanceId")
        _check_job_config(source, scope, instance_id, body.get("syncMode") or "DIFF")
        job_id = str(uuid.uuid4())
        job = SyncJob({
            "id": job_id, "source": source, "scope": scope, "integrationInstanceId": instance_id,
            # J1 makes an integration job with the sync job's id when none is given (ref §2.2).
            "integrationJobId": body.get("integrationJobId") or (job_id if instance_id else None),
            "syncMode": "DIFF", "accountId": self.account, "status": "AWAITING_UPLOADS",
            "startTimestamp": int(time.time() * 1000), "endTimestamp": None, "done": False, "abortReason": None,
            **dict.fromkeys(COUNTERS, 0),
        })
        self._jobs[job_id] = job
        return _job_response(job)

    def _get_job(self, request: Request) -> Response:
        job = self._find_job(request)
        if time.monotonic() - job.finalized_at >= self.faults.finalize_seconds:
            job.advance()  # after finalize, each status poll moves the job one phase on
        return _job_response(job)

    def _upload(self, request: Request) -> Response:
        job = self._open_job(request)
        batches = _upload_batches(request.params["action"], _json_object(request))
        for kind, objects in batches.items():  # check everything before storing anything
            self._check_batch(job, kind, objects)
        for kind, objects in batches.items():
            collection = UPLOAD_FIELDS[kind][0]
            job.uploads[collection].update((obj["_key"], obj) for obj in objects)
            job.fields[f"num{collection.capitalize()}Uploaded"] += len(objects)
        self._successful_uploads += 1
        return _job_response(job)

    def _check_batch(self, job: SyncJob, kind: str, objects: list[Any]) -> None:
        uploaded = job.uploads[UPLOAD_FIELDS[kind][0]]  # looked up, not copied: jobs get large
        in_batch: set[str] = set()
        for index, obj in enumerate(objects):
            try:
                check_graph_object(kind, obj, index)
            except InvalidGraphObject as error:  # emulator-specific code
                raise ApiError(400, "INVALID_GRAPH_OBJECT", str(error)) from None
            if obj["_key"] in uploaded or obj["_key"] in in_batch:  # J1 rejects duplicates (§3.5)
                raise ApiError(400, "DUPLICATE_KEY",
                               f"{kind} _key={obj['_key']!r} was already uploaded in this job")
            in_batch.add(obj["_key"])

    def _finalize(self, request: Request) -> Response:
        job = self._open_job(request)
        job.partial_datasets = _json_object(request).get("partialDatasets")
        keep_types = _partial_types(job.partial_datasets)
        if self.faults.fail_finalize:
            terminal = self.faults.fail_finalize
        else:
            self._apply_diff(job, keep_types)
            terminal = "FINISHED"
        job.uploads = _empty_scope()
        job.finalized_at = time.monotonic()
        job.set_status("FINALIZE_PENDING")
        job.next_statuses = ["FINALIZING_ENTITIES", "FINALIZING_RELATIONSHIPS", terminal]
        self._save()
        return _job_response(job)

    def _abort(self, request: Request) -> Response:
        job = self._open_job(request)
        reason = _json_object(request).get("reason")
        if reason is not None and not isinstance(reason, str):  # emulator-specific code
            raise ApiError(400, "INVALID_ABORT_REASON", '"reason" should be a string')
        job.uploads = _empty_scope()
        job.set_status("ABORTED")
        job.fields["abortReason"] = reason
        self._save()
        return _job_response(job)

    def _find_job(self, request: Request) -> SyncJob:
        job = self._jobs.get(request.params["job_id"])
        if job is None:
            raise ApiError(404, "JOB_NOT_FOUND", f"Job {request.params['job_id']} not found")
        return job

    def _open_job(self, request: Request) -> SyncJob:
        job = self._find_job(request)
        if job.status != "AWAITING_UPLOADS":
            raise ApiError(400, "JOB_NOT_AWAITING_UPLOADS",
                           f"Job {job.fields['id']} is {job.status}, not AWAITING_UPLOADS")
        return job

    def _apply_diff(self, job: SyncJob, keep_types: set[str]) -> None:
        """Entities first, then relationships, whose ends must exist once entities are done.
        Mapped relationships are DIFFed on their own (JupiterOne counts them apart): their source
        must be in the scope, their target is found in any scope or created by the mapper."""
        stored = self._graph.setdefault(job.scope_key, _empty_scope())
        entities, entity_counts = diff_collection(stored["entities"], job.uploads["entities"],
                                                  keep_types)

        def ends_exist(relationship: dict[str, Any]) -> bool:
            if "_mapping" in relationship:  # the mapper's targets are never deleted by a DIFF
                return relationship["_mapping"]["sourceEntityKey"] in entities
            return {relationship["_fromEntityKey"], relationship["_toEntityKey"]} <= entities.keys()

        uploaded = job.uploads["relationships"]
        plain = {key: rel for key, rel in uploaded.items() if "_mapping" not in rel}
        linkable = {key: rel for key, rel in plain.items() if ends_exist(rel)}
        mapped = _Mapper(self._graph, job.scope_key, entities).resolve(
            {key: rel for key, rel in uploaded.items() if "_mapping" in rel})
        relationships, all_counts = {}, {}
        for kind, new in (("Relationships", linkable), ("MappedRelationships", mapped)):
            before = {key: rel for key, rel in stored["relationships"].items()
                      if ("_mapping" in rel) == (kind == "MappedRelationships")}
            kept, all_counts[kind] = diff_collection(before, new, keep_types, still_valid=ends_exist)
            relationships.update(kept)
        for kind, counts in (("Entities", entity_counts), *all_counts.items()):
            job.fields.update({f"num{kind}{event}": n for event, n in counts.items()})
        job.fields["numRelationshipCreateErrors"] = len(plain) - len(linkable)
        job.fields["numMappedRelationshipCreateErrors"] = len(uploaded) - len(plain) - len(mapped)
        for name, after in (("entities", entities), ("relationships", relationships)):
            self._track(job.scope_key, name, stored[name], after)
        stored.update(entities=entities, relationships=relationships)

    def _track(self, scope: str, name: str, before: Collection, after: Collection) -> None:
        """JupiterOne's metadata: when each object was created and last changed, and the deleted
        ones kept aside with `_deleted: true` and `_endOn`."""
        now = int(time.time() * 1000)
        metadata = self._metadata.setdefault(scope, {}).setdefault(name, {})
        deleted = self._deleted.setdefault(scope, {}).setdefault(name, {})
        for key, obj in after.items():
            if key not in before:
                metadata[key] = {"_createdOn": now, "_beginOn": now}
                deleted.pop(key, None)
            elif before[key] != obj:
                metadata.setdefault(key, {"_createdOn": now})["_beginOn"] = now
        for key, obj in before.items():
            if key not in after:
                deleted[key] = {**obj, **metadata.pop(key, {}), "_deleted": True, "_endOn": now}

    # -- persistence --------------------------------------------------------------------------------
    def _load(self) -> None:
        if not (self.state_path and self.state_path.exists()):
            return
        state = json.loads(self.state_path.read_text())
        self._graph = state["graph"]
        self._metadata, self._deleted = state.get("metadata", {}), state.get("deleted", {})
        self._monitoring = Monitoring(state.get("monitoring"), graph=self._rule_graph)
        self._jobs = {job_id: SyncJob.from_state(job) for job_id, job in state["jobs"].items()}
        for job in self._jobs.values():
            if job.status == "AWAITING_UPLOADS":  # its uploads died with the previous process
                job.set_status("ABORTED")
                job.fields["abortReason"] = RESTART_ABORT_REASON

    def _save(self) -> None:
        """Write graph and jobs via a temp file and a rename, so no reader sees half a file."""
        if self.state_path is None:
            return
        jobs = {job_id: job.to_state() for job_id, job in self._jobs.items()}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.state_path.parent, suffix=".tmp",
                                         prefix=self.state_path.name, delete=False) as tmp:
            json.dump({"graph": self._graph, "jobs": jobs, "metadata": self._metadata, "deleted": self._deleted,
                       "monitoring": self._monitoring.to_state()}, tmp)
        os.replace(tmp.name, self.state_path)

    # -- /_emulator routes --------------------------------------------------------------------------
    def _graphql(self, request: Request) -> Response:
        try:
            body = request.json()
        except ValueError:
            body = None
        with self._state_lock:
            answer = self._monitoring.handle(body)
            if answer.get("data") is not None:
                self._save()
        return Response(body=answer)

    def _reset_route(self, request: Request) -> Response:
        self.reset()
        return Response(body={"reset": True})

    def _faults_route(self, request: Request) -> Response:
        try:
            settings = self.configure_faults(**_json_object(request))
        except (TypeError, ApiError) as error:  # emulator-specific code
            return Response(400, {"error": {"code": "INVALID_FAULTS", "message": str(error)}})
        return Response(body=dataclasses.asdict(settings))

    def _reset_fault_counters(self) -> None:
        self._sync_requests = 0
        self._successful_uploads = 0
        self._rng = random.Random(self.faults.seed)


class _Mapper:
    """JupiterOne's relationship mapper, for one finalize: a mapped relationship whose source is in
    the scope gets the entity its `targetFilterKeys` match in any scope (JupiterOne's own entities
    included), or one created from `targetEntity` in the mapper's scope unless
    `skipTargetCreation`; the stored relationship carries both keys, as JupiterOne's does."""

    def __init__(self, graph: dict[str, dict[str, Collection]], scope: str, scope_entities: Collection) -> None:
        self.targets = graph.setdefault(MAPPER_SCOPE, _empty_scope())["entities"]
        self.entities = [scope_entities, *(c["entities"] for s, c in graph.items() if s != scope)]
        self.indexes: dict[tuple[str, ...], dict[tuple, str]] = {}
        self.scope_entities = scope_entities

    def _index(self, keys: tuple[str, ...]) -> dict[tuple, str]:
        if keys not in self.indexes:  # built once per set of filter keys, over every scope
            self.indexes[keys] = {tuple(_hashable(e.get(k)) for k in keys): e["_key"]
                                  for collection in self.entities for e in collection.values()}
        return self.indexes[keys]

    def target(self, mapping: dict[str, Any]) -> str | None:
        wanted = mapping["targetEntity"]
        for keys in map(tuple, mapping["targetFilterKeys"]):
            found = self._index(keys).get(tuple(_hashable(wanted.get(k)) for k in keys))
            if found is not None:
                return found
        if mapping.get("skipTargetCreation"):
            return None
        created = {**wanted, "_key": wanted.get("_key") or str(uuid.uuid4())}
        self.targets[created["_key"]] = created
        for keys, index in self.indexes.items():  # the next relationship to the same target finds it
            index[tuple(_hashable(created.get(k)) for k in keys)] = created["_key"]
        return created["_key"]

    def resolve(self, mapped: Collection) -> Collection:
        resolved = {}
        for key, rel in mapped.items():
            mapping = rel["_mapping"]
            source = mapping["sourceEntityKey"]
            target = self.target(mapping) if source in self.scope_entities else None
            if target is not None:
                ends = (source, target) if mapping["relationshipDirection"] == "FORWARD" else (target, source)
                resolved[key] = {**rel, "_fromEntityKey": ends[0], "_toEntityKey": ends[1]}
        return resolved


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; an empty body counts as `{}`."""
    try:
        body = json.loads(request.body) if request.body.strip() else {}
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):  # emulator-specific code
        raise ApiError(400, "INVALID_JSON", "The request body must be a JSON object")
    return body


def _job_response(job: SyncJob) -> Response:
    return Response(body={"job": copy.deepcopy(job.fields)})


def _check_job_config(source: Any, scope: Any, instance_id: Any, sync_mode: Any) -> None:
    """The create-body rules of reference §2.2; J1 documents no codes, so all are emulator-specific."""
    if sync_mode != "DIFF":
        raise ApiError(400, "UNSUPPORTED_SYNC_MODE", f"syncMode {sync_mode!r} is not supported")
    if source == "api":
        if not (isinstance(scope, str) and scope):
            raise ApiError(400, "SCOPE_REQUIRED", '"scope" is required for source "api" with DIFF')
    elif source == "integration-external":
        if scope is not None:
            raise ApiError(400, "SCOPE_NOT_ALLOWED", '"scope" is only allowed for source "api"')
        if not (isinstance(instance_id, str) and instance_id):
            raise ApiError(400, "INTEGRATION_INSTANCE_ID_REQUIRED",
                           '"integrationInstanceId" is required for source "integration-external"')
    else:
        raise ApiError(400, "UNSUPPORTED_SOURCE",
                       f"source {source!r} is not supported; use api or integration-external")


def _upload_batches(action: str, body: dict[str, Any]) -> dict[str, list[Any]]:
    """The object lists an upload carries: `/upload` may omit either, the others need theirs."""
    if action == "upload" and {"deleteEntities", "deleteRelationships"} & body.keys():
        raise ApiError(400, "UNSUPPORTED_UPLOAD_FIELD",  # emulator-specific code
                       "deletes are not supported by this DIFF-only emulator")
    kinds = {"entities": [ENTITY], "relationships": [RELATIONSHIP]}.get(action, list(UPLOAD_FIELDS))
    batches = {}
    for kind in kinds:
        name, not_array_code = UPLOAD_FIELDS[kind]
        objects = body.get(name, [] if action == "upload" else None)
        if not isinstance(objects, list):
            raise ApiError(400, not_array_code, f'"{name}" should be an array')
        batches[kind] = objects
    return batches


def _partial_types(partial_datasets: Any) -> set[str]:
    if partial_datasets is None:
        return set()
    types = partial_datasets.get("types") if isinstance(partial_datasets, dict) else None
    if not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
        raise ApiError(400, "INVALID_PARTIAL_DATASETS",  # emulator-specific code
                       '"partialDatasets" should be {"types": [string, ...]}')
    return set(types)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="JupiterOne synchronization-job API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8802)
    parser.add_argument("--state", type=Path, help="JSON file keeping graph and jobs over restarts")
    parser.add_argument("--account", default="j1-emulator-account")
    parser.add_argument("--api-key", default="j1-emulator-key")
    parser.add_argument("--max-body-bytes", type=int, default=6_000_000)
    parser.add_argument("--rate-limit-every", type=int, default=0,
                        help="every Nth sync request answers 429")
    parser.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds on a 429")
    parser.add_argument("--error-rate", type=float, default=0.0,
                        help="fraction of sync requests answering 503")
    parser.add_argument("--seed", type=int, default=0, help="seed for --error-rate")
    parser.add_argument("--fail-finalize", choices=FAILED_ENDS,
                        help="finalized jobs end in this status, changing nothing")
    parser.add_argument("--fail-uploads-after", type=int,
                        help="after N successful uploads, uploads answer 503")
    args = parser.parse_args(argv)
    emulator = JupiterOneEmulator(
        args.state, account=args.account, api_key=args.api_key,
        max_body_bytes=args.max_body_bytes, rate_limit_every=args.rate_limit_every,
        retry_after=args.retry_after, error_rate=args.error_rate, seed=args.seed,
        fail_finalize=args.fail_finalize, fail_uploads_after=args.fail_uploads_after,
    )
    emulator.serve_forever(args.host, args.port)


if __name__ == "__main__":
    main()
