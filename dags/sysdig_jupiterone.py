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
Findings: env SYSDIG_J1_FINDING_SHARDS, default 4: extract_findings is one mapped task per shard,
each retried and cleared alone; a failed shard keeps every finding type as JupiterOne has it.

Quick sync (`<dag id>_quick`, on unless env SYSDIG_J1_QUICK_SYNC is "off"): scheduled on the
account's audit asset, whose watcher polls Sysdig's platform audit trail (every
SYSDIG_J1_AUDIT_POLL_SECONDS, default 20) and fires when users, teams, memberships, roles, service
accounts, access keys, zones, SSO settings or IP filters change; it re-reads only those (and what
their types are linked to), publishes one DIFF job with every other type kept (partialDatasets),
then evaluates the alert rules that read what changed. Triggered by hand, conf {"changed":
["users", ...]} names what to re-read. Both DAGs of an account publish through one pool
(`<dag id>.publish`, 1 slot): never two JupiterOne jobs open on the scope; the later load waits.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Asset, AssetWatcher, Param, TriggerRule, dag, task

from sysdig_j1 import extract, pipeline
from sysdig_j1.accounts import Account, configured_accounts
from sysdig_j1.findings import Shard
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import SysdigHook
from sysdig_j1.triggers import SysdigAuditTrigger

SCHEDULE = os.environ.get("SYSDIG_J1_SCHEDULE", "@daily")
TASK_RETRIES = int(os.environ.get("SYSDIG_J1_TASK_RETRIES", "2"))
TASK_TIMEOUT = timedelta(minutes=float(os.environ.get("SYSDIG_J1_TASK_TIMEOUT_MINUTES", "60")))
QUICK_SYNC = os.environ.get("SYSDIG_J1_QUICK_SYNC", "on").lower() not in ("off", "false", "no", "0")
AUDIT_POLL_SECONDS = float(os.environ.get("SYSDIG_J1_AUDIT_POLL_SECONDS", "20"))
AUDIT_OVERLAP_SECONDS = float(os.environ.get("SYSDIG_J1_AUDIT_OVERLAP_SECONDS", "120"))
AUDIT_REDRIVE_SECONDS = float(os.environ.get("SYSDIG_J1_AUDIT_REDRIVE_SECONDS", "300"))
# The findings path runs as this many mapped tasks, side by side on the workers; a result stays in
# its shard as long as this number stays the same.
FINDING_SHARDS = int(os.environ.get("SYSDIG_J1_FINDING_SHARDS", "4"))


def audit_asset_name(account: Account) -> str:
    return f"{account.dag_id}.sysdig_audit"


def audit_asset(account: Account) -> Asset:
    """Changes in the account's Sysdig audit trail: its watcher starts the quick sync."""
    trigger = SysdigAuditTrigger(account.sysdig_conn_id, poll_interval=AUDIT_POLL_SECONDS,
                                 overlap=AUDIT_OVERLAP_SECONDS, redrive_after=AUDIT_REDRIVE_SECONDS)
    return Asset(name=audit_asset_name(account), uri=f"sysdig-audit://{account.dag_id}",
                 watchers=[AssetWatcher(name=f"{account.dag_id}_audit_watcher", trigger=trigger)])


def sysdig_jupiterone(account: Account, quick: bool = False):
    """The account's full sync, or (quick) its quick sync: the same tasks, but for what is extracted."""
    graph_asset = pipeline.graph_asset(account.dag_id)
    changes = audit_asset(account) if quick else None
    watched = Asset.ref(name=audit_asset_name(account))  # its state store: the watcher's position
    full_schedule = None if SCHEDULE.lower() in ("", "none") else SCHEDULE

    @dag(
        dag_id=f"{account.dag_id}_quick" if quick else account.dag_id,
        schedule=[changes] if quick else full_schedule,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        max_active_runs=1,  # events arriving meanwhile collapse into one queued run
        default_args={"retries": TASK_RETRIES, "retry_delay": timedelta(minutes=1),
                      "retry_exponential_backoff": True, "execution_timeout": TASK_TIMEOUT},
        params={
            "dry_run": Param(False, type="boolean", description="Write the would-be upload; send nothing."),
            "allow_mass_deletion": Param(False, type="boolean", description="Publish even if the guard objects."),
            "mass_deletion_threshold": Param(0.5, type="number", minimum=0, maximum=1,
                                             description="Largest share of a type one publish may delete."),
            **({"changed": Param([], type="array", description="By hand: the resources to re-read.")}
               if quick else {}),
        },
        tags=["sysdig", "jupiterone", *(["quick-sync"] if quick else [])],
        doc_md=__doc__ + f"\n\nThis DAG: Sysdig connection `{account.sysdig_conn_id}`, "
                         f"JupiterOne connection `{account.jupiterone_conn_id}`"
                         + (f", quick sync of `{account.dag_id}`." if quick else "."),
    )
    def sync():
        def sysdig(region: str | None = None) -> SysdigHook:
            return SysdigHook(account.sysdig_conn_id, region=region)

        def jupiterone() -> JupiterOneHook:
            return JupiterOneHook(account.jupiterone_conn_id)

        def storage() -> RunStorage:  # both DAGs of an account compare with the same publishes
            return RunStorage.for_current_run(account.dag_id)

        # A config error is not transient, and an outage should fail the run in minutes: the
        # per-request retries already ride out a blip.
        @task(retries=0, multiple_outputs=False)
        def validate_config() -> dict:
            """Both connections, the JupiterOne region and the storage URL work, before any data moves."""
            return pipeline.validate_config(sysdig(), jupiterone(), storage())

        @task(retries=0, multiple_outputs=False)
        def plan_quick_sync(params: dict | None = None, triggering_asset_events=None) -> dict:
            """validate_config, then what to re-read: what the audit trail says changed (or conf
            `changed`), and what the types it feeds are linked to."""
            hinted = {r for event in (triggering_asset_events or {}).get(changes, [])
                      for r in (event.extra.get("payload") or {}).get("resources", [])}
            return pipeline.plan_quick_sync(sysdig(), jupiterone(), storage(), hinted | set(params.get("changed") or []))

        @task(multiple_outputs=False)
        def extract_resource(resource: str, config: dict) -> dict:
            """One Sysdig resource, every page scrubbed, checked against its contract and stored."""
            return pipeline.extract(resource, sysdig(config["region"]), jupiterone(), storage(), config)

        @task(multiple_outputs=False)
        def extract_shard(resource: str, config: dict, shards: int, shard: int) -> dict:
            """One shard of a resource that grows with the fleet (findings): a task per shard."""
            return pipeline.extract(resource, sysdig(config["region"]), jupiterone(), storage(), config,
                                    Shard(shard, shards))

        @task(multiple_outputs=False)
        def extract_changed(config: dict) -> list[dict]:
            """The quick sync's resources, one after the other (each as its full sync extracts it)."""
            return [pipeline.extract(resource, sysdig(config["region"]), jupiterone(), storage(), config)
                    for resource in config["reread"]]

        # Runs when the extracts are done, even if some failed: what was extracted still publishes.
        @task(trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS, multiple_outputs=False)
        def transform(config: dict) -> dict:
            """Raw pages to one entity and one relationship frame, from the data model."""
            return pipeline.transform(storage(), config)

        @task(multiple_outputs=False)
        def check_quality(graph: dict) -> dict:
            """Great Expectations suites derived from the data model; a failure publishes nothing."""
            return pipeline.check_quality(storage(), graph)

        # One publish per scope at a time, whatever the run type, the DAG (full or quick) or the
        # number of workers: the account's 1-slot pool lets the scheduler start no second `load`
        # while one runs; the other waits in "scheduled" (the UI shows "no open slots in pool"),
        # and its log says how long it waited, and why.
        @task(pool=account.publish_pool, multiple_outputs=False, outlets=[graph_asset])
        def load(graph: dict, quality: dict, params: dict | None = None, outlet_events=None) -> dict:
            """Publish through one JupiterOne synchronization job (or, for a dry run, write it out),
            report what changed, and tell the asset's consumers (the change totals in its extra)."""
            pipeline.note_pool_wait(quality, account.publish_pool)
            result = pipeline.load(jupiterone(), storage(), graph, params or {})
            outlet_events[graph_asset].extra = pipeline.asset_extra(result)
            return result

        @task(multiple_outputs=False)
        def evaluate_alert_rules(loaded: dict) -> list[str]:
            """The deployed rules that read a type this publish changed, evaluated now."""
            return pipeline.evaluate_alert_rules(jupiterone(), loaded)

        @task(multiple_outputs=False, inlets=[watched])
        def confirm_published(loaded: dict, config: dict, triggering_asset_events=None,
                              asset_state_store=None) -> dict | None:
            """Moves the audit watcher past the changes just published (a run that failed, or did
            not re-read everything it was started for, does not: they are fired again)."""
            payloads = [event.extra.get("payload") or {} for event in (triggering_asset_events or {}).get(changes, [])]
            payloads = [p for p in payloads if p.get("changes")]
            if loaded.get("dry_run") or not payloads:  # a dry run, or started by hand
                return None
            return pipeline.confirm_published(asset_state_store[watched], storage(), config, payloads,
                                              AUDIT_OVERLAP_SECONDS)

        @task(multiple_outputs=False, inlets=[watched])
        def reset_audit_watcher(loaded: dict, config: dict, asset_state_store=None) -> dict | None:
            """The quick sync's watcher resumes from when this full sync began reading: what
            changed since, a quick sync may have published and this publish overwritten."""
            if loaded.get("dry_run"):
                return None
            return pipeline.reset_watcher(asset_state_store[watched], config)

        @task(trigger_rule=TriggerRule.ALL_DONE, retries=0)
        def check_extracts_complete() -> None:
            """Fails the run when a resource was not extracted completely, saying what was published."""
            pipeline.check_extracts_complete(storage())

        if quick:
            config = plan_quick_sync()
            extracts = [extract_changed(config)]
        else:
            config = validate_config()
            by_resource = {
                # (a mapped task does not take its docs from the function's docstring)
                r: extract_shard.override(task_id=f"extract_{r}", doc_md=extract_shard.function.__doc__).partial(
                    # the count as the tasks were mapped, not as a worker's environment says
                    resource=r, config=config, shards=FINDING_SHARDS).expand(shard=list(range(FINDING_SHARDS)))
                if declared.sharded
                else extract_resource.override(task_id=f"extract_{r}")(r, config)
                for r, declared in extract.EXTRACTS.items()}
            for declared in extract.EXTRACTS.values():  # e.g. memberships are listed per extracted team
                if declared.after:
                    by_resource[declared.after] >> by_resource[declared.resource]
            extracts = list(by_resource.values())
        graph = transform(config)
        extracts >> graph
        published = load(graph, check_quality(graph))
        evaluate_alert_rules(published)
        if quick:
            confirm_published(published, config)
        elif QUICK_SYNC:
            reset_audit_watcher(published, config)
        # Last, after load, so it can say what was published (ALL_DONE: it runs whatever failed).
        [*extracts, published] >> check_extracts_complete()

    return sync()


for configured in configured_accounts(os.environ.get("SYSDIG_J1_ACCOUNTS")):
    sysdig_jupiterone(configured)
    if QUICK_SYNC:
        sysdig_jupiterone(configured, quick=True)
