"""The change report inside Airflow's UI: a "Graph changes" tab on every DAG run.

An Airflow plugin (found through the provider's `airflow.plugins` entry point) with a FastAPI app
the api-server serves under /sysdig-j1, behind Airflow's own authentication and the user's access
to the DAG's runs, and an external view that shows its page for the run in a tab. The page is the
run's `report/index.html` from the run's storage folder; a run without one says why: still
running, or stopped before `load` (and by which tasks), or a DAG that publishes nothing.
"""

from __future__ import annotations

from html import escape
from typing import Annotated

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, Path
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from sysdig_j1.hooks.storage import STORAGE_VARIABLE, RunStorage, default_storage_url

PREFIX = "/sysdig-j1"
LOAD_TASK = "load"
app = FastAPI(title="sysdig-j1 change reports", description="Each DAG run's report/index.html.")


@app.get("/runs/{dag_id}/{run_id}", response_class=HTMLResponse,
         dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
def run_report(dag_id: Annotated[str, Path()], run_id: Annotated[str, Path()], session: SessionDep) -> HTMLResponse:
    """The run's change report, or a page saying why it has none. Storage is read only for a run
    that exists: the path's names never reach the storage URL otherwise (e.g. a DAG id '..')."""
    from airflow.models import Variable
    from airflow.models.dagrun import DagRun

    if session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)) is not None:
        base_url = Variable.get(STORAGE_VARIABLE, default_var=None) or default_storage_url()
        page = RunStorage(base_url, dag_id, run_id).path("report", "index.html")
        if page.exists():
            return HTMLResponse(page.read_text())
    return HTMLResponse(why_no_report(dag_id, run_id, session), status_code=404)


def why_no_report(dag_id: str, run_id: str, session) -> str:
    from airflow.models.taskinstance import TaskInstance

    states = dict(session.execute(select(TaskInstance.task_id, TaskInstance.state).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)).all())
    if LOAD_TASK not in states:
        reason = "this DAG does not publish to JupiterOne (it has no load task)." if states else \
            "there is no such run."
    elif states[LOAD_TASK] in (None, "scheduled", "queued", "running", "up_for_retry", "deferred"):
        reason = f"the run has not published yet (load: {states[LOAD_TASK] or 'not started'})."
    else:
        failed = sorted(task for task, state in states.items() if state == "failed")
        reason = (f"the run stopped before publishing (load: {states[LOAD_TASK]}"
                  + (f"; failed: {', '.join(failed)}" if failed else "") + "). The task logs say why.")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>No change report</title></head>"
            f"<body style='font: 14px system-ui, sans-serif; margin: 2em'><h1>No change report</h1>"
            f"<p id='no-report'>{escape(dag_id)} · {escape(run_id)}: {escape(reason)}</p></body></html>")


class SysdigJ1Plugin(AirflowPlugin):
    name = "sysdig_j1"
    fastapi_apps = [{"app": app, "url_prefix": PREFIX, "name": "sysdig-j1 change reports"}]
    external_views = [{
        "name": "Graph changes",
        "href": PREFIX.lstrip("/") + "/runs/{DAG_ID}/{RUN_ID}",  # relative: the UI may sit under a base path
        "destination": "dag_run",
        "url_route": "graph-changes",
    }]
