"""A Sysdig Secure REST API emulator: the endpoints the pipeline reads, with their real quirks.

Shapes, paging, limits and error bodies follow the shared API reference (§3–§8): offset paging on
`/platform/v1`, opaque cursors on `/secure/vulnerability/v1`, the legacy `/api` envelopes with epoch
timestamps, and the recorded text/plain 401. Faults (latency, rate limiting, 503s, dropped and
truncated responses, slow answers) can be set per start or changed at runtime through
`POST /_emulator/faults`, so the client's failure handling is tested over a real socket.

Run: python -m sysdig_j1.emulators.sysdig --port 8801 --users 30 --teams 4 --seed 7
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import math
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sysdig_j1.emulators.http import Emulator, Request, Response
from sysdig_j1.emulators.sysdig_org import STAGES, OrgSpec, SysdigOrg, page

USERS_LIGHT_MODES = ("ok", "missing", "gone")
LEGACY_SCANNING_MODES = ("ok", "gone", "empty")
_MAX_OFFSET = 2_147_483_647
_MAX_CURSOR_CHARS = 300
_RATE_WINDOW_SECONDS = 60
_STATUS_TYPES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 410: "gone",
                 429: "too_many_requests", 503: "service_unavailable"}


@dataclass(frozen=True)
class Faults:
    """Misbehaviour applied to every Sysdig route (never to the `/_emulator` control routes)."""

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

    def __post_init__(self) -> None:
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


class SysdigEmulator(Emulator):
    def __init__(self, org: OrgSpec = OrgSpec(), token: str = "emulator-token",
                 users_light: str = "ok", legacy_scanning: str = "ok", **faults: Any) -> None:
        super().__init__()
        if users_light not in USERS_LIGHT_MODES:
            raise ValueError(f"users_light must be one of {USERS_LIGHT_MODES}")
        if legacy_scanning not in LEGACY_SCANNING_MODES:
            raise ValueError(f"legacy_scanning must be one of {LEGACY_SCANNING_MODES}")
        self.org = SysdigOrg(org)
        self.token = token
        self.users_light = users_light
        self.legacy_scanning = legacy_scanning
        self._state_lock = threading.Lock()  # guards faults, the fault RNGs and the rate limiter
        self._set_faults(Faults(**faults))
        self._register_sysdig_routes()
        self._register_control_routes()

    # -- routes ----------------------------------------------------------------------------
    def _register_sysdig_routes(self) -> None:
        public = {
            "/platform/v1/users": self._users,
            "/platform/v1/teams": self._teams,
            r"/platform/v1/teams/(?P<team_id>[^/]+)/users": self._team_users,
            **{f"/secure/vulnerability/v1/{stage}-results": self._stage_handler(stage)
               for stage in STAGES},
        }
        legacy = {
            "/api/users/me": self._me,
            r"/api/users/(?P<user_id>[^/]+)": self._legacy_user,
            "/api/v2/users/light": self._light_users,
            "/api/v2/teams/light": self._light_teams,
            "/api/scanning/v1/resultsDirect": self._results_direct,
        }
        for pattern, handler in public.items():
            self.route("GET", pattern, self._guarded(handler, legacy=False))
        for pattern, handler in legacy.items():
            self.route("GET", pattern, self._guarded(handler, legacy=True))

    def _register_control_routes(self) -> None:
        self.route("POST", r"/_emulator/users/(?P<user_id>[^/]+)/remove", self._remove_user)
        self.route("GET", "/_emulator/stats", self._stats)
        self.route("POST", "/_emulator/stats/reset", self._reset_stats)
        self.route("GET", "/_emulator/faults", self._get_faults)
        self.route("POST", "/_emulator/faults", self._post_faults)

    # -- the fault, rate-limit and auth pipeline every Sysdig route goes through -------------
    def _guarded(self, handler: Callable[[Request], Response], legacy: bool
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
                response = self._authorised(handler, request, legacy)
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
                    legacy: bool) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _legacy_unauthorized() if legacy else _public_error(401, "Access denied.")
        try:
            return handler(request)
        except _HttpError as error:
            render = _legacy_error if legacy else _public_error
            return render(error.status, error.message)

    def _set_faults(self, faults: Faults) -> None:
        """Install faults and restart their RNGs and rate windows, so a run is reproducible."""
        seed = self.org.spec.seed
        with self._state_lock:
            self._faults = faults
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
        return Response(body=_offset_page(self.org.users(), offset, limit, self.org.public_user))

    def _teams(self, request: Request) -> Response:
        offset, limit = _offset_and_limit(request, max_limit=200, default_limit=25)
        return Response(body=_offset_page(self.org.teams(), offset, limit, self.org.public_team))

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

    # -- public API: vulnerability management ------------------------------------------------
    def _stage_handler(self, stage: str) -> Callable[[Request], Response]:
        def stage_results(request: Request) -> Response:
            cursor = request.query.get("cursor")
            offset = _decode_cursor(cursor, stage) if cursor else 0
            limit = _int_param(request, "limit", 1000, 1, 1000)
            scans = self.org.scans(stage)
            page_info: dict[str, Any] = {"total": len(scans)}
            if offset + limit < len(scans):  # no cursor means "last page" (per the spec)
                page_info["next"] = encode_cursor(stage, offset + limit)
            data = [self.org.stage_result(stage, k) for k in page(scans, offset, limit)]
            return Response(body={"page": page_info, "data": data})

        return stage_results

    # -- legacy API --------------------------------------------------------------------------
    def _me(self, request: Request) -> Response:
        if not self.org.spec.users:  # an organisation without users has no token holder
            return _legacy_unauthorized()
        return Response(body={"user": self.org.legacy_user(0)})

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
    def _remove_user(self, request: Request) -> Response:
        user_id = _parse_id(request.params["user_id"])
        if user_id is None or not self.org.remove_user(user_id):
            return Response(404, {"message": f"unknown user {request.params['user_id']}"})
        return Response(body={"removed": user_id})

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
    for field in dataclasses.fields(Faults):
        kind = {"rate_limit_per_minute": int, "fail_path": str}.get(field.name, float)
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=kind,
                            default=getattr(fault_defaults, field.name))
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
