"""What the benchmarks share: an emulator started in its own process on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def emulator_process(module: str, *args: str, ready_path: str) -> Iterator[tuple[str, int]]:
    """Run `python -m <module> --port <free port> <args>`; yield (base URL, pid) once `ready_path`
    answers; stop it afterwards."""
    port = free_port()
    # (run from this folder, so that the benchmarks' own servers are modules too)
    process = subprocess.Popen([sys.executable, "-m", module, "--port", str(port), *args], stdout=subprocess.DEVNULL,
                               cwd=os.path.dirname(os.path.abspath(__file__)))
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                requests.get(f"{url}{ready_path}", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.05)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait()
