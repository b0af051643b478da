"""Benchmark of the load: publishing the frames to JupiterOne, ours vs the plain approach.

For each size (a number of image scans, with bench/transform.py's 100,000 users and 1,000 teams),
the real transform turns generated raw input into the entity and relationship frames once; they
are pickled so each measurement starts from the very same frames. Then, each against a fresh
in-memory JupiterOne emulator in its own process, and each client in its own child process (so
its peak RSS is its own: frames plus what the approach needs):
- ours: `load.publish` with its defaults (5,000,000-byte batches, gzip level 5, 6 in flight);
- plain: the same frames and batches (`load.graph_objects`, `load.batches`, `load.body`) POSTed
  one at a time, uncompressed, with a plain requests.Session; job created, finalized and polled
  the same way.
Wire bytes are the Content-Length of every upload request, read from the prepared requests of the
answered uploads. After each run the emulator must hold exactly the frames' objects per type.

    .venv/bin/python bench/publish.py [--sizes 100000,1000000]

About 8 minutes on 2 cores, most of it the 1M case; up to ~7 GB in one process (the emulator
holding 2.3M objects, then copying them to count them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import multiprocessing
import os
import platform
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from harness import emulator_process
from transform import prepared_input

DEFAULT_SIZES = "100000,1000000"
ACCOUNT, API_KEY = "bench-account", "bench-key"
SCOPE = "sysdig-j1:bench"
JOBS = "/persister/synchronization/jobs"
UPLOAD_PATHS = ("/entities", "/relationships")


@dataclass(frozen=True)
class Frames:
    path: Path  # pickled (entities, relationships)
    entity_types: dict[str, int]
    relationship_types: dict[str, int]

    @property
    def entities(self) -> int:
        return sum(self.entity_types.values())

    @property
    def relationships(self) -> int:
        return sum(self.relationship_types.values())


@dataclass(frozen=True)
class Run:
    approach: str
    batches: dict[str, int]  # per kind
    raw_bytes: int  # request bodies as serialised
    wire_bytes: int  # Content-Length, i.e. gzipped for ours
    wall_seconds: float
    client_cpu_seconds: float  # all threads of the client, while publishing
    client_peak_mb: float
    emulator_cpu_seconds: float = 0.0
    emulator_peak_mb: float = 0.0


# -- frames (child process) ----------------------------------------------------------------
# sysdig_j1 is imported inside the child functions, so the parent stays small and each child's
# peak RSS is its own work.
def build_frames(storage_url: str, path: Path) -> Frames:
    import pandas as pd
    from sysdig_j1.hooks.storage import RunStorage
    from sysdig_j1.load import type_counts
    from sysdig_j1.transform import Context, build_graph

    storage = RunStorage(storage_url, "bench", "run")
    entities, relationships, _ = build_graph(
        Context(storage, app_url="https://us2.app.sysdig.com", account_name="bench")
    )
    pd.to_pickle((entities, relationships), path)  # pickle keeps the Arrow dtypes exactly
    return Frames(path, type_counts(entities), type_counts(relationships))


def in_fresh_process(function: Callable, *args):
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


# -- the emulator (its own process) ----------------------------------------------------------
@dataclass(frozen=True)
class Emulator:
    url: str
    pid: int

    def peak_rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
        return int(kib) / 1024

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@contextmanager
def jupiterone_emulator() -> Iterator[Emulator]:
    args = ["--account", ACCOUNT, "--api-key", API_KEY]
    with emulator_process("sysdig_j1_emulators.jupiterone", *args, ready_path="/_emulator/jobs") as (url, pid):
        yield Emulator(url, pid)


def check_emulator_holds(url: str, frames: Frames) -> None:
    """Raise unless the one job finished and the graph holds exactly the frames' objects."""
    (job,) = requests.get(f"{url}/_emulator/jobs", timeout=30).json()
    held = requests.get(f"{url}/_emulator/summary", timeout=600).json()
    expected = {"entities": frames.entity_types, "relationships": frames.relationship_types}
    if job["status"] != "FINISHED" or job["numRelationshipCreateErrors"] or held != expected:
        raise RuntimeError(f"emulator holds {held} after job {job['status']} "
                           f"({job['numRelationshipCreateErrors']} relationship errors); expected {expected}")


# -- measurements (child processes) ----------------------------------------------------------
class WireBytes:
    """A requests response hook: the Content-Length of every answered upload request."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self._lock = threading.Lock()  # ours answers on 6 threads

    def __call__(self, response: requests.Response, *args, **kwargs) -> None:
        request = response.request
        if response.ok and request.path_url.endswith(UPLOAD_PATHS):
            with self._lock:
                self.sizes.append(int(request.headers["Content-Length"]))


class Stopwatch:
    """Wall seconds, and CPU seconds of the whole process (every thread), since it was started."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def run(self, approach: str, batches: dict[str, int], raw_bytes: int, wire_bytes: int) -> Run:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        return Run(approach, batches, raw_bytes, wire_bytes, time.perf_counter() - self.wall,
                   time.process_time() - self.cpu, peak_mb)


def publish_ours(frames_path: Path, url: str) -> Run:
    os.environ["AIRFLOW_CONN_JUPITERONE_DEFAULT"] = json.dumps(
        {"conn_type": "jupiterone", "host": url, "login": ACCOUNT, "password": API_KEY})
    import pandas as pd
    from sysdig_j1 import load
    from sysdig_j1.hooks.jupiterone import JupiterOneHook

    logging.getLogger("sysdig_j1").setLevel(logging.WARNING)  # publish's info lines repeat the table
    entities, relationships = pd.read_pickle(frames_path)
    hook = JupiterOneHook()
    wire = WireBytes()
    hook.session.hooks["response"].append(wire)  # also Airflow's connection lookup: worker start-up, not load
    stopwatch = Stopwatch()
    sent = load.publish(hook, entities, relationships, SCOPE)["sent"]
    return stopwatch.run("ours", {kind: s["batches"] for kind, s in sent.items()},
                         sum(s["bytes"] for s in sent.values()), sum(wire.sizes))


class PlainClient:
    """The plain way: one requests.Session, one request at a time, bodies as serialised."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Bearer {API_KEY}", "JupiterOne-Account": ACCOUNT, "Content-Type": "application/json"})

    def _post(self, path: str, **content) -> dict:
        response = self.session.post(f"{self.url}{JOBS}{path}", timeout=(10, 120), **content)
        response.raise_for_status()
        return response.json()["job"]

    def create_job(self, scope: str) -> dict:
        return self._post("", json={"source": "api", "scope": scope, "syncMode": "DIFF"})

    def upload(self, job_id: str, kind: str, data: bytes) -> dict:
        return self._post(f"/{job_id}/{kind}", data=data)

    def finalize(self, job_id: str) -> dict:
        return self._post(f"/{job_id}/finalize", json={"partialDatasets": {"types": []}})

    def get_job(self, job_id: str) -> dict:  # what load.wait_for_job polls
        response = self.session.get(f"{self.url}{JOBS}/{job_id}", timeout=(10, 120))
        response.raise_for_status()
        return response.json()["job"]


def publish_plain(frames_path: Path, url: str) -> Run:
    import pandas as pd
    from sysdig_j1 import load

    entities, relationships = pd.read_pickle(frames_path)
    client = PlainClient(url)
    wire = WireBytes()
    client.session.hooks["response"].append(wire)
    batches, raw_bytes = {}, 0
    stopwatch = Stopwatch()
    job_id = client.create_job(SCOPE)["id"]
    for kind, frame in (("entities", entities), ("relationships", relationships)):
        batches[kind] = 0
        for chunks in load.batches(kind, load.graph_objects(frame)):
            data = load.body(kind, chunks)
            client.upload(job_id, kind, data)
            batches[kind] += 1
            raw_bytes += len(data)
    client.finalize(job_id)
    status = load.wait_for_job(client, job_id, poll_seconds=0.5, timeout_seconds=1800)["status"]  # publish's schedule
    run = stopwatch.run("plain", batches, raw_bytes, sum(wire.sizes))
    if status != "FINISHED":
        raise RuntimeError(f"plain job {job_id} ended {status}")
    return run


def measure(publish: Callable[[Path, str], Run], frames: Frames) -> Run:
    with jupiterone_emulator() as emulator:
        cpu_before = emulator.cpu_seconds()
        run = in_fresh_process(publish, frames.path, emulator.url)
        # read before the check, which copies the whole graph to count it
        run = dataclasses.replace(run, emulator_cpu_seconds=emulator.cpu_seconds() - cpu_before,
                                  emulator_peak_mb=emulator.peak_rss_mb())
        check_emulator_holds(emulator.url, frames)
        return run


# -- report ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    frames: Frames
    ours: Run
    plain: Run


def _rows(results: list[Comparison]) -> Iterator[tuple[Frames, Run, str]]:
    """(frames, run, speed-up over plain) for each table row."""
    for result in results:
        yield result.frames, result.ours, f"{result.plain.wall_seconds / result.ours.wall_seconds:.2f}x"
        yield result.frames, result.plain, ""


def throughput_table(results: list[Comparison]) -> str:
    lines = [
        "| entities | relationships | approach | batches (ent. + rel.) | MB sent (raw) | MB on the wire | wall s "
        "| objects/s | speed-up |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for frames, run, speed_up in _rows(results):
        lines.append(
            f"| {frames.entities:,} | {frames.relationships:,} | {run.approach} "
            f"| {run.batches['entities']} + {run.batches['relationships']} | {run.raw_bytes / 1e6:,.0f} "
            f"| {run.wire_bytes / 1e6:,.1f} | {run.wall_seconds:.1f} "
            f"| {(frames.entities + frames.relationships) / run.wall_seconds:,.0f} | {speed_up} |"
        )
    return "\n".join(lines)


def resources_table(results: list[Comparison]) -> str:
    lines = [
        "| entities | approach | wall s | client CPU s | emulator CPU s | client peak RSS MB | emulator peak RSS MB |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {frames.entities:,} | {run.approach} | {run.wall_seconds:.1f} | {run.client_cpu_seconds:.1f} "
        f"| {run.emulator_cpu_seconds:.1f} | {run.client_peak_mb:,.0f} | {run.emulator_peak_mb:,.0f} |"
        for frames, run, _ in _rows(results)
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated scan counts (default %(default)s)")
    sizes = [int(size) for size in parser.parse_args(argv).sizes.split(",")]

    started = time.perf_counter()
    results = []
    for scans in sizes:
        url, _ = prepared_input(scans)
        with tempfile.TemporaryDirectory() as folder:
            frames = in_fresh_process(build_frames, url, Path(folder) / "frames.pickle")
            print(f"{scans:,} scans: {frames.entities:,} entities, {frames.relationships:,} relationships", flush=True)
            ours = measure(publish_ours, frames)
            print(f"  ours {ours.wall_seconds:.1f} s", flush=True)
            plain = measure(publish_plain, frames)
            print(f"  plain {plain.wall_seconds:.1f} s", flush=True)
        results.append(Comparison(frames, ours, plain))

    print(f"\n{os.cpu_count()} CPUs, Python {platform.python_version()}; client, emulator and (for ours) the "
          "upload threads share them. The emulator parses and validates every object in Python, so absolute "
          "throughput is bounded by this setup, not by JupiterOne; the comparison is what matters. "
          "MB = 10^6 bytes; wire = Content-Length (gzip level 5 for ours); wall = create job to FINISHED; "
          "objects/s = (entities + relationships) / wall.\n")
    print(throughput_table(results))
    print("\nWhere the time and memory go (client = the child process running the approach, peak RSS "
          "including the frames it loaded; emulator CPU and peak while the client ran):\n")
    print(resources_table(results))
    print(f"\nTotal benchmark time (input cached or generated, transform, both runs per size): "
          f"{time.perf_counter() - started:.0f} s.")


if __name__ == "__main__":
    main()
