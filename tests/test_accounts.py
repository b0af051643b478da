"""Several Sysdig accounts from one deployment: one DAG per configured connection, each with its
own scope, storage prefix, guard state and tag.AccountName, publishing into one JupiterOne."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from conftest import REPO, SYSDIG_TOKEN, task_states

from sysdig_j1.accounts import Account, configured_accounts
from sysdig_j1_emulators.sysdig_org import OrgSpec


def test_the_default_is_the_single_account_setup():
    assert configured_accounts(None) == [Account("sysdig_default", "jupiterone_default")]
    assert configured_accounts(None)[0].dag_id == "sysdig_jupiterone"


def test_accounts_are_listed_with_optional_jupiterone_connections():
    accounts = configured_accounts(" sysdig_default , sysdig_eu=jupiterone_eu,sysdig.lab")

    assert [(a.dag_id, a.sysdig_conn_id, a.jupiterone_conn_id) for a in accounts] == [
        ("sysdig_jupiterone", "sysdig_default", "jupiterone_default"),
        ("sysdig_jupiterone__sysdig_eu", "sysdig_eu", "jupiterone_eu"),
        ("sysdig_jupiterone__sysdig.lab", "sysdig.lab", "jupiterone_default"),
    ]


@pytest.mark.parametrize(("setting", "problem"), [
    ("sysdig_a,sysdig_a", "lists sysdig_a more than once"),
    ("sysdig a", "'sysdig a' is not"),
    ("sysdig_a,", "'' is not"),
    ("=jupiterone_x", "'=jupiterone_x' is not"),
])
def test_a_malformed_list_is_refused_with_the_reason(setting, problem):
    with pytest.raises(ValueError, match=problem):
        configured_accounts(setting)


def test_two_accounts_publish_side_by_side_and_neither_deletes_the_other(
    airflow_db, start_sysdig, jupiterone, connect, monkeypatch, tmp_path
):
    from airflow.dag_processing.dagbag import DagBag

    us = start_sysdig(OrgSpec(customer_id=5000001))
    eu = start_sysdig(OrgSpec(seed=8, users=12, teams=2, scans=9, customer_id=6000002))
    connect(us, jupiterone, account_name="us-prod")
    monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_EU", json.dumps(
        {"conn_type": "sysdig", "host": eu.url, "password": SYSDIG_TOKEN, "extra": {"region": "eu1", "account_name": "eu-prod"}}))
    monkeypatch.setenv("SYSDIG_J1_ACCOUNTS", "sysdig_default,sysdig_eu")
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    us_dag, eu_dag = bag.get_dag("sysdig_jupiterone"), bag.get_dag("sysdig_jupiterone__sysdig_eu")

    for dag in (us_dag, eu_dag):
        assert set(task_states(dag.test()).values()) == {"success"}

    scopes = {"us-prod": "sysdig-j1:5000001", "eu-prod": "sysdig-j1:6000002"}
    assert jupiterone.summary(scopes["us-prod"])["entities"]["sysdig_user"] == 30
    assert jupiterone.summary(scopes["eu-prod"])["entities"]["sysdig_user"] == 12
    for name, scope in scopes.items():
        assert {e["tag.AccountName"] for e in jupiterone.graph(scope)["entities"]} == {name}
    us_before = jupiterone.graph(scopes["us-prod"])

    requests.post(f"{eu.url}/_emulator/users/10003/remove", timeout=5).raise_for_status()
    assert set(task_states(eu_dag.test()).values()) == {"success"}

    assert jupiterone.graph(scopes["us-prod"]) == us_before  # the other account's publish left it alone
    assert jupiterone.summary(scopes["eu-prod"])["entities"]["sysdig_user"] == 11
    storage = Path(tmp_path, "storage")
    for dag_id, scope in (("sysdig_jupiterone", scopes["us-prod"]), ("sysdig_jupiterone__sysdig_eu", scopes["eu-prod"])):
        assert (storage / dag_id / "_published" / f"{scope.replace(':', '_')}.json").exists()  # its own guard state
