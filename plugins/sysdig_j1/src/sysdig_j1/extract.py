"""Extract: one function per Sysdig resource, each streaming API pages into the run's raw folder.

Pages are written as they arrive (one file per page, named by its position in its listing so a
re-run writes the same files), so memory is bounded by the pages in flight, not by the
organisation. Every page is scrubbed of secrets and checked against the source contract before it
touches storage (`raw.py`), and every listing is verified complete (`SysdigHook.iter_pages`); the
manifest, written last, is what tells later tasks the resource is complete. Each function empties
its folders first, so re-running a task replaces its output.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable

from sysdig_j1 import findings, raw
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import LEGACY_PAGE, MAX_CURSOR_PAGE, Listing, Page, SysdigHook
from sysdig_j1.model import RESOURCES, VM_STAGES
from sysdig_j1.scrub import Scrubber

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 15.0
RESULTS_PER_PAGE = 50  # full scan results whose findings share one stored page (~10,000 findings)


def save_pages(storage: RunStorage, pages: Iterable[Page], scrubber: Scrubber) -> Counter[str]:
    """Write every page under raw/<listing name>/; returns the record count per listing name.
    Every PROGRESS_SECONDS it logs how far each listing has got, so a long extract can be followed."""
    counts: Counter[str] = Counter()
    totals: dict[str, int | None] = {}
    logged = time.monotonic()
    for number, page in enumerate(pages, 1):
        counts[page.listing.name] += len(page.records)
        totals[page.listing.name] = page.total
        if page.records:
            raw.write_page(storage, page.listing.name, page.number, page.records, scrubber, page.listing.path)
        if time.monotonic() - logged >= PROGRESS_SECONDS:
            log.info("progress: %d pages so far; %s", number, progress(counts, totals))
            logged = time.monotonic()
    return counts


def progress(counts: Counter[str], totals: dict[str, int | None]) -> str:
    """'image_scans/runtime 3,000 of 5,000 records, ...'; many listings (one per team) are summed."""
    if len(counts) > 5:
        known = all(total is not None for total in totals.values())
        of = f" of {sum(totals.values()):,}" if known else ""
        return f"{len(counts)} listings, {sum(counts.values()):,}{of} records"
    return ", ".join(
        f"{name} {count:,}{'' if totals[name] is None else f' of {totals[name]:,}'} records"
        for name, count in counts.items()
    )


def _manifest(storage: RunStorage, resource: str, records: dict[str, int]) -> dict:
    """Written last: its presence is how later tasks know this resource was extracted completely."""
    log.info("extracted %s: %s", resource, records)
    manifest = {"resource": resource, "path": str(storage.raw(resource)), "records": dict(records)}
    storage.write_json(storage.manifest(resource), manifest)
    return manifest


def missing_resources(storage: RunStorage) -> set[str]:
    """Resources whose extract task did not finish in this run."""
    return {resource for resource in RESOURCES if not storage.manifest(resource).exists()}


def extract_account(hook: SysdigHook, storage: RunStorage, scrubber: Scrubber) -> dict:
    """The customer only: the rest of /api/users/me is the token holder's own profile and settings
    (licence, agent keys), which are not the account's to publish."""
    storage.reset(storage.raw("account"))
    raw.write_page(storage, "account", 0, [{"customer": hook.current_user()["customer"]}], scrubber, "/api/users/me")
    return _manifest(storage, "account", {"account": 1})


def extract_users(hook: SysdigHook, storage: RunStorage, scrubber: Scrubber) -> dict:
    for resource in ("users", "users_light"):
        storage.reset(storage.raw(resource))
    # The light list adds lastSeenOnSecure, systemRole and products. It is legacy, so if it is
    # gone the users still publish, only without those properties.
    listings = [
        Listing("/platform/v1/users", "users"),
        Listing("/api/v2/users/light", "users_light", items="users", limit=1000, optional=True),
    ]
    return _manifest(storage, "users", save_pages(storage, hook.iter_pages(listings), scrubber))


def extract_teams(hook: SysdigHook, storage: RunStorage, scrubber: Scrubber) -> dict:
    storage.reset(storage.raw("teams"))
    pages = hook.iter_pages([Listing("/platform/v1/teams", "teams")])
    return _manifest(storage, "teams", save_pages(storage, pages, scrubber))


def extract_team_memberships(hook: SysdigHook, storage: RunStorage, scrubber: Scrubber) -> dict:
    """One paged listing per team that `extract_teams` stored for this run, admins included."""
    team_ids = raw.read_raw(storage, "teams")["id"].tolist()
    storage.reset(storage.raw("team_memberships"))
    listings = [
        Listing(f"/platform/v1/teams/{team_id}/users", f"team_memberships/{team_id}", params={"withAdminUsers": "true"})
        for team_id in team_ids
    ]
    counts = save_pages(storage, hook.iter_pages(listings), scrubber)
    return _manifest(storage, "team_memberships", {"teams": len(team_ids), "team_memberships": sum(counts.values())})


def extract_image_scans(hook: SysdigHook, storage: RunStorage, scrubber: Scrubber) -> dict:
    storage.reset(storage.raw("image_scans"))
    if hook.image_scan_source == "legacy-scanning":
        # Legacy scanning reached end of life on 2024-12-31: a gone or empty answer is a warning.
        listings = [Listing("/api/scanning/v1/resultsDirect", "image_scans/legacy", paging="legacy",
                            items="results", limit=LEGACY_PAGE, optional=True)]
    else:
        listings = [
            Listing(f"/secure/vulnerability/v1/{stage}-results", f"image_scans/{stage}", paging="cursor",
                    limit=MAX_CURSOR_PAGE)
            for stage in VM_STAGES
        ]
    counts = save_pages(storage, hook.iter_pages(listings), scrubber)
    if not sum(counts.values()):
        log.warning("no image scans extracted from %s", ", ".join(listing.path for listing in listings))
    return _manifest(storage, "image_scans", counts)


def extract_findings(hook: SysdigHook, storage: RunStorage, scrubber: Scrubber) -> dict:
    """The full result of every image scan `extract_image_scans` stored for the configured stages,
    flattened into findings (`findings.py`). Results are fetched concurrently and their findings
    stored RESULTS_PER_PAGE results to a page, each page written once all its results are in, so
    memory holds a few pages whatever the size of the fleet."""
    storage.reset(storage.raw("findings"))
    stages, min_severity = hook.finding_stages, hook.finding_min_severity
    if hook.image_scan_source == "legacy-scanning":
        log.warning("legacy scanning has no full scan results: no findings extracted")
        stages = ()
    scans = raw.read_raw(storage, "image_scans", columns=["resultId"])
    listed = list(findings.result_ids(scans, stages))
    position = {item: n for n, item in enumerate(listed)}
    first = {stage: next(n for n, (s, _) in enumerate(listed) if s == stage) for stage in {s for s, _ in listed}}
    per_stage = {stage: sum(s == stage for s, _ in listed) for stage in first}
    # (stage, page) -> the findings of its results that arrived, by listing position; written in
    # that order once all are in, so a re-run writes the same pages whatever the arrival order
    pending: dict[tuple[str, int], dict[int, list]] = {}
    counts = {"results": 0, "findings": 0, "below_min_severity": 0}
    logged = time.monotonic()
    for (stage, result_id), body in hook.scan_results(listed):
        records, below = findings.flatten(body, result_id, stage, min_severity)
        number = (position[stage, result_id] - first[stage]) // RESULTS_PER_PAGE
        page = pending.setdefault((stage, number), {})
        page[position[stage, result_id]] = records
        counts["results"] += 1
        counts["findings"] += len(records)
        counts["below_min_severity"] += below
        if len(page) == min(RESULTS_PER_PAGE, per_stage[stage] - number * RESULTS_PER_PAGE):
            del pending[stage, number]
            records = [record for _, part in sorted(page.items()) for record in part]
            if records:
                raw.write_page(storage, f"findings/{stage}", number, records, scrubber, findings.RESULT_PATH)
        if time.monotonic() - logged >= PROGRESS_SECONDS:
            log.info("progress: %s of %s full scan results, %s findings", f"{counts['results']:,}",
                     f"{len(listed):,}", f"{counts['findings']:,}")
            logged = time.monotonic()
    log.info("findings of stages %s at or above %s severity", ", ".join(stages) or "(none)", min_severity)
    return _manifest(storage, "findings", counts)


# One extract task per resource; the DAG builds its tasks from this table.
EXTRACTORS = {
    "account": extract_account,
    "users": extract_users,
    "teams": extract_teams,
    "team_memberships": extract_team_memberships,
    "image_scans": extract_image_scans,
    "findings": extract_findings,
}
# Extracts that read what another extract stored in the same run, and so run after it.
EXTRACT_AFTER = {"team_memberships": "teams", "findings": "image_scans"}
