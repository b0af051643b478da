"""The Airflow pools the DAGs publish through, one per account: `python -m sysdig_j1.pools`.

Every publish of an account, by its full or its quick sync, runs in the account's 1-slot pool
(`Account.publish_pool`): a pool is the Airflow mechanism that limits tasks across DAGs (a DAG's
own limits, `max_active_runs` or `max_active_tis_per_dag`, count only its runs), so the scheduler
never lets two JupiterOne jobs be open on the scope, and the later `load` waits in "scheduled" with
the reason in the scheduler's log and the task's details. The scheduler does not start a task of
a pool that does not exist, so the deployment creates them where the metadata database is
reachable: docker-compose's `airflow-init` runs this module (it reads `SYSDIG_J1_ACCOUNTS`, as
the DAG file does). Running it again changes nothing.
"""

from __future__ import annotations

import os

from sysdig_j1.accounts import configured_accounts

DESCRIPTION = "sysdig-j1: one JupiterOne publish at a time for {dag_id} (full and quick sync)"


def ensure_pools(setting: str | None) -> list[str]:
    """Create (or keep) every configured account's publish pool with one slot; their names."""
    from airflow.models.pool import Pool

    names = []
    for account in configured_accounts(setting):
        Pool.create_or_update_pool(account.publish_pool, 1, DESCRIPTION.format(dag_id=account.dag_id),
                                   include_deferred=False)
        names.append(account.publish_pool)
    return names


def main() -> None:
    for name in ensure_pools(os.environ.get("SYSDIG_J1_ACCOUNTS")):
        print(f"pool {name}: 1 slot")


if __name__ == "__main__":
    main()
