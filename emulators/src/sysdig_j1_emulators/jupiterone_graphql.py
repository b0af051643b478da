"""The part of JupiterOne's GraphQL API that manages questions and rules, and a J1QL evaluator.

Questions: `questions`, `createQuestion`, `updateQuestion`, `deleteQuestion`. Rules:
`listRuleInstances`, `createInlineQuestionRuleInstance`, `updateInlineQuestionRuleInstance`,
`deleteRuleInstance`, `evaluateRuleInstance` (evaluate one rule now). An operation is recognised by its root field (the documents are not parsed
as GraphQL). Its input variables are held to JupiterOne's published input types
(`published/jupiterone-graphql-inputs.json`, from the generated client of JupiterOne's terraform
provider): a field the type lacks is an error, every field that client always sends must be there
(null where nothing is set), enums are checked; then to what the API does with them (queries that
parse, the operations' `when`/`actions` shapes). As the API does, questions are searched by title
and description (`searchQuery`) or by tag (`tags`), rules carry a `version` that an update must
name and increments, and every action gets an `id`. Errors are answered as GraphQL errors: HTTP
200 with an `errors` list.

`evaluate` runs a query of the J1QL subset (`sysdig_j1.j1ql`) against a graph whose objects carry
JupiterOne's metadata (`_createdOn`, `_beginOn`, `_deleted`); `Rules.evaluate` is what
JupiterOne's rule engine does at each polling interval, on demand (emulator-specific): with
`triggerActionsOnNewEntitiesOnly`, a rule acts on the results its previous evaluation did not have.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sysdig_j1 import j1ql

PUBLISHED = json.loads((Path(__file__).parent / "published" / "jupiterone-graphql-inputs.json").read_text())
INPUT_TYPES: dict[str, dict[str, dict]] = PUBLISHED["inputTypes"]
ENUMS: dict[str, list[str]] = PUBLISHED["enums"]
SCALARS = {"string": str, "bool": bool, "int": int}  # Go types of the generated client
ACTION_TYPES = ("SET_PROPERTY", "CREATE_ALERT", "SEND_EMAIL", "SEND_SLACK_MESSAGE", "CREATE_JIRA_TICKET", "WEBHOOK")
ROOT_FIELD = re.compile(r"\{\s*(\w+)\s*[({]")


class GraphQLError(Exception):
    """Answered as `{"data": null, "errors": [{"message", "extensions": {"code"}}]}`."""

    def __init__(self, message: str, code: str = "BAD_USER_INPUT") -> None:
        super().__init__(message)
        self.code = code


# -- J1QL ------------------------------------------------------------------------------------------
def evaluate(query: str, entities: list[dict], relationships: list[dict], now_ms: int) -> list[dict]:
    """The entities the query finds (its FIND step's), as JupiterOne returns them for a rule."""
    parsed = j1ql.parse(query)
    first, *rest = parsed.steps
    roots = {e["_key"]: e for e in entities if _matches(e, first, now_ms)}
    reached = {key: {key} for key in roots}  # per root, the entities the previous step reached
    by_key = {e["_key"]: e for e in entities}
    for step in rest:
        linked: dict[str, set[str]] = {}
        for rel in relationships:
            if rel["_class"].upper() != step.verb:
                continue
            for here, there in ((rel["_fromEntityKey"], rel["_toEntityKey"]), (rel["_toEntityKey"], rel["_fromEntityKey"])):
                if there in by_key and _matches(by_key[there], step, now_ms):
                    linked.setdefault(here, set()).add(there)
        next_reached = {root: set().union(*(linked.get(key, set()) for key in keys)) for root, keys in reached.items()}
        if step.negated:
            reached = {root: keys for root, keys in reached.items() if not next_reached[root]}
        else:
            reached = {root: keys for root, keys in next_reached.items() if keys}
    return [roots[key] for key in sorted(reached)]


def _matches(obj: dict, step: j1ql.Step, now_ms: int) -> bool:
    classes = obj.get("_class")
    classes = classes if isinstance(classes, list) else [classes]
    if step.target != obj["_type"] and step.target not in classes:
        return False
    if step.conditions is None:
        return True
    return any(all(_holds(obj.get(c.property), c, now_ms) for c in group) for group in step.conditions.any_of)


def _holds(actual: object, comparison: j1ql.Comparison, now_ms: int) -> bool:
    expected = comparison.value
    if isinstance(expected, j1ql.Relative):
        expected = now_ms - expected.offset_ms
    op = comparison.op
    if op == "=":
        return actual == expected if expected is not None else actual is None
    if op == "!=":
        return actual != expected if expected is not None else actual is not None
    if actual is None or expected is None:
        return False
    if op == "~=":
        return isinstance(actual, str) and str(expected) in actual
    try:
        return {">": actual > expected, ">=": actual >= expected, "<": actual < expected, "<=": actual <= expected}[op]
    except TypeError:  # e.g. text against a number: no match, as in JupiterOne
        return False


# -- questions and rules -------------------------------------------------------------------------------
class Monitoring:
    """Questions and rule instances of the account, each rule's previous results, and the alerts
    its evaluations raised (emulator-specific: when, by which rule, for which results)."""

    def __init__(self, state: dict | None = None, graph: Callable[[], tuple[list, list]] | None = None) -> None:
        state = state or {}
        self.questions: dict[str, dict] = state.get("questions", {})
        self.rules: dict[str, dict] = state.get("rules", {})
        self.previous_results: dict[str, list[str]] = state.get("previousResults", {})
        self.alerts: list[dict] = state.get("alerts", [])
        self.graph = graph  # (entities, relationships) as J1QL sees them, for evaluateRuleInstance

    def to_state(self) -> dict:
        return {"questions": self.questions, "rules": self.rules, "previousResults": self.previous_results,
                "alerts": self.alerts}

    def handle(self, body: Any) -> dict:
        """A GraphQL request body -> the response body."""
        try:
            if not isinstance(body, dict) or not isinstance(body.get("query"), str):
                raise GraphQLError("the body needs a query string", "GRAPHQL_PARSE_FAILED")
            match = ROOT_FIELD.search(body["query"])
            operation = getattr(self, f"_{match.group(1)}", None) if match else None
            if operation is None:
                raise GraphQLError("operation not supported by the emulator", "GRAPHQL_VALIDATION_FAILED")
            variables = body.get("variables") or {}
            if not isinstance(variables, dict):
                raise GraphQLError("variables must be an object")
            return {"data": {match.group(1): operation(variables)}}
        except GraphQLError as error:
            return {"data": None, "errors": [{"message": str(error), "extensions": {"code": error.code}}]}

    # -- questions -----------------------------------------------------------------------------------
    def _questions(self, variables: dict) -> dict:
        search = (variables.get("searchQuery") or "").lower()
        tags = variables.get("tags") or []
        found = [q for q in self.questions.values()
                 if (not search or search in q["title"].lower() or search in (q.get("description") or "").lower())
                 and all(tag in (q.get("tags") or []) for tag in tags)]
        return {"questions": sorted(found, key=lambda q: q["id"]), "pageInfo": {"endCursor": None, "hasNextPage": False}}

    def _createQuestion(self, variables: dict) -> dict:
        question = {"id": str(uuid.uuid4()), **_question(check_input("CreateQuestionInput", variables.get("question"),
                                                                      "$question"))}
        self.questions[question["id"]] = question
        return question

    def _updateQuestion(self, variables: dict) -> dict:
        current = self._find(self.questions, variables.get("id"), "question")
        update = check_input("QuestionUpdate", variables.get("update"), "$update")
        self.questions[current["id"]] = {"id": current["id"], **_question({**current, **update})}
        return self.questions[current["id"]]

    def _deleteQuestion(self, variables: dict) -> dict:
        return self.questions.pop(self._find(self.questions, variables.get("id"), "question")["id"])

    # -- rules -----------------------------------------------------------------------------------
    def _listRuleInstances(self, variables: dict) -> dict:
        return {"questionInstances": sorted(self.rules.values(), key=lambda r: r["id"]),
                "pageInfo": {"endCursor": None, "hasNextPage": False}}

    def _createInlineQuestionRuleInstance(self, variables: dict) -> dict:
        instance = check_input("CreateInlineQuestionRuleInstanceInput", variables.get("instance"), "$instance")
        rule = {"id": str(uuid.uuid4()), "version": 1, **_rule(instance)}
        if any(r["name"] == rule["name"] for r in self.rules.values()):  # emulator-specific: names are unique
            raise GraphQLError(f"a rule instance named {rule['name']!r} exists")
        self.rules[rule["id"]] = rule
        return rule

    def _updateInlineQuestionRuleInstance(self, variables: dict) -> dict:
        instance = check_input("UpdateInlineQuestionRuleInstanceInput", variables.get("instance"), "$instance")
        current = self._find(self.rules, instance.get("id"), "rule instance")
        if instance["version"] != current["version"]:
            raise GraphQLError(f"rule instance {current['id']!r} is at version {current['version']}, "
                               f"not {instance['version']}: read it again before updating it")
        fields = {k: v for k, v in instance.items() if k not in ("id", "version")}
        self.rules[current["id"]] = {"id": current["id"], "version": current["version"] + 1, **_rule(fields)}
        return self.rules[current["id"]]

    def _deleteRuleInstance(self, variables: dict) -> dict:
        rule = self.rules.pop(self._find(self.rules, variables.get("id"), "rule instance")["id"])
        self.previous_results.pop(rule["id"], None)
        return rule

    def _evaluateRuleInstance(self, variables: dict) -> dict:
        """Evaluate one rule now, as its polling interval would."""
        rule = self._find(self.rules, variables.get("id"), "rule instance")
        entities, relationships = self.graph()
        evaluation = self._evaluate(rule, entities, relationships, int(time.time() * 1000))
        return {"id": str(uuid.uuid4()), "outputs": [{"name": "alertLevel", "value": evaluation["alertLevel"]}]}

    @staticmethod
    def _find(items: dict, item_id: object, what: str) -> dict:
        if item_id not in items:
            raise GraphQLError(f"{what} {item_id!r} not found", "NOT_FOUND")
        return items[item_id]

    # -- what the rule engine does at each polling interval ------------------------------------------
    def evaluate(self, entities: list[dict], relationships: list[dict], now_ms: int) -> list[dict]:
        """Every rule, once: its results, those its previous evaluation did not have, and the alert."""
        return [self._evaluate(rule, entities, relationships, now_ms)
                for rule in sorted(self.rules.values(), key=lambda r: r["name"])]

    def _evaluate(self, rule: dict, entities: list[dict], relationships: list[dict], now_ms: int) -> dict:
        results: set[str] = set()
        for query in rule["question"]["queries"]:
            live = [e for e in entities if query.get("includeDeleted") or not e.get("_deleted")]
            results |= {e["_key"] for e in evaluate(query["query"], live, relationships, now_ms)}
        previous = set(self.previous_results.get(rule["id"], []))
        new = sorted(results - previous) if rule.get("triggerActionsOnNewEntitiesOnly") else sorted(results)
        self.previous_results[rule["id"]] = sorted(results)
        level = next((a.get("targetValue") for op in rule["operations"] for a in op["actions"]
                      if a["type"] == "SET_PROPERTY" and a.get("targetProperty") == "alertLevel"), None)
        fired = bool(new) and any(a["type"] == "CREATE_ALERT" for op in rule["operations"] for a in op["actions"])
        if fired:
            self.alerts.append({"rule": rule["name"], "ruleId": rule["id"], "at": now_ms, "new": new,
                                "alertLevel": level})
        return {"name": rule["name"], "total": len(results), "new": new, "alert": fired,
                "alertLevel": level if fired else None}


def check_input(type_name: str, value: Any, where: str) -> dict:
    """`value` as JupiterOne's GraphQL layer takes a variable of a published input type, or the
    error it answers: no field the type lacks, every field the generated client always sends
    present (null allowed), values of the declared Go type and enum."""
    if not isinstance(value, dict):
        raise GraphQLError(f'{where}: expected a value of type "{type_name}"', "GRAPHQL_VALIDATION_FAILED")
    fields = INPUT_TYPES[type_name]
    unknown = sorted(value.keys() - fields.keys())
    if unknown:
        raise GraphQLError(f'{where}: Field "{unknown[0]}" is not defined by type "{type_name}".',
                           "GRAPHQL_VALIDATION_FAILED")
    for name, spec in fields.items():
        if name not in value and not spec["optional"]:
            raise GraphQLError(f'{where}: Field "{type_name}.{name}" was not provided.', "GRAPHQL_VALIDATION_FAILED")
        if value.get(name) is not None:
            _check_value(spec["goType"], value[name], f"{where}.{name}")
    return value


def _check_value(go_type: str, value: Any, where: str) -> None:
    if go_type.startswith("[]"):
        if not isinstance(value, list):
            raise GraphQLError(f"{where}: expected a list", "GRAPHQL_VALIDATION_FAILED")
        for n, item in enumerate(value):
            if item is not None:
                _check_value(go_type[2:], item, f"{where}[{n}]")
    elif go_type in INPUT_TYPES:
        check_input(go_type, value, where)
    elif go_type in ENUMS and value not in ENUMS[go_type]:
        raise GraphQLError(f'{where}: Value "{value}" does not exist in "{go_type}" enum.', "GRAPHQL_VALIDATION_FAILED")
    elif go_type in SCALARS and (not isinstance(value, SCALARS[go_type]) or go_type == "int" and isinstance(value, bool)):
        raise GraphQLError(f"{where}: expected a {go_type}, got {value!r}", "GRAPHQL_VALIDATION_FAILED")
    # other types (JSON, or input types the published file does not list) are taken as they come


def _question(question: dict) -> dict:
    queries = question.get("queries")
    if not question.get("title") or not queries:
        raise GraphQLError("a question needs a title and at least one query")
    for query in queries:
        _query(query)
    return question


def _rule(instance: dict) -> dict:
    _require(instance, "name", str)
    queries = _require(_require(instance, "question", dict), "queries", list)
    if not queries:
        raise GraphQLError("a rule's question needs at least one query")
    for query in queries:
        _query(query)
    operations = _require(instance, "operations", list)
    for operation in operations:
        when = _require(operation, "when", dict)
        if when.get("type") != "FILTER" or not isinstance(when.get("condition"), list):
            raise GraphQLError("operations[].when must be {type: FILTER, version, condition: [...]}")
        actions = _require(operation, "actions", list)
        for action in actions:
            if not isinstance(action, dict) or action.get("type") not in ACTION_TYPES:
                raise GraphQLError(f"action type {action.get('type') if isinstance(action, dict) else action!r} "
                                   f"is not one of {', '.join(ACTION_TYPES)}")
            if action["type"] == "SET_PROPERTY" and not {"targetProperty", "targetValue"} <= action.keys():
                raise GraphQLError("SET_PROPERTY needs targetProperty and targetValue")
        operation["actions"] = [{**action, "id": action.get("id") or str(uuid.uuid4())} for action in actions]
    return instance


def _query(query: Any) -> None:
    if not isinstance(query, dict):
        raise GraphQLError("each query must be an object")
    text = _require(query, "query", str)
    _require(query, "name", str)
    try:
        j1ql.parse(text)
    except j1ql.J1qlError as error:  # JupiterOne rejects queries it cannot parse
        raise GraphQLError(f"invalid J1QL: {error}") from None


def _require(container: dict, name: str, kind: type) -> Any:
    value = container.get(name)
    if not isinstance(value, kind):
        raise GraphQLError(f"{name} is required ({kind.__name__})")
    return value


