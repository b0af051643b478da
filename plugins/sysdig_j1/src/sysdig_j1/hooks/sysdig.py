"""SysdigHook: the `sysdig` connection and every call to the Sysdig REST API.

Connection contract (`sysdig_default`): password = API token; extra `region` or `host` = full base
URL overriding the region (on-premises installs, the emulator); without either, the region is
detected by asking every region's host who we are (tokens are region-scoped). Extras
`account_name`, `image_scan_source`, `max_concurrency` (default 8), and which findings to publish:
`finding_stages` (default runtime: what is running) and `finding_min_severity` (default low:
everything but negligible); `disabled_resources`, resources switched off (their types are removed
from JupiterOne).

Listings are fetched with as few, as large and as concurrent requests as the API allows: the first
page of an offset listing tells the total, then all remaining pages go out at once (bounded by
`max_concurrency`); cursor listings are sequential by nature, but several run side by side.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import quote

import requests

from sysdig_j1.findings import RESULT_PATH
from sysdig_j1.hooks.http import DEFAULT_TIMEOUT, ApiError, ApiHook, make_session
from sysdig_j1.model import DEFAULT_FINDING_MIN_SEVERITY, DEFAULT_FINDING_STAGES, SEVERITIES, VM_STAGES
from sysdig_j1.regions import SYSDIG_REGIONS, base_url

log = logging.getLogger(__name__)

MAX_PAGE = 200  # /platform/v1 offset endpoints accept limit 1..200
MAX_CURSOR_PAGE = 1000  # /secure/vulnerability/v1 endpoints accept limit 1..1000
MAX_INVENTORY_PAGE = 1000  # /secure/inventory/v1 accepts pageSize 1..1000
LEGACY_PAGE = 1000
GONE = (404, 410)  # how a retired legacy endpoint answers
MAX_EMPTY_PAGES = 3  # consecutive empty pages that still point to a next one: a server spinning
MAX_PAGES = 100_000  # pages of a walked listing without a total (100M records at 1,000 a page)
DETECT_TIMEOUT = (5, 10)


@dataclass(frozen=True)
class Listing:
    """One paged endpoint. `paging`: "offset" (offset/limit, page.total or total: records), "page"
    (pageNumber/pageSize, page.total: the number of pages; the inventory), "cursor" (page.next),
    "legacy" (resultsDirect's options.canLoadMore) or "none" (one answer holds the whole list). `optional` listings whose
    first page answers 404/410 yield one empty page, with a warning, instead of failing the crawl
    (retired legacy endpoints)."""

    path: str
    name: str  # the caller's label for where the pages go
    paging: str = "offset"
    items: str = "data"
    limit: int = MAX_PAGE
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    optional: bool = False
    # A cursor carries the query it was cut from, and the API refuses both (the audit trail's
    # from/to): `params` go with the first page only.
    cursor_carries_query: bool = False


@dataclass
class Page:
    listing: Listing
    number: int  # 0-based position in its listing, so files get stable names whatever the order
    records: list[dict[str, Any]]
    total: int | None = None  # the listing's total as the server states it, for progress logs


@dataclass
class _Walk:
    """What a listing has shown so far: offset pages share the first page's total; a cursor or
    legacy listing (one page at a time) also counts pages, records and the positions it visited."""

    total: int | None = None
    max_pages: int | None = None
    pages: int = 0
    received: int = 0
    empty_run: int = 0
    positions: set = field(default_factory=set)


class ListingError(ApiError):
    """A Sysdig answer that cannot be part of a complete, well-formed listing."""

    def __init__(self, method: str, path: str, problem: str) -> None:
        super().__init__("Sysdig", method, path, None, problem)


def _object(body: dict, name: str, fail) -> dict:
    """An answer's sub-object (`page`, `options`), empty when absent; not an object is an error."""
    value = body.get(name)
    if value is not None and not isinstance(value, dict):
        raise fail(f"the answer's {name!r} is not an object")
    return value or {}


def _total(body: dict, fail) -> int | None:
    """The listing's total as the answer states it: page.total, total (light) or totalRows (legacy).
    Server values are not quoted in errors: they may echo anything."""
    total = _object(body, "page", fail).get("total")
    total = total if total is not None else body.get("total", body.get("totalRows"))
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
        raise fail(f"the total is a JSON {type(total).__name__}, not a count")
    return total


def _page_number_follow_ups(listing: Listing, number: int, walk: _Walk, body: dict, records: list, fail) -> list:
    """The inventory's paging as Sysdig publishes it: page.total is the number of pages, every page
    but the last holds exactly pageSize records and the last at least one (none only when the
    listing is empty). A server counting records in page.total fails here too: its later pages
    come back empty, or its first page holds fewer than a full page."""
    pages = _total(body, fail)
    if pages is None:
        raise fail("no page.total in the answer, so completeness cannot be verified")
    if walk.max_pages is not None and pages != walk.max_pages:
        raise fail(f"page.total changed from {walk.max_pages} to {pages} pages between pages")
    if pages > MAX_PAGES:
        raise fail(f"page.total says {pages} pages, more than any listing can have")
    walk.max_pages = pages  # (walk.total stays unknown: it counts records, for progress logs)
    where = f"page {number + 1} of {pages} (page.total counts pages) holds {len(records)} records"
    if number + 1 < pages and len(records) != listing.limit:
        raise fail(f"{where}; every page but the last must hold {listing.limit}")
    if number + 1 == pages and not 1 <= len(records) <= listing.limit:
        raise fail(f"{where}; the last page must hold 1 to {listing.limit}")
    if number + 1 > pages and records:
        raise fail(f"{where}, past the last page")
    if number > 0:  # the first page already planned every other page
        return []
    planned = _Walk(max_pages=pages)
    return [(listing, n, n + 1, planned) for n in range(1, pages)]


class SysdigHook(ApiHook):
    conn_name_attr = "sysdig_conn_id"
    default_conn_name = "sysdig_default"
    conn_type = "sysdig"
    hook_name = "Sysdig Secure"
    service = "Sysdig"

    def __init__(
        self,
        sysdig_conn_id: str = default_conn_name,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        backoff: float = 0.5,
        region: str | None = None,
    ):
        super().__init__(sysdig_conn_id, timeout, backoff)
        self._region = region  # e.g. the region validate_config detected, to skip detecting again

    # -- configuration ----------------------------------------------------------------------
    @cached_property
    def region(self) -> str:
        region = self._region or self.extra.get("region")
        if region:
            return region
        if self.connection.host:
            return "custom"
        return self.detect_region()

    @cached_property
    def base_url(self) -> str:
        host = self.connection.host
        # With a host override only the configured region is checked: a typo still fails loudly.
        region = (self.extra.get("region") or None) if host else self.region
        return base_url(SYSDIG_REGIONS, region, host, "Sysdig")

    @property
    def account_name(self) -> str | None:
        return self.extra.get("account_name") or None

    @property
    def image_scan_source(self) -> str:
        return self.extra.get("image_scan_source") or "vulnerability-management"

    @cached_property
    def finding_stages(self) -> tuple[str, ...]:
        """Scan stages whose results get findings: a list or comma-separated text; "" for none."""
        value = self.extra.get("finding_stages", ",".join(DEFAULT_FINDING_STAGES))
        stages = value if isinstance(value, list) else [part.strip() for part in str(value).split(",")]
        stages = [stage for stage in stages if stage]
        unknown = [stage for stage in stages if stage not in VM_STAGES]
        if unknown:
            raise ValueError(f"connection {self.conn_id!r}: extra finding_stages names unknown stages {unknown}; "
                             f"choose from {', '.join(VM_STAGES)}")
        return tuple(dict.fromkeys(stages))

    @property
    def quick_sync(self) -> bool:
        """Extra `quick_sync` (default true): whether the audit watcher starts quick syncs."""
        return str(self.extra.get("quick_sync", True)).lower() not in ("false", "off", "no", "0")

    @cached_property
    def disabled_resources(self) -> tuple[str, ...]:
        """Resources switched off on purpose: a list or comma-separated text (checked by the caller)."""
        value = self.extra.get("disabled_resources") or ""
        names = value if isinstance(value, list) else str(value).split(",")
        if not all(isinstance(name, str) for name in names):
            raise ValueError(f"connection {self.conn_id!r}: extra disabled_resources must list resource names")
        return tuple(dict.fromkeys(name.strip() for name in names if name.strip()))

    @cached_property
    def finding_min_severity(self) -> str:
        severity = self.extra.get("finding_min_severity") or DEFAULT_FINDING_MIN_SEVERITY
        if severity not in SEVERITIES:
            raise ValueError(f"connection {self.conn_id!r}: extra finding_min_severity is {severity!r}; "
                             f"choose from {', '.join(SEVERITIES)}")
        return severity

    @cached_property
    def session(self) -> requests.Session:
        return make_session(
            {"Authorization": f"Bearer {self.secret}", "Accept": "application/json"},
            methods=frozenset({"GET"}),
            backoff=self.backoff,
            pool_size=self.max_concurrency,
        )

    def describe(self) -> str:
        return f"connection {self.conn_id!r} (region {self.region}, {self.base_url})"

    def detect_region(self) -> str:
        """Ask every region's host `GET /api/users/me` at once; the one that says 200 is ours."""
        headers = {"Authorization": f"Bearer {self.secret}", "Accept": "application/json"}

        def answers(item: tuple[str, str]) -> bool:
            try:
                response = requests.get(f"{item[1]}/api/users/me", headers=headers, timeout=DETECT_TIMEOUT,
                                        allow_redirects=False)
            except requests.RequestException:
                return False
            return response.status_code == 200

        with ThreadPoolExecutor(len(SYSDIG_REGIONS)) as pool:
            found = [region for region, ok in zip(SYSDIG_REGIONS, pool.map(answers, SYSDIG_REGIONS.items())) if ok]
        if not found:
            raise ValueError(
                f"connection {self.conn_id!r} sets no region and no Sysdig region accepted its token "
                f"(tried {', '.join(SYSDIG_REGIONS)})"
            )
        log.info("Sysdig region detected for connection %r: %s", self.conn_id, found[0])
        return found[0]

    # -- requests ---------------------------------------------------------------------------
    def get_json(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return self.request_json("GET", path, params=params)

    def current_user(self) -> dict[str, Any]:
        """`GET /api/users/me`: the cheapest authenticated call; its answer carries the customer."""
        body = self.get_json("/api/users/me")
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, dict) or not isinstance(user.get("customer"), dict):
            raise ListingError("GET", "/api/users/me", "the answer has no user object with a customer object")
        return user

    def scan_results(self, results: Iterable[tuple[str, str]]) -> Iterator[tuple[tuple[str, str], bytes]]:
        """((stage, resultId), the answer's bytes) for each listed result, `max_concurrency` at a
        time, as they arrive. The full result has no paging: one answer is the whole result (its
        length checked against Content-Length); decoding it is the caller's, often in another process."""
        def fetch(item: tuple[str, str]) -> tuple[tuple[tuple[str, str], bytes], list]:
            return (item, self.request("GET", RESULT_PATH.format(quote(item[1], safe=""))).content), []

        return self.crawl(results, fetch)

    def iter_pages(self, listings: Iterable[Listing]) -> Iterator[Page]:
        """Every page of every listing, fetched concurrently and yielded as it arrives. A listing
        that is not provably complete raises ListingError (see `_follow_ups`)."""
        return self.crawl(((listing, 0, None, _Walk()) for listing in listings), self._fetch_page)

    def _fetch_page(self, work: tuple[Listing, int, Any, _Walk]) -> tuple[Page, list[tuple]]:
        listing, number, position, walk = work
        query = self._position(listing, position)
        if not (position and listing.cursor_carries_query):
            query = {**listing.params, **query}
        try:
            body = self.get_json(listing.path, query)
        except ApiError as exc:
            if listing.optional and exc.status in GONE and number == 0:  # gone mid-listing: incomplete
                log.warning("%s is not available, skipped: %s", listing.path, exc)
                return Page(listing, number, []), []
            raise
        if not isinstance(body, dict):
            raise ListingError("GET", listing.path, f"the answer is a JSON {type(body).__name__}, not an object")
        records = body.get(listing.items)
        if not isinstance(records, list):
            raise ListingError("GET", listing.path, f"the answer's {listing.items!r} is not a list")
        follow_ups = self._follow_ups(listing, number, position, walk, body, records)
        return Page(listing, number, records, walk.total), follow_ups

    @staticmethod
    def _position(listing: Listing, position: Any) -> dict[str, Any]:
        if listing.paging == "cursor":
            return {"limit": listing.limit, **({"cursor": position} if position else {})}
        if listing.paging == "page":  # the position is the page number, from 1
            return {"pageNumber": position or 1, "pageSize": listing.limit}
        if listing.paging == "none":
            return {}
        return {"offset": position or 0, "limit": listing.limit}

    @staticmethod
    def _follow_ups(listing: Listing, number: int, position: Any, walk: _Walk, body: dict, records: list) -> list:
        """The pages still to fetch after this one, once this page is shown to fit a complete listing.

        Offset and page-number listings: the first page tells the total (of records; of pages for
        page numbers) and every other page is planned at once; each page must hold exactly its
        share and repeat the same total. Cursor
        and legacy listings walk one page at a time, so they keep a `_Walk`: a cursor seen before,
        a run of empty pages, more pages than the total allows, or an end short of the total is
        an error. An unpaged answer ("none") must hold the total it states, and point to no next.
        """
        def fail(problem: str) -> ListingError:
            return ListingError("GET", listing.path, f"incomplete listing: page {number}: {problem}")

        if listing.paging == "none":
            if _object(body, "page", fail).get("next"):
                raise fail("the answer points to a next page of a listing that has no paging")
            total = _total(body, fail)
            if total is not None and total != len(records):
                raise fail(f"{len(records)} records in an answer that states a total of {total}")
            return []
        if listing.paging == "page":
            return _page_number_follow_ups(listing, number, walk, body, records, fail)
        if listing.paging == "offset":
            offset = position or 0
            total = _total(body, fail)
            if total is None:
                raise fail("no total in the answer, so completeness cannot be verified")
            if walk.total is not None and total != walk.total:
                raise fail(f"the total changed from {walk.total} to {total} between pages")
            walk.total = total
            expected = max(0, min(listing.limit, total - offset))
            if len(records) != expected:
                raise fail(f"{len(records)} records at offset {offset}, expected {expected} of {total}")
            if number > 0:  # the first page already planned every other page
                return []
            pages = math.ceil(total / listing.limit)
            if pages > MAX_PAGES:
                raise fail(f"a total of {total} would take {pages} pages, more than any listing can have")
            planned = _Walk(total=total)
            return [(listing, n, n * listing.limit, planned) for n in range(1, pages)]

        walk.pages += 1
        walk.received += len(records)
        walk.empty_run = 0 if records else walk.empty_run + 1
        total = _total(body, fail)
        if total is not None:
            walk.total = total
            walk.max_pages = max(walk.max_pages or 0, math.ceil(total / listing.limit) + 2)
        if listing.paging == "cursor":  # the last page is the one without a next cursor
            follow = _object(body, "page", fail).get("next") or None
            if follow is not None and not isinstance(follow, str):
                raise fail(f"the next cursor is a JSON {type(follow).__name__}, not text")
        else:  # legacy resultsDirect: options.canLoadMore
            more = _object(body, "options", fail).get("canLoadMore") is True
            follow = (position or 0) + len(records) if more else None
        if follow is not None and follow in walk.positions:
            raise fail("the next page points back to an earlier position: a loop")
        if walk.total is not None and walk.received > walk.total:
            raise fail(f"{walk.received} records received, more than the total of {walk.total}")
        if follow is None:
            if walk.total is not None and walk.received != walk.total:
                raise fail(f"the listing ended after {walk.received} records, but its total is {walk.total}")
            return []
        if walk.empty_run >= MAX_EMPTY_PAGES:
            raise fail(f"{walk.empty_run} empty pages in a row, each pointing to another page")
        if walk.pages >= (walk.max_pages or MAX_PAGES):
            size = "any listing" if walk.total is None else f"a listing of {walk.total} records"
            raise fail(f"{walk.pages} pages, more than {size} can have")
        walk.positions.add(follow)
        return [(listing, number + 1, follow, walk)]

    def permissions(self) -> set[str] | None:
        """`GET /api/users/me/permissions`: what the token may do; None where the endpoint does not
        exist (an older on-premises install), so that nothing is skipped on a guess."""
        try:
            body = self.get_json("/api/users/me/permissions")
        except ApiError as exc:
            if exc.status in GONE:
                log.warning("%s has no /api/users/me/permissions; every resource will be asked for", self.base_url)
                return None
            raise
        granted = body.get("permissions") if isinstance(body, dict) else None
        if not isinstance(granted, list) or not all(isinstance(p, str) for p in granted):
            raise ListingError("GET", "/api/users/me/permissions", "the answer has no list of permissions")
        return set(granted)

    def test_connection(self) -> tuple[bool, str]:
        """Airflow UI 'Test' button."""
        try:
            customer = self.current_user().get("customer") or {}
        except Exception as exc:  # shown to the user as the test result
            return False, str(exc)
        return True, f"Token accepted by {self.base_url} (customer {customer.get('id')})"
