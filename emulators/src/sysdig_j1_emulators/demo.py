"""`make run`: the whole pipeline on the bundled emulators, on Airflow's embedded SQLite DB.

Starts the Sysdig emulator (a generated organisation) and the JupiterOne emulator (its graph kept
in .airflow/jupiterone-state.json, so a second run shows DIFF updates) on loopback, points the two
connections at them, runs the DAG once with `dag.test()`, and prints what JupiterOne now holds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

DEMO_TOKEN = "demo-sysdig-token"
# The emulators' usual ports, so URLs stored on entities stay the same from one demo run to the next.
SYSDIG_PORT, JUPITERONE_PORT = 8801, 8802
J1_ACCOUNT, J1_KEY = "demo-j1-account", "demo-j1-key"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path.cwd(), help="checkout with dags/ and plugins/")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--teams", type=int, default=10)
    parser.add_argument("--scans", type=int, default=500)
    args = parser.parse_args(argv)

    repo = args.repo.resolve()
    home = repo / ".airflow"
    # Airflow reads its configuration on import: everything is set before the first import.
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
            "GX_ANALYTICS_ENABLED": "false",
        }
    )
    from sysdig_j1_emulators.jupiterone import JupiterOneEmulator
    from sysdig_j1_emulators.sysdig import SysdigEmulator
    from sysdig_j1_emulators.sysdig_org import OrgSpec
    from sysdig_j1.hooks.storage import RunStorage, default_storage_url

    home.mkdir(exist_ok=True)
    sysdig = SysdigEmulator(OrgSpec(users=args.users, teams=args.teams, scans=args.scans), token=DEMO_TOKEN)
    jupiterone = JupiterOneEmulator(home / "jupiterone-state.json", account=J1_ACCOUNT, api_key=J1_KEY)
    for emulator, port in ((sysdig, SYSDIG_PORT), (jupiterone, JUPITERONE_PORT)):
        start_on(emulator, port)
    print(f"Sysdig emulator on {sysdig.url}, JupiterOne emulator on {jupiterone.url}", flush=True)
    os.environ["AIRFLOW_CONN_SYSDIG_DEFAULT"] = json.dumps(
        {"conn_type": "sysdig", "host": sysdig.url, "password": DEMO_TOKEN, "extra": {"account_name": "demo"}}
    )
    os.environ["AIRFLOW_CONN_JUPITERONE_DEFAULT"] = json.dumps(
        {"conn_type": "jupiterone", "host": jupiterone.url, "login": J1_ACCOUNT, "password": J1_KEY}
    )
    try:
        run = run_dag(repo)
        print_graph(jupiterone)
    finally:
        sysdig.stop()
        jupiterone.stop()
    print(f"\nDAG run finished: {run.state}")
    page = RunStorage(default_storage_url(), run.dag_id, run.run_id).path("report", "index.html")
    if page.exists():
        print(f"What this publish changed, as a page: {page}")
    return 0 if str(run.state) == "success" else 1


def start_on(emulator, port: int) -> None:
    try:
        emulator.start(port=port)
    except OSError:  # taken: any free port will do
        emulator.start()


def run_dag(repo: Path):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.initdb()  # creates or upgrades the SQLite metadata DB under .airflow/
    bag = DagBag(dag_folder=str(repo / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag("sysdig_jupiterone").test()


def print_graph(jupiterone) -> None:
    summary = jupiterone.summary()
    print("\nJupiterOne emulator now holds:")
    for kind in ("entities", "relationships"):
        print(f"  {kind}:")
        for type_, count in sorted(summary[kind].items()):
            print(f"    {type_:<32} {count:>7}")
    graph = jupiterone.graph()
    print("\nSample objects:")
    seen: set[str] = set()
    for obj in [*graph["entities"], *graph["relationships"]]:
        if obj["_type"] not in seen:
            seen.add(obj["_type"])
            sample = {k: v for k, v in obj.items() if k != "_rawData"}
            print(f"  {json.dumps(sample, sort_keys=True)}")
    if jupiterone.jobs():
        job = jupiterone.jobs()[-1]
        counters = {k: v for k, v in job.items() if k.startswith("num") and v}
        print(f"\nLast sync job {job['id']}: {job['status']} {counters}")


if __name__ == "__main__":
    sys.exit(main())
