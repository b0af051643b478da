"""What both API hooks share: a pooled session with urllib3 retries, a client-side rate-limit
gate, a hard bound on concurrent requests, bounded concurrent crawling, and error messages.

Retries cover 429 (honouring Retry-After, capped), 5xx, connection errors and read timeouts, with
exponential backoff and jitter. 4xx other than 429 are never retried: a bad token or a missing
resource does not get better by asking again. Redirects are never followed: an API that answers
with another host's data is a surprise, not an answer. Error messages quote the server, so they
are scrubbed of the connection's secret (servers echo tokens) before anything raises or logs them:
Airflow's masker only covers log lines that pass through it, not exception text we build.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import cached_property
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from airflow.sdk import BaseHook
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from sysdig_j1.scrub import Scrubber

log = logging.getLogger(__name__)

RETRY_STATUSES = (429, 500, 502, 503, 504)
DEFAULT_TIMEOUT = (10, 120)  # (connect, read) seconds

W = TypeVar("W")
R = TypeVar("R")
_DONE = object()


class ApiError(RuntimeError):
    """An API call failed; the message names the service, endpoint, status and server message."""

    def __init__(self, service: str, method: str, url: str, status: int | None, message: str) -> None:
        self.status = status
        self.url = url
        where = f"{service} {method} {url}"
        super().__init__(f"{where} failed: HTTP {status}: {message}" if status else f"{where} failed: {message}")


class CappedRetry(Retry):
    """urllib3 Retry whose Retry-After wait (seconds or HTTP date) is capped, so a server asking
    for an hour cannot park a worker slot for that long; the task-level retry takes over instead."""

    RETRY_AFTER_CAP = 120.0

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.RETRY_AFTER_CAP)


class RateLimitGate:
    """Follows X-RateLimit-Limit / -Remaining / -Reset so a run spends its budget without 429s.

    Before each request: if the last answer said the window's budget is used up (counting the
    requests still in flight), wait until the window resets. Without those headers it never waits.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._limit: int | None = None
        self._remaining: int | None = None
        self._reset_at = 0.0  # epoch seconds
        self._in_flight = 0

    def acquire(self) -> None:
        with self._cond:
            while True:
                now = time.time()
                if self._remaining is not None and now >= self._reset_at:
                    self._remaining = self._limit  # a new window: the full budget again
                if self._remaining is None or self._remaining - self._in_flight > 0:
                    break
                wait_s = self._reset_at - now + 0.05
                log.info("rate limit budget used up; waiting %.1fs for the window to reset", wait_s)
                self._cond.wait(timeout=wait_s)
            self._in_flight += 1

    def release(self, headers: Any) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()
            try:
                limit = int(headers["X-RateLimit-Limit"])
                remaining = int(headers["X-RateLimit-Remaining"])
                reset = float(headers["X-RateLimit-Reset"])
            except (KeyError, TypeError, ValueError):  # no (valid) rate-limit headers
                return
            reset_at = reset if reset > 1e9 else time.time() + reset  # epoch or seconds-from-now
            if reset_at > self._reset_at:  # the first answer from a new window
                self._limit, self._reset_at, self._remaining = limit, reset_at, remaining
            elif reset_at == self._reset_at and self._remaining is not None:
                # answers arrive out of order; within a window the smallest count is the latest
                self._remaining = min(remaining, self._remaining)


def make_session(
    headers: dict[str, str],
    *,
    methods: frozenset[str],
    attempts: int = 6,
    backoff: float = 0.5,
    pool_size: int = 10,
) -> requests.Session:
    retry = CappedRetry(
        total=attempts - 1,
        backoff_factor=backoff,
        backoff_jitter=backoff,
        backoff_max=60,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=methods,
        respect_retry_after_header=True,
        raise_on_status=False,  # hand back the last response so the error names the server's message
    )
    adapter = HTTPAdapter(max_retries=retry, pool_connections=pool_size, pool_maxsize=pool_size)
    session = requests.Session()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update(headers)
    return session


MAX_MESSAGE = 500  # characters of a server's message kept in an error


def error_message(response: requests.Response) -> str:
    """The server's own words, whole (callers scrub, then cut). Sysdig sends JSON errors even when
    it labels them text/plain."""
    try:
        body = json.loads(response.text)
    except (ValueError, RecursionError):
        return response.text.strip() or response.reason
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # JupiterOne: {"error": {"code", "message"}}
            return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(e.get("message") or e.get("reason") or e) if isinstance(e, dict) else str(e)
                             for e in errors if e)
        for key in ("message", "error", "details"):
            if body.get(key):
                return str(body[key])
    return str(body)


class ApiHook(BaseHook):
    """Base of the two API hooks: the connection, and one request path that bounds concurrency,
    respects the rate-limit gate and turns every failure into an ApiError naming the endpoint."""

    service = ""  # "Sysdig" / "JupiterOne", for messages
    default_concurrency = 8  # requests in flight; the connection extra `max_concurrency` overrides

    def __init__(self, conn_id: str, timeout: tuple[float, float], backoff: float) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.timeout = timeout
        self.backoff = backoff  # seconds; retries wait backoff * 2**n plus jitter
        self.rate_limit = RateLimitGate()

    @cached_property
    def connection(self):
        return self.get_connection(self.conn_id)

    @property
    def extra(self) -> dict[str, Any]:
        return self.connection.extra_dejson

    @cached_property
    def max_concurrency(self) -> int:
        return int(self.extra.get("max_concurrency") or self.default_concurrency)

    @cached_property
    def _slots(self) -> threading.BoundedSemaphore:
        return threading.BoundedSemaphore(self.max_concurrency)

    base_url: str
    session: requests.Session
    @property
    def secret(self) -> str:
        """The API credential (the password field). Airflow registers it with its secrets masker
        when it reads the connection, so log lines that pass the masker never show it."""
        if not self.connection.password:
            raise ValueError(f"connection {self.conn_id!r} has no API credential (password field)")
        return self.connection.password

    @cached_property
    def scrubber(self) -> Scrubber:
        """Removes this connection's secret (and credential-looking text) from server messages."""
        return Scrubber([self.connection.password])

    def request(self, method: str, path: str, *, base: str | None = None, **kwargs: Any) -> requests.Response:
        """`path` under the connection's base URL (or under `base`, for a service's second host)."""
        base = base or self.base_url
        with self._slots:
            self.rate_limit.acquire()
            response = None
            try:
                response = self.session.request(method, f"{base}{path}", timeout=self.timeout,
                                                allow_redirects=False, **kwargs)
            except requests.RequestException as exc:  # after urllib3's retries: the service is unreachable
                raise self._error(method, path, None, f"cannot reach {base} (connection {self.conn_id!r}): "
                                                      f"{type(exc).__name__}: {exc}") from None
            finally:
                self.rate_limit.release(response.headers if response is not None else None)
        if response.is_redirect:
            target = urlsplit(response.headers["location"])
            raise self._error(method, path, response.status_code,
                              f"redirect to {target.scheme}://{target.netloc} refused; the API does not redirect, "
                              "so check the connection's host")
        if not response.ok:
            raise self._error(method, path, response.status_code, error_message(response))
        return response

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:  # e.g. a body cut off mid-way
            raise self._error(method, path, response.status_code, f"invalid JSON body: {exc}") from None
        except RecursionError:
            raise self._error(method, path, response.status_code, "invalid JSON body: nested too deeply") from None

    def _error(self, method: str, path: str, status: int | None, message: str) -> ApiError:
        """Scrubbed before it is cut, so no part of a secret survives at the cut."""
        message = self.scrubber.text(message)
        return ApiError(self.service, method, path, status,
                        message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "...")

    def crawl(self, start: Iterable[W], fetch: Callable[[W], tuple[R, list[W]]]) -> Iterator[R]:
        """Run `fetch` on up to `max_concurrency` work items at once; each call returns a result
        and follow-up items (the next cursor, the rest of an offset listing, the halves of a batch).
        `start` is read only as slots free up and results are yielded as they complete, so memory
        holds about `max_concurrency` items whatever the size. Freed slots are refilled before the
        caller gets the finished results, so requests keep flowing while it works on them."""
        source, follow_ups = iter(start), deque()
        with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix=f"{self.service}-crawl") as pool:
            running: set[Future] = set()
            finished: list[R] = []
            try:
                while True:
                    while len(running) < self.max_concurrency:
                        work = follow_ups.popleft() if follow_ups else next(source, _DONE)
                        if work is _DONE:
                            break
                        running.add(pool.submit(fetch, work))
                    yield from finished
                    if not running:
                        return
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    finished = []
                    for future in done:
                        result, more = future.result()
                        follow_ups.extend(more)
                        finished.append(result)
            finally:  # on error or an abandoned generator: drop queued work, let running calls end
                follow_ups.clear()
                for future in running:
                    future.cancel()
