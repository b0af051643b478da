"""Extract: each Sysdig resource declared once (`EXTRACTS`: its endpoints as data), its API pages
streamed into the run's raw folder, by `extract_listings` unless the resource needs more.

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
from collections import Counter, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from sysdig_j1 import findings, raw
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import (
    LEGACY_PAGE,
    MAX_CURSOR_PAGE,
    MAX_INVENTORY_PAGE,
    MAX_PAGE,
    Listing,
    Page,
    SysdigHook,
)
from sysdig_j1.model import CANNOT_SWITCH_OFF, RESOURCES, VM_STAGES
from sysdig_j1.scrub import Scrubber

log = logging.getLogger(__name__)

PROGRESS_SECONDS = 15.0
RESULTS_PER_PAGE = 50  # full scan results whose findings share one stored page (~10,000 findings)
ENCODING = 2  # complete pages of findings waiting for, or in, the thread that stores them
INVENTORY_PATH = "/secure/inventory/v1/resources"


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
    """Resources whose extract task did not finish in this run (a sharded one: one of its shards)."""
    return {resource for resource in RESOURCES
            if not storage.manifest(resource).exists() and shards_done(storage, resource) is None}


def shards_done(storage: RunStorage, resource: str) -> list[dict] | None:
    """The manifests of a sharded resource's shards, if every shard finished in this run."""
    manifests = [storage.read_json(path) for path in storage.raw(resource).glob("shard-*/_manifest.json")]
    counts = {manifest["shards"] for manifest in manifests}
    if len(counts) != 1 or sorted(m["shard"] for m in manifests) != list(range(counts.pop())):
        return None
    return sorted(manifests, key=lambda manifest: manifest["shard"])


def extract_listings(declared: Extract, hook: SysdigHook, storage: RunStorage, scrubber: Scrubber,
                     endpoints: tuple[Endpoint, ...] | None = None) -> dict:
    """Every page of the resource's endpoints (or of `endpoints`), stored as it arrives; the
    manifest counts records per endpoint."""
    endpoints = declared.endpoints if endpoints is None else endpoints
    for folder in dict.fromkeys(endpoint.into or declared.resource for endpoint in declared.endpoints):
        storage.reset(storage.raw(folder))
    counts = Counter({endpoint.label(declared.resource): 0 for endpoint in endpoints})
    label_of, listings = {}, []
    for endpoint in endpoints:
        for listing in endpoint.listings(declared.resource, storage):
            label_of[listing.name] = endpoint.label(declared.resource)
            listings.append(listing)
    for name, count in save_pages(storage, hook.iter_pages(listings), scrubber).items():
        counts[label_of[name]] += count
    return _manifest(storage, declared.resource, counts)


def extract_account(declared: Extract, hook: SysdigHook, storage: RunStorage, scrubber: Scrubber) -> dict:
    """The customer only: the rest of /api/users/me is the token holder's own profile and settings
    (licence, agent keys), which are not the account's to publish."""
    storage.reset(storage.raw("account"))
    path = declared.endpoints[0].path
    raw.write_page(storage, "account", 0, [{"customer": hook.current_user()["customer"]}], scrubber, path)
    return _manifest(storage, "account", {"account": 1})


def extract_image_scans(declared: Extract, hook: SysdigHook, storage: RunStorage, scrubber: Scrubber) -> dict:
    """Vulnerability Management's stages, or (setting image_scan_source) legacy scanning, which
    reached end of life on 2024-12-31: so a gone or empty legacy answer is only a warning."""
    legacy = hook.image_scan_source == "legacy-scanning"
    endpoints = tuple(endpoint for endpoint in declared.endpoints if (endpoint.paging == "legacy") == legacy)
    manifest = extract_listings(declared, hook, storage, scrubber, endpoints)
    if not sum(manifest["records"].values()):
        log.warning("no image scans extracted from %s", ", ".join(endpoint.path for endpoint in endpoints))
    return manifest


def extract_findings(declared: Extract, hook: SysdigHook, storage: RunStorage, scrubber: Scrubber,
                     shard: findings.Shard = findings.Shard(0, 1)) -> dict:
    """The full result of every image scan of `shard` that `extract_image_scans` stored for the
    configured stages, flattened into findings (`findings.py`). The DAG runs one task per shard,
    side by side on as many workers as there are. Results are fetched concurrently and their
    findings stored RESULTS_PER_PAGE results to a page, each page written once all its results are
    in, so memory holds a few pages whatever the size of the shard or the fleet."""
    folder = storage.reset(storage.raw(shard.folder))
    stages, min_severity = hook.finding_stages, hook.finding_min_severity
    if hook.image_scan_source == "legacy-scanning":
        log.warning("legacy scanning has no full scan results: no findings extracted")
        stages = ()
    scans = raw.read_raw(storage, "image_scans", columns=["resultId"])
    # (stage, resultId) -> (stage, page), in listing order: a page is RESULTS_PER_PAGE results of a stage
    page_of = {(stage, result_id): (stage, n // RESULTS_PER_PAGE) for stage in stages
               for n, result_id in enumerate(r for r in findings.result_ids(scans, stage) if shard.holds(r))}
    page_sizes, order = Counter(page_of.values()), {item: n for n, item in enumerate(page_of)}
    # page -> the answers of its results that arrived, by listing order; stored in that order once
    # all are in, so a re-run writes the same pages whatever order the answers came in
    pending: dict[tuple[str, int], dict[int, tuple[str, bytes]]] = {}
    logged, fetched, counted = time.monotonic(), 0, Counter()

    def store(stage: str, number: int, results: list[tuple[str, bytes]]) -> tuple[int, int]:
        data, found, below = findings.encode_results(stage, number, results, min_severity, scrubber)
        if data is not None:
            raw.save_page(storage, f"{shard.folder}/{stage}", number, data)
        return found, below

    def collect(future: Future) -> None:
        found, below = future.result()  # the encoder's error (a result that does not hold together) is raised here
        counted.update(findings=found, below=below)

    # One thread decodes, flattens and stores complete pages (at most ENCODING in hand), so that
    # this loop keeps refilling the requests in flight meanwhile.
    with ThreadPoolExecutor(1, thread_name_prefix="findings-store") as encoder:
        encoding: deque[Future] = deque()
        for (stage, result_id), content in hook.scan_results(page_of):
            page = pending.setdefault(page_of[stage, result_id], {})
            page[order[stage, result_id]] = (result_id, content)
            fetched += 1
            if len(page) == page_sizes[page_of[stage, result_id]]:
                number = page_of[stage, result_id][1]
                del pending[stage, number]
                encoding.append(encoder.submit(store, stage, number, [page[n] for n in sorted(page)]))
                while len(encoding) > ENCODING:
                    collect(encoding.popleft())
            if time.monotonic() - logged >= PROGRESS_SECONDS:
                log.info("progress: %s of %s full scan results, %s findings stored", f"{fetched:,}",
                         f"{len(page_of):,}", f"{counted['findings']:,}")
                logged = time.monotonic()
        while encoding:
            collect(encoding.popleft())
    found, below = counted["findings"], counted["below"]
    log.info("findings of shard %d of %d, stages %s, at or above %s severity", shard.index + 1, shard.count,
             ", ".join(stages) or "(none)", min_severity)
    manifest = {"resource": "findings", "shard": shard.index, "shards": shard.count, "folder": shard.folder,
                "path": str(folder),
                "records": {"results": fetched, "findings": found, "below_min_severity": below}}
    log.info("extracted findings: %s", manifest["records"])
    storage.write_json(storage.manifest(shard.folder), manifest)  # last: the shard is complete
    return manifest


@dataclass(frozen=True)
class Endpoint:
    """One Sysdig endpoint a resource is read from, as the public API documents it."""

    path: str  # with `{field}` in it: one listing per stored record of `per`, e.g. per team
    permission: str | None = None  # what the token needs (none is documented for /secure endpoints)
    paging: str = "offset"  # see `Listing`
    items: str = "data"  # the answer's list of records
    limit: int = MAX_PAGE  # the most records a page may hold
    params: tuple[tuple[str, str], ...] = ()
    per: str | None = None  # the resource, extracted earlier in the run, whose records it is listed for
    folder: str | None = None  # where under the resource's raw folder (a stage, "global")
    into: str | None = None  # a raw resource of its own, merged in by the transform (users_light)
    optional: bool = False  # a retired legacy endpoint: gone is a warning, not a failure
    # The response model Sysdig publishes for it (its OpenAPI-generated client's name; the tests
    # hold the emulator and the source contract to it); None where none is published, so the shape
    # is our reading of real answers (the legacy /api endpoints).
    model: str | None = None

    def label(self, resource: str) -> str:
        """Where its pages go, per-record part left out: the manifest counts records under this."""
        return "/".join(part for part in (self.into or resource, self.folder) if part)

    def listings(self, resource: str, storage: RunStorage) -> list[Listing]:
        options = {"paging": self.paging, "items": self.items, "limit": self.limit, "params": dict(self.params),
                   "optional": self.optional}
        if self.per is None:
            return [Listing(self.path, self.label(resource), **options)]
        field = self.path[self.path.index("{") + 1:self.path.index("}")]
        values = raw.read_raw(storage, self.per, columns=[field])[field].tolist()
        return [Listing(self.path.format(**{field: value}), f"{self.label(resource)}/{value}", **options)
                for value in values]


@dataclass(frozen=True)
class Extract:
    """One resource as the DAG extracts it, one task each: its endpoints, how they are read (every
    page of every endpoint, unless the resource needs more than that), and the API paths whose
    successful writes, as the platform audit trail records them, change it (`audit.py`: the
    quick sync re-reads it then)."""

    resource: str
    endpoints: tuple[Endpoint, ...]
    run: Callable[..., dict] = extract_listings
    audited: tuple[str, ...] = ()  # path templates; a write to the path or below it counts
    sharded: bool = False  # one task per `findings.Shard` of its records (its `run` takes the shard)

    @property
    def permissions(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.permission for e in self.endpoints if e.permission))

    @property
    def after(self) -> str | None:
        """The resource whose records, stored earlier in the same run, it is listed for."""
        return next((e.per for e in self.endpoints if e.per), None)


_TEAMS = "teams"
EXTRACTS = {declared.resource: declared for declared in (
    Extract("account", (Endpoint("/api/users/me", paging="none"),), extract_account),
    # The light list adds lastSeenOnSecure, systemRole and products. It is legacy, so if it is gone
    # the users still publish, only without those properties.
    # Writes through the public API and through the legacy /api paths the Sysdig console uses.
    Extract("users", (Endpoint("/platform/v1/users", "users.read", model="GetUsersPaginatedResponseV1"),
                      Endpoint("/api/v2/users/light", items="users", limit=1000, into="users_light", optional=True)),
            audited=("/platform/v1/users", "/api/users")),
    Extract(_TEAMS, (Endpoint("/platform/v1/teams", "customer-teams.read", model="GetTeamsPaginatedResponseV1"),),
            audited=("/platform/v1/teams", "/api/teams")),
    Extract("team_memberships", (Endpoint("/platform/v1/teams/{id}/users", "memberships.read", per=_TEAMS,
                                          params=(("withAdminUsers", "true"),),
                                          model="GetTeamUsersPaginatedResponseV1"),),
            audited=("/platform/v1/teams/{id}/users", "/api/teams/{id}/users")),
    Extract("roles", (Endpoint("/platform/v1/roles", "roles.read", model="GetRolesPaginatedResponseV1"),),
            audited=("/platform/v1/roles",)),
    Extract("service_accounts", (Endpoint("/platform/v1/service-accounts", "global-service-accounts.read",
                                          model="GetServiceAccountsPaginatedResponseV1"),),
            audited=("/platform/v1/service-accounts",)),
    Extract("team_service_accounts", (Endpoint("/platform/v1/teams/{id}/service-accounts", "team-service-accounts.read",
                                               per=_TEAMS, model="GetServiceAccountsPaginatedResponseV1"),),
            audited=("/platform/v1/teams/{id}/service-accounts",)),
    Extract("access_keys", (Endpoint("/platform/v1/access-keys", "customer-access-keys.read",
                                     model="GetAccessKeysPaginatedResponseV1"),),
            audited=("/platform/v1/access-keys", "/api/customer/accessKeys")),
    Extract("zones", (Endpoint("/platform/v1/zones", "zones.read", model="ListZonesResponseV1"),),
            audited=("/platform/v1/zones",)),
    Extract("sso_settings", (Endpoint("/platform/v1/sso-settings", "sso-settings.read", paging="none",
                                      model="AllSsoSettingsResponseV1"),),
            audited=("/platform/v1/sso-settings",)),
    Extract("ip_filters", (Endpoint("/platform/v1/ip-filters", "ip-filters.read", model="IpFiltersPaginatedResponseV1"),),
            audited=("/platform/v1/ip-filters",)),
    Extract("clusters", (Endpoint(INVENTORY_PATH, paging="page", limit=MAX_INVENTORY_PAGE,
                                  params=(("filter", 'type = "Cluster"'),), model="InventoryResourceResponse"),)),
    Extract("hosts", (Endpoint(INVENTORY_PATH, paging="page", limit=MAX_INVENTORY_PAGE,
                               params=(("filter", 'type in ("Host", "Node")'),), model="InventoryResourceResponse"),)),
    Extract("image_scans", (
        *(Endpoint(f"/secure/vulnerability/v1/{stage}-results", paging="cursor", limit=MAX_CURSOR_PAGE, folder=stage,
                   model=f"{stage.capitalize()}ResultsResponse")
          for stage in VM_STAGES),
        Endpoint("/api/scanning/v1/resultsDirect", paging="legacy", items="results", limit=LEGACY_PAGE,
                 folder="legacy", optional=True),
    ), extract_image_scans),
    Extract("findings", (Endpoint(findings.RESULT_PATH.format("{resultId}"), paging="none", per="image_scans",
                                  model="ScanResultResponse"),),
            extract_findings, sharded=True),
)}


def run(resource: str, hook: SysdigHook, storage: RunStorage, scrubber: Scrubber,
        shard: findings.Shard | None = None) -> dict:
    """Extract one resource as declared (a sharded one: one shard, by default the only one);
    returns its manifest."""
    declared = EXTRACTS[resource]
    if shard is None:
        return declared.run(declared, hook, storage, scrubber)
    return declared.run(declared, hook, storage, scrubber, shard)


def unreadable(granted: set[str] | None) -> dict[str, str]:
    """Resources the token may not read, each with why: a missing permission, or an extract it
    runs after that cannot run. None (permissions unknown) skips nothing."""
    if granted is None:
        return {}
    reasons = {}
    for declared in EXTRACTS.values():
        lacking = [permission for permission in declared.permissions if permission not in granted]
        if lacking:
            plural = "s" * (len(lacking) > 1)
            reasons[declared.resource] = f"the token lacks the permission{plural} {' and '.join(lacking)}"
    return _and_dependents(reasons, "cannot be read")


def switched_off(names: Iterable[str]) -> dict[str, str]:
    """Resources the operator switched off (Sysdig connection extra `disabled_resources`), and those
    listed per record of one of them, each with why; ValueError for a name that is not a resource."""
    names = list(names)
    unknown = [name for name in names if name not in EXTRACTS or name in CANNOT_SWITCH_OFF]
    if unknown:
        choices = ", ".join(r for r in EXTRACTS if r not in CANNOT_SWITCH_OFF)
        raise ValueError(f"disabled_resources names {unknown}, which cannot be switched off; choose from {choices}")
    return _and_dependents({name: "switched off (disabled_resources)" for name in EXTRACTS if name in names},
                           "is switched off")


def _and_dependents(reasons: dict[str, str], state: str) -> dict[str, str]:
    """`reasons`, plus every resource listed per record of one of them, and so on."""
    for declared in EXTRACTS.values():  # in dependency order: `after` is declared first
        after = declared.after
        if declared.resource not in reasons and after in reasons:
            reasons[declared.resource] = f"it is listed per {after} record, and {after} {state}"
    return {resource: reasons[resource] for resource in EXTRACTS if resource in reasons}
