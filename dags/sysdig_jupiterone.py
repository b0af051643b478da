"""Sync a Sysdig Secure account into the JupiterOne graph.

validate_config -> one extract task per Sysdig resource -> transform -> check_quality -> load.
Tasks exchange data through object storage (Airflow Variable `sysdig_j1_storage_url`, default a
folder under AIRFLOW_HOME) and pass only small manifests through XCom. Sysdig keeps no history, so
every run - scheduled, manual or backfill - publishes a fresh snapshot of the account as it is now.

Connections: `sysdig_default` (type sysdig) and `jupiterone_default` (type jupiterone); see README.
Schedule: env SYSDIG_J1_SCHEDULE (cron or preset; "none" = manual only), default "@daily".
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import dag, task

from sysdig_j1 import extract, pipeline
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import SysdigHook

SCHEDULE = os.environ.get("SYSDIG_J1_SCHEDULE", "@daily")


@dag(
    dag_id="sysdig_jupiterone",
    schedule=None if SCHEDULE.lower() in ("", "none") else SCHEDULE,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # two runs must never publish to the same JupiterOne scope at once
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True},
    tags=["sysdig", "jupiterone"],
    doc_md=__doc__,
)
def sysdig_jupiterone():
    @task
    def validate_config() -> dict:
        return pipeline.validate_config(SysdigHook(), JupiterOneHook())

    @task
    def extract_account(config: dict) -> dict:
        return extract.extract_account(SysdigHook(region=config["region"]), RunStorage.for_current_run())

    @task
    def extract_users(config: dict) -> dict:
        return extract.extract_users(SysdigHook(region=config["region"]), RunStorage.for_current_run())

    @task
    def extract_teams(config: dict) -> dict:
        return extract.extract_teams(SysdigHook(region=config["region"]), RunStorage.for_current_run())

    @task
    def extract_team_memberships(config: dict, teams: dict) -> dict:
        return extract.extract_team_memberships(SysdigHook(region=config["region"]), RunStorage.for_current_run())

    @task
    def extract_image_scans(config: dict) -> dict:
        return extract.extract_image_scans(SysdigHook(region=config["region"]), RunStorage.for_current_run())

    @task
    def transform(config: dict, extracted: list[dict]) -> dict:
        return pipeline.transform(RunStorage.for_current_run(), config)

    @task
    def check_quality(graph: dict) -> dict:
        return pipeline.check_quality(RunStorage.for_current_run(), graph)

    @task
    def load(graph: dict, quality: dict) -> dict:
        return pipeline.load(JupiterOneHook(), RunStorage.for_current_run(), graph)

    config = validate_config()
    teams = extract_teams(config)
    extracted = [
        extract_account(config),
        extract_users(config),
        teams,
        extract_team_memberships(config, teams),
        extract_image_scans(config),
    ]
    graph = transform(config, extracted)
    load(graph, check_quality(graph))


sysdig_jupiterone()
