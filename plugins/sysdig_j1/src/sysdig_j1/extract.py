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
import multiprocessing
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sysdig_j1 import findings, raw
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import LEGACY_PAGE, MAX_CURSOR_PAGE, Listing, Page, SysdigHook
from sysdig_j1.model import RESOURCES, VM_STAGES
from sysdig_j1.scrub import Scrubber

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 15.0
RESULTS_PER_PAGE = 50  # full scan results whose findings share one stored page (~10,000 findings)
FINDING_WORKERS = 2  # processes storing findings for a large fleet (see `_PageStore`)
INLINE_PAGES = 2  # pages of results up to which findings are stored in the extract's own process


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
    # (stage, resultId) -> (stage, page), in listing order: a page is RESULTS_PER_PAGE results of a stage
    page_of = {(stage, result_id): (stage, n // RESULTS_PER_PAGE)
               for stage in stages for n, result_id in enumerate(findings.result_ids(scans, stage))}
    page_sizes, order = Counter(page_of.values()), {item: n for n, item in enumerate(page_of)}
    # page -> the answers of its results that arrived, by listing order; stored in that order once
    # all are in, so a re-run writes the same pages whatever order the answers came in
    pending: dict[tuple[str, int], dict[int, tuple[str, bytes]]] = {}
    logged, fetched = time.monotonic(), 0
    with _PageStore(storage, len(page_sizes)) as store:
        for (stage, result_id), content in hook.scan_results(page_of):
            page = pending.setdefault(page_of[stage, result_id], {})
            page[order[stage, result_id]] = (result_id, content)
            fetched += 1
            if len(page) == page_sizes[page_of[stage, result_id]]:
                number = page_of[stage, result_id][1]
                del pending[stage, number]
                store.submit(stage, number, [page[n] for n in sorted(page)], min_severity, scrubber)
            if time.monotonic() - logged >= PROGRESS_SECONDS:
                log.info("progress: %s of %s full scan results, %s findings stored", f"{fetched:,}",
                         f"{len(page_of):,}", f"{store.findings:,}")
                logged = time.monotonic()
        store.finish()
    log.info("findings of stages %s at or above %s severity", ", ".join(stages) or "(none)", min_severity)
    return _manifest(storage, "findings", {"results": fetched, "findings": store.findings,
                                           "below_min_severity": store.below})


class _PageStore:
    """Stores pages of findings (`findings.encode_results`): decoding and flattening a fleet's results
    is CPU-bound, and in this process it would also hold up the threads fetching the next ones, so
    a fleet of more than INLINE_PAGES pages is stored by FINDING_WORKERS processes, each with at
    most two pages in hand; a small one here, without their start-up cost, and so is every fleet
    when this process may not start processes (a Celery worker's task)."""

    def __init__(self, storage: RunStorage, pages: int) -> None:
        self.storage, self.pool = storage, None
        if pages > INLINE_PAGES and multiprocessing.current_process().daemon:
            # Celery runs tasks in daemonic (billiard) processes, which may start no processes.
            log.info("storing findings in the task's own process: it is daemonic (a Celery worker's)")
        elif pages > INLINE_PAGES:  # forkserver: never fork this process, whose fetch threads hold locks
            self.pool = ProcessPoolExecutor(FINDING_WORKERS, mp_context=multiprocessing.get_context("forkserver"))
        self.running: dict[Future, tuple[str, int]] = {}  # the (stage, page) each worker encodes
        self.findings = self.below = 0

    def submit(self, *args: object) -> None:
        if self.pool is None:
            self._store(args[:2], findings.encode_results(*args))
            return
        while len(self.running) >= 2 * FINDING_WORKERS:
            self._collect(FIRST_COMPLETED)
        future = self.pool.submit(findings.encode_results, *args)
        self.running[future] = args[:2]

    def finish(self) -> None:
        while self.running:
            self._collect(FIRST_COMPLETED)

    def _collect(self, when: str) -> None:
        done, _ = wait(self.running, return_when=when)
        for future in done:
            self._store(self.running.pop(future), future.result())  # a worker's error is raised here

    def _store(self, page: tuple[str, int], encoded: tuple[bytes | None, int, int]) -> None:
        """Written here, not by the workers: storage (and its connection) belongs to the task."""
        data, found, below = encoded
        if data is not None:
            raw.save_page(self.storage, f"findings/{page[0]}", page[1], data)
        self.findings += found
        self.below += below

    def __enter__(self) -> _PageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


@dataclass(frozen=True)
class Extract:
    """One resource as the DAG extracts it: one task each, built from `EXTRACTS`."""

    resource: str
    run: Callable[[SysdigHook, RunStorage, Scrubber], dict]
    # The permission its endpoints require, as Sysdig's public API documents it (none is documented
    # for the vulnerability endpoints, nor needed for the token's own account).
    permission: str | None = None
    # The resource whose records, stored earlier in the same run, it is listed from.
    after: str | None = None


EXTRACTS = {declared.resource: declared for declared in (
    Extract("account", extract_account),
    Extract("users", extract_users, permission="users.read"),
    Extract("teams", extract_teams, permission="customer-teams.read"),
    Extract("team_memberships", extract_team_memberships, permission="memberships.read", after="teams"),
    Extract("image_scans", extract_image_scans),
    Extract("findings", extract_findings, after="image_scans"),
)}


def unreadable(granted: set[str] | None) -> dict[str, str]:
    """Resources the token may not read, each with why: a missing permission, or an extract it
    runs after that cannot run. None (permissions unknown) skips nothing."""
    if granted is None:
        return {}
    reasons: dict[str, str] = {}
    for declared in EXTRACTS.values():  # in dependency order: `after` is declared first
        if declared.permission is not None and declared.permission not in granted:
            reasons[declared.resource] = f"the token lacks the permission {declared.permission}"
        elif declared.after in reasons:
            reasons[declared.resource] = (f"it is listed per {declared.after} record, and {declared.after} cannot be "
                                          f"read ({reasons[declared.after]})")
    return reasons
