"""Which Sysdig accounts a deployment syncs: one DAG per configured Sysdig connection.

JupiterOne lets a customer add one Sysdig configuration per account; here each account is a
Sysdig connection, and each gets its own DAG, so its runs, retries, backfills and publishes are
its own. Every DAG writes under its own storage prefix (the DAG id), keeps its own mass-deletion
guard state, and publishes to its own scope (`sysdig-j1:<Sysdig customer id>`); `tag.AccountName`
comes from the connection's `account_name` extra.

Environment variable `SYSDIG_J1_ACCOUNTS`, read where DAGs are parsed: comma-separated Sysdig
connection ids, each optionally followed by `=<JupiterOne connection id>` (default
`jupiterone_default`). Unset, it is `sysdig_default`: the single-account setup, DAG id
`sysdig_jupiterone`. Any other connection's DAG is `sysdig_jupiterone__<connection id>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SYSDIG_CONN = "sysdig_default"
DEFAULT_JUPITERONE_CONN = "jupiterone_default"
BASE_DAG_ID = "sysdig_jupiterone"
CONN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")  # what may follow the DAG id's `__`


@dataclass(frozen=True)
class Account:
    sysdig_conn_id: str = DEFAULT_SYSDIG_CONN
    jupiterone_conn_id: str = DEFAULT_JUPITERONE_CONN

    @property
    def dag_id(self) -> str:
        if self.sysdig_conn_id == DEFAULT_SYSDIG_CONN:
            return BASE_DAG_ID
        return f"{BASE_DAG_ID}__{self.sysdig_conn_id}"

    @property
    def publish_pool(self) -> str:
        """The 1-slot Airflow pool every publish of the account (full and quick sync) runs in."""
        return f"{self.dag_id}.publish"


def configured_accounts(setting: str | None) -> list[Account]:
    """The accounts `SYSDIG_J1_ACCOUNTS` lists; a malformed or repeated entry is a ValueError, so
    the DAG file fails to import with the reason instead of silently dropping an account."""
    accounts = []
    for entry in (setting or DEFAULT_SYSDIG_CONN).split(","):
        sysdig, _, jupiterone = (part.strip() for part in entry.partition("="))
        for conn_id in (sysdig, jupiterone or DEFAULT_JUPITERONE_CONN):
            if not CONN_ID.match(conn_id):
                raise ValueError(f"SYSDIG_J1_ACCOUNTS: {entry.strip()!r} is not '<sysdig conn id>[=<jupiterone conn id>]'")
        accounts.append(Account(sysdig, jupiterone or DEFAULT_JUPITERONE_CONN))
    repeated = {a.sysdig_conn_id for a in accounts if [b.sysdig_conn_id for b in accounts].count(a.sysdig_conn_id) > 1}
    if repeated:
        raise ValueError(f"SYSDIG_J1_ACCOUNTS lists {', '.join(sorted(repeated))} more than once")
    return accounts
