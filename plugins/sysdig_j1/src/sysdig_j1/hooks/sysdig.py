"""SysdigHook: the `sysdig` connection and every call to the Sysdig REST API.

Connection contract (`sysdig_default`): password = API token; extra `region` (us1 by default) or
`host` = full base URL overriding the region (on-premises installs, the emulator); extras
`account_name`, `image_scan_source`, `max_concurrency`.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cached_property
from typing import Any

import requests
from sysdig_j1.hooks.http import DEFAULT_TIMEOUT, ApiHook, make_session
from sysdig_j1.regions import SYSDIG_REGIONS, base_url

MAX_PAGE = 200  # /platform/v1 offset endpoints accept limit 1..200
MAX_CURSOR_PAGE = 1000  # /secure/vulnerability/v1 endpoints accept limit 1..1000
LEGACY_PAGE = 1000


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
    ):
        super().__init__(sysdig_conn_id, timeout, backoff)

    # -- configuration ----------------------------------------------------------------------
    @property
    def region(self) -> str:
        return self.extra.get("region") or "us1"

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
        token = self.connection.password
        if not token:
            raise ValueError(f"connection {self.conn_id!r} has no API token (password field)")
        return make_session(
            {"Authorization": f"Bearer {token}", "Accept": "application/json"},
            methods=frozenset({"GET"}),
            backoff=self.backoff,
        )

    def describe(self) -> str:
        return f"connection {self.conn_id!r} (region {self.region}, {self.base_url})"

    # -- requests ---------------------------------------------------------------------------
    def get_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.request_json("GET", path, params=params)

    def current_user(self) -> dict[str, Any]:
        """`GET /api/users/me`: the cheapest authenticated call; its answer carries the customer."""
        return self.get_json("/api/users/me")["user"]

    def iter_offset_pages(
        self, path: str, *, items: str = "data", limit: int = MAX_PAGE, params: dict[str, Any] | None = None
    ) -> Iterator[list[dict[str, Any]]]:
        """Offset/limit paging to the end: stop at the reported total (or an empty page).

        The total is trusted over page length so a server that caps `limit` lower than asked
        still gets read to the end.
        """
        offset = 0
        while True:
            body = self.get_json(path, {**(params or {}), "offset": offset, "limit": limit})
            page = body.get(items) or []
            yield page
            total = body["page"]["total"] if "page" in body else body.get("total")
            offset += len(page)
            if not page or (offset >= total if total is not None else len(page) < limit):
                return

    def iter_cursor_pages(self, path: str, *, limit: int = MAX_CURSOR_PAGE) -> Iterator[list[dict[str, Any]]]:
        """Cursor paging: the last page is the one whose `page.next` is missing or empty."""
        cursor = None
        while True:
            params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
            body = self.get_json(path, params)
            yield body.get("data") or []
            cursor = (body.get("page") or {}).get("next")
            if not cursor:
                return

    def iter_legacy_scan_pages(self, limit: int = LEGACY_PAGE) -> Iterator[list[dict[str, Any]]]:
        """Legacy `resultsDirect` (scanning engine EOL 2024-12-31): item offsets, `canLoadMore`."""
        offset = 0
        while True:
            body = self.get_json("/api/scanning/v1/resultsDirect", {"offset": offset, "limit": limit})
            page = body.get("results") or []
            yield page
            offset += len(page)
            if not page or not (body.get("options") or {}).get("canLoadMore"):
                return

    def test_connection(self) -> tuple[bool, str]:
        """Airflow UI 'Test' button."""
        try:
            customer = self.current_user().get("customer") or {}
        except Exception as exc:  # shown to the user as the test result
            return False, str(exc)
        return True, f"Token accepted by {self.base_url} (customer {customer.get('id')})"
