"""The DAG folder imports cleanly without touching the network; the provider registers its
connection types with labelled fields."""

from __future__ import annotations

import json
import socket
from datetime import timedelta

import pytest
from conftest import REPO


def test_dag_folder_imports_without_errors_or_network(airflow_db, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    attempts = []

    def no_network(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network access at parse time: {address}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: no_network(None, address))

    bag = DagBag(dag_folder=str(REPO / "dags"))

    assert bag.import_errors == {}
    assert attempts == []
    dag = bag.get_dag("sysdig_jupiterone")
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert {t.task_id for t in dag.tasks} == {
        "validate_config", "extract_account", "extract_users", "extract_teams", "extract_team_memberships",
        "extract_roles", "extract_service_accounts", "extract_team_service_accounts", "extract_access_keys", "extract_zones", "extract_sso_settings",
        "extract_ip_filters", "extract_clusters", "extract_hosts",
        "extract_image_scans", "extract_findings", "transform", "check_quality", "load", "evaluate_alert_rules",
        "reset_audit_watcher", "check_extracts_complete",
    }
    extracts = {t for t in dag.task_dict if t.startswith("extract_")}
    assert dag.task_dict["transform"].upstream_task_ids >= extracts
    assert dag.task_dict["load"].upstream_task_ids == {"transform", "check_quality"}
    assert dag.task_dict["extract_team_memberships"].upstream_task_ids == {"validate_config", "extract_teams"}
    assert dag.task_dict["extract_findings"].upstream_task_ids == {"validate_config", "extract_image_scans"}
    assert dag.task_dict["extract_team_service_accounts"].upstream_task_ids == {"validate_config", "extract_teams"}
    assert dag.task_dict["extract_service_accounts"].upstream_task_ids == {"validate_config"}
    assert dag.task_dict["check_extracts_complete"].upstream_task_ids == extracts | {"load"}  # last: it reports the load
    assert set(dag.params) == {"dry_run", "allow_mass_deletion", "mass_deletion_threshold"}
    assert {t.execution_timeout for t in dag.tasks} == {timedelta(minutes=60)}  # nothing spins forever
    assert [outlet.name for outlet in dag.task_dict["load"].outlets] == ["sysdig_jupiterone.jupiterone_graph"]
    assert dag.task_dict["load"].pool == "sysdig_jupiterone.publish"
    assert dag.task_dict["evaluate_alert_rules"].upstream_task_ids == {"load"}

    quick = bag.get_dag("sysdig_jupiterone_quick")  # the same tasks, scheduled on the audit trail's changes
    assert quick.max_active_runs == 1 and [a.name for a in quick.timetable.asset_condition.objects] == [
        "sysdig_jupiterone.sysdig_audit"]
    watcher = quick.timetable.asset_condition.objects[0].watchers[0].trigger
    assert watcher.serialize() == ("sysdig_j1.triggers.SysdigAuditTrigger", {
        "sysdig_conn_id": "sysdig_default", "poll_interval": 20.0, "overlap": 120.0, "redrive_after": 300.0})
    assert {t.task_id for t in quick.tasks} == {
        "plan_quick_sync", "extract_changed", "transform", "check_quality", "load", "evaluate_alert_rules",
        "confirm_published", "check_extracts_complete"}
    assert quick.task_dict["load"].pool == dag.task_dict["load"].pool  # one publish per scope across both
    assert quick.task_dict["confirm_published"].upstream_task_ids == {"load", "plan_quick_sync"}
    for task in (quick.task_dict["confirm_published"], dag.task_dict["reset_audit_watcher"]):  # the watcher's state
        assert [i.name for i in task.inlets] == ["sysdig_jupiterone.sysdig_audit"]
    assert dag.task_dict["reset_audit_watcher"].upstream_task_ids == {"load", "validate_config"}
    example = bag.get_dag("sysdig_graph_changed_example")
    assert example.is_paused_upon_creation is True  # off by default
    assert example.timetable.asset_condition == dag.task_dict["load"].outlets[0]  # scheduled on the graph


@pytest.mark.parametrize(
    ("conn_type", "hook_class", "fields", "relabelled"),
    [
        ("sysdig", "sysdig_j1.hooks.sysdig.SysdigHook", {"region", "account_name", "quick_sync"},
         {"password": "API Token"}),
        ("jupiterone", "sysdig_j1.hooks.jupiterone.JupiterOneHook", {"region", "integration_instance_id"},
         {"login": "Account ID", "password": "API Key"}),
    ],
)
def test_provider_registers_connection_types(conn_type, hook_class, fields, relabelled):
    from airflow.providers_manager import ProvidersManager
    from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime

    manager = ProvidersManager()  # what the API server reads to build the connection form
    assert "airflow-provider-sysdig-j1" in manager.providers
    assert ProvidersManagerTaskRuntime().hooks[conn_type].hook_class_name == hook_class
    widgets = {name.split("__")[-1] for name in manager.connection_form_widgets if f"extra__{conn_type}__" in name}
    assert fields <= widgets
    behaviour = manager.field_behaviours[conn_type]
    assert relabelled.items() <= behaviour["relabeling"].items()


def test_the_test_button_of_both_connection_types_is_green_with_good_keys_and_red_with_bad(
    start_sysdig, jupiterone, monkeypatch
):
    from conftest import J1_ACCOUNT, J1_KEY, SYSDIG_TOKEN

    from sysdig_j1.hooks.jupiterone import JupiterOneHook
    from sysdig_j1.hooks.sysdig import SysdigHook

    sysdig = start_sysdig()

    def hooks(token: str, key: str) -> tuple[SysdigHook, JupiterOneHook]:
        monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(
            {"conn_type": "sysdig", "host": sysdig.url, "password": token}))
        monkeypatch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(
            {"conn_type": "jupiterone", "host": jupiterone.url, "login": J1_ACCOUNT, "password": key}))
        return SysdigHook(backoff=0.01), JupiterOneHook(backoff=0.01)

    good_sysdig, good_j1 = hooks(SYSDIG_TOKEN, J1_KEY)
    assert good_sysdig.test_connection() == (True, f"Token accepted by {sysdig.url} (customer 5000001)")
    assert good_j1.test_connection() == (True, f"Account {J1_ACCOUNT!r} and key accepted by {jupiterone.url}")

    bad_sysdig, bad_j1 = hooks("wrong-token", "wrong-key")
    ok, message = bad_sysdig.test_connection()
    assert not ok and "GET /api/users/me failed: HTTP 401" in message
    ok, message = bad_j1.test_connection()
    assert not ok and "HTTP 401: UNAUTHORIZED" in message and "wrong-key" not in message
    assert jupiterone.jobs() == []  # testing never creates a job
