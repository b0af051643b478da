"""report/index.html, rendered by a real headless browser (Debian's chromium, which `make test`
installs): what a person opening the run's report sees."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from conftest import REPO

from sysdig_j1 import quality
from sysdig_j1.emulators.sysdig_org import OrgSpec
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.model import ENTITIES, MAPPED_TARGETS

ARTIFACTS = REPO / ".test-artifacts"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make test` installs Debian's chromium"
    return subprocess.run([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=60, check=True)


class Elements(HTMLParser):
    """id -> text inside that element, and every tag with its attributes, of a rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.text_by_id: dict[str, str] = {}
        self._open: list[str | None] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag not in ("circle", "line", "meta", "br"):
            self._open.append(attributes.get("id"))
            if attributes.get("id"):
                self.text_by_id.setdefault(attributes["id"], "")

    def handle_endtag(self, tag):
        if tag not in ("circle", "line", "meta", "br") and self._open:
            self._open.pop()

    def handle_data(self, data):
        for element_id in filter(None, self._open):
            self.text_by_id[element_id] += data


@pytest.fixture(scope="module")
def report_page(dag, tmp_path_factory) -> Path:
    """The report of a second publish, after one user left Sysdig."""
    from conftest import J1_ACCOUNT, J1_KEY, SYSDIG_TOKEN

    from sysdig_j1.emulators.jupiterone import JupiterOneEmulator
    from sysdig_j1.emulators.sysdig import SysdigEmulator

    folder = tmp_path_factory.mktemp("report")
    sysdig = SysdigEmulator(OrgSpec(), token=SYSDIG_TOKEN)
    jupiterone = JupiterOneEmulator(folder / "j1.json", account=J1_ACCOUNT, api_key=J1_KEY)
    sysdig.start(), jupiterone.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            import json

            patch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(
                {"conn_type": "sysdig", "host": sysdig.url, "password": SYSDIG_TOKEN, "extra": {"region": "us2"}}))
            patch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(
                {"conn_type": "jupiterone", "host": jupiterone.url, "login": J1_ACCOUNT, "password": J1_KEY}))
            patch.setenv("AIRFLOW_VAR_SYSDIG_J1_STORAGE_URL", f"file://{folder}/storage")
            dag.test()
            requests.post(f"{sysdig.url}/_emulator/users/10005/remove", timeout=5).raise_for_status()
            run = dag.test()
    finally:
        sysdig.stop(), jupiterone.stop()
    storage = RunStorage(f"file://{folder}/storage", "sysdig_jupiterone", run.run_id)
    return Path(str(storage.path("report", "index.html")).removeprefix("file://"))


def test_the_browser_shows_the_changes_counts_quality_and_the_graph(report_page, tmp_path):
    dom = chromium(report_page, tmp_path / "profile", "--dump-dom").stdout
    page = Elements()
    page.feed(dom)

    assert "sysdig_user:10005" in page.text_by_id["users_removed"]
    assert "sysdig_team:20001|has|sysdig_user:10005" in page.text_by_id["memberships_removed"]
    assert "users_made_admin" not in page.text_by_id  # only what happened is called out
    counts = page.text_by_id["counts"]
    assert re.search(r"sysdig_user\s*30\s*29\s*-1\s*0\s*1\s*0", counts)  # before, after, Δ, added, removed, changed
    assert re.search(r"sysdig_team\s*4\s*4\s*\+0\s*0\s*0\s*1", counts)  # userCount changed
    assert f"All {len(quality.build_checks())} checks passed." in page.text_by_id["quality"]
    type_nodes = [a["data-type"] for tag, a in page.tags if tag == "g" and "type-node" in a.get("class", "")]
    assert sorted(type_nodes) == sorted([e.type for e in ENTITIES] + [t.type for t in MAPPED_TARGETS])
    assert {"cve", "kube_cluster", "sysdig_user", "sysdig_host"} <= set(type_nodes)
    assert "sysdig_user29" in page.text_by_id["type-graph"].replace(" ", "")  # the user node shows 29
    assert "entity-graph" not in page.text_by_id  # with its findings, too large to draw every entity

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    chromium(report_page, tmp_path / "profile", f"--screenshot={screenshot}", "--window-size=1200,1800")
    assert screenshot.stat().st_size > 50_000  # a real picture, kept for people to look at


def test_the_page_loads_nothing_from_the_network(report_page):
    page = Elements()
    page.feed(report_page.read_text())

    fetched = [(tag, a) for tag, a in page.tags
               if tag in ("script", "link", "img", "iframe", "object", "embed") or "src" in a or "href" in a]
    assert fetched == []


def test_a_small_graph_is_drawn_entity_by_entity_and_a_large_one_is_not():
    from sysdig_j1 import report

    entities = [{"_key": "sysdig_account:1", "_type": "sysdig_account"},
                *({"_key": f"sysdig_user:{n}", "_type": "sysdig_user"} for n in range(3))]
    relationships = [{"_fromEntityKey": "sysdig_account:1", "_toEntityKey": f"sysdig_user:{n}"} for n in range(3)]
    run = {"scope": "sysdig-j1:1"}
    document = {"security": {}, "entities": {}, "relationships": {}}

    page = Elements()
    page.feed(report.render(run, None, {"sysdig_user": 3}, document, None, entities, relationships))
    drawn = page.text_by_id["entity-graph"]
    assert all(f"{n}" in drawn for n in range(3)) and "sysdig_user" in drawn
    assert sum(tag == "line" for tag, _ in page.tags) >= 3 + len(relationships)  # type graph + one line each

    many = [{"_key": f"sysdig_user:{n}", "_type": "sysdig_user"} for n in range(report.SMALL_GRAPH + 1)]
    large = Elements()
    large.feed(report.render(run, None, {}, document, None, many, []))
    assert "entity-graph" not in large.text_by_id
