"""Deploy the JupiterOne questions and alert rules about the Sysdig graph, kept as code in
`include/jupiterone/questions.yaml` and `rules.yaml`. Manual only: trigger it after changing them.

Each question and rule is found in JupiterOne by its name among those tagged `sysdig-j1`, created
when missing, updated when what the file says differs, left alone otherwise — so deploying twice
changes nothing the second time. One the files no longer list is removed only with
`remove_unlisted`. `dry_run` reports the plan and changes nothing. Every query is checked against
the data model before anything is sent.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from airflow.sdk import Param, dag, task

from sysdig_j1 import monitoring
from sysdig_j1.hooks.jupiterone import JupiterOneHook

CONTENT = Path(__file__).resolve().parent.parent / "include" / "jupiterone"


@dag(
    schedule=None,
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    params={
        "dry_run": Param(False, type="boolean", description="Report what would change; change nothing."),
        "remove_unlisted": Param(False, type="boolean",
                                 description="Remove questions and rules tagged sysdig-j1 that the files no longer list."),
        "jupiterone_conn_id": Param("jupiterone_default", type="string", description="The JupiterOne connection."),
    },
    tags=["sysdig", "jupiterone"],
    doc_md=__doc__,
)
def sysdig_jupiterone_rules():
    @task(retries=0, multiple_outputs=False)
    def deploy(params: dict | None = None) -> dict:
        """Create or update the questions and rules in JupiterOne; returns what changed, by name."""
        questions, rules = monitoring.load(CONTENT)
        return monitoring.deploy(JupiterOneHook(params["jupiterone_conn_id"]), questions, rules,
                                 dry_run=params["dry_run"], remove_unlisted=params["remove_unlisted"])

    deploy()


sysdig_jupiterone_rules()
