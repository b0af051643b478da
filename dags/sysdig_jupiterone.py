"""Sync a Sysdig Secure account into the JupiterOne graph.

validate_config -> one extract task per Sysdig resource -> transform -> check_quality -> load,
and check_extracts_complete at the end. Tasks exchange data through object storage (Airflow
Variable `sysdig_j1_storage_url`, default a folder under AIRFLOW_HOME) and pass only small
manifests through XCom. Sysdig keeps no history, so every run - scheduled, manual or backfill -
publishes a fresh snapshot of the account as it is now.

If an extract task fails, the rest is still transformed, checked and published, with the failed
resource's types sent as partialDatasets so JupiterOne keeps what it has for them; the run then
ends failed (check_extracts_complete) so alerts fire.

Params: dry_run (write the would-be upload into the run folder, call nothing in JupiterOne),
allow_mass_deletion (override the guard), mass_deletion_threshold (largest share of any type a
publish may delete compared with the last successful publish; default 0.5).

Connections: `sysdig_default` (type sysdig) and `jupiterone_default` (type jupiterone); see README.
Schedule: env SYSDIG_J1_SCHEDULE (cron or preset; "none" = manual only), default "@daily".
Task retries: env SYSDIG_J1_TASK_RETRIES, default 2 (on top of the per-request retries).
Task timeout: env SYSDIG_J1_TASK_TIMEOUT_MINUTES, default 60 (per task attempt), so nothing spins forever.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, TriggerRule, dag, task

from sysdig_j1 import extract, pipeline
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import SysdigHook

SCHEDULE = os.environ.get("SYSDIG_J1_SCHEDULE", "@daily")
TASK_RETRIES = int(os.environ.get("SYSDIG_J1_TASK_RETRIES", "2"))
TASK_TIMEOUT = timedelta(minutes=float(os.environ.get("SYSDIG_J1_TASK_TIMEOUT_MINUTES", "60")))


@dag(
    dag_id="sysdig_jupiterone",
    schedule=None if SCHEDULE.lower() in ("", "none") else SCHEDULE,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # two runs must never publish to the same JupiterOne scope at once
    default_args={"retries": TASK_RETRIES, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": True,
                  "execution_timeout": TASK_TIMEOUT},
    params={
        "dry_run": Param(False, type="boolean", description="Write the would-be upload; send nothing."),
        "allow_mass_deletion": Param(False, type="boolean", description="Publish even if the guard objects."),
        "mass_deletion_threshold": Param(0.5, type="number", minimum=0, maximum=1,
                                         description="Largest share of a type one publish may delete."),
    },
    tags=["sysdig", "jupiterone"],
    doc_md=__doc__,
)
def sysdig_jupiterone():
    @task
    def validate_config() -> dict:
        return pipeline.validate_config(SysdigHook(), JupiterOneHook(), RunStorage.for_current_run())

    @task
    def extract_resource(resource: str, config: dict) -> dict:
        return pipeline.extract(resource, SysdigHook(region=config["region"]), JupiterOneHook(),
                                RunStorage.for_current_run())

    # Runs when the extracts are done, even if some failed: what was extracted still publishes.
    @task(trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
    def transform(config: dict) -> dict:
        return pipeline.transform(RunStorage.for_current_run(), config)

    @task
    def check_quality(graph: dict) -> dict:
        return pipeline.check_quality(RunStorage.for_current_run(), graph)

    @task
    def load(graph: dict, quality: dict, params: dict | None = None) -> dict:
        return pipeline.load(JupiterOneHook(), RunStorage.for_current_run(), graph, params or {})

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
    def check_extracts_complete() -> None:
        pipeline.check_extracts_complete(RunStorage.for_current_run())

    config = validate_config()
    extracts = {r: extract_resource.override(task_id=f"extract_{r}")(r, config) for r in extract.EXTRACTORS}
    extracts["teams"] >> extracts["team_memberships"]  # memberships are listed per extracted team
    graph = transform(config)
    list(extracts.values()) >> graph
    published = load(graph, check_quality(graph))
    # Last, after load, so it can say what was published (ALL_DONE: it runs whatever failed).
    [*extracts.values(), published] >> check_extracts_complete()


sysdig_jupiterone()
