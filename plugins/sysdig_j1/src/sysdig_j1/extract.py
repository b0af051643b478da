"""Extract: one function per Sysdig resource, each streaming API pages into the run's raw folder.

Pages are written as they arrive (one gzip JSON-lines file per page), so memory is bounded by a
page, not by the organisation. Records are scrubbed of secrets before they touch storage. Each
function empties its folder first, so re-running a task replaces its output.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from sysdig_j1.hooks.http import ApiError
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import SysdigHook
from sysdig_j1.scrub import scrub

log = logging.getLogger(__name__)

VM_STAGES = ("runtime", "pipeline", "registry")
GONE = (404, 410)  # how a retired legacy endpoint answers


def write_pages(storage: RunStorage, resource: str, pages: Iterable[list[dict[str, Any]]], partition: str = "") -> dict:
    folder = storage.raw(resource)
    if partition:
        folder = folder / partition
    folder.mkdir(parents=True, exist_ok=True)
    files = records = 0
    for page in pages:
        if page:
            records += storage.write_jsonl_gz(folder / f"part-{files:05d}.jsonl.gz", (scrub(r) for r in page))
            files += 1
    return {"files": files, "records": records}


def _manifest(storage: RunStorage, resource: str, counts: dict[str, dict]) -> dict:
    manifest = {
        "resource": resource,
        "path": str(storage.raw(resource)),
        "records": {name: c["records"] for name, c in counts.items()},
    }
    log.info("extracted %s: %s", resource, manifest["records"])
    return manifest


def extract_account(hook: SysdigHook, storage: RunStorage) -> dict:
    storage.reset(storage.raw("account"))
    counts = write_pages(storage, "account", [[hook.current_user()]])
    return _manifest(storage, "account", {"account": counts})


def extract_users(hook: SysdigHook, storage: RunStorage) -> dict:
    for resource in ("users", "users_light"):
        storage.reset(storage.raw(resource))
    counts = {"users": write_pages(storage, "users", hook.iter_offset_pages("/platform/v1/users"))}
    # The light list adds lastSeenOnSecure, systemRole and products; it is legacy, so its absence
    # only costs those properties, not the run.
    try:
        light = hook.iter_offset_pages("/api/v2/users/light", items="users", limit=1000)
        counts["users_light"] = write_pages(storage, "users_light", light)
    except ApiError as exc:
        if exc.status not in GONE:
            raise
        storage.reset(storage.raw("users_light"))
        log.warning("user enrichment skipped, %s", exc)
    return _manifest(storage, "users", counts)


def extract_teams(hook: SysdigHook, storage: RunStorage) -> dict:
    storage.reset(storage.raw("teams"))
    counts = write_pages(storage, "teams", hook.iter_offset_pages("/platform/v1/teams"))
    return _manifest(storage, "teams", {"teams": counts})


def extract_team_memberships(hook: SysdigHook, storage: RunStorage) -> dict:
    """One paged call per team listed by `extract_teams` in this run (admins included)."""
    team_ids = [json.loads(line)["id"] for _, line in storage.iter_jsonl_gz(storage.raw("teams"))]
    storage.reset(storage.raw("team_memberships"))
    records = 0
    for team_id in team_ids:
        pages = hook.iter_offset_pages(f"/platform/v1/teams/{team_id}/users", params={"withAdminUsers": "true"})
        records += write_pages(storage, "team_memberships", pages, partition=str(team_id))["records"]
    counts = {"team_memberships": {"records": records}, "teams": {"records": len(team_ids)}}
    return _manifest(storage, "team_memberships", counts)


def extract_image_scans(hook: SysdigHook, storage: RunStorage) -> dict:
    storage.reset(storage.raw("image_scans"))
    if hook.image_scan_source == "legacy-scanning":
        return _manifest(storage, "image_scans", {"legacy": _legacy_scans(hook, storage)})
    counts = {
        stage: write_pages(
            storage, "image_scans", hook.iter_cursor_pages(f"/secure/vulnerability/v1/{stage}-results"), partition=stage
        )
        for stage in VM_STAGES
    }
    return _manifest(storage, "image_scans", counts)


def _legacy_scans(hook: SysdigHook, storage: RunStorage) -> dict:
    try:
        counts = write_pages(storage, "image_scans", hook.iter_legacy_scan_pages(), partition="legacy")
    except ApiError as exc:
        if exc.status not in GONE:
            raise
        log.warning("legacy scanning source is gone, no image scans extracted: %s", exc)
        return {"records": 0}
    if not counts["records"]:
        log.warning("legacy scanning source returned no image scans")
    return counts
