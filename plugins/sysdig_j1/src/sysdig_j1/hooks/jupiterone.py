"""JupiterOneHook: the `jupiterone` connection and the synchronization-job API.

Connection contract (`jupiterone_default`): login = account id, password = API key; extra `region`
(us | eu) or `host` = base URL override; optional extra `integration_instance_id`, which makes jobs
use source `integration-external` instead of `api` with a scope.
"""

from __future__ import annotations

import gzip
import uuid
from functools import cached_property
from typing import Any

import requests
from sysdig_j1.hooks.http import DEFAULT_TIMEOUT, ApiError, ApiHook, make_session
from sysdig_j1.regions import JUPITERONE_GRAPHQL, JUPITERONE_REGIONS, base_url

JOBS = "/persister/synchronization/jobs"
# The GraphQL documents of the question and rule operations this project uses (JupiterOne's schema;
# the operation names make them easy to find in JupiterOne's audit log).
QUESTION_FIELDS = "id name title description tags pollingInterval queries { name query version resultsAre includeDeleted }"
RULE_FIELDS = ("id version name description tags pollingInterval specVersion triggerActionsOnNewEntitiesOnly outputs "
               "question { queries { name query version includeDeleted } } operations { when actions }")
GRAPHQL = {  # questions are found by tag (`searchQuery` searches titles and descriptions)
    "list_questions": "query SysdigJ1Questions($tags: [String], $cursor: String) { questions(tags: $tags, cursor: "
                      f"$cursor) {{ questions {{ {QUESTION_FIELDS} }} pageInfo {{ endCursor hasNextPage }} }} }}",
    "create_question": "mutation SysdigJ1CreateQuestion($question: CreateQuestionInput!) { createQuestion(question: "
                       "$question) { id name } }",
    "update_question": "mutation SysdigJ1UpdateQuestion($id: ID!, $update: QuestionUpdate!) { updateQuestion(id: $id, "
                       "update: $update) { id name } }",
    "delete_question": "mutation SysdigJ1DeleteQuestion($id: ID!) { deleteQuestion(id: $id) { id } }",
    "list_rules": "query SysdigJ1Rules($cursor: String) { listRuleInstances(limit: 100, cursor: $cursor) { "
                  f"questionInstances {{ {RULE_FIELDS} }} pageInfo {{ endCursor hasNextPage }} }} }}",
    "create_rule": "mutation SysdigJ1CreateRule($instance: CreateInlineQuestionRuleInstanceInput!) { "
                   "createInlineQuestionRuleInstance(instance: $instance) { id name } }",
    "update_rule": "mutation SysdigJ1UpdateRule($instance: UpdateInlineQuestionRuleInstanceInput!) { "
                   "updateInlineQuestionRuleInstance(instance: $instance) { id name } }",
    "delete_rule": "mutation SysdigJ1DeleteRule($id: ID!) { deleteRuleInstance(id: $id) { id } }",
    "evaluate_rule": "mutation SysdigJ1EvaluateRule($id: ID!) { evaluateRuleInstance(id: $id) { id } }",
}
# Every status of the SDK's enum in which a job has stopped: waiting longer cannot change it. (A
# status not known here is waited on until the timeout: ending early could open a second job on
# the scope while the first still works.)
TERMINAL_STATUSES = frozenset({"FINISHED", "ABORTED", "ABORTED_DUE_TO_INVALID_CONFIGURATION", "ERROR_BAD_DATA",
                               "ERROR_UNEXPECTED_FAILURE", "UNKNOWN"})


class JupiterOneHook(ApiHook):
    conn_name_attr = "jupiterone_conn_id"
    default_conn_name = "jupiterone_default"
    conn_type = "jupiterone"
    hook_name = "JupiterOne"
    service = "JupiterOne"
    default_concurrency = 6  # parallel batch uploads, as JupiterOne's own SDK does

    def __init__(
        self,
        jupiterone_conn_id: str = default_conn_name,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        backoff: float = 0.5,
    ):
        super().__init__(jupiterone_conn_id, timeout, backoff)

    @cached_property
    def base_url(self) -> str:
        host = self.connection.host
        region = self.extra.get("region") or (None if host else "us")
        return base_url(JUPITERONE_REGIONS, region, host, "JupiterOne")

    @cached_property
    def graphql_endpoint(self) -> tuple[str, str]:
        """(base URL, path) of the GraphQL API: the region's GraphQL host, or the host override's /graphql."""
        if self.connection.host:
            return self.base_url, "/graphql"
        self.base_url  # noqa: B018 - the region is checked there
        return JUPITERONE_GRAPHQL[self.extra.get("region") or "us"], "/"

    @property
    def integration_instance_id(self) -> str | None:
        return self.extra.get("integration_instance_id") or None

    @cached_property
    def session(self) -> requests.Session:
        account, key = self.connection.login, self.secret
        if not account:
            raise ValueError(f"connection {self.conn_id!r} needs the account id (login)")
        # Create, finalize and abort are not safe to repeat blindly, but a 429/503 answer means the
        # request was not processed, so retrying POSTs on those statuses is sound.
        return make_session(
            {"Authorization": f"Bearer {key}", "JupiterOne-Account": account, "Content-Type": "application/json"},
            methods=frozenset({"GET", "POST"}),
            backoff=self.backoff,
            pool_size=self.max_concurrency,
        )

    def job_target(self, scope: str) -> dict[str, str]:
        """Where a job's DIFF applies: the integration instance if configured, else an api scope."""
        if self.integration_instance_id:
            return {"source": "integration-external", "integrationInstanceId": self.integration_instance_id}
        return {"source": "api", "scope": scope}

    # -- the job protocol (every call answers {"job": {...}}) -------------------------------
    def post(self, path: str, body: bytes | dict, headers: dict[str, str] | None = None) -> dict[str, Any]:
        content = {"data": body} if isinstance(body, bytes) else {"json": body}
        return self._job("POST", f"{JOBS}{path}", headers=headers, **content)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._job("GET", f"{JOBS}/{job_id}")

    def _job(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        body = self.request_json(method, path, **kwargs)
        job = body.get("job") if isinstance(body, dict) else None
        if not isinstance(job, dict) or not isinstance(job.get("id"), str) or "status" not in job:
            raise self._error(method, path, None, "the answer has no job object with an id and a status")
        return job

    def create_job(self, scope: str) -> dict[str, Any]:
        return self.post("", {**self.job_target(scope), "syncMode": "DIFF"})

    def upload(self, job_id: str, kind: str, body: bytes) -> dict[str, Any]:
        """POST one pre-serialised batch (`{"entities": [...]}` or `{"relationships": [...]}`),
        gzipped. The correlation id is set once here, so urllib3's retries of this batch reuse it."""
        headers = {"JupiterOne-Correlation-Id": str(uuid.uuid4()), "Content-Encoding": "gzip"}
        return self.post(f"/{job_id}/{kind}", gzip.compress(body, compresslevel=5), headers=headers)

    def finalize(self, job_id: str, partial_types: list[str]) -> dict[str, Any]:
        return self.post(f"/{job_id}/finalize", {"partialDatasets": {"types": partial_types}})

    def abort(self, job_id: str, reason: str) -> dict[str, Any]:
        return self.post(f"/{job_id}/abort", {"reason": reason[:1000]})

    # -- GraphQL (questions and rules) -----------------------------------------------------------
    def graphql(self, operation: str, document: str, variables: dict[str, Any]) -> dict[str, Any]:
        """One GraphQL call; `operation` names it in errors. JupiterOne answers errors as 200 with
        an `errors` list, which becomes an ApiError like any other failure."""
        base, path = self.graphql_endpoint
        body = self.request_json("POST", path, base=base, json={"query": document, "variables": variables})
        if not isinstance(body, dict) or body.get("errors") or not isinstance(body.get("data"), dict):
            problems = body.get("errors") if isinstance(body, dict) else body
            raise self._error("POST", f"{path} ({operation})", 200, str(problems))
        return body["data"]

    def _pages(self, operation: str, field: str, items: str, **variables: Any) -> list[dict[str, Any]]:
        found, cursor = [], None
        while True:
            page = self.graphql(operation, GRAPHQL[operation], {**variables, "cursor": cursor})[field]
            found += page[items]
            if not page["pageInfo"]["hasNextPage"]:
                return found
            cursor = page["pageInfo"]["endCursor"]

    def list_questions(self, tag: str) -> list[dict[str, Any]]:
        return self._pages("list_questions", "questions", "questions", tags=[tag])

    def create_question(self, question: dict[str, Any]) -> dict[str, Any]:
        return self.graphql("create_question", GRAPHQL["create_question"], {"question": question})["createQuestion"]

    def update_question(self, question_id: str, update: dict[str, Any]) -> dict[str, Any]:
        variables = {"id": question_id, "update": update}
        return self.graphql("update_question", GRAPHQL["update_question"], variables)["updateQuestion"]

    def delete_question(self, question_id: str) -> None:
        self.graphql("delete_question", GRAPHQL["delete_question"], {"id": question_id})

    def list_rules(self) -> list[dict[str, Any]]:
        return self._pages("list_rules", "listRuleInstances", "questionInstances")

    def create_rule(self, rule: dict[str, Any]) -> dict[str, Any]:
        return self.graphql("create_rule", GRAPHQL["create_rule"], {"instance": rule})["createInlineQuestionRuleInstance"]

    def update_rule(self, rule: dict[str, Any]) -> dict[str, Any]:
        return self.graphql("update_rule", GRAPHQL["update_rule"], {"instance": rule})["updateInlineQuestionRuleInstance"]

    def delete_rule(self, rule_id: str) -> None:
        self.graphql("delete_rule", GRAPHQL["delete_rule"], {"id": rule_id})

    def evaluate_rule(self, rule_id: str) -> None:
        """Evaluate one rule now, instead of at its next polling interval."""
        self.graphql("evaluate_rule", GRAPHQL["evaluate_rule"], {"id": rule_id})

    def test_connection(self) -> tuple[bool, str]:
        """Airflow UI 'Test' button. The sync API's cheapest authenticated call is the status of a
        job that cannot exist: JupiterOne checks the account and key first (401), then answers that
        there is no such job (404), so a 404 means the credentials were accepted."""
        try:
            self.get_job(str(uuid.UUID(int=0)))
        except ApiError as exc:
            if exc.status != 404:
                return False, str(exc)
        except Exception as exc:  # shown to the user as the test result
            return False, str(exc)
        return True, f"Account {self.connection.login!r} and key accepted by {self.base_url}"
