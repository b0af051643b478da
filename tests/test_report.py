"""report/index.html as a person sees it: rendered by Debian's chromium (driven by Playwright) after
the change scenario's two publishes (a user made admin, one disabled, one leaving a team, a team
removed; and findings switched on, so critical ones are new)."""

from __future__ import annotations

import itertools
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
from conftest import J1_ACCOUNT, J1_KEY, REPO, SYSDIG_TOKEN, task_states

from sysdig_j1 import quality, report
from sysdig_j1_emulators.sysdig_org import OrgSpec
from sysdig_j1.hooks.storage import RunStorage
from sysdig_j1.model import ENTITIES, MAPPED_TARGETS

ARTIFACTS = REPO / ".test-artifacts"
ADMIN, DISABLED, LEAVER, LEFT_TEAM, REMOVED_TEAM = 10007, 10008, 10009, 20001, 20003
RAW_KEY = re.compile(r"sysdig_[a-z_]+:|\|has\||\b[0-9a-f]{32}\b")  # a _key, or a finding id in one


@pytest.fixture(scope="module")
def scenario(dag, tmp_path_factory) -> dict:
    """The pages of both publishes, and the graph JupiterOne held after each."""
    from sysdig_j1_emulators.jupiterone import JupiterOneEmulator
    from sysdig_j1_emulators.sysdig import SysdigEmulator

    folder = tmp_path_factory.mktemp("report")
    sysdig = SysdigEmulator(OrgSpec(), token=SYSDIG_TOKEN)
    jupiterone = JupiterOneEmulator(folder / "j1.json", account=J1_ACCOUNT, api_key=J1_KEY)
    sysdig.start(), jupiterone.start()
    pages, graphs = [], []
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("AIRFLOW_CONN_JUPITERONE_DEFAULT", json.dumps(
                {"conn_type": "jupiterone", "host": jupiterone.url, "login": J1_ACCOUNT, "password": J1_KEY}))
            patch.setenv("AIRFLOW_VAR_SYSDIG_J1_STORAGE_URL", f"file://{folder}/storage")
            for stages in ("", "runtime"):  # no findings, then the running images' findings
                patch.setenv("AIRFLOW_CONN_SYSDIG_DEFAULT", json.dumps(
                    {"conn_type": "sysdig", "host": sysdig.url, "password": SYSDIG_TOKEN,
                     "extra": {"region": "us2", "finding_stages": stages}}))
                run = dag.test()
                assert set(task_states(run).values()) == {"success"}
                storage = RunStorage(f"file://{folder}/storage", "sysdig_jupiterone", run.run_id)
                pages.append(Path(str(storage.path("report", "index.html")).removeprefix("file://")))
                graphs.append(jupiterone.graph())
                for path, body in ((f"/users/{ADMIN}/update", {"isAdmin": True}),
                                   (f"/users/{DISABLED}/update", {"isEnabled": False}),
                                   (f"/teams/{LEFT_TEAM}/users/{LEAVER}/remove", None),
                                   (f"/teams/{REMOVED_TEAM}/remove", None)) if stages == "" else ():
                    requests.post(f"{sysdig.url}/_emulator{path}", json=body, timeout=5).raise_for_status()
    finally:
        sysdig.stop(), jupiterone.stop()
    return {"pages": pages, "graphs": [{e["_key"]: e for e in g["entities"]} for g in graphs]}


@pytest.fixture(scope="module")
def first_page(scenario, browser):
    page = browser.new_page()
    page.goto(scenario["pages"][0].as_uri())
    yield page
    page.close()


@pytest.fixture(scope="module")
def second_page(scenario, browser):
    page = browser.new_page(viewport={"width": 1200, "height": 1000})
    page.goto(scenario["pages"][1].as_uri())
    yield page
    page.close()


def test_the_first_publish_is_a_baseline_showing_the_security_state(first_page, scenario):
    entities = scenario["graphs"][0]
    assert "baseline" in first_page.inner_text("#baseline")
    assert first_page.locator("#callouts").count() == 0  # no change is listed, so no "added" either
    assert first_page.locator(".callout[id$='_added']").count() == 0
    admins = first_page.inner_text("#admins")
    expected = [e for e in entities.values() if e["_type"] == "sysdig_user" and e["admin"]]
    assert expected and all(e["email"] in admins for e in expected)
    assert f"Admins ({len(expected)})" in admins
    assert not RAW_KEY.search(first_page.inner_text("#state"))


def test_the_second_publish_names_the_people_teams_and_cves_that_changed(second_page, scenario):
    before, after = scenario["graphs"]
    assert second_page.locator("#baseline").count() == 0
    assert after[f"sysdig_user:{ADMIN}"]["email"] in second_page.inner_text("#users_made_admin")
    assert after[f"sysdig_user:{DISABLED}"]["email"] in second_page.inner_text("#users_disabled")
    assert before[f"sysdig_team:{REMOVED_TEAM}"]["name"] in second_page.inner_text("#teams_removed")
    left = second_page.inner_text("#memberships_removed")
    assert before[f"sysdig_team:{LEFT_TEAM}"]["name"] in left and before[f"sysdig_user:{LEAVER}"]["email"] in left

    # Critical findings, per image: the first row shown names an image and CVEs that are new,
    # open, critical findings of that image in JupiterOne.
    first_row = second_page.locator("#critical_findings_opened > ul > li").first.inner_text()
    image_name, _, cves = first_row.partition(": ")
    images = {e["id"]: e["displayName"] for e in after.values() if e["_type"] == "sysdig_image_scan"}
    critical = {(images[e["imageScanId"]], e["name"]) for e in after.values()
                if e["_type"] == "sysdig_finding" and e["severity"] == "critical" and e["open"]}
    named = re.findall(r"(?:CVE|GHSA)-[\w-]+", cves.split("—", 1)[1])
    assert named and all((image_name.strip(), cve) in critical for cve in named)

    callouts = second_page.inner_text("#callouts")
    assert not RAW_KEY.search(callouts), RAW_KEY.search(callouts)
    assert second_page.get_attribute(f"#users_made_admin [title='sysdig_user:{ADMIN}']", "title")  # the key on hover
    link = second_page.locator("#users_made_admin a").first.get_attribute("href")
    assert link == after[f"sysdig_user:{ADMIN}"]["webLink"]


def test_long_lists_show_their_first_items_and_the_rest_behind_a_disclosure(second_page):
    block = second_page.locator("#critical_findings_opened")
    shown = block.locator(":scope > ul > li").count()
    hidden = block.locator("details li").count()
    assert shown == report.LIST_SHOWN and hidden > 0
    summary = block.locator("details > summary").inner_text()
    assert summary == f"{hidden} more"
    assert not block.locator("details li").first.is_visible()
    block.locator("details > summary").click()
    assert block.locator("details li").first.is_visible()


def test_counts_and_quality(second_page):
    counts = second_page.inner_text("#counts")
    assert re.search(r"sysdig_user\s+30\s+30\s+\+0\s+0\s+0\s+2", counts)  # before, after, Δ, added, removed, changed
    assert re.search(r"sysdig_finding\s+0\s+\d[\d,]*\s+\+", counts)
    assert f"All {len(quality.build_checks())} checks passed." in second_page.inner_text("#quality")


def test_the_graph_is_laid_out_in_layers_with_no_label_over_another(second_page):
    nodes = second_page.eval_on_selector_all(
        "#type-graph g.graph-node", "gs => gs.map(g => [g.id, g.getBoundingClientRect().y])")
    y = {node_id.removeprefix("node-"): top for node_id, top in nodes}
    assert sorted(y) == sorted([e.type for e in ENTITIES] + [t.type for t in MAPPED_TARGETS])
    assert y["sysdig_account"] < y["sysdig_user"] == y["sysdig_team"] < y["sysdig_image_scan"] < y["sysdig_finding"] \
        < y["cve"] == y["aws_instance"]
    shown = second_page.eval_on_selector_all("#node-sysdig_user text", "ts => ts.map(t => t.textContent)")
    assert shown == ["sysdig_user", "30"]

    boxes = second_page.eval_on_selector_all("#type-graph text", "ts => ts.map(t => { const r = t.getBoundingClientRect();"
                                                                 " return [t.textContent, r.x, r.y, r.right, r.bottom]; })")
    assert len(boxes) > 2 * len(y)  # every node's name and count, every edge's label
    overlapping = [(a[0], b[0]) for a, b in itertools.combinations(boxes, 2)
                   if a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]]
    assert overlapping == []

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report-graph.png"
    second_page.locator("#type-graph").screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 20_000  # a real picture, kept for people to look at
    second_page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_the_page_loads_nothing_from_the_network(scenario):
    for page in scenario["pages"]:
        parsed = Tags()
        parsed.feed(page.read_text())
        loading = [(tag, a) for tag, a in parsed.tags
                   if tag in ("script", "link", "img", "iframe", "object", "embed", "image", "use")
                   or "src" in a or ("href" in a and tag != "a") or "xlink:href" in a]
        assert loading == []  # links into Sysdig are only followed when clicked


def test_a_dry_run_says_so_and_a_small_graph_is_drawn_entity_by_entity(browser, tmp_path):
    entities = [{"_key": "sysdig_account:1", "_type": "sysdig_account"},
                *({"_key": f"sysdig_user:{n}", "_type": "sysdig_user"} for n in range(3))]
    relationships = [{"_fromEntityKey": "sysdig_account:1", "_toEntityKey": f"sysdig_user:{n}"} for n in range(3)]
    document = {"security": {}, "entities": {}, "relationships": {}}
    small = tmp_path / "small.html"
    small.write_text(report.render({"scope": "sysdig-j1:1", "dry run": True}, None, {"sysdig_user": 3}, document,
                                   None, entities, relationships))
    page = browser.new_page()
    page.goto(small.as_uri())
    assert "Dry run" in page.inner_text("#dry-run")
    drawn = page.eval_on_selector_all("#entity-graph g.graph-node", "gs => gs.map(g => g.id)")
    assert sorted(drawn) == sorted(f"node-{e['_key']}" for e in entities)
    assert page.locator("#entity-graph g.edge").count() == len(relationships)
    page.close()

    many = [{"_key": f"sysdig_user:{n}", "_type": "sysdig_user"} for n in range(report.SMALL_GRAPH + 1)]
    assert "entity-graph" not in report.render({"scope": "s"}, None, {}, document, None, many, [])


def test_a_run_without_a_report_says_why(dag, start_sysdig, jupiterone, connect):
    """The Graph changes tab of a run that stopped before load names the task that failed."""
    from airflow.utils.session import create_session

    from sysdig_j1 import ui

    connect(start_sysdig(), jupiterone, token="not-the-token")  # every Sysdig request answers 401
    run = dag.test()
    failed = sorted(task for task, state in task_states(run).items() if state == "failed")
    assert failed and task_states(run)["load"] == "upstream_failed"
    with create_session() as session:
        page = ui.why_no_report(dag.dag_id, run.run_id, session)
        assert f"the run stopped before publishing (load: upstream_failed; failed: {', '.join(failed)})" in page
        assert "there is no such run" in ui.why_no_report(dag.dag_id, "no-such-run", session)
