"""Object storage for one DAG run: `<storage url>/<dag_id>/<run_id>/...`.

Every task reads its inputs from and writes its outputs to this folder, and hands only small
manifests (paths, counts) to XCom. The URL is anything ObjectStoragePath understands: a local
folder (`file://...`, the default) or `s3://...` / `gs://...` with the matching provider installed.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from airflow.sdk import ObjectStoragePath

STORAGE_VARIABLE = "sysdig_j1_storage_url"


def default_storage_url() -> str:
    home = os.environ.get("AIRFLOW_HOME") or str(Path.home() / "airflow")
    return f"file://{Path(home).resolve()}/sysdig_j1_data"


class RunStorage:
    def __init__(self, base_url: str, dag_id: str, run_id: str, account: str | None = None) -> None:
        """`account`: the folder of the scope's publish state (`_published`), the account's full
        sync DAG id, so that its quick sync compares with and guards against the same publishes."""
        self.base_url = base_url
        self.root = ObjectStoragePath(base_url) / dag_id / _safe(run_id)
        self.published = ObjectStoragePath(base_url) / (account or dag_id) / "_published"

    @classmethod
    def for_current_run(cls, account: str | None = None) -> RunStorage:
        """The storage of the running task's DAG run (call inside a task)."""
        from airflow.sdk import Variable, get_current_context

        context = get_current_context()
        base_url = Variable.get(STORAGE_VARIABLE, default=default_storage_url())
        return cls(base_url, context["dag"].dag_id, context["run_id"], account)

    def path(self, *parts: str) -> ObjectStoragePath:
        return self.root.joinpath(*parts)

    def raw(self, resource: str) -> ObjectStoragePath:
        """Folder of an extract task's raw pages."""
        return self.path("raw", resource)

    def manifest(self, resource: str) -> ObjectStoragePath:
        return self.raw(resource) / "_manifest.json"

    def published_state(self, scope: str) -> ObjectStoragePath:
        """What the last successful publish of a scope sent (kept next to the runs, not in one)."""
        return self.published / f"{_safe(scope)}.json"

    def published_graph(self, scope: str, generation: str = "latest") -> ObjectStoragePath:
        """The folder of the graph snapshots (one file per part and kind, `parts.py`) as the last
        successful publish of a scope left it ("latest"), as the publish before that one left it
        ("before"), or as the running publish will leave it ("pending")."""
        return self.published / f"{_safe(scope)}.{generation}"

    def legacy_published_graph(self, scope: str, kind: str, generation: str) -> ObjectStoragePath:
        """Where releases before the graph was kept in parts kept a generation's snapshot, whole."""
        return self.published / f"{_safe(scope)}.{generation}.{kind}.parquet"

    def probe(self) -> None:
        """Write, read back and delete a small object in the run's folder; raises the storage's own
        error (a bad scheme, an unknown host, missing credentials) if the URL is not usable."""
        probe = self.path("_probe")
        probe.parent.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"probe")
        if probe.read_bytes() != b"probe":
            raise OSError(f"{probe} did not read back what was written")
        probe.unlink()

    def reset(self, folder: ObjectStoragePath) -> ObjectStoragePath:
        """Empty a task's output folder so a re-run replaces, never appends to, what it wrote."""
        if folder.exists():
            folder.rmdir(recursive=True)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @staticmethod
    def pages(folder: ObjectStoragePath, suffix: str) -> Iterator[tuple[str, ObjectStoragePath]]:
        """(partition, path) of every file under `folder` ending in `suffix`, in name order; the
        partition is the sub-folder a file sits in ("" at the top), e.g. the scan stage."""
        if not folder.exists():
            return
        for path in sorted(folder.rglob(f"*{suffix}"), key=str):
            relative = str(path)[len(str(folder)) :].strip("/")
            yield (relative.rsplit("/", 1)[0] if "/" in relative else ""), path

    # -- frames and small documents -----------------------------------------------------------
    @staticmethod
    def write_parquet(path: ObjectStoragePath, frame: pd.DataFrame) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        path.write_bytes(buffer.getvalue())

    @staticmethod
    def read_parquet(path: ObjectStoragePath, columns: list[str] | None = None,
                     filters: list[tuple] | None = None) -> pd.DataFrame:
        """The file, or only these columns of the rows that pass these (pyarrow) filters."""
        return pd.read_parquet(io.BytesIO(path.read_bytes()), columns=columns, filters=filters)

    @staticmethod
    def parquet_columns(path: ObjectStoragePath) -> list[str]:
        """A Parquet file's column names, from its footer alone (the file may be large)."""
        with path.open("rb") as file:
            return pq.read_schema(file).names

    @staticmethod
    def write_json(path: ObjectStoragePath, document: object) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2, sort_keys=True, default=str))

    @staticmethod
    def read_json(path: ObjectStoragePath) -> object:
        return json.loads(path.read_text())


def _safe(run_id: str) -> str:
    """Run ids carry ':' and '+' (timestamps); keep them readable but path- and URL-safe."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in run_id)
