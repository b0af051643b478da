"""What each DAG task does, as plain functions of hooks and the run's storage.

The DAG file only wires these together; tests call them directly too. Every function returns a
small JSON-safe manifest for XCom; the data itself stays in the run's storage folder. Errors that
retrying cannot fix (bad credentials, bad data) raise AirflowFailException so the task fails at once.
"""

from __future__ import annotations

import logging

from airflow.sdk.exceptions import AirflowFailException

from sysdig_j1 import load as loader
from sysdig_j1 import quality
from sysdig_j1.hooks.http import ApiError
from sysdig_j1.hooks.jupiterone import JupiterOneHook
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.hooks.sysdig import SysdigHook
from sysdig_j1.transform import Context, build_graph

log = logging.getLogger(__name__)


def validate_config(sysdig: SysdigHook, jupiterone: JupiterOneHook) -> dict:
    """Both connections are complete and the Sysdig token works (cheapest call: /api/users/me)."""
    try:
        user = sysdig.current_user()
        jupiterone.session  # noqa: B018 - builds the session, which checks account id and key are set
    except ApiError as exc:
        if exc.status in (401, 403):
            raise AirflowFailException(f"Sysdig rejected the API token of {sysdig.describe()}: {exc}") from exc
        raise
    except ValueError as exc:  # unknown region, missing token/key
        raise AirflowFailException(str(exc)) from exc
    account_id = str(user["customer"]["id"])
    log.info("Sysdig token accepted: %s, customer %s", sysdig.describe(), account_id)
    return {
        "account_id": account_id,
        "app_url": sysdig.base_url,
        "account_name": sysdig.account_name,
        "region": sysdig.region,
    }


def transform(storage: RunStorage, config: dict) -> dict:
    entities, relationships = build_graph(
        Context(storage, app_url=config["app_url"], account_name=config["account_name"])
    )
    folder = storage.reset(storage.path("graph"))
    storage.write_parquet(folder / "entities.parquet", entities)
    storage.write_parquet(folder / "relationships.parquet", relationships)
    counts = {
        "entities": entities["_type"].value_counts().to_dict(),
        "relationships": relationships["_type"].value_counts().to_dict(),
    }
    log.info("graph built: %s", counts)
    return {"path": str(folder), "account_id": config["account_id"], "counts": counts}


def check_quality(storage: RunStorage, graph: dict) -> dict:
    entities, relationships = _read_graph(storage)
    report = quality.validate(entities, relationships)
    storage.write_json(storage.path("graph", "quality.json"), report)
    if not report["success"]:
        raise AirflowFailException(quality.summary(report))
    log.info("all %d data-quality checks passed", report["evaluated"])
    return {"evaluated": report["evaluated"], "success": True}


def load(hook: JupiterOneHook, storage: RunStorage, graph: dict) -> dict:
    entities, relationships = _read_graph(storage)
    result = loader.publish(hook, entities, relationships, loader.scope_for(graph["account_id"]))
    storage.write_json(storage.path("graph", "load.json"), result)
    return result


def _read_graph(storage: RunStorage):
    return (
        storage.read_parquet(storage.path("graph", "entities.parquet")),
        storage.read_parquet(storage.path("graph", "relationships.parquet")),
    )
