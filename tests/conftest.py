"""Shared fixtures: an isolated Airflow home per session, emulators on loopback, connections.

Airflow reads its configuration at import time, so the environment is set before anything imports
it. The metadata DB is SQLite in a temporary folder; `dag.test()` runs tasks in this process, so
the first DAG run pays Airflow's start-up cost once and later runs take about a second.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="sysdig-j1-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["GX_ANALYTICS_ENABLED"] = "false"
os.environ["SYSDIG_J1_TASK_RETRIES"] = "0"  # a failing task fails now instead of after retry delays

from sysdig_j1_emulators.jupiterone import JupiterOneEmulator  # noqa: E402
from sysdig_j1_emulators.sysdig import SysdigEmulator  # noqa: E402
from sysdig_j1_emulators.sysdig_org import OrgSpec  # noqa: E402

SYSDIG_TOKEN = "test-sysdig-token"
J1_ACCOUNT, J1_KEY = "test-j1-account", "test-j1-key"


@pytest.fixture(scope="session")
def airflow_db():
    from airflow.utils import db

    db.initdb()


@pytest.fixture(scope="session")
def dag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag("sysdig_jupiterone")


@pytest.fixture(autouse=True)
def _params_restored(request):
    """`dag.test(run_conf=...)` runs tasks in this process and leaves the conf's values in the
    DAG's and tasks' params, so a dry run would make every later test run dry too (a deployment
    runs each task from the serialized DAG, where a run's conf stays that run's)."""
    if "dag" not in request.fixturenames:
        yield
        return
    dag = request.getfixturevalue("dag")
    saved = copy.deepcopy(dag.params), {task.task_id: copy.deepcopy(task.params) for task in dag.tasks}
    yield
    dag.params = saved[0]
    for task in dag.tasks:
        task.params = saved[1][task.task_id]


@pytest.fixture
def start_sysdig():
    """Factory: start a Sysdig emulator for an organisation of the given shape."""
    started: list[SysdigEmulator] = []

    def start(org: OrgSpec = OrgSpec(), token: str = SYSDIG_TOKEN, **options) -> SysdigEmulator:
        emulator = SysdigEmulator(org, token=token, **options)
        emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def jupiterone(tmp_path):
    emulator = JupiterOneEmulator(state_path=tmp_path / "j1-state.json", account=J1_ACCOUNT, api_key=J1_KEY)
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture
def connect(monkeypatch, tmp_path):
    """Point the two Airflow connections and the storage Variable at the emulators."""

    def wire(sysdig: SysdigEmulator, jupiterone: JupiterOneEmulator, token: str = SYSDIG_TOKEN, **extra) -> None:
        sysdig_conn = {"conn_type": "sysdig", "host": sysdig.url, "password": token, "extra": {"region": "us2", **extra}}
        j1_conn = {"conn_type": "jupiterone", "host": jupiterone.url, "login": J1_ACCOUNT, "password": J1_KEY}
        monkeypatch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(sysdig_conn))
        monkeypatch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(j1_conn))
        monkeypatch.setenv("AIRFLOW_VAR_SYSDIG_J1_STORAGE_URL", f"file://{tmp_path}/storage")

    return wire


def storage_text(folder: Path) -> str:
    """Everything the runs stored under `folder`, as searchable text: Parquet cells and column
    names one per line, unescaped, other files as they are."""
    import pyarrow.parquet as pq

    parts = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            parts += table.column_names
            parts += [str(cell) for column in table.columns for cell in column.to_pylist()]
        else:
            parts.append(path.read_text())
    return "\n".join(parts)


def task_states(dag_run) -> dict[str, str]:
    """Each task's state; a mapped task's is its instances' one state, or "failed" if any failed
    (else the first that is not "success")."""
    states: dict[str, set] = {}
    for ti in dag_run.get_task_instances():
        states.setdefault(ti.task_id, set()).add(ti.state)
    return {task: states.pop() if len(states) == 1 else "failed" if "failed" in states
            else sorted(s for s in states if s != "success")[0] for task, states in states.items()}


# IAM and inventory of the default OrgSpec (test_iam_inventory derives and checks them in detail).
PLATFORM_ENTITIES = {"sysdig_role": 3, "sysdig_service_account": 7, "sysdig_access_key": 5, "sysdig_zone": 3,
                     "sysdig_sso_setting": 2, "sysdig_ip_filter": 4, "sysdig_cluster": 3, "sysdig_host": 16}
PLATFORM_RELATIONSHIPS = {
    **{f"sysdig_account_has_{t.removeprefix('sysdig_')}": n for t, n in PLATFORM_ENTITIES.items()},
    "sysdig_team_assigned_role": 1, "sysdig_team_has_service_account": 4, "sysdig_team_has_access_key": 3,
    "sysdig_team_uses_zone": 2, "sysdig_cluster_has_host": 12,
    # hosts and clusters IS other integrations' assets: none published here, and none created
}


def expected_findings(spec: OrgSpec, stages: tuple[str, ...] = ("runtime",),
                      severities: tuple[str, ...] = ("critical", "high", "medium", "low")) -> dict:
    """What the emulator's full results hold, counted from their vulnerability maps (not from the
    packages, as the pipeline walks them): findings, findings with a CVE id, distinct CVEs."""
    from sysdig_j1_emulators.sysdig_org import SysdigOrg

    org = SysdigOrg(spec)
    names = []
    for stage in stages:
        for k in org.scans(stage):
            result = json.loads(org.full_result(org.stage_result(stage, k)["resultId"]))
            names += [v["name"] for v in result["vulnerabilities"].values() if v["severity"] in severities]
    cves = [name for name in names if name.startswith("CVE-")]
    return {"findings": len(names), "cve_relationships": len(cves), "cves": len(set(cves))}


@pytest.fixture(scope="session")
def browser():
    """Debian's chromium (`make test` installs it), driven by Playwright: what a person sees."""
    import shutil

    from playwright.sync_api import sync_playwright

    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make test` installs Debian's chromium"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=binary, args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()
