"""JupiterOneHook: the `jupiterone` connection and the synchronization-job API.

Connection contract (`jupiterone_default`): login = account id, password = API key; extra `region`
(us | eu) or `host` = base URL override; optional extra `integration_instance_id`, which makes jobs
use source `integration-external` instead of `api` with a scope.
"""

from __future__ import annotations

import uuid
from functools import cached_property
from typing import Any

import requests
from airflow.sdk import BaseHook

from sysdig_j1.hooks.http import DEFAULT_TIMEOUT, ApiError, error_message, make_session
from sysdig_j1.regions import JUPITERONE_REGIONS, base_url

JOBS = "/persister/synchronization/jobs"
TERMINAL_STATUSES = frozenset(
    {"FINISHED", "ABORTED", "ABORTED_DUE_TO_INVALID_CONFIGURATION", "ERROR_BAD_DATA", "ERROR_UNEXPECTED_FAILURE"}
)


class JupiterOneHook(BaseHook):
    conn_name_attr = "jupiterone_conn_id"
    default_conn_name = "jupiterone_default"
    conn_type = "jupiterone"
    hook_name = "JupiterOne"

    def __init__(
        self,
        jupiterone_conn_id: str = default_conn_name,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        backoff: float = 0.5,
    ):
        super().__init__()
        self.jupiterone_conn_id = jupiterone_conn_id
        self.timeout = timeout
        self.backoff = backoff  # seconds; retries wait backoff * 2**n plus jitter

    @cached_property
    def connection(self):
        return self.get_connection(self.jupiterone_conn_id)

    @cached_property
    def base_url(self) -> str:
        region = self.connection.extra_dejson.get("region") or "us"
        return base_url(JUPITERONE_REGIONS, region, self.connection.host, "JupiterOne")

    @property
    def integration_instance_id(self) -> str | None:
        return self.connection.extra_dejson.get("integration_instance_id") or None

    @cached_property
    def session(self) -> requests.Session:
        account, key = self.connection.login, self.connection.password
        if not account or not key:
            raise ValueError(f"connection {self.jupiterone_conn_id!r} needs the account id (login) and API key")
        # Create, finalize and abort are not safe to repeat blindly, but a 429/503 answer means the
        # request was not processed, so retrying POSTs on those statuses is sound.
        return make_session(
            {"Authorization": f"Bearer {key}", "JupiterOne-Account": account, "Content-Type": "application/json"},
            methods=frozenset({"GET", "POST"}),
            backoff=self.backoff,
        )

    def job_target(self, scope: str) -> dict[str, str]:
        """Where a job's DIFF applies: the integration instance if configured, else an api scope."""
        if self.integration_instance_id:
            return {"source": "integration-external", "integrationInstanceId": self.integration_instance_id}
        return {"source": "api", "scope": scope}

    # -- the job protocol -------------------------------------------------------------------
    def post(self, path: str, body: bytes | dict, headers: dict[str, str] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}{JOBS}{path}"
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        try:
            response = self.session.post(url, headers=headers, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise ApiError("JupiterOne", "POST", f"{JOBS}{path}", None, f"{type(exc).__name__}: {exc}") from exc
        return self._job(response, "POST", path)

    def get_job(self, job_id: str) -> dict[str, Any]:
        path = f"/{job_id}"
        try:
            response = self.session.get(f"{self.base_url}{JOBS}{path}", timeout=self.timeout)
        except requests.RequestException as exc:
            raise ApiError("JupiterOne", "GET", f"{JOBS}{path}", None, f"{type(exc).__name__}: {exc}") from exc
        return self._job(response, "GET", path)

    def create_job(self, scope: str) -> dict[str, Any]:
        return self.post("", {**self.job_target(scope), "syncMode": "DIFF"})

    def upload(self, job_id: str, kind: str, body: bytes) -> dict[str, Any]:
        """POST one pre-serialised batch (`{"entities": [...]}` or `{"relationships": [...]}`)."""
        return self.post(f"/{job_id}/{kind}", body, headers={"JupiterOne-Correlation-Id": str(uuid.uuid4())})

    def finalize(self, job_id: str, partial_types: list[str]) -> dict[str, Any]:
        return self.post(f"/{job_id}/finalize", {"partialDatasets": {"types": partial_types}})

    def abort(self, job_id: str, reason: str) -> dict[str, Any]:
        return self.post(f"/{job_id}/abort", {"reason": reason[:1000]})

    @staticmethod
    def _job(response: requests.Response, method: str, path: str) -> dict[str, Any]:
        if response.status_code != 200:
            raise ApiError("JupiterOne", method, f"{JOBS}{path}", response.status_code, error_message(response))
        return response.json()["job"]
