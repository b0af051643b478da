# Two commands for a new user: `make run` (demo on the bundled emulators) and `make test`.
PYTHON ?= python3.11
UV_VERSION := 0.13.9
VENV := .venv
BIN := $(VENV)/bin
# Installed site-packages are compiled once; without .pyc every Airflow process is ~2x slower.
export UV_COMPILE_BYTECODE := 1

.PHONY: install browser graphviz run test bench schemas lock compose-check clean

# Development: production's pins plus the tools (requirements-dev.lock), the provider and the
# emulators, both editable. (The production image installs requirements.lock and the provider only.)
$(VENV)/.installed: requirements-dev.lock plugins/sysdig_j1/pyproject.toml emulators/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements-dev.lock -e plugins/sysdig_j1 -e emulators
	touch $@

install: $(VENV)/.installed

## Start both emulators, run the DAG end to end, print what JupiterOne now holds.
run: install graphviz
	$(BIN)/python -m sysdig_j1_emulators.demo

## Debian's chromium, for the test that renders the run report in a real headless browser.
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

## Debian's graphviz: `dot` lays out the graph picture of the run report (the image installs it too).
graphviz:
	command -v dot >/dev/null || (apt-get update -qq && apt-get install -y -qq graphviz >/dev/null)

## The whole test suite (.ci/run calls exactly this).
test: install browser graphviz
	$(BIN)/python -m pytest

## Benchmarks (print tables, not tests): extraction vs the original integration's call pattern,
## the transform and the quality gate at 10k / 100k / 1M image scans, publishing, and vulnerability
## findings end to end at 5,000 and 25,000 runtime results (~1M and ~5M findings, in shards), IAM
## and inventory at 200 teams and 20,000 hosts, and freshness (change -> graph -> alert on the
## production stack, then 10 idle minutes). About 75 minutes on 2 cores.
bench: install
	$(BIN)/python bench/extract.py
	$(BIN)/python bench/transform.py
	$(BIN)/python bench/publish.py
	$(BIN)/python bench/findings.py
	$(BIN)/python bench/iam_inventory.py
	$(BIN)/python bench/freshness.py

## Regenerate include/schemas/*.json from the data model.
schemas: install
	$(BIN)/python -m sysdig_j1.schemas include/schemas README.md

## Re-pin every dependency after editing requirements.in or requirements-dev.in: production
## first, then development constrained by it (so both pin the same versions).
lock: install
	$(BIN)/uv pip compile requirements.in --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile requirements-dev.in --python-version 3.11 -o requirements-dev.lock

compose-check: install
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yaml

clean:
	rm -rf $(VENV) .airflow
