"""Questions and alert rules as code: every query checked against the data model, the J1QL subset,
the JupiterOne emulator's GraphQL and rule engine, and an idempotent deploy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import yaml
from conftest import J1_ACCOUNT, J1_KEY, REPO

from sysdig_j1 import j1ql, monitoring
from sysdig_j1_emulators.jupiterone_graphql import ENUMS, evaluate
from sysdig_j1.hooks.http import ApiError
from sysdig_j1.hooks.jupiterone import GRAPHQL, JupiterOneHook

CONTENT = REPO / "include" / "jupiterone"
ORIGINAL_FIVE = {  # the questions JupiterOne's own Sysdig integration shipped
    "FIND sysdig_user WITH active != true",
    "FIND sysdig_user WITH admin = true",
    "FIND sysdig_user WITH lastSeenOnSecure >= date.now - 30 days",
    "FIND sysdig_team WITH default = true",
    "FIND sysdig_user WITH active = true THAT HAS sysdig_team WITH canUseRapidResponse = true",
}


def test_every_question_and_rule_is_sound_against_the_data_model():
    questions, rules = monitoring.load(CONTENT)  # raises, naming the entry, on anything unsound

    assert ORIGINAL_FIVE <= {q.query for q in questions} and len(questions) >= 9
    assert {r.name for r in rules} == {
        "sysdig-new-admin", "sysdig-user-disabled", "sysdig-user-removed", "sysdig-user-added-to-rapid-response-team",
        "sysdig-team-removed", "sysdig-image-scan-failing-policy", "sysdig-kev-cve-running",
        "sysdig-new-admin-service-account", "sysdig-new-access-key"}
    assert all(r.alertLevel and r.pollingInterval for r in rules)


@pytest.mark.parametrize(("change", "problem"), [
    ({"query": "FIND sysdig_user WITH isAdmin = true"}, "'sysdig_user' has no property 'isAdmin'"),
    ({"query": "FIND sysdig_admin WITH admin = true"}, "no entity type or class 'sysdig_admin'"),
    ({"query": "FIND sysdig_user THAT OWNS sysdig_team"}, "no OWNS relationship between 'sysdig_user' and 'sysdig_team'"),
    ({"query": "FIND sysdig_user WITH admin = true AND"}, "unexpected end"),
    ({"alertLevel": "URGENT"}, "alertLevel 'URGENT' is not one of CRITICAL"),
    ({"pollingInterval": "HOURLY"}, "pollingInterval 'HOURLY' is not one of DISABLED"),
])
def test_a_rule_that_names_what_the_model_lacks_breaks_a_test_not_an_alert(tmp_path, change, problem):
    rules = yaml.safe_load((CONTENT / "rules.yaml").read_text())
    rules[0].update(change)
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    (tmp_path / "questions.yaml").write_text((CONTENT / "questions.yaml").read_text())

    with pytest.raises(monitoring.ContentError, match=rf"rules.yaml entry 'sysdig-new-admin': .*{problem}"):
        monitoring.load(tmp_path)


def test_the_j1ql_subset():
    query = j1ql.parse("find User with admin = true and lastSeenOnSecure < date.now - 2 weeks or status = 'pending' "
                       "as u that !HAS sysdig_team return u.email, u")

    first, second = query.steps
    assert (first.target, first.alias, second.verb, second.negated) == ("User", "u", "HAS", True)
    assert [[c.property for c in group] for group in first.conditions.any_of] == [["admin", "lastSeenOnSecure"],
                                                                                  ["status"]]
    assert first.conditions.any_of[0][1].value == j1ql.Relative(14 * 86_400_000)
    assert query.returns == (("u", "email"), ("u", None)) and j1ql.check(query) == []
    with pytest.raises(j1ql.J1qlError, match="expected FIND"):
        j1ql.parse("SELECT users")
    ahead = j1ql.parse("FIND sysdig_finding WITH riskAcceptExpiresOn < date.now + 3 days THAT IS cve")
    assert ahead.steps[0].conditions.any_of[0][0].value == j1ql.Relative(-3 * 86_400_000)  # in the future
    assert j1ql.check(ahead) == []  # the mapped relationship's target is a type queries may name
    assert j1ql.check(j1ql.parse("FIND cve WITH severity = 'high'")) == ["'cve' has no property 'severity'"]


def test_the_evaluator_follows_relationships_both_ways_and_compares_like_jupiterone():
    now = 10 * 86_400_000
    entities = [
        {"_key": "u1", "_type": "sysdig_user", "_class": "User", "admin": True, "lastSeenOnSecure": now - 1},
        {"_key": "u2", "_type": "sysdig_user", "_class": "User", "admin": False},
        {"_key": "t1", "_type": "sysdig_team", "_class": "Team", "canUseRapidResponse": True},
    ]
    has = [{"_key": "t1|has|u1", "_class": "HAS", "_fromEntityKey": "t1", "_toEntityKey": "u1"}]

    def keys(query: str) -> list[str]:
        return [e["_key"] for e in evaluate(query, entities, has, now)]

    assert keys("FIND sysdig_user THAT HAS sysdig_team WITH canUseRapidResponse = true") == ["u1"]
    assert keys("FIND sysdig_team THAT HAS User WITH admin = true") == ["t1"]
    assert keys("FIND sysdig_user THAT !HAS sysdig_team") == ["u2"]
    assert keys("FIND User WITH lastSeenOnSecure >= date.now - 1 day") == ["u1"]
    assert keys("FIND sysdig_user WITH lastSeenOnSecure = undefined") == ["u2"]
    assert keys("FIND sysdig_user WITH admin != true") == ["u2"]


@pytest.fixture
def j1_hook(jupiterone, monkeypatch) -> JupiterOneHook:
    monkeypatch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(
        {"conn_type": "jupiterone", "host": jupiterone.url, "login": J1_ACCOUNT, "password": J1_KEY}))
    return JupiterOneHook(backoff=0.01)


@pytest.mark.parametrize(("instance_change", "error"), [
    ({"pollingInterval": "HOURLY"}, 'pollingInterval: Value "HOURLY" does not exist in "SchedulerPollingInterval" enum'),
    ({"severity": "HIGH"}, 'Field "severity" is not defined by type "CreateInlineQuestionRuleInstanceInput"'),
    ({"operations": [{"when": {"type": "FILTER", "condition": []}, "actions": [{"type": "SHOUT"}]}]},
     "action type 'SHOUT' is not one of"),
    ({"question": {"queries": [{"name": "q", "query": "FIND sysdig_user WITH"}]}}, "invalid J1QL"),
])
def test_the_emulator_validates_rule_inputs_as_jupiterone_does(j1_hook, instance_change, error):
    _, rules = monitoring.load(CONTENT)

    with pytest.raises(ApiError, match=rf"POST /graphql \(create_rule\) failed: HTTP 200: .*{error}"):
        j1_hook.create_rule({**rules[0].as_input(), **instance_change})


def test_monitoring_uses_jupiterones_published_enums():
    assert (monitoring.RESULTS_ARE, monitoring.POLLING_INTERVALS) == (
        tuple(ENUMS["QueryResultsAre"]), tuple(ENUMS["SchedulerPollingInterval"]))


def _question_update_with_name(monkeypatch):
    monkeypatch.setattr(monitoring, "QUESTION_UPDATE", (*monitoring.QUESTION_UPDATE, "name"))


def _rule_update_without_version(monkeypatch):
    monkeypatch.setattr(monitoring, "RULE_UPDATE_LACKS", (*monitoring.RULE_UPDATE_LACKS, "version"))


def _action_ids_compared(monkeypatch):
    normal = monitoring._normal
    monkeypatch.setattr(monitoring, "_normal", lambda field, value: normal("", value))


def _questions_searched_by_text(monkeypatch):
    monkeypatch.setitem(GRAPHQL, "list_questions", GRAPHQL["list_questions"].replace("$tags: [String]", "$searchQuery: "
                        "String").replace("tags: $tags", "searchQuery: $searchQuery"))
    monkeypatch.setattr(JupiterOneHook, "list_questions", lambda self, tag: self._pages(
        "list_questions", "questions", "questions", searchQuery=tag))


@pytest.mark.parametrize("regress", [
    _question_update_with_name, _rule_update_without_version, _action_ids_compared, _questions_searched_by_text])
def test_each_deploy_defect_against_the_published_api_fails_the_deploy_test(j1_hook, jupiterone, tmp_path, regress,
                                                                            monkeypatch):
    """The four ways the deploy once differed from JupiterOne's API, each brought back: the
    deploy test below must fail (a GraphQL error, or a second deploy that is not a no-op)."""
    regress(monkeypatch)
    with pytest.raises((ApiError, AssertionError)):
        test_deploying_twice_changes_nothing_the_second_time(j1_hook, jupiterone, tmp_path)


def test_deploying_twice_changes_nothing_the_second_time(j1_hook, jupiterone, tmp_path):
    questions, rules = monitoring.load(CONTENT)

    dry = monitoring.deploy(j1_hook, questions, rules, dry_run=True, remove_unlisted=False)
    assert jupiterone.questions() == jupiterone.rules() == [] and len(dry["rules"]["create"]) == len(rules)
    first = monitoring.deploy(j1_hook, questions, rules, dry_run=False, remove_unlisted=False)
    stored = (jupiterone.questions(), jupiterone.rules())
    second = monitoring.deploy(j1_hook, questions, rules, dry_run=False, remove_unlisted=False)

    assert first["questions"]["create"] == sorted(q.name for q in questions)
    assert first["rules"]["create"] == sorted(r.name for r in rules)
    assert second["questions"] == {"create": [], "update": [], "unchanged": sorted(q.name for q in questions),
                                   "unlisted": []}
    assert second["rules"]["unchanged"] == sorted(r.name for r in rules) and not second["rules"]["create"]
    assert (jupiterone.questions(), jupiterone.rules()) == stored  # nothing duplicated, nothing touched
    assert all("sysdig-j1" in q["tags"] for q in stored[0])

    assert all(action["id"] for rule in stored[1] for op in rule["operations"] for action in op["actions"])
    assert {rule["version"] for rule in stored[1]} == {1}

    # A question and a rule edited, a rule dropped from the file: the edits are applied (a rule's
    # naming the version it replaces), the drop only with the flag.
    edited = [rules[0].__class__(**{**rules[0].__dict__, "alertLevel": "CRITICAL"}), *rules[1:-1]]
    retitled = [questions[0].__class__(**{**questions[0].__dict__, "title": "Admins, again"}), *questions[1:]]
    third = monitoring.deploy(j1_hook, retitled, edited, dry_run=False, remove_unlisted=False)
    assert (third["rules"]["update"], third["rules"]["unlisted"]) == ([rules[0].name], [rules[-1].name])
    assert third["questions"]["update"] == [questions[0].name]
    assert "Admins, again" in [q["title"] for q in jupiterone.questions()] and len(jupiterone.questions()) == len(
        questions)
    assert {r["name"]: r["version"] for r in jupiterone.rules()}[rules[0].name] == 2
    assert len(jupiterone.rules()) == len(rules)
    assert monitoring.deploy(j1_hook, retitled, edited, dry_run=True, remove_unlisted=False)["rules"]["update"] == []
    fourth = monitoring.deploy(j1_hook, questions, edited, dry_run=False, remove_unlisted=True)
    assert fourth["rules"]["remove"] == [rules[-1].name] and len(jupiterone.rules()) == len(rules) - 1


def test_the_rules_dag_deploys_and_a_dry_run_sends_nothing(airflow_db, jupiterone, j1_hook):
    from airflow.dag_processing.dagbag import DagBag

    from conftest import task_states

    rules_dag = DagBag(dag_folder=str(REPO / "dags")).get_dag("sysdig_jupiterone_rules")

    assert set(task_states(rules_dag.test(run_conf={"dry_run": True})).values()) == {"success"}
    assert jupiterone.rules() == []
    assert set(task_states(rules_dag.test(run_conf={"dry_run": False})).values()) == {"success"}
    questions, rules = monitoring.load(CONTENT)
    assert (len(jupiterone.rules()), len(jupiterone.questions())) == (len(rules), len(questions)) == (9, 19)
