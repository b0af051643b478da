"""What both API hooks share: a pooled requests session with urllib3 retries, and error messages.

Retries cover 429 (honouring Retry-After), 5xx, connection errors and read timeouts with
exponential backoff and jitter. 4xx other than 429 are never retried: a bad token or a missing
resource does not get better by asking again.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import requests
from airflow.sdk import BaseHook
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

RETRY_STATUSES = (429, 500, 502, 503, 504)
DEFAULT_TIMEOUT = (10, 120)  # (connect, read) seconds


class ApiError(RuntimeError):
    """An API call failed; the message names the service, endpoint, status and server message."""

    def __init__(self, service: str, method: str, url: str, status: int | None, message: str) -> None:
        self.status = status
        self.url = url
        where = f"{service} {method} {url}"
        super().__init__(f"{where} failed: HTTP {status}: {message}" if status else f"{where} failed: {message}")


def make_session(
    headers: dict[str, str],
    *,
    methods: frozenset[str],
    attempts: int = 6,
    backoff: float = 0.5,
    pool_size: int = 10,
) -> requests.Session:
    retry = Retry(
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


def error_message(response: requests.Response) -> str:
    """The server's own words. Sysdig sends JSON errors even when it labels them text/plain."""
    try:
        body = json.loads(response.text)
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):  # JupiterOne: {"error": {"code", "message"}}
            return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(e.get("message") or e.get("reason") or e) for e in errors if e)
        for key in ("message", "error", "details"):
            if body.get(key):
                return str(body[key])
    return str(body)[:500]


class ApiHook(BaseHook):
    """Base of the two API hooks: the connection, and one request path that turns every failure
    (network error or non-2xx answer) into an ApiError naming the endpoint."""

    service = ""  # "Sysdig" / "JupiterOne", for messages

    def __init__(self, conn_id: str, timeout: tuple[float, float], backoff: float) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.timeout = timeout
        self.backoff = backoff  # seconds; retries wait backoff * 2**n plus jitter

    @cached_property
    def connection(self):
        return self.get_connection(self.conn_id)

    @property
    def extra(self) -> dict[str, Any]:
        return self.connection.extra_dejson

    base_url: str
    session: requests.Session

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        try:
            response = self.session.request(method, f"{self.base_url}{path}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ApiError(self.service, method, path, None, f"{type(exc).__name__}: {exc}") from exc
        if not response.ok:
            raise ApiError(self.service, method, path, response.status_code, error_message(response))
        return response

    def request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:  # e.g. a body cut off mid-way
            raise ApiError(self.service, method, path, response.status_code, f"invalid JSON body: {exc}") from exc
