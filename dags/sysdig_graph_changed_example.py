"""Example: a DAG scheduled on "the Sysdig graph changed". It starts paused; unpause it to use it.

The `load` task of every Sysdig → JupiterOne DAG updates an Airflow Asset for the graph it
publishes (`<dag id>.jupiterone_graph`). The asset event's `extra` carries the scope, whether it
was a dry run, the change totals per kind and the count of each called-out security change (users
made admin, disabled, removed; membership and team changes; scans failing policy); the full list is
in the publishing run's `report/changes.json`. This DAG runs after each such event and logs what
changed: replace its task with a notification (Slack, e-mail, a ticket) to act on it.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from functools import reduce

from airflow.sdk import dag, task

from sysdig_j1.accounts import configured_accounts
from sysdig_j1.pipeline import graph_asset

log = logging.getLogger(__name__)
GRAPHS = [graph_asset(account.dag_id) for account in configured_accounts(os.environ.get("SYSDIG_J1_ACCOUNTS"))]


@dag(
    schedule=reduce(lambda a, b: a | b, GRAPHS),  # any account's graph
    start_date=datetime(2025, 1, 1),
    catchup=False,
    is_paused_upon_creation=True,
    tags=["sysdig", "jupiterone", "example"],
    doc_md=__doc__,
)
def sysdig_graph_changed_example():
    @task
    def log_what_changed(triggering_asset_events=None) -> None:
        """One line per asset event: which graph, and what its publish changed."""
        for asset, events in (triggering_asset_events or {}).items():
            for event in events:
                extra = event.extra or {}
                kind = "dry run of" if extra.get("dry_run") else "publish to"
                log.info("%s: %s %s changed %s; security: %s", asset.name, kind, extra.get("scope"),
                         extra.get("totals"), extra.get("security") or "nothing called out")

    log_what_changed()


sysdig_graph_changed_example()
