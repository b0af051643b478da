"""What each DAG task does, as plain functions of hooks and the run's storage.

The DAG file only wires these together; tests call them directly too. Every function returns a
small JSON-safe manifest for XCom; the data itself stays in the run's storage folder. Errors that
retrying cannot fix (bad credentials, bad data) raise AirflowFailException so the task fails at once.
"""

from __future__ import annotations

import logging
import time

import pandas as pd

from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowFailException

from sysdig_j1 import audit, changes, monitoring, parts, published, quality, raw, report
from sysdig_j1 import load as loader
from sysdig_j1.contract import ContractError, contract_for
from sysdig_j1.extract import missing_resources, shards_done, switched_off, unreadable, run as run_extract
from sysdig_j1.findings import Shard
from sysdig_j1.hooks.http import ApiError
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.hooks.storage import STORAGE_VARIABLE, RunStorage
from sysdig_j1.hooks.sysdig import SysdigHook
from sysdig_j1.model import ENTITIES, RESOURCES, partial_types, reread_with, switched_off_types
from sysdig_j1.scrub import NestedTooDeep, Scrubber
from sysdig_j1.transform import PART_ROWS, SHARDED, Context, build_graph

log = logging.getLogger(__name__)

SKIPPED = "skipped.json"  # in the run's folder: resources validate_config left out on purpose, with why
NOT_REREAD = "not re-read by this quick sync: the audit trail shows no change that needs it"
POOL_WAIT_WORTH_SAYING = 10.0  # seconds between check_quality's end and load's start


def validate_config(sysdig: SysdigHook, jupiterone: JupiterOneHook, storage: RunStorage) -> dict:
    """Everything a run needs, checked before any data moves: the Sysdig token works (cheapest call,
    /api/users/me), the JupiterOne connection is complete and its region or host known, and the
    storage URL can be written to and deleted from."""
    started_ns = time.time_ns()
    try:
        user = sysdig.current_user()
        jupiterone.base_url  # noqa: B018 - an unknown region or a missing host fails here
        jupiterone.session  # noqa: B018 - builds the session, which checks account id and key are set
        sysdig.finding_stages, sysdig.finding_min_severity  # noqa: B018 - an unknown setting fails here
        off = switched_off(sysdig.disabled_resources)
    except ApiError as exc:
        if exc.status in (401, 403):
            raise AirflowFailException(f"Sysdig rejected the API token of {sysdig.describe()}: {exc}") from exc
        raise
    except ValueError as exc:  # unknown region, missing token/key
        raise AirflowFailException(str(exc)) from exc
    try:
        storage.probe()
    except Exception as exc:  # any filesystem's own error: say which setting is wrong
        raise AirflowFailException(
            f"the storage URL {storage.base_url!r} (Airflow Variable {STORAGE_VARIABLE}) is not usable: "
            f"writing and deleting a probe object failed with {type(exc).__name__}: {exc}"
        ) from exc
    try:  # the account id names the JupiterOne scope: it must be the real one, never 'None'
        account = contract_for("account").values(sysdig.scrubber.record(user))
    except (ContractError, NestedTooDeep) as exc:
        raise AirflowFailException(f"Sysdig GET /api/users/me: the account breaks the source contract: {exc}") from exc
    account_id = str(account["customer.id"])
    log.info("Sysdig token accepted: %s, customer %s; JupiterOne %s; storage %s",
             sysdig.describe(), account_id, jupiterone.base_url, storage.base_url)
    for resource, reason in off.items():
        log.warning("%s will not be extracted: %s. What only it provides is removed from JupiterOne on this publish.",
                    resource, reason)
    # Permissions first: a resource the token may not read is skipped, not failed halfway with 403s.
    skipped = {r: why for r, why in unreadable(sysdig.permissions()).items() if r not in off}
    for resource, reason in skipped.items():
        log.warning("%s will not be extracted: %s. JupiterOne keeps what it holds of its types.", resource, reason)
    storage.write_json(storage.path(SKIPPED), {**skipped, **off})  # for check_extracts_complete
    return {
        "started_ns": started_ns,  # no data was read before: where the audit watcher resumes after a full sync
        "account_id": account_id,
        "app_url": sysdig.base_url,
        "account_name": sysdig.account_name,
        "region": sysdig.region,
        "unreadable": skipped,
        "switched_off": off,
    }


def plan_quick_sync(sysdig: SysdigHook, jupiterone: JupiterOneHook, storage: RunStorage, changed: set[str]) -> dict:
    """`validate_config` for a quick sync, then which resources it re-reads: whole listings of those
    the audit trail says changed and of those the types they feed are linked to (`reread_with`).
    Every other resource is left out on purpose, so JupiterOne keeps its types (partialDatasets):
    scans, findings and the inventory are never touched."""
    unknown = sorted(changed - set(RESOURCES))
    if unknown or not changed:
        raise AirflowFailException(f"a quick sync re-reads named resources ({', '.join(RESOURCES)}); "
                                   f"it was given {sorted(changed) or 'none'}")
    config = validate_config(sysdig, jupiterone, storage)
    wanted = reread_with(changed)
    left_out = {r: NOT_REREAD for r in RESOURCES if r not in wanted}
    skipped = storage.read_json(storage.path(SKIPPED))
    storage.write_json(storage.path(SKIPPED), {**left_out, **skipped})
    reread = [r for r in RESOURCES if r in wanted and r not in skipped]
    log.info("quick sync for changes to %s: re-reading %s", ", ".join(sorted(changed)), ", ".join(reread))
    return {**config, "changed": sorted(changed), "reread": reread}


def extract(resource: str, sysdig: SysdigHook, jupiterone: JupiterOneHook, storage: RunStorage,
            config: dict | None = None, shard: Shard | None = None) -> dict:
    """Extract one resource, removing both connections' secrets wherever they appear in its records.
    A resource `validate_config` found the token may not read, or switched off, is left out with a
    warning: no manifest (the task succeeds; an Airflow skip would also skip `transform`, whose
    trigger rule needs every upstream task done)."""
    config = config or {}
    reason = config.get("unreadable", {}).get(resource) or config.get("switched_off", {}).get(resource)
    if reason:
        log.warning("%s is not extracted: %s", resource, reason)
        return {"resource": resource, "not_extracted": reason}
    scrubber = Scrubber([sysdig.secret, jupiterone.secret])
    try:
        return run_extract(resource, sysdig, storage, scrubber, shard)
    except ContractError as exc:  # the same records would break the contract again; they may quote anything
        raise AirflowFailException(scrubber.text(str(exc))) from None


def transform(storage: RunStorage, config: dict) -> dict:
    """The graph, in parts (`parts.py`): the core at once, each shard of a sharded resource batch
    by batch. A resource switched off leaves its types out, so that JupiterOne removes them."""
    off = set(config.get("switched_off", {}))
    missing = missing_resources(storage) - off
    if missing == set(RESOURCES) - off:
        raise AirflowFailException("no Sysdig resource was extracted in this run; nothing to publish")

    def context(**frames: pd.DataFrame) -> Context:
        return Context(storage, app_url=config["app_url"], account_name=config["account_name"], missing=missing,
                       switched_off=off, _frames=frames)

    entities, relationships, partial = build_graph(context(), sharded=False)
    if missing:
        log.warning("not extracted: %s; JupiterOne keeps what it has for %s", sorted(missing), partial)
    removed = sorted(set().union(*switched_off_types(off)))
    if removed:
        log.warning("switched off: %s; JupiterOne removes every object of %s", sorted(off), removed)
    folder = storage.reset(storage.path("graph"))
    counts = parts.write(storage, parts.Part(parts.CORE, parts.CORE), entities, relationships)
    del entities, relationships
    for resource in sorted(SHARDED - missing - off):
        for shard in shards_done(storage, resource):
            for number, pages in enumerate(raw.page_batches(storage, shard["folder"], PART_ROWS)):
                part_entities, part_relationships, _ = build_graph(
                    context(**{resource: raw.read_pages(resource, pages)}), sharded=True)
                part = parts.Part(shard["folder"], f"{shard['folder']}/part-{number:05d}")
                counts += parts.write(storage, part, part_entities, part_relationships)
    entity_types = {entity.type for entity in ENTITIES}
    counts = {kind: {t: int(n) for t, n in counts.most_common() if (t in entity_types) == (kind == "entities")}
              for kind in parts.KINDS}
    log.info("graph built: %s", counts)
    # the types the switch-off removes or shrinks (those also fed by a resource still on): the
    # mass-deletion guard leaves them be, as it was done on purpose
    shrunk = sorted(set().union(*partial_types(off)))
    return {"path": str(folder), "account_id": config["account_id"], "counts": counts, "partial_types": partial,
            "switched_off_types": shrunk}


def check_quality(storage: RunStorage, graph: dict) -> dict:
    """The quality gate on every part of the graph, a part at a time (`quality.validate_parts`)."""
    def graph_parts():
        for part in parts.parts(storage):
            yield tuple(parts.read(storage, part, kind, quality.COLUMNS) for kind in parts.KINDS)

    report = quality.validate_parts(graph_parts)
    storage.write_json(storage.path("graph", "quality.json"), report)
    if not report["success"]:
        raise AirflowFailException(quality.summary(report))
    log.info("all %d data-quality checks passed", report["evaluated"])
    return {"evaluated": report["evaluated"], "success": True, "finished_at": time.time()}


def note_pool_wait(quality: dict, pool: str) -> None:
    """Say in `load`'s own log why it may have started late: the account's publish pool."""
    waited = time.time() - quality.get("finished_at", time.time())
    if waited >= POOL_WAIT_WORTH_SAYING:
        log.info("started %.0f s after check_quality: publishes run in pool %s, one publish of this scope at a "
                 "time, so it waits while the full or the quick sync publishes (a busy worker also delays it)",
                 waited, pool)


def load(hook: JupiterOneHook, storage: RunStorage, graph: dict, params: dict) -> dict:
    """Publish, guarded by the counts of the scope's last successful publish; or, for a dry run,
    write what would be uploaded into the run's folder without calling JupiterOne at all. Either
    way `report/changes.json` says what the publish changes compared with the last one. Every
    step reads the graph a part at a time (`parts.py`)."""
    scope = loader.scope_for(graph["account_id"])
    state = storage.published_state(scope)
    last = storage.read_json(state) if state.exists() else {}
    # A re-run of this task compares with the publish before this run, as its first attempt did.
    rerun = last.get("run_folder") == str(storage.root)
    previous = last.get("counts_before" if rerun else "counts")
    max_shrink = None if params.get("allow_mass_deletion") else float(params.get("mass_deletion_threshold", 0.5))
    partial = graph["partial_types"]
    document = published.compare(storage, scope, "before" if rerun else "latest", partial)
    changed = report_changes(storage, document, graph["counts"], partial,
                             {"scope": scope, "run": str(storage.root), "dry run": bool(params.get("dry_run"))}, previous)
    if params.get("dry_run"):
        return {**dry_run(storage, graph, scope, previous, max_shrink), "changes": changed}
    try:
        result = loader.publish(hook, parts.frames(storage, "entities"), parts.frames(storage, "relationships"), scope,
                                partial_types=partial, switched_off_types=graph.get("switched_off_types"),
                                previous_counts=previous, max_shrink=max_shrink)
    except loader.MassDeletionError as exc:
        raise AirflowFailException(str(exc)) from exc  # retrying cannot change the answer
    storage.write_json(storage.path("graph", "load.json"), result)
    # JupiterOne kept the partial types as they were, so their last known counts and objects still hold.
    kept = {t: c for t, c in (previous or {}).items() if t in partial}
    storage.write_json(state, {"counts": {**kept, **result["published"]}, "counts_before": previous,
                               "job_id": result["job_id"], "run_folder": str(storage.root)})
    # After the state: a retry after a failure while committing is a re-run, which compares with
    # "before" (still the publish before this run) and commits again.
    published.commit(storage, scope, rerun)
    return {**result, "scope": scope, "changes": changed}


def evaluate_alert_rules(jupiterone: JupiterOneHook, loaded: dict) -> list[str]:
    """After a publish, evaluate now the deployed rules that read a type it changed, so their
    alerts fire in seconds rather than at the rules' next polling interval. A dry run evaluates
    nothing."""
    if loaded.get("dry_run"):
        return []
    return monitoring.evaluate_changed(jupiterone, loaded["changes"]["types"])


def confirm_published(state, storage: RunStorage, config: dict, payloads: list[dict],
                      overlap_seconds: float) -> dict | None:
    """After a quick sync published, move the audit watcher's position (the asset state store
    `state`) past the changes it was started for, so they are not fired again; unless a resource
    it re-read for them failed (JupiterOne kept its old objects): then the watcher fires them again."""
    failed = sorted(missing_resources(storage) & set(config["reread"]))
    if failed:
        log.warning("not extracted completely: %s; the audit watcher will start another quick sync for these "
                    "changes", ", ".join(failed))
        return None
    position = audit.Position.load(state.get(audit.POSITION_KEY)) or audit.Position(0)
    published = [audit.Change(event_id, ns, ()) for p in payloads for event_id, ns in p["changes"].items()]
    moved = position.advanced(max(p["upto"] for p in payloads), published, int(overlap_seconds * audit.NS))
    state.set(audit.POSITION_KEY, moved.dump())
    log.info("the audit watcher now reads on from %d ns: %d changes published", moved.ns,
             sum(p["count"] for p in payloads))
    return moved.dump()


def reset_watcher(state, config: dict) -> dict:
    """After a full sync published, set the audit watcher's position to when the sync began
    reading (`validate_config`): every change before is published now; a change since, which a
    quick sync may have published meanwhile and this publish overwrote with what it read earlier,
    is fired and published again."""
    position = audit.Position.load(state.get(audit.POSITION_KEY)) or audit.Position(config["started_ns"])
    moved = position.reset_to(config["started_ns"])
    state.set(audit.POSITION_KEY, moved.dump())
    log.info("the audit watcher reads on from this sync's start, %d ns", moved.ns)
    return moved.dump()


def graph_asset(dag_id: str) -> Asset:
    """The JupiterOne graph a DAG publishes, as an Airflow Asset: `load` updates it on every publish
    (or dry run), so a downstream DAG can be scheduled on "the Sysdig graph changed"."""
    return Asset(name=f"{dag_id}.jupiterone_graph", uri=f"jupiterone://sysdig-j1/{dag_id}")


def asset_extra(loaded: dict) -> dict:
    """The asset event's extra: the scope, whether it was a dry run, and what changed."""
    return {"scope": loaded["scope"], "dry_run": bool(loaded.get("dry_run")), **loaded["changes"]}


def report_changes(storage: RunStorage, document: dict, counts: dict, partial: list[str], run: dict,
                   counts_before: dict | None) -> dict:
    """Write report/changes.json and the page report/index.html; returns the change totals and
    the number of each called-out change."""
    folder = storage.path("report")
    storage.write_json(folder / "changes.json", document)
    quality_report = storage.path("graph", "quality.json")
    small = sum(counts["entities"].values()) <= report.SMALL_GRAPH
    page = report.render(
        run, counts_before,
        # what JupiterOne holds afterwards: what is sent, and what it keeps of the partial types
        {**{t: c for t, c in (counts_before or {}).items() if t in partial}, **counts["entities"],
         **counts["relationships"]},
        document, storage.read_json(quality_report) if quality_report.exists() else None,
        _all(storage, "entities", ["_key", "_type"]) if small else None,
        _all(storage, "relationships", ["_fromEntityKey", "_toEntityKey"]) if small else None,
    )
    (folder / "index.html").write_text(page)
    called_out = {name: len(found) for name, found in document["security"].items() if found}
    log.info("changes since the last publish: %s; called out: %s", document["totals"], called_out or "nothing")
    changed_types = sorted(t for kind in changes.KINDS for t, found in document[kind].items()
                           if any(found["counts"].values()))
    return {"totals": document["totals"], "security": called_out, "types": changed_types}


def _all(storage: RunStorage, kind: str, columns: list[str]) -> list[dict]:
    """These columns of every object of a kind (a small graph's)."""
    return [row for frame in parts.frames(storage, kind, frozenset(columns)) for row in frame.to_dict("records")]


def dry_run(storage: RunStorage, graph: dict, scope: str, previous: dict | None, max_shrink: float | None) -> dict:
    folder = storage.reset(storage.path("dry_run"))
    for kind in parts.KINDS:
        with (folder / f"{kind}.json").open("wb") as out:  # streamed: the graph may be large
            out.write(b"[\n")
            for n, obj in enumerate(obj for frame in parts.frames(storage, kind) for obj in loader.graph_objects(frame)):
                out.write((b",\n" if n else b"") + loader.serialize(obj))
            out.write(b"\n]\n")
    partial, switched_off = graph["partial_types"], graph.get("switched_off_types", [])
    if not previous:
        verdict = "not checked: first publish of this scope"
    elif max_shrink is None:
        verdict = "overridden (allow_mass_deletion)"
    else:
        try:
            loader.check_mass_deletion(previous, {**graph["counts"]["entities"], **graph["counts"]["relationships"]},
                                       max_shrink, [*partial, *switched_off])
            verdict = "passes"
        except loader.MassDeletionError as exc:
            verdict = str(exc)
    summary = {
        "scope": scope,
        "entities": graph["counts"]["entities"],
        "relationships": graph["counts"]["relationships"],
        "partial_types": partial,
        "switched_off_types": switched_off,
        "previous_publish": previous,
        "mass_deletion_check": verdict,
    }
    storage.write_json(folder / "summary.json", summary)
    log.info("dry run: nothing sent to JupiterOne; would-be upload in %s: %s", folder, summary)
    return {"dry_run": True, "path": str(folder), **summary}


def check_extracts_complete(storage: RunStorage) -> None:
    """Runs after load whatever failed: a run that published partial data, or nothing (transform,
    check_quality or load failed), must end failed, so alerts fire. Its
    message says what JupiterOne received, so nobody has to piece that together from other logs.
    Resources the token may not read, or switched off, were skipped on purpose: a warning, not a failure."""
    skipped = storage.read_json(storage.path(SKIPPED)) if storage.path(SKIPPED).exists() else {}
    for resource, reason in skipped.items():
        log.warning("%s was not extracted: %s", resource, reason)
    missing = missing_resources(storage) - set(skipped)
    load_report = storage.path("graph", "load.json")
    if load_report.exists():
        kept = storage.read_json(load_report)["partial_types"]
        published = f"The rest was published; JupiterOne kept its existing objects of {', '.join(kept)} (partialDatasets)."
    elif storage.path("dry_run", "summary.json").exists():
        published = "Dry run: nothing was sent to JupiterOne."
    else:
        published = "No publish to JupiterOne completed in this run (see transform, check_quality and load)."
    if missing:
        raise AirflowFailException(f"not extracted completely in this run: {', '.join(sorted(missing))}. {published}")
    if published.startswith("No publish"):
        raise AirflowFailException(published)
