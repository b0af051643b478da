"""A Sysdig Secure REST API emulator: the endpoints the pipeline reads, with their real quirks.

Shapes, paging, limits and error bodies follow the shared API reference (§3–§8): offset paging on
`/platform/v1`, opaque cursors on `/secure/vulnerability/v1`, the legacy `/api` envelopes with epoch
timestamps, and the recorded text/plain 401. Faults (latency, rate limiting, 503s, dropped and
truncated responses, slow answers) can be set per start or changed at runtime through
`POST /_emulator/faults`, so the client's failure handling is tested over a real socket.

An integrity scenario (`Faults.scenario`, one of `SCENARIOS`) makes one or two routes misbehave
the way a faulty server does: pages that silently drop rows or never end, cursors that loop,
records of the wrong type or shape, odd dates, secrets echoed back in values, a redirect. Each is
a small rewrite of a record or a response, looked up by (scenario, route) in `_RECORD_REWRITES`
or `_RESPONSE_REWRITES`; every other route answers as usual.

Run: python -m sysdig_j1_emulators.sysdig --port 8801 --users 30 --teams 4 --seed 7
     [--scenario cursor_loop] [--canaries s3cret ...] [--redirect-to http://host:port]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import json
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from sysdig_j1_emulators.http import Emulator, Handler, Request, Response
from sysdig_j1_emulators.sysdig_audit import AuditError, AuditTrail
from sysdig_j1_emulators.sysdig_org import STAGES, TEAM_ID_BASE, OrgSpec, SysdigOrg, page

USERS_LIGHT_MODES = ("ok", "missing", "gone")
LEGACY_SCANNING_MODES = ("ok", "gone", "empty")
SCENARIOS = (
    "short_member_pages", "changing_total", "cursor_loop", "endless_empty", "endless_pages",
    "string_user_id", "bool_as_text", "data_not_list", "item_not_object", "body_not_object",
    "deep_nesting", "lone_surrogate", "mixed_dates", "pre_1970_date", "bad_date", "echo_token",
    "nested_secrets", "error_echo", "redirect", "dangling_reference", "short_inventory_pages",
    "missing_inventory_page", "paged_sso_settings",
)
# Scenarios whose answers break Sysdig's published response models on purpose (wrong types, fields
# the models lack, answers that are no model at all); every other one keeps the published shapes
# and only lies in ways the shapes cannot show (short pages, loops, echoed secrets).
SHAPE_BREAKING = frozenset({
    "string_user_id", "bool_as_text", "data_not_list", "item_not_object", "body_not_object", "deep_nesting",
    "mixed_dates", "bad_date", "nested_secrets", "error_echo", "redirect", "paged_sso_settings",
})
_MAX_OFFSET = 2_147_483_647
_MAX_CURSOR_CHARS = 300
_RATE_WINDOW_SECONDS = 60
_STATUS_TYPES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 410: "gone",
                 429: "too_many_requests", 503: "service_unavailable"}
# the routes scenarios rewrite (route patterns, as registered)
_USERS = "/platform/v1/users"
_TEAMS = "/platform/v1/teams"
_TEAM_USERS = r"/platform/v1/teams/(?P<team_id>[^/]+)/users"
_RUNTIME_RESULTS = "/secure/vulnerability/v1/runtime-results"
_ME = "/api/users/me"
_RESULT = r"/secure/vulnerability/v1/results/(?P<result_id>[^/]+)"
_PERMISSIONS = "/api/users/me/permissions"
_ROLES = "/platform/v1/roles"
_SERVICE_ACCOUNTS = "/platform/v1/service-accounts"
_TEAM_SERVICE_ACCOUNTS = r"/platform/v1/teams/(?P<team_id>[^/]+)/service-accounts"
_ACCESS_KEYS = "/platform/v1/access-keys"
_ZONES = "/platform/v1/zones"
_SSO_SETTINGS = "/platform/v1/sso-settings"
_IP_FILTERS = "/platform/v1/ip-filters"
_INVENTORY = "/secure/inventory/v1/resources"
_AUDIT_EVENTS = "/platform/v1/platform-audit-events"
# What the public API documents each route to require; a token without it gets 403. (No permission
# is documented for the vulnerability and inventory routes, so they need none here.)
ROUTE_PERMISSIONS = {
    _USERS: "users.read", _TEAMS: "customer-teams.read", _TEAM_USERS: "memberships.read", _ROLES: "roles.read",
    _SERVICE_ACCOUNTS: "global-service-accounts.read", _TEAM_SERVICE_ACCOUNTS: "team-service-accounts.read",
    _ACCESS_KEYS: "customer-access-keys.read", _ZONES: "zones.read", _SSO_SETTINGS: "sso-settings.read",
    _IP_FILTERS: "ip-filters.read", _AUDIT_EVENTS: "audit-trail-events.read",
}
# The inventory filter clauses served: `field = "value"` or `field in ("a", "b")`, joined by `and`.
_FILTER_CLAUSE = re.compile(
    r'^(?P<field>\w+)\s*(?:=\s*"(?P<one>[^"]*)"|in\s*\((?P<many>"[^"]*"(?:\s*,\s*"[^"]*")*)\))$')
_FILTER_FIELDS = ("type", "platform", "category")
ALL_PERMISSIONS = tuple(sorted(set(ROUTE_PERMISSIONS.values()) | {"policy-events.read"}))


@dataclass(frozen=True)
class Faults:
    """Misbehaviour applied to the Sysdig routes (never to the `/_emulator` control routes)."""

    latency: float = 0.0  # seconds added to every response
    jitter: float = 0.0  # plus a uniform 0..jitter seconds
    rate_limit_per_minute: int | None = None  # per token and window; None = unlimited
    rate_limit_window: float = 60.0  # seconds; tests shorten it so a window passes quickly
    error_rate: float = 0.0  # fraction answered 503
    drop_rate: float = 0.0  # fraction whose connection is closed without an answer
    slow_rate: float = 0.0  # fraction delayed by slow_seconds (longer than a client timeout)
    slow_seconds: float = 5.0
    truncate_rate: float = 0.0  # fraction whose body is cut in half
    fail_path: str | None = None  # requests whose path starts with this always answer 500
    scenario: str | None = None  # one of SCENARIOS: the routes it names misbehave that way
    canaries: tuple[str, ...] = ()  # secrets the echo scenarios plant besides the token
    redirect_to: str | None = None  # base URL of the redirect scenario's Location

    def __post_init__(self) -> None:
        if self.scenario is not None and self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {SCENARIOS}")
        if isinstance(self.canaries, str) or not all(isinstance(c, str) for c in self.canaries):
            raise ValueError("canaries must be a list of strings")
        object.__setattr__(self, "canaries", tuple(self.canaries))  # JSON and argparse give lists
        if self.redirect_to is not None and not re.match(r"https?://", str(self.redirect_to)):
            raise ValueError("redirect_to must be an http(s) URL")
        for name in ("error_rate", "drop_rate", "slow_rate", "truncate_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("latency", "jitter", "slow_seconds", "rate_limit_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.rate_limit_per_minute is not None and self.rate_limit_per_minute < 1:
            raise ValueError("rate_limit_per_minute must be >= 1")


class _HttpError(Exception):
    """Raised by handlers; rendered in the public or legacy error shape of the route."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _public_error(status: int, message: str) -> Response:
    return Response(status, {"type": _STATUS_TYPES.get(status, "error"), "message": message,
                             "details": []})


def _legacy_error(status: int, message: str) -> Response:
    return Response(status, {"message": message})


def _legacy_unauthorized() -> Response:
    """The recorded answer: a JSON body served as text/plain, its id repeated in a header."""
    reference_id = str(uuid.uuid4())
    return Response(401, {"message": "cannot verify credentials", "referenceId": reference_id},
                    headers={"x-request-id": reference_id},
                    content_type="text/plain; charset=utf-8")


# -- query parameters ------------------------------------------------------------------------
def _parse_id(raw: str) -> int | None:
    """A non-negative decimal integer, ASCII digits only (int() would accept " 5" and "+5")."""
    return int(raw) if re.fullmatch(r"[0-9]+", raw) else None


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    value = _parse_id(raw)
    if value is None or not low <= value <= high:
        raise _HttpError(400, f"Invalid parameter '{name}': must be an integer in [{low}, {high}]")
    return value


def _offset_and_limit(request: Request, max_limit: int, default_limit: int) -> tuple[int, int]:
    return (_int_param(request, "offset", 0, 0, _MAX_OFFSET),
            _int_param(request, "limit", default_limit, 1, max_limit))


def _bool_param(request: Request, name: str) -> bool:
    raw = request.query.get(name, "false")
    if raw not in ("true", "false"):
        raise _HttpError(400, f"Invalid parameter '{name}': must be true or false")
    return raw == "true"


def encode_cursor(stage: str, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{stage}:{offset}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, stage: str) -> int:
    """The offset a cursor points at; 400 if it is not one this stage handed out."""
    try:
        if len(cursor) > _MAX_CURSOR_CHARS:
            raise ValueError("too long")
        padded = cursor + "=" * (-len(cursor) % 4)
        cursor_stage, offset = base64.urlsafe_b64decode(padded).decode().split(":")
        position = _parse_id(offset)
        if cursor_stage != stage or position is None:
            raise ValueError("not this stage's cursor")
        return position
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise _HttpError(400, "Invalid parameter 'cursor'") from None


def _offset_page(sequence: Sequence[int], offset: int, limit: int,
                 render: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
    """The `/platform/v1` envelope; next/previous are offsets as strings."""
    total = len(sequence)
    return {
        "page": {
            "previous": str(max(offset - limit, 0)) if offset > 0 else None,
            "next": str(offset + limit) if offset + limit < total else None,
            "total": total,
        },
        "data": [render(index) for index in page(sequence, offset, limit)],
    }


def _inventory_filter(text: str) -> dict[str, set[str]]:
    """The inventory filter as {field: allowed values}; 400 for anything this emulator does not serve."""
    wanted: dict[str, set[str]] = {}
    for clause in filter(None, (part.strip() for part in re.split(r"\s+and\s+", text.strip()))):
        match = _FILTER_CLAUSE.match(clause)
        if match is None or match["field"] not in _FILTER_FIELDS:
            raise _HttpError(400, f"Invalid parameter 'filter': cannot parse {clause!r}")
        values = {match["one"]} if match["one"] is not None else set(re.findall(r'"([^"]*)"', match["many"]))
        wanted[match["field"]] = wanted.get(match["field"], values) & values
    return wanted


class _RateLimiter:
    """Fixed windows (60 s on Sysdig) per token, each starting at the token's first request."""

    def __init__(self, per_minute: int, window: float = _RATE_WINDOW_SECONDS) -> None:
        self.per_minute = per_minute
        self.window = window
        self._windows: dict[str, tuple[float, int]] = {}  # token -> (window end, requests)

    def admit(self, token: str, now: float) -> tuple[bool, dict[str, str]]:
        window_end, used = self._windows.get(token, (0.0, 0))
        if now >= window_end:
            window_end, used = now + self.window, 0
        admitted = used < self.per_minute
        used += admitted
        self._windows[token] = (window_end, used)
        headers = {"X-RateLimit-Limit": str(self.per_minute),
                   "X-RateLimit-Remaining": str(self.per_minute - used),
                   "X-RateLimit-Reset": str(math.ceil(window_end))}
        if not admitted:
            headers["Retry-After"] = str(max(1, math.ceil(window_end - now)))
        return admitted, headers


# -- integrity scenarios ---------------------------------------------------------------------
# A record rewrite gets (emulator, org index, record) and returns the item served in its place;
# a response rewrite gets (emulator, request, handler) and answers instead of the handler.
RecordRewrite = Callable[["SysdigEmulator", int, dict[str, Any]], Any]
ResponseRewrite = Callable[["SysdigEmulator", Request, Handler], Response]

_SHORT_PAGE_ROWS = 5
_DEFAULT_REDIRECT = "http://127.0.0.1:9/"  # nothing listens on the discard port
_SECRET_KEYS = ("access-key", "API_KEY", "pwd", "passphrase", "Authorization", "bearer", "sshKey",
                "client_secret", "Cookie", "session-id", "privateKey")
_CANARY_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDQU5BUlkifQ.c2lnbmF0dXJlLWNhbmFyeQ"
_CANARY_PEM = "-----BEGIN PRIVATE KEY-----\nCANARYPEMBODY\n-----END PRIVATE KEY-----"
# valid cursors, so the usual cursor checks pass; the loop serves the first page for both
_LOOP_CURSORS = (encode_cursor("runtime", 1), encode_cursor("runtime", 2))


def nested_secret_canaries(users: int) -> set[str]:
    """The literal canaries nested_secrets plants in an org of `users` users (besides
    `Faults.canaries`), for tests to search what a client stored or logged."""
    return {*(f"CANARY-user-{i}" for i in range(users)), "CANARY-me-0", _CANARY_JWT,
            "CANARYPEMBODY"}


def _only(index: int, rewrite: RecordRewrite) -> RecordRewrite:
    return lambda emulator, i, record: rewrite(emulator, i, record) if i == index else record


def _set(**fields: Any) -> RecordRewrite:
    return lambda emulator, i, record: {**record, **fields}


def _nested(depth: int) -> dict[str, Any]:
    """{"a": {"a": ... 1}}, `depth` objects deep."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def _epoch_seconds(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


def _mixed_dates(emulator: SysdigEmulator, i: int, record: dict[str, Any]) -> dict[str, Any]:
    """The same instant as ISO text, epoch seconds or epoch milliseconds, by i % 3."""
    seconds = _epoch_seconds(record["dateCreated"])
    return {**record, "dateCreated": (record["dateCreated"], seconds, seconds * 1000)[i % 3]}


def _echo_in_description(emulator: SysdigEmulator, j: int, record: dict[str, Any]
                         ) -> dict[str, Any]:
    words = (f"ask {emulator.token} for access", *emulator.faults.canaries)
    return {**record, "description": " ".join(words)}


def _echo_in_workload(emulator: SysdigEmulator, k: int, record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "scope": {**record["scope"],
                                "kubernetes.workload.name": f"svc-{emulator.token}"}}


def _secret_profile(kind: str) -> RecordRewrite:
    """A "profile" of secret-looking keys nested in the record, each holding its own canary."""
    def rewrite(emulator: SysdigEmulator, i: int, record: dict[str, Any]) -> dict[str, Any]:
        canary = f"CANARY-{kind}-{i}"
        profile: dict[str, Any] = dict.fromkeys(_SECRET_KEYS, canary)
        profile.update(items=[{"X-Auth-Token": canary}], note=f"Bearer {canary}",
                       jwt=_CANARY_JWT, pem=_CANARY_PEM)
        if emulator.faults.canaries:
            profile["password"] = " ".join(emulator.faults.canaries)
        return {**record, "profile": profile}

    return rewrite


def _short_pages(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    """Rows silently dropped: page.total and page.next still describe a full page."""
    response = handler(request)
    response.body["data"] = response.body["data"][:_SHORT_PAGE_ROWS]
    return response


def _short_middle_pages(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    """Every page but the last silently drops its last record (page.total still counts pages)."""
    response = handler(request)
    if response.body["page"]["next"] is not None:
        response.body["data"] = response.body["data"][:-1]
    return response


def _missing_page(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    """Page 2's records are never served: from page 2 on, each page answers with the next page's
    records, and page.total still counts the page that went missing (so the last answers empty)."""
    number = int(request.query.get("pageNumber", "1"))
    if number >= 2:
        request = dataclasses.replace(request, query={**request.query, "pageNumber": str(number + 1)})
    response = handler(request)
    page_info = response.body["page"]
    page_info["total"] += 1
    page_info["next"] = number + 1 if number < page_info["total"] else None
    page_info["previous"] = number - 1 if number > 1 else None
    return response


def _points_to_a_next_page(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    """An unpaged answer that suddenly says there is more."""
    response = handler(request)
    response.body["page"] = {"next": "2", "total": len(response.body["data"]) + 1}
    return response


def _changing_total(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    """page.total grows by one with every answer, so no two pages agree on it."""
    response = handler(request)
    response.body["page"]["total"] += emulator._count_scenario_request()
    return response


def _first_page(request: Request, handler: Handler) -> Response:
    """The first page, whatever the cursor (which must still be valid, as usual)."""
    if request.query.get("cursor"):
        _decode_cursor(request.query["cursor"], "runtime")
    query = {name: value for name, value in request.query.items() if name != "cursor"}
    return handler(dataclasses.replace(request, query=query))


def _fresh_cursor(emulator: SysdigEmulator, body: dict[str, Any]) -> str:
    """A cursor no earlier answer gave (past the end, so it is valid but points at nothing)."""
    return encode_cursor("runtime", body["page"]["total"] + emulator._count_scenario_request())


def _cursor_loop(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    """No cursor -> A, A -> B, B -> A: the first page forever."""
    response = _first_page(request, handler)
    first, second = _LOOP_CURSORS
    response.body["page"]["next"] = second if request.query.get("cursor") == first else first
    return response


def _endless_empty(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    response = handler(request)
    if request.query.get("cursor"):
        response.body["data"] = []
    response.body["page"]["next"] = _fresh_cursor(emulator, response.body)
    return response


def _endless_pages(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    """The first page replayed under ever new cursors."""
    response = _first_page(request, handler)
    response.body["page"]["next"] = _fresh_cursor(emulator, response.body)
    return response


def _data_as_object(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    response = handler(request)
    response.body["data"] = {str(n): item for n, item in enumerate(response.body["data"])}
    return response


def _body_as_array(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    response = handler(request)
    response.body = response.body["data"]
    return response


def _error_echo(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    """A 400 whose message and details quote the caller's credentials back."""
    return Response(400, {"type": "bad_request",
                          "message": f"Invalid parameter 'limit' for token {emulator.token}",
                          "details": [f"Authorization: Bearer {emulator.token}",
                                      *emulator.faults.canaries]})


def _redirect(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
    base = (emulator.faults.redirect_to or _DEFAULT_REDIRECT).rstrip("/")
    # rebuilt from the parsed query (the server keeps no raw copy): same parameters and order
    query = f"?{urlencode(request.query)}" if request.query else ""
    return Response(302, b"", headers={"Location": base + request.path + query})


def _result_rewrite(change: Callable[[SysdigEmulator, dict[str, Any]], None]) -> ResponseRewrite:
    """A full scan result, decoded, changed in place and sent again."""
    def rewrite(emulator: SysdigEmulator, request: Request, handler: Handler) -> Response:
        response = handler(request)
        if response.status != 200:
            return response
        body = json.loads(response.body)
        change(emulator, body)
        return Response(body=body)

    return rewrite


def _dangling_reference(emulator: SysdigEmulator, result: dict[str, Any]) -> None:
    """The first vulnerable package names a vulnerability the result does not hold."""
    package = next(p for p in result["packages"].values() if p["vulnerabilitiesRefs"])
    package["vulnerabilitiesRefs"].append("v-missing")


def _echo_in_layers(emulator: SysdigEmulator, result: dict[str, Any]) -> None:
    """Build commands that quote the token: they reach every finding's raw data (its layer)."""
    for layer in result["layers"].values():
        layer["command"] = f"RUN curl -H 'Authorization: Bearer {emulator.token}' https://repo/install.sh | sh"


_RECORD_REWRITES: dict[tuple[str, str], RecordRewrite] = {
    ("string_user_id", _USERS): _only(5, _set(id="abc")),
    ("bool_as_text", _USERS): _only(4, _set(isAdmin="true")),
    ("item_not_object", _USERS): _only(3, lambda e, i, user: [str(user["id"]), user["email"]]),
    ("deep_nesting", _USERS): _only(2, _set(preferences=_nested(500))),
    ("lone_surrogate", _USERS): _only(7, _set(lastName="Lovelace\ud800")),
    ("mixed_dates", _USERS): _mixed_dates,
    ("mixed_dates", _TEAMS): _only(1, lambda e, j, team: {
        **team, "dateCreated": _epoch_seconds(team["dateCreated"]) * 1000}),
    ("pre_1970_date", _USERS): _only(8, _set(dateCreated="1960-05-01T00:00:00Z")),
    ("bad_date", _USERS): _only(9, _set(dateCreated="yesterday-ish")),
    ("echo_token", _USERS): _only(3, lambda e, i, user: {**user, "lastName": e.token}),
    ("echo_token", _TEAMS): _only(2, _echo_in_description),
    ("echo_token", _RUNTIME_RESULTS): _echo_in_workload,
    ("echo_token", _ME): lambda e, i, user: {**user, "notes": e.token},
    ("nested_secrets", _USERS): _secret_profile("user"),
    ("nested_secrets", _ME): _secret_profile("me"),
}
_RESPONSE_REWRITES: dict[tuple[str, str], ResponseRewrite] = {
    ("short_member_pages", _TEAM_USERS): _short_pages,
    ("short_inventory_pages", _INVENTORY): _short_middle_pages,
    ("missing_inventory_page", _INVENTORY): _missing_page,
    ("paged_sso_settings", _SSO_SETTINGS): _points_to_a_next_page,
    ("changing_total", _USERS): _changing_total,
    ("cursor_loop", _RUNTIME_RESULTS): _cursor_loop,
    ("endless_empty", _RUNTIME_RESULTS): _endless_empty,
    ("endless_pages", _RUNTIME_RESULTS): _endless_pages,
    ("data_not_list", _TEAMS): _data_as_object,
    ("body_not_object", _TEAMS): _body_as_array,
    ("error_echo", _TEAMS): _error_echo,
    ("redirect", _USERS): _redirect,
    ("dangling_reference", _RESULT): _result_rewrite(_dangling_reference),
    ("echo_token", _RESULT): _result_rewrite(_echo_in_layers),
}


class SysdigEmulator(Emulator):
    def __init__(self, org: OrgSpec = OrgSpec(), token: str = "emulator-token",
                 users_light: str = "ok", legacy_scanning: str = "ok",
                 permissions: Sequence[str] = ALL_PERMISSIONS, **faults: Any) -> None:
        super().__init__()
        if users_light not in USERS_LIGHT_MODES:
            raise ValueError(f"users_light must be one of {USERS_LIGHT_MODES}")
        if legacy_scanning not in LEGACY_SCANNING_MODES:
            raise ValueError(f"legacy_scanning must be one of {LEGACY_SCANNING_MODES}")
        self.org = SysdigOrg(org)
        self.audit = AuditTrail(org.seed)  # every change made through the admin routes, as requests
        self.token = token
        self.users_light = users_light
        self.legacy_scanning = legacy_scanning
        self.permissions = tuple(permissions)  # the token's (GET /api/users/me/permissions)
        self._state_lock = threading.Lock()  # guards faults, the fault RNGs and the rate limiter
        self._set_faults(Faults(**faults))
        self._register_sysdig_routes()
        self._register_control_routes()

    # -- routes ----------------------------------------------------------------------------
    def _register_sysdig_routes(self) -> None:
        public = {
            _USERS: self._users,
            _TEAMS: self._teams,
            _TEAM_USERS: self._team_users,
            **{f"/secure/vulnerability/v1/{stage}-results": self._stage_handler(stage)
               for stage in STAGES},
            _RESULT: self._full_result,
            _ROLES: self._listing(lambda: range(self.org.spec.roles), self.org.role),
            _SERVICE_ACCOUNTS: self._listing(self._service_account_indices, self._service_account),
            _TEAM_SERVICE_ACCOUNTS: self._team_service_accounts,
            _ACCESS_KEYS: self._listing(self._access_keys, self._access_key),
            _ZONES: self._listing(lambda: range(self.org.spec.zones), self.org.zone),
            _SSO_SETTINGS: lambda request: Response(body={"data": self.org.sso_settings()}),  # not paged
            _IP_FILTERS: self._listing(lambda: range(self.org.spec.ip_filters), self.org.ip_filter),
            _INVENTORY: self._inventory,
            _AUDIT_EVENTS: self._audit_events,
        }
        legacy = {
            _ME: self._me,
            _PERMISSIONS: self._my_permissions,
            r"/api/users/(?P<user_id>[^/]+)": self._legacy_user,
            "/api/v2/users/light": self._light_users,
            "/api/v2/teams/light": self._light_teams,
            "/api/scanning/v1/resultsDirect": self._results_direct,
        }
        for pattern, handler in public.items():
            self.route("GET", pattern, self._guarded(self._scenario(pattern, handler), legacy=False,
                                                     permission=ROUTE_PERMISSIONS.get(pattern)))
        for pattern, handler in legacy.items():
            self.route("GET", pattern,
                       self._guarded(self._scenario(pattern, handler), legacy=True))

    def _register_control_routes(self) -> None:
        self.route("POST", r"/_emulator/users/(?P<user_id>[^/]+)/remove", self._remove_user)
        self.route("POST", r"/_emulator/users/(?P<user_id>[^/]+)/update", self._update_user)
        self.route("POST", r"/_emulator/teams/(?P<team_id>[^/]+)/users/(?P<user_id>[^/]+)/remove", self._leave_team)
        self.route("POST", r"/_emulator/teams/(?P<team_id>[^/]+)/users/(?P<user_id>[^/]+)/add", self._join_team)
        self.route("POST", r"/_emulator/teams/(?P<team_id>[^/]+)/remove", self._remove_team)
        self.route("POST", "/_emulator/service-accounts", self._create_service_account)
        self.route("POST", "/_emulator/access-keys", self._create_access_key)
        self.route("POST", "/_emulator/audit", self._record_audit_event)
        self.route("GET", "/_emulator/stats", self._stats)
        self.route("POST", "/_emulator/stats/reset", self._reset_stats)
        self.route("GET", "/_emulator/faults", self._get_faults)
        self.route("POST", "/_emulator/faults", self._post_faults)

    # -- the fault, rate-limit and auth pipeline every Sysdig route goes through -------------
    def _guarded(self, handler: Callable[[Request], Response], legacy: bool, permission: str | None = None
                 ) -> Callable[[Request], Response]:
        def guarded(request: Request) -> Response:
            faults, delay, fault = self._draw()
            time.sleep(delay)
            admitted, rate_headers = self._admit(request)
            if not admitted:
                response = _public_error(429, "Rate limit exceeded")
            elif faults.fail_path and request.path.startswith(faults.fail_path):
                response = _public_error(500, "Internal server error")
            elif fault == "error":
                response = _public_error(503, "Service temporarily unavailable")
            elif fault == "drop":
                return Response(drop_connection=True)
            else:
                if fault == "slow":
                    time.sleep(faults.slow_seconds)
                response = self._authorised(handler, request, legacy, permission)
            if fault == "truncate":
                response.truncate_to = len(response.encoded()) // 2
            response.headers.update(rate_headers)
            return response

        return guarded

    def _draw(self) -> tuple[Faults, float, str | None]:
        """The faults in force, this response's delay and its fault, from the seeded RNGs."""
        with self._state_lock:
            faults = self._faults
            delay = faults.latency + self._jitter_rng.uniform(0, faults.jitter)
            draw = self._fault_rng.random()
        bands = (("error", faults.error_rate), ("drop", faults.drop_rate),
                 ("slow", faults.slow_rate), ("truncate", faults.truncate_rate))
        for fault, rate in bands:  # consecutive bands of [0, 1): one draw picks at most one fault
            if draw < rate:
                return faults, delay, fault
            draw -= rate
        return faults, delay, None

    def _admit(self, request: Request) -> tuple[bool, dict[str, str]]:
        with self._state_lock:
            if self._rate_limiter is None:
                return True, {}
            return self._rate_limiter.admit(request.headers.get("authorization", ""), time.time())

    def _authorised(self, handler: Callable[[Request], Response], request: Request,
                    legacy: bool, permission: str | None = None) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _legacy_unauthorized() if legacy else _public_error(401, "Access denied.")
        if permission is not None and permission not in self.permissions:
            return _public_error(403, "Not enough privileges to complete the action")
        try:
            return handler(request)
        except _HttpError as error:
            render = _legacy_error if legacy else _public_error
            return render(error.status, error.message)

    # -- integrity scenarios (inside the auth check: an unauthorised caller gets the usual 401) -
    def _scenario(self, route: str, handler: Handler) -> Handler:
        """The handler, or the response rewrite the scenario in force has for this route."""
        def handle(request: Request) -> Response:
            rewrite = _RESPONSE_REWRITES.get((self.faults.scenario, route))
            return handler(request) if rewrite is None else rewrite(self, request, handler)

        return handle

    def _renderer(self, route: str, render: Callable[[int], dict[str, Any]]
                  ) -> Callable[[int], Any]:
        """render, followed by the record rewrite the scenario in force has for this route."""
        rewrite = _RECORD_REWRITES.get((self.faults.scenario, route))
        if rewrite is None:
            return render
        return lambda index: rewrite(self, index, render(index))

    def _count_scenario_request(self) -> int:
        """How many requests the scenario counted before this one (restarts with the faults)."""
        with self._state_lock:
            self._scenario_requests += 1
            return self._scenario_requests - 1

    def _set_faults(self, faults: Faults) -> None:
        """Install faults and restart their RNGs, rate windows and scenario counter, so a run is
        reproducible."""
        seed = self.org.spec.seed
        with self._state_lock:
            self._faults = faults
            self._scenario_requests = 0
            self._fault_rng = random.Random(f"{seed}:faults")
            self._jitter_rng = random.Random(f"{seed}:jitter")
            self._rate_limiter = (_RateLimiter(faults.rate_limit_per_minute, faults.rate_limit_window)
                                  if faults.rate_limit_per_minute else None)

    @property
    def faults(self) -> Faults:
        return self._faults

    # -- public API: users, teams, memberships -----------------------------------------------
    def _users(self, request: Request) -> Response:
        offset, limit = _offset_and_limit(request, max_limit=200, default_limit=25)
        return Response(body=_offset_page(self.org.users(), offset, limit,
                                          self._renderer(_USERS, self.org.public_user)))

    def _teams(self, request: Request) -> Response:
        offset, limit = _offset_and_limit(request, max_limit=200, default_limit=25)
        return Response(body=_offset_page(self.org.teams(), offset, limit,
                                          self._renderer(_TEAMS, self.org.public_team)))

    def _team_users(self, request: Request) -> Response:
        j = self._team_index(request.params["team_id"])
        offset, limit = _offset_and_limit(request, max_limit=200, default_limit=25)
        members = self.org.members(j, with_admins=_bool_param(request, "withAdminUsers"))
        return Response(body=_offset_page(members, offset, limit,
                                          lambda i: self.org.membership(j, i)))

    def _team_index(self, raw_team_id: str) -> int:
        team_id = _parse_id(raw_team_id)
        j = None if team_id is None else self.org.team_index(team_id)
        if j is None:
            raise _HttpError(404, f"Team {raw_team_id} not found")
        return j

    # -- public API: identities, keys, settings ------------------------------------------------
    def _listing(self, indices: Callable[[], Sequence[int]], render: Callable[[int], dict[str, Any]]
                 ) -> Callable[[Request], Response]:
        """An offset-paged `/platform/v1` listing of `render(i)` for each of `indices()`."""
        def handler(request: Request) -> Response:
            offset, limit = _offset_and_limit(request, max_limit=200, default_limit=25)
            return Response(body=_offset_page(indices(), offset, limit, render))

        return handler

    def _team_service_accounts(self, request: Request) -> Response:
        j = self._team_index(request.params["team_id"])
        offset, limit = _offset_and_limit(request, max_limit=200, default_limit=25)
        return Response(body=_offset_page(range(self.org.spec.team_service_accounts), offset, limit,
                                          lambda k: self.org.team_service_account(j, k)))

    def _service_account_indices(self) -> range:
        return range(self.org.spec.service_accounts + len(self.org.created_service_accounts))

    def _service_account(self, g: int) -> dict[str, Any]:
        generated = self.org.spec.service_accounts
        return self.org.service_account(g) if g < generated else self.org.created_service_accounts[g - generated]

    def _access_keys(self) -> list[int]:
        """Keys of removed teams went with them."""
        return [a for a in range(self.org.spec.access_keys + len(self.org.created_access_keys))
                if (team := self._access_key(a)["teamId"]) is None or self.org.team_index(team) is not None]

    def _access_key(self, a: int) -> dict[str, Any]:
        generated = self.org.spec.access_keys
        if a >= generated:
            return self.org.created_access_keys[a - generated]
        return self.org.access_key(a, range(TEAM_ID_BASE, TEAM_ID_BASE + self.org.spec.teams))

    # -- public API: the platform audit trail (see `sysdig_audit`) ------------------------------
    def _audit_events(self, request: Request) -> Response:
        try:
            return Response(body=self.audit.page(request.query))
        except AuditError as error:
            raise _HttpError(400, str(error)) from None

    # -- public API: inventory (page-number paging) ------------------------------------------
    def _inventory(self, request: Request) -> Response:
        number = _int_param(request, "pageNumber", 1, 1, _MAX_OFFSET)
        size = _int_param(request, "pageSize", 20, 1, 1000)
        wanted = _inventory_filter(request.query.get("filter", ""))
        every = [*(("cluster", c) for c in range(self.org.spec.clusters)),
                 *(("host", h) for h in range(self.org.spec.hosts))]
        chosen = [(kind, n) for kind, n in every
                  if all(value in wanted[field] for field, value in self.org.inventory_fields(kind, n).items()
                         if field in wanted)]
        start, pages = (number - 1) * size, math.ceil(len(chosen) / size)
        render = {"cluster": self.org.cluster, "host": self.org.host}
        return Response(body={  # page.total is the number of pages, as the published model describes it
            "page": {"previous": number - 1 if number > 1 else None,
                     "next": number + 1 if number < pages else None, "total": pages},
            "data": [render[kind](n) for kind, n in chosen[start:start + size]],
        })

    # -- public API: vulnerability management ------------------------------------------------
    def _stage_handler(self, stage: str) -> Callable[[Request], Response]:
        route = f"/secure/vulnerability/v1/{stage}-results"

        def stage_results(request: Request) -> Response:
            cursor = request.query.get("cursor")
            offset = _decode_cursor(cursor, stage) if cursor else 0
            limit = _int_param(request, "limit", 1000, 1, 1000)
            scans = self.org.scans(stage)
            page_info: dict[str, Any] = {"total": len(scans)}
            if offset + limit < len(scans):  # no cursor means "last page" (per the spec)
                page_info["next"] = encode_cursor(stage, offset + limit)
            render = self._renderer(route, lambda k: self.org.stage_result(stage, k))
            data = [render(k) for k in page(scans, offset, limit)]
            return Response(body={"page": page_info, "data": data})

        return stage_results

    def _full_result(self, request: Request) -> Response:
        body = self.org.full_result(request.params["result_id"])
        if body is None:
            raise _HttpError(404, f"Result {request.params['result_id']} not found")
        return Response(body=body)

    # -- legacy API --------------------------------------------------------------------------
    def _me(self, request: Request) -> Response:
        if not self.org.spec.users:  # an organisation without users has no token holder
            return _legacy_unauthorized()
        return Response(body={"user": self._renderer(_ME, self.org.legacy_user)(0)})

    def _my_permissions(self, request: Request) -> Response:
        if not self.org.spec.users:
            return _legacy_unauthorized()
        return Response(body={"customerId": self.org.spec.customer_id, "userId": self.org.user_id(0),
                              "teamId": 20000, "permissions": list(self.permissions)})

    def _legacy_user(self, request: Request) -> Response:
        raw_id = request.params["user_id"]
        user_id = _parse_id(raw_id)
        indices = [] if user_id is None else self.org.user_indices_for_id(user_id)
        live = [i for i in indices if self.org.is_present(i)]
        if not live:
            raise _HttpError(404, f"User {raw_id} not found")
        return Response(body={"user": self.org.legacy_user(live[0])})

    def _light_users(self, request: Request) -> Response:
        if self.users_light != "ok":
            status = 404 if self.users_light == "missing" else 410
            raise _HttpError(status, "Endpoint /api/v2/users/light is not available")
        offset, limit = _offset_and_limit(request, max_limit=1000, default_limit=100)
        users = self.org.users()
        return Response(body={"users": [self.org.light_user(i) for i in page(users, offset, limit)],
                              "total": len(users), "offset": offset})

    def _light_teams(self, request: Request) -> Response:
        offset, limit = _offset_and_limit(request, max_limit=1000, default_limit=100)
        teams = self.org.teams()
        return Response(body={"total": len(teams), "offset": offset,
                              "teams": [self.org.legacy_team(j) for j in page(teams, offset, limit)]})

    def _results_direct(self, request: Request) -> Response:
        if self.legacy_scanning == "gone":
            raise _HttpError(410, "The legacy scanning engine has reached its end of life")
        offset, limit = _offset_and_limit(request, max_limit=1000, default_limit=100)
        scans = self.org.scans() if self.legacy_scanning == "ok" else range(0)
        total = len(scans)
        return Response(body={
            "options": {"sort": "desc", "sortBy": "scanDate", "offset": offset, "limit": limit,
                        "canLoadMore": offset + limit < total},
            "results": [self.org.legacy_scan(k) for k in page(scans, offset, limit)],
            "totalRows": total,
            "metadata": {"total": total},
        })

    # -- control routes (no auth) ------------------------------------------------------------
    # Each change is also recorded in the audit trail, as the public API request that makes it.
    def _remove_user(self, request: Request) -> Response:
        user_id = _parse_id(request.params["user_id"])
        if user_id is None or not self.org.remove_user(user_id):
            return Response(404, {"message": f"unknown user {request.params['user_id']}"})
        self.audit.change("DELETE", f"/platform/v1/users/{user_id}", "user", user_id)
        return Response(body={"removed": user_id})

    def _update_user(self, request: Request) -> Response:
        """Body {"isAdmin": true} and/or {"isEnabled": false}: a user promoted or disabled."""
        user_id, changes = _parse_id(request.params["user_id"]), request.json() or {}
        if not isinstance(changes, dict) or set(changes) - {"isAdmin", "isEnabled"}:
            return Response(400, {"message": "expected {\"isAdmin\": true} and/or {\"isEnabled\": false}"})
        if user_id is None or not self.org.update_user(user_id, changes.get("isAdmin"), changes.get("isEnabled")):
            return Response(404, {"message": f"unknown user {request.params['user_id']}"})
        self.audit.change("PUT", f"/platform/v1/users/{user_id}", "user", user_id, changes)
        return Response(body={"updated": user_id, **changes})

    def _leave_team(self, request: Request) -> Response:
        team_id, user_id = _parse_id(request.params["team_id"]), _parse_id(request.params["user_id"])
        if None in (team_id, user_id) or not self.org.leave_team(team_id, user_id):
            return Response(404, {"message": "unknown team or not a member"})
        self.audit.change("DELETE", f"/platform/v1/teams/{team_id}/users/{user_id}", "team", team_id)
        return Response(body={"team": team_id, "left": user_id})

    def _join_team(self, request: Request) -> Response:
        team_id, user_id = _parse_id(request.params["team_id"]), _parse_id(request.params["user_id"])
        if None in (team_id, user_id) or not self.org.join_team(team_id, user_id):
            return Response(404, {"message": "unknown team or user"})
        self.audit.change("PUT", f"/platform/v1/teams/{team_id}/users/{user_id}", "team", team_id,
                          {"standardTeamRole": "ROLE_TEAM_STANDARD"})
        return Response(body={"team": team_id, "joined": user_id})

    def _create_service_account(self, request: Request) -> Response:
        """Body {"name", "systemRoles" (default ROLE_USER), "expirationDate" (ISO; null never)}."""
        body = request.json() or {}
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return Response(400, {"message": "expected {\"name\": ..., \"systemRoles\": [...]}"})
        created = self.org.create_service_account(body["name"], body.get("systemRoles") or ["ROLE_USER"],
                                                  body.get("expirationDate"))
        # the API answers with the new account's key, and the audit trail keeps the answer
        self.audit.change("POST", "/platform/v1/service-accounts", "serviceAccount", created["id"], created)
        return Response(201, created)

    def _create_access_key(self, request: Request) -> Response:
        """Body {"teamId", "agentLimit"} (both optional)."""
        body = request.json() or {}
        created = self.org.create_access_key(body.get("teamId"), body.get("agentLimit"))
        self.audit.change("POST", "/platform/v1/access-keys", "accessKey", created["id"], created)
        return Response(201, created)

    def _record_audit_event(self, request: Request) -> Response:
        """Any request, as the audit trail records it: {"requestMethod", "requestUri",
        "responseStatusCode", "entityType", "entityId"} (reads, failed writes, other products)."""
        body = request.json() or {}
        try:
            event = self.audit.record(body["requestMethod"], body["requestUri"], int(body["responseStatusCode"]),
                                      body.get("entityType", ""), body.get("entityId"))
        except (KeyError, TypeError, ValueError) as error:
            return Response(400, {"message": f"invalid audit event: {error}"})
        return Response(201, event)

    def _remove_team(self, request: Request) -> Response:
        team_id = _parse_id(request.params["team_id"])
        if team_id is None or not self.org.remove_team(team_id):
            return Response(404, {"message": f"unknown team {request.params['team_id']}"})
        self.audit.change("DELETE", f"/platform/v1/teams/{team_id}", "team", team_id)
        return Response(body={"removed": team_id})

    def _stats(self, request: Request) -> Response:
        with self._lock:
            counts = dict(self.request_counts)
            statuses = {str(status): n for status, n in sorted(self.status_counts.items())}
            peak = self.peak_in_flight
        # "GET /platform/v1/teams/(?P<team_id>[^/]+)/users" -> "GET /platform/v1/teams/{team_id}/users"
        readable = {re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", key): n for key, n in counts.items()
                    if "/_emulator/" not in key}  # count the API, not the test harness
        return Response(body={"requests": readable, "statuses": statuses, "peak_in_flight": peak})

    def _reset_stats(self, request: Request) -> Response:
        self.reset_counters()
        return Response(body={"requests": {}})

    def _get_faults(self, request: Request) -> Response:
        return Response(body=dataclasses.asdict(self.faults))

    def _post_faults(self, request: Request) -> Response:
        """Merge the JSON body into the faults in force; 400 on an unknown name or a bad value."""
        try:
            changes = request.json()
            self._set_faults(dataclasses.replace(self.faults, **changes))
        except (TypeError, ValueError) as error:
            return Response(400, {"message": f"invalid faults: {error}"})
        return self._get_faults(request)


def _parser() -> argparse.ArgumentParser:
    defaults, fault_defaults = OrgSpec(), Faults()
    parser = argparse.ArgumentParser(prog="sysdig-emulator", description="Sysdig Secure REST API emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--token", default="emulator-token")
    for field in dataclasses.fields(OrgSpec):
        kind = str if field.name == "customer_name" else int
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind,
                            default=getattr(defaults, field.name))
    parser.add_argument("--users-light", choices=USERS_LIGHT_MODES, default="ok")
    parser.add_argument("--legacy-scanning", choices=LEGACY_SCANNING_MODES, default="ok")
    parser.add_argument("--permissions", nargs="*", default=list(ALL_PERMISSIONS), metavar="PERMISSION",
                        help="the token's permissions (default: all the emulator knows)")
    options: dict[str, dict[str, Any]] = {  # any other fault is a float
        "rate_limit_per_minute": {"type": int}, "fail_path": {"type": str},
        "scenario": {"choices": SCENARIOS}, "canaries": {"nargs": "*", "metavar": "CANARY"},
        "redirect_to": {"type": str},
    }
    for field in dataclasses.fields(Faults):
        parser.add_argument(f"--{field.name.replace('_', '-')}",
                            default=getattr(fault_defaults, field.name),
                            **options.get(field.name, {"type": float}))
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    host, port = args.pop("host"), args.pop("port")
    try:
        spec = OrgSpec(**{f.name: args.pop(f.name) for f in dataclasses.fields(OrgSpec)})
        emulator = SysdigEmulator(spec, **args)
    except ValueError as error:  # inconsistent options: a usage message, not a traceback
        parser.error(str(error))
    emulator.serve_forever(host, port)


if __name__ == "__main__":
    main()
