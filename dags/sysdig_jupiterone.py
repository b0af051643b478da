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
Resources the Sysdig token may not read are skipped with a warning (JupiterOne keeps their types);
resources listed in the Sysdig connection extra `disabled_resources` are switched off (JupiterOne
removes their types).
Several Sysdig accounts: env SYSDIG_J1_ACCOUNTS lists their connections, one DAG each.
Schedule: env SYSDIG_J1_SCHEDULE (cron or preset; "none" = manual only, which backfills refuse),
default "@daily".
Task retries: env SYSDIG_J1_TASK_RETRIES, default 2 (on top of the per-request retries).
Task timeout: env SYSDIG_J1_TASK_TIMEOUT_MINUTES, default 60 (per task attempt), so nothing spins forever.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Param, TriggerRule, dag, task

from sysdig_j1 import extract, pipeline
from sysdig_j1.accounts import Account, configured_accounts
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import SysdigHook

SCHEDULE = os.environ.get("SYSDIG_J1_SCHEDULE", "@daily")
TASK_RETRIES = int(os.environ.get("SYSDIG_J1_TASK_RETRIES", "2"))
TASK_TIMEOUT = timedelta(minutes=float(os.environ.get("SYSDIG_J1_TASK_TIMEOUT_MINUTES", "60")))


def sysdig_jupiterone(account: Account):
    graph_asset = pipeline.graph_asset(account.dag_id)

    @dag(
        dag_id=account.dag_id,
        schedule=None if SCHEDULE.lower() in ("", "none") else SCHEDULE,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        max_active_runs=1,  # scheduled and manual runs; backfills bring their own, see `load`
        default_args={"retries": TASK_RETRIES, "retry_delay": timedelta(minutes=1),
                      "retry_exponential_backoff": True, "execution_timeout": TASK_TIMEOUT},
        params={
            "dry_run": Param(False, type="boolean", description="Write the would-be upload; send nothing."),
            "allow_mass_deletion": Param(False, type="boolean", description="Publish even if the guard objects."),
            "mass_deletion_threshold": Param(0.5, type="number", minimum=0, maximum=1,
                                             description="Largest share of a type one publish may delete."),
        },
        tags=["sysdig", "jupiterone"],
        doc_md=__doc__ + f"\n\nThis DAG: Sysdig connection `{account.sysdig_conn_id}`, "
                         f"JupiterOne connection `{account.jupiterone_conn_id}`.",
    )
    def sync():
        def sysdig(region: str | None = None) -> SysdigHook:
            return SysdigHook(account.sysdig_conn_id, region=region)

        def jupiterone() -> JupiterOneHook:
            return JupiterOneHook(account.jupiterone_conn_id)

        # A config error is not transient, and an outage should fail the run in minutes: the
        # per-request retries already ride out a blip.
        @task(retries=0, multiple_outputs=False)
        def validate_config() -> dict:
            """Both connections, the JupiterOne region and the storage URL work, before any data moves."""
            return pipeline.validate_config(sysdig(), jupiterone(), RunStorage.for_current_run())

        @task(multiple_outputs=False)
        def extract_resource(resource: str, config: dict) -> dict:
            """One Sysdig resource, every page scrubbed, checked against its contract and stored."""
            return pipeline.extract(resource, sysdig(config["region"]), jupiterone(), RunStorage.for_current_run(),
                                    config)

        # Runs when the extracts are done, even if some failed: what was extracted still publishes.
        @task(trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS, multiple_outputs=False)
        def transform(config: dict) -> dict:
            """Raw pages to one entity and one relationship frame, from the data model."""
            return pipeline.transform(RunStorage.for_current_run(), config)

        @task(multiple_outputs=False)
        def check_quality(graph: dict) -> dict:
            """Great Expectations suites derived from the data model; a failure publishes nothing."""
            return pipeline.check_quality(RunStorage.for_current_run(), graph)

        # One publish per scope at a time, whatever the run type or the number of workers: the
        # scheduler starts no second `load` of this DAG while one runs, backfill runs included
        # (a backfill brings its own max_active_runs). Its log says why a load waits.
        @task(max_active_tis_per_dag=1, multiple_outputs=False, outlets=[graph_asset])
        def load(graph: dict, quality: dict, params: dict | None = None, outlet_events=None) -> dict:
            """Publish through one JupiterOne synchronization job (or, for a dry run, write it out),
            report what changed, and tell the asset's consumers (the change totals in its extra)."""
            result = pipeline.load(jupiterone(), RunStorage.for_current_run(), graph, params or {})
            outlet_events[graph_asset].extra = pipeline.asset_extra(result)
            return result

        @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
        def check_extracts_complete() -> None:
            """Fails the run when a resource was not extracted completely, saying what was published."""
            pipeline.check_extracts_complete(RunStorage.for_current_run())

        config = validate_config()
        extracts = {r: extract_resource.override(task_id=f"extract_{r}")(r, config) for r in extract.EXTRACTS}
        for declared in extract.EXTRACTS.values():  # e.g. memberships are listed per extracted team
            if declared.after:
                extracts[declared.after] >> extracts[declared.resource]
        graph = transform(config)
        list(extracts.values()) >> graph
        published = load(graph, check_quality(graph))
        # Last, after load, so it can say what was published (ALL_DONE: it runs whatever failed).
        [*extracts.values(), published] >> check_extracts_complete()

    return sync()


for configured in configured_accounts(os.environ.get("SYSDIG_J1_ACCOUNTS")):
    sysdig_jupiterone(configured)
