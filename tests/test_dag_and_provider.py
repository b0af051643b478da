"""The DAG folder imports cleanly without touching the network; the provider registers its
connection types with labelled fields."""

from __future__ import annotations

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
        "extract_image_scans", "transform", "check_quality", "load", "check_extracts_complete",
    }
    extracts = {t for t in dag.task_dict if t.startswith("extract_")}
    assert dag.task_dict["transform"].upstream_task_ids >= extracts
    assert dag.task_dict["load"].upstream_task_ids == {"transform", "check_quality"}
    assert dag.task_dict["extract_team_memberships"].upstream_task_ids == {"validate_config", "extract_teams"}
    assert dag.task_dict["check_extracts_complete"].upstream_task_ids == extracts | {"load"}  # last: it reports the load
    assert set(dag.params) == {"dry_run", "allow_mass_deletion", "mass_deletion_threshold"}
    assert {t.execution_timeout for t in dag.tasks} == {timedelta(minutes=60)}  # nothing spins forever


@pytest.mark.parametrize(
    ("conn_type", "hook_class", "fields", "relabelled"),
    [
        ("sysdig", "sysdig_j1.hooks.sysdig.SysdigHook", {"region", "account_name"}, {"password": "API Token"}),
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
