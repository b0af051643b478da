"""SysdigHook: the `sysdig` connection and every call to the Sysdig REST API.

Connection contract (`sysdig_default`): password = API token; extra `region` or `host` = full base
URL overriding the region (on-premises installs, the emulator); without either, the region is
detected by asking every region's host who we are (tokens are region-scoped). Extras
`account_name`, `image_scan_source`, `max_concurrency` (default 8).

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

import requests

from sysdig_j1.hooks.http import DEFAULT_TIMEOUT, ApiError, ApiHook, make_session
from sysdig_j1.regions import SYSDIG_REGIONS, base_url

log = logging.getLogger(__name__)

MAX_PAGE = 200  # /platform/v1 offset endpoints accept limit 1..200
MAX_CURSOR_PAGE = 1000  # /secure/vulnerability/v1 endpoints accept limit 1..1000
LEGACY_PAGE = 1000
GONE = (404, 410)  # how a retired legacy endpoint answers
DETECT_TIMEOUT = (5, 10)


@dataclass(frozen=True)
class Listing:
    """One paged endpoint. `paging`: "offset" (page.total or total), "cursor" (page.next) or
    "legacy" (resultsDirect's options.canLoadMore). `optional` listings that answer 404/410 yield
    one empty page, with a warning, instead of failing the crawl (retired legacy endpoints)."""

    path: str
    name: str  # the caller's label for where the pages go
    paging: str = "offset"
    items: str = "data"
    limit: int = MAX_PAGE
    params: dict[str, Any] = field(default_factory=dict, hash=False)
    optional: bool = False


@dataclass
class Page:
    listing: Listing
    number: int  # 0-based position in its listing, so files get stable names whatever the order
    records: list[dict[str, Any]]


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
        return base_url(SYSDIG_REGIONS, self.region, self.connection.host, "Sysdig")

    @property
    def account_name(self) -> str | None:
        return self.extra.get("account_name") or None

    @property
    def image_scan_source(self) -> str:
        return self.extra.get("image_scan_source") or "vulnerability-management"

    @cached_property
    def session(self) -> requests.Session:
        return make_session(
            {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"},
            methods=frozenset({"GET"}),
            backoff=self.backoff,
            pool_size=self.max_concurrency,
        )

    def _token(self) -> str:
        if not self.connection.password:
            raise ValueError(f"connection {self.conn_id!r} has no API token (password field)")
        return self.connection.password

    def describe(self) -> str:
        return f"connection {self.conn_id!r} (region {self.region}, {self.base_url})"

    def detect_region(self) -> str:
        """Ask every region's host `GET /api/users/me` at once; the one that says 200 is ours."""
        headers = {"Authorization": f"Bearer {self._token()}", "Accept": "application/json"}

        def answers(item: tuple[str, str]) -> bool:
            try:
                response = requests.get(f"{item[1]}/api/users/me", headers=headers, timeout=DETECT_TIMEOUT)
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
    def get_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request_json("GET", path, params=params)

    def current_user(self) -> dict[str, Any]:
        """`GET /api/users/me`: the cheapest authenticated call; its answer carries the customer."""
        return self.get_json("/api/users/me")["user"]

    def iter_pages(self, listings: Iterable[Listing]) -> Iterator[Page]:
        """Every page of every listing, fetched concurrently and yielded as it arrives."""
        return self.crawl(((listing, 0, None) for listing in listings), self._fetch_page)

    def _fetch_page(self, work: tuple[Listing, int, Any]) -> tuple[Page, list[tuple[Listing, int, Any]]]:
        listing, number, position = work
        try:
            body = self.get_json(listing.path, {**listing.params, **self._position(listing, position)})
        except ApiError as exc:
            if listing.optional and exc.status in GONE:
                log.warning("%s is not available, skipped: %s", listing.path, exc)
                return Page(listing, number, []), []
            raise
        records = body.get(listing.items) or []
        return Page(listing, number, records), self._follow_ups(listing, number, position, body, records)

    @staticmethod
    def _position(listing: Listing, position: Any) -> dict[str, Any]:
        if listing.paging == "cursor":
            return {"limit": listing.limit, **({"cursor": position} if position else {})}
        return {"offset": position or 0, "limit": listing.limit}

    @staticmethod
    def _follow_ups(listing: Listing, number: int, position: Any, body: dict, records: list) -> list:
        if listing.paging == "cursor":  # the last page is the one without a next cursor
            cursor = (body.get("page") or {}).get("next")
            return [(listing, number + 1, cursor)] if cursor else []
        offset = position or 0
        if listing.paging == "legacy":
            more = records and (body.get("options") or {}).get("canLoadMore")
            return [(listing, number + 1, offset + len(records))] if more else []
        total = (body.get("page") or {}).get("total", body.get("total"))
        if total is None:  # no total: walk on while pages come back full
            return [(listing, number + 1, offset + len(records))] if len(records) == listing.limit else []
        if number > 0 or not records:  # the first page already planned every other page
            return []
        pages = math.ceil(total / listing.limit)
        return [(listing, n, n * listing.limit) for n in range(1, pages)]

    def test_connection(self) -> tuple[bool, str]:
        """Airflow UI 'Test' button."""
        try:
            customer = self.current_user().get("customer") or {}
        except Exception as exc:  # shown to the user as the test result
            return False, str(exc)
        return True, f"Token accepted by {self.base_url} (customer {customer.get('id')})"
