"""Load: publish the entity and relationship frames through one JupiterOne synchronization job.

create -> upload entities, then relationships (gzipped batches of at most `max_batch_bytes` of
JSON, several at once) -> mass-deletion guard -> finalize -> wait for a terminal status.
If anything fails after create, the job is aborted with the reason, so JupiterOne never applies
half an upload (DIFF would delete whatever was not sent).

A batch answered 413 is split in two and each half retried; a single object still too large has
its `_rawData` trimmed (never its properties). Property strings longer than JupiterOne's limit
are cut with a warning.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator

import msgspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sysdig_j1.hooks.http import ApiError
from sysdig_j1.hooks.jupiterone import TERMINAL_STATUSES, JupiterOneHook
from sysdig_j1.model import RELATIONSHIPS, MappedTarget

log = logging.getLogger(__name__)

MAX_BATCH_BYTES = 5_000_000  # JupiterOne rejects request bodies above ~6 MB
MAX_STRING = 4096  # longest property string JupiterOne's search indexer keeps
TRUNCATED = "TRUNCATED"
ROWS_PER_SLICE = 10_000
MAPPED = {r.type: r for r in RELATIONSHIPS if r.mapped}


class MassDeletionError(RuntimeError):
    """This publish would delete more of a type than the guard allows."""


def scope_for(account_id: str) -> str:
    """The DIFF scope of a Sysdig account: each account's graph is replaced only by itself."""
    return f"sysdig-j1:{account_id}"


def type_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in frame["_type"].value_counts().items()}


# -- frames -> JSON objects ---------------------------------------------------------------------
def graph_objects(frame: pd.DataFrame) -> Iterator[dict]:
    """Frame rows as JupiterOne objects: nulls dropped, long strings cut, `_rawData` wrapped the
    way the data model wants it, mapped relationships given their `_mapping`. Rows become Python
    values through Arrow, a slice at a time (a type may have a million rows): plain ints, floats,
    lists and None for every kind of missing value, without a Python call per value."""
    for type_, group in frame.groupby("_type", sort=False):
        group = group.dropna(axis=1, how="all")
        mapped = MAPPED.get(type_)
        for start in range(0, len(group), ROWS_PER_SLICE):
            table = pa.Table.from_pandas(group.iloc[start : start + ROWS_PER_SLICE], preserve_index=False)
            long = _long_string_columns(table)
            for record in table.to_pylist():
                obj = {k: v for k, v in record.items() if v is not None}
                raw = obj.pop("_rawData", None)
                if long:
                    _cut_long_strings(obj, long)
                if raw:
                    obj["_rawData"] = [{"name": "default", "rawData": json.loads(raw)}]
                yield obj if mapped is None else _with_mapping(obj, mapped.target)


def _with_mapping(obj: dict, target: MappedTarget) -> dict:
    """A mapped relationship names its source and how to find (or create) its target, instead of
    both ends' keys: JupiterOne's mapper resolves the target among every integration's entities."""
    source, target_key = obj.pop("_fromEntityKey"), obj.pop("_toEntityKey")
    obj["_mapping"] = {
        "relationshipDirection": "FORWARD",
        "sourceEntityKey": source,
        "targetFilterKeys": [list(keys) for keys in target.filter_keys],
        "targetEntity": target.entity(target_key),
        "skipTargetCreation": target.skip_creation,
    }
    return obj


def _long_string_columns(table: pa.Table) -> list[str]:
    """The properties with a string (or a string in a list) longer than MAX_STRING: only their
    values are looked at one by one."""
    long = []
    for name, column in zip(table.column_names, table.columns):
        if name == "_rawData":  # not a property: trimmed only if a batch cannot hold it
            continue
        if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
            column = pc.list_flatten(column)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            longest = pc.max(pc.utf8_length(column)).as_py()
            if longest is not None and longest > MAX_STRING:
                long.append(name)
    return long


def _cut_long_strings(obj: dict, names: list[str]) -> None:
    for name in names:
        value = obj.get(name)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and len(v) > MAX_STRING for v in values):
            log.warning("%s: property %r is longer than %d characters, truncated", obj.get("_key"), name, MAX_STRING)
            cut = [v[: MAX_STRING - 3] + "..." if isinstance(v, str) and len(v) > MAX_STRING else v for v in values]
            obj[name] = cut if isinstance(value, list) else cut[0]


# Airflow's own JSON library (msgspec), in a fraction of `json.dumps`'s time for millions of objects
# per publish: the same JSON, and the same bytes as `json.dumps(obj, separators=(",", ":"),
# ensure_ascii=False)` but for floats in exponent form (1e300, not 1e+300).
serialize = msgspec.json.Encoder().encode


def trim_raw_data(data: bytes, target: int) -> bytes | None:
    """Shrink one serialised object to `target` bytes by cutting its `_rawData`, largest values
    first, then dropping it. None when the properties alone are too large (never cut)."""
    obj = json.loads(data)
    entries = obj.get("_rawData")
    if not entries:
        return None
    while len(data) > target:
        values = [(len(serialize({"v": v})), entry, k) for entry in entries if isinstance(entry["rawData"], dict)
                  for k, v in entry["rawData"].items() if v != TRUNCATED]
        if values:
            _, entry, key = max(values, key=lambda item: item[0])
            entry["rawData"][key] = TRUNCATED
        elif "_rawData" in obj:
            del obj["_rawData"]
        else:
            return None
        data = serialize(obj)
    log.warning("%s: too large to upload, _rawData trimmed to %d bytes in all", obj.get("_key"), len(data))
    return data


# -- batches ------------------------------------------------------------------------------------
def batches(kind: str, objects: Iterable[dict], max_bytes: int = MAX_BATCH_BYTES) -> Iterator[list[bytes]]:
    """Serialised objects grouped so that each request body `{"<kind>": [...]}` is at most
    `max_bytes`; every object is serialised once."""
    envelope = len(body(kind, []))
    chunks: list[bytes] = []
    size = envelope
    for obj in objects:
        data = serialize(obj)
        if envelope + len(data) > max_bytes:
            data = trim_raw_data(data, max_bytes - envelope)
            if data is None:
                raise ValueError(f"{obj.get('_key')}: its properties alone exceed the {max_bytes}-byte batch limit")
        if chunks and size + 1 + len(data) > max_bytes:
            yield chunks
            chunks, size = [], envelope
        size += len(data) + (1 if chunks else 0)
        chunks.append(data)
    if chunks:
        yield chunks


def body(kind: str, chunks: list[bytes]) -> bytes:
    return b'{"' + kind.encode() + b'":[' + b",".join(chunks) + b"]}"


def upload(hook: JupiterOneHook, job_id: str, kind: str, objects: Iterable[dict], max_bytes: int) -> dict:
    """Upload every object, `hook.max_concurrency` batches at a time; returns what was sent."""

    def send(chunks: list[bytes]) -> tuple[tuple[int, int] | None, list[list[bytes]]]:
        data = body(kind, chunks)
        try:
            hook.upload(job_id, kind, data)
        except ApiError as exc:
            if exc.status != 413:
                raise
            if len(chunks) > 1:  # too large for the server: send each half on its own
                log.warning("JupiterOne refused a %d-byte batch of %d %s (413); splitting it", len(data), len(chunks), kind)
                half = len(chunks) // 2
                return None, [chunks[:half], chunks[half:]]
            trimmed = trim_raw_data(chunks[0], len(chunks[0]) // 2)
            if trimmed is None:
                raise ValueError(f"JupiterOne refused a single {kind[:-1]} even without _rawData: {exc}") from exc
            return None, [[trimmed]]
        return (len(chunks), len(data)), []

    sent = {"batches": 0, "objects": 0, "bytes": 0}
    for result in hook.crawl(batches(kind, objects, max_bytes), send):
        if result:
            sent["batches"] += 1
            sent["objects"] += result[0]
            sent["bytes"] += result[1]
    return sent


# -- the guard ----------------------------------------------------------------------------------
def check_mass_deletion(before: dict[str, int], after: dict[str, int], max_shrink: float, skip: Iterable[str]) -> None:
    """Refuse when any type would lose more than `max_shrink` of its objects (types in `skip`,
    the partial datasets, are kept by JupiterOne whatever we send, so they cannot shrink)."""
    skipped = set(skip)
    shrinking = {
        type_: (count, after.get(type_, 0))
        for type_, count in sorted(before.items())
        if type_ not in skipped and count and (count - after.get(type_, 0)) / count > max_shrink
    }
    if shrinking:
        detail = ", ".join(f"{t}: {b} -> {a} ({(b - a) / b:.0%} fewer)" for t, (b, a) in shrinking.items())
        raise MassDeletionError(
            f"refusing to publish: more than {max_shrink:.0%} of these types would be deleted: {detail}. "
            "If this is expected, trigger the DAG with allow_mass_deletion=true."
        )


# -- the job ------------------------------------------------------------------------------------
def publish(
    hook: JupiterOneHook,
    entities: pd.DataFrame | Iterable[pd.DataFrame],
    relationships: pd.DataFrame | Iterable[pd.DataFrame],
    scope: str,
    *,
    partial_types: list[str] | None = None,
    switched_off_types: list[str] | None = None,
    previous_counts: dict[str, int] | None = None,
    max_shrink: float | None = 0.5,
    max_batch_bytes: int = MAX_BATCH_BYTES,
    poll_seconds: float = 0.5,
    timeout_seconds: float = 1800,
) -> dict:
    """Publish both kinds in one job: a frame each, or the frames of a graph stored in parts, read
    one at a time (entities first). With `previous_counts` (the last successful publish of this
    scope) and a `max_shrink`, a publish that would delete too much is aborted before finalize;
    types that resources switched off on purpose remove or shrink are not guarded."""
    counts: Counter = Counter()

    def objects(frames: pd.DataFrame | Iterable[pd.DataFrame]) -> Iterator[dict]:
        for frame in [frames] if isinstance(frames, pd.DataFrame) else frames:
            counts.update(type_counts(frame))
            yield from graph_objects(frame)

    partial = sorted(partial_types or [])
    job_id = hook.create_job(scope)["id"]
    log.info("JupiterOne job %s created (%s), partial datasets: %s", job_id, hook.job_target(scope), partial or "none")
    try:
        sent = {kind: upload(hook, job_id, kind, objects(frames), max_batch_bytes)
                for kind, frames in (("entities", entities), ("relationships", relationships))}
        if previous_counts and max_shrink is not None:
            check_mass_deletion(previous_counts, counts, max_shrink, [*partial, *(switched_off_types or [])])
        hook.finalize(job_id, partial)
        job = wait_for_job(hook, job_id, poll_seconds, timeout_seconds)
    except BaseException as exc:
        _abort(hook, job_id, f"{type(exc).__name__}: {exc}")
        raise
    if job["status"] != "FINISHED":
        raise RuntimeError(f"JupiterOne job {job_id} ended with status {job['status']}")
    job_counts = {k: v for k, v in job.items() if k.startswith("num")}
    log.info("JupiterOne job %s finished; sent %s; %s", job_id, sent, job_counts)
    return {"job_id": job_id, "status": job["status"], "sent": sent, "counts": job_counts,
            "published": dict(counts.most_common()), "partial_types": partial}


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
