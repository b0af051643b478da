"""JupiterOne questions and alert rules as code: `include/jupiterone/{questions,rules}.yaml`.

Loaded and checked here (names unique, enums valid, every query sound against the data model, see
`j1ql.check`), turned into JupiterOne's GraphQL inputs, and deployed idempotently: each question
or rule is found in JupiterOne by its name among the objects carrying the `sysdig-j1` tag, created
when missing, updated only when what we manage differs, never duplicated; objects with the tag
that the files no longer list are removed only when asked to.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import yaml

from sysdig_j1 import j1ql
from sysdig_j1.model import RELATIONSHIPS

log = logging.getLogger(__name__)

OWNER_TAG = "sysdig-j1"  # marks what this project manages in JupiterOne
RESULTS_ARE = ("BAD", "GOOD", "INFORMATIVE", "UNKNOWN")
POLLING_INTERVALS = ("DISABLED", "FIFTEEN_MINUTES", "THIRTY_MINUTES", "ONE_HOUR", "FOUR_HOURS", "EIGHT_HOURS",
                     "TWELVE_HOURS", "ONE_DAY", "ONE_WEEK")
ALERT_LEVELS = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFO")
QUERY_NAME = "query0"  # each question and rule here has one query


class ContentError(ValueError):
    """A question or rule file that cannot be deployed as it is."""


@dataclass(frozen=True)
class Question:
    name: str
    title: str
    description: str
    query: str
    tags: tuple[str, ...] = ()
    resultsAre: str = "INFORMATIVE"
    pollingInterval: str = "ONE_DAY"

    def as_input(self) -> dict:
        """CreateQuestionInput, every field it has (as JupiterOne's own clients send it: null or
        empty where this project sets nothing). Its `name` is how deploys find it again."""
        return {
            "name": self.name, "title": self.title, "description": self.description,
            "tags": sorted({*self.tags, OWNER_TAG}), "pollingInterval": self.pollingInterval, "showTrend": False,
            "queries": [{"name": QUERY_NAME, "query": self.query, "version": "v1", "resultsAre": self.resultsAre,
                         "includeDeleted": False}],
            "compliance": [], "variables": None, "widgetId": None,
        }


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    query: str
    alertLevel: str
    tags: tuple[str, ...] = ()
    pollingInterval: str = "ONE_DAY"
    includeDeleted: bool = False

    def as_input(self) -> dict:
        """CreateInlineQuestionRuleInstanceInput: alert (at `alertLevel`) when the query returns
        results it did not return at the rule's previous evaluation."""
        return {
            "name": self.name, "description": self.description, "tags": sorted({*self.tags, OWNER_TAG}),
            "specVersion": 1, "pollingInterval": self.pollingInterval, "notifyOnFailure": True,
            "triggerActionsOnNewEntitiesOnly": True, "ignorePreviousResults": False,
            "question": {"queries": [{"name": QUERY_NAME, "query": self.query, "version": "v1",
                                      "includeDeleted": self.includeDeleted}]},
            "operations": [{
                "when": {"type": "FILTER", "version": 1,
                         "condition": ["AND", [f"queries.{QUERY_NAME}.total", "!=", 0]]},
                "actions": [{"type": "SET_PROPERTY", "targetProperty": "alertLevel", "targetValue": self.alertLevel},
                            {"type": "CREATE_ALERT"}],
            }],
            "outputs": ["alertLevel"],
            "templates": None, "remediationSteps": "", "labels": None, "j1Internal": False,
        }


def load(folder: Path) -> tuple[list[Question], list[Rule]]:
    """Both files, checked; ContentError names the file, the entry and every problem."""
    questions = [_entry(Question, item, folder / "questions.yaml") for item in _items(folder / "questions.yaml")]
    rules = [_entry(Rule, item, folder / "rules.yaml") for item in _items(folder / "rules.yaml")]
    for path, entries in ((folder / "questions.yaml", questions), (folder / "rules.yaml", rules)):
        names = [e.name for e in entries]
        if repeated := sorted({n for n in names if names.count(n) > 1}):
            raise ContentError(f"{path}: names used twice: {', '.join(repeated)}")
    return questions, rules


def _items(path: Path) -> list[dict]:
    items = yaml.safe_load(path.read_text()) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ContentError(f"{path}: expected a list of mappings")
    return items


def _entry(kind: type, item: dict, path: Path):
    where = f"{path.name} entry {item.get('name', '?')!r}"
    try:
        entry = kind(**{k: tuple(v) if k == "tags" else v for k, v in item.items()})
    except TypeError as exc:
        raise ContentError(f"{where}: {exc}") from None
    problems = []
    for field, allowed in (("resultsAre", RESULTS_ARE), ("pollingInterval", POLLING_INTERVALS),
                           ("alertLevel", ALERT_LEVELS)):
        if hasattr(entry, field) and getattr(entry, field) not in allowed:
            problems.append(f"{field} {getattr(entry, field)!r} is not one of {', '.join(allowed)}")
    try:
        problems += j1ql.check(j1ql.parse(entry.query))
    except j1ql.J1qlError as exc:
        problems.append(str(exc))
    if problems:
        raise ContentError(f"{where}: " + "; ".join(problems))
    return entry


# -- deploying --------------------------------------------------------------------------------------
def plan(desired: list[dict], existing: list[dict], fields: tuple[str, ...], remove_unlisted: bool) -> dict:
    """What to do to make JupiterOne hold `desired` (GraphQL inputs), given what it holds with our
    tag (`existing`, each with an `id`, rules with their `version`): create, update (with the id and
    the version it replaces), keep or remove, by name."""
    by_name = {item["name"]: item for item in existing}
    actions: dict[str, list] = {"create": [], "update": [], "unchanged": []}
    for item in desired:
        current = by_name.get(item["name"])
        if current is None:
            actions["create"].append(item)
        elif any(_normal(f, current.get(f)) != _normal(f, item.get(f)) for f in fields):
            version = {"version": current["version"]} if "version" in current else {}
            actions["update"].append({"id": current["id"], **version, **item})
        else:
            actions["unchanged"].append(item["name"])
    listed = {item["name"] for item in desired}
    unlisted = [{"id": item["id"], "name": item["name"]} for item in existing if item["name"] not in listed]
    actions["remove" if remove_unlisted else "unlisted"] = unlisted
    return actions


def _normal(field: str, value: object) -> object:
    """Tags compare as sets; operations without the `id` JupiterOne gives every action; everything
    else as it is."""
    if field == "operations" and isinstance(value, list):
        return [{**op, "actions": [{k: v for k, v in a.items() if k != "id"} for a in op.get("actions") or []]}
                for op in value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return sorted(value)
    return value


QUESTION_FIELDS = ("title", "description", "tags", "pollingInterval", "queries")
RULE_FIELDS = ("description", "tags", "pollingInterval", "question", "operations", "triggerActionsOnNewEntitiesOnly")
# What an update carries: QuestionUpdate has no name and no variables; a rule's update input has
# no j1Internal (and adds the id and the version it replaces, see `plan`).
QUESTION_UPDATE = ("title", "queries", "compliance", "tags", "description", "showTrend", "pollingInterval", "widgetId")
RULE_UPDATE_LACKS = ("j1Internal",)


def deploy(hook, questions: list[Question], rules: list[Rule], *, dry_run: bool, remove_unlisted: bool) -> dict:
    """Make JupiterOne hold exactly these questions and rules (by name, among those with our tag).
    Returns, per kind, the names created, updated, unchanged and removed (or left unlisted); a dry
    run only plans."""
    kinds = {
        "questions": (questions, QUESTION_FIELDS, lambda: hook.list_questions(OWNER_TAG), hook.create_question,
                      lambda item: hook.update_question(item["id"], {k: item[k] for k in QUESTION_UPDATE}),
                      hook.delete_question),
        "rules": (rules, RULE_FIELDS, hook.list_rules, hook.create_rule,
                  lambda item: hook.update_rule({k: v for k, v in item.items() if k not in RULE_UPDATE_LACKS}),
                  hook.delete_rule),
    }
    result: dict = {"dry_run": dry_run}
    for kind, (entries, fields, listed, create, update, remove) in kinds.items():
        existing = [item for item in listed() if OWNER_TAG in (item.get("tags") or [])]
        actions = plan([entry.as_input() for entry in entries], existing, fields, remove_unlisted)
        if not dry_run:
            for item in actions["create"]:
                create(item)
            for item in actions["update"]:
                update(item)
            for item in actions.get("remove", []):
                remove(item["id"])
        result[kind] = {action: sorted(i if isinstance(i, str) else i["name"] for i in items)
                        for action, items in actions.items()}
        log.info("%s%s: %s", "dry run, would change " if dry_run else "", kind,
                 {action: names for action, names in result[kind].items() if names})
    return result



# -- alerting now rather than at the next poll ----------------------------------------------------
def evaluate_changed(hook, changed_types: list[str]) -> list[str]:
    """Ask JupiterOne to evaluate now (`evaluateRuleInstance`) each of our rules whose query reads
    a type this publish changed: an entity type, or either end of a relationship type. Returns the
    names of the rules evaluated."""
    touched = set(changed_types)
    touched |= {end.type for r in RELATIONSHIPS if r.type in touched for end in (r.source, r.target)}
    evaluated = []
    for rule in hook.list_rules():
        if OWNER_TAG not in (rule.get("tags") or []):
            continue
        reads = set().union(*(j1ql.types_read(q["query"]) for q in rule["question"]["queries"]))
        if reads & touched:
            hook.evaluate_rule(rule["id"])
            evaluated.append(rule["name"])
    log.info("evaluated now, for what this publish changed: %s", ", ".join(sorted(evaluated)) or "no rule")
    return sorted(evaluated)
