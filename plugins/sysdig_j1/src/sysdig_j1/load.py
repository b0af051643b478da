"""Load: publish the entity and relationship frames through one JupiterOne synchronization job.

create -> upload entities, then relationships, in batches of at most `max_batch_bytes` of JSON ->
finalize -> wait for a terminal status. If anything fails after create, the job is aborted with the
reason, so JupiterOne never applies half an upload (DIFF would delete what was not sent).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from sysdig_j1.hooks.jupiterone import TERMINAL_STATUSES, JupiterOneHook

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 5_000_000  # JupiterOne rejects request bodies above ~6 MB


def scope_for(account_id: str) -> str:
    """The DIFF scope of a Sysdig account: each account's graph is replaced only by itself."""
    return f"sysdig-j1:{account_id}"


def graph_objects(frame: pd.DataFrame) -> Iterator[dict]:
    """Frame rows as JupiterOne objects: nulls dropped, numpy values made plain, `_rawData` wrapped."""
    for _, group in frame.groupby("_type", sort=False):
        for record in group.dropna(axis=1, how="all").to_dict("records"):
            obj = {k: _plain(v) for k, v in record.items() if not _is_null(v)}
            raw = obj.pop("_rawData", None)
            if raw:
                obj["_rawData"] = [{"name": "default", "rawData": json.loads(raw)}]
            yield obj


def _is_null(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _plain(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def batches(kind: str, objects: Iterable[dict], max_bytes: int = MAX_BATCH_BYTES) -> Iterator[bytes]:
    """Request bodies `{"<kind>": [...]}` of at most `max_bytes`, each object serialised once."""
    frame = len(f'{{"{kind}":[]}}')
    chunks: list[bytes] = []
    size = frame
    for obj in objects:
        data = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
        if frame + len(data) > max_bytes:
            raise ValueError(f"{obj.get('_key')}: a single object of {len(data)} bytes exceeds {max_bytes} bytes")
        if chunks and size + 1 + len(data) > max_bytes:
            yield _body(kind, chunks)
            chunks, size = [], frame
        size += len(data) + (1 if chunks else 0)
        chunks.append(data)
    if chunks:
        yield _body(kind, chunks)


def _body(kind: str, chunks: list[bytes]) -> bytes:
    return b'{"' + kind.encode() + b'":[' + b",".join(chunks) + b"]}"


def publish(
    hook: JupiterOneHook,
    entities: pd.DataFrame,
    relationships: pd.DataFrame,
    scope: str,
    *,
    partial_types: list[str] | None = None,
    max_batch_bytes: int = MAX_BATCH_BYTES,
    poll_seconds: float = 0.5,
    timeout_seconds: float = 1800,
) -> dict:
    job = hook.create_job(scope)
    job_id = job["id"]
    log.info("JupiterOne job %s created (%s)", job_id, hook.job_target(scope))
    uploads = {"entities": 0, "relationships": 0}
    try:
        for kind, frame in (("entities", entities), ("relationships", relationships)):
            for body in batches(kind, graph_objects(frame), max_batch_bytes):
                hook.upload(job_id, kind, body)
                uploads[kind] += 1
        hook.finalize(job_id, partial_types or [])
        job = wait_for_job(hook, job_id, poll_seconds, timeout_seconds)
    except BaseException as exc:
        _abort(hook, job_id, f"{type(exc).__name__}: {exc}")
        raise
    if job["status"] != "FINISHED":
        raise RuntimeError(f"JupiterOne job {job_id} ended with status {job['status']}")
    counts = {k: v for k, v in job.items() if k.startswith("num")}
    log.info("JupiterOne job %s finished after %s upload batches: %s", job_id, uploads, counts)
    return {"job_id": job_id, "status": job["status"], "batches": uploads, "counts": counts}


def wait_for_job(hook: JupiterOneHook, job_id: str, poll_seconds: float, timeout_seconds: float) -> dict:
    deadline = time.monotonic() + timeout_seconds
    while True:
        job = hook.get_job(job_id)
        if job["status"] in TERMINAL_STATUSES:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"JupiterOne job {job_id} still {job['status']} after {timeout_seconds:.0f}s")
        time.sleep(poll_seconds)
        poll_seconds = min(poll_seconds * 2, 10)


def _abort(hook: JupiterOneHook, job_id: str, reason: str) -> None:
    try:
        hook.abort(job_id, reason)
        log.error("JupiterOne job %s aborted: %s", job_id, reason)
    except Exception:  # the original failure matters more than a failed abort
        log.exception("could not abort JupiterOne job %s", job_id)
