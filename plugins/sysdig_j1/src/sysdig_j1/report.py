"""`report/index.html`: one self-contained page per run that a person can read, in Airflow or not.

What it holds: the run; the called-out security changes by name (`callouts.py`: a user's e-mail, a
team's name, an image's pull string, findings per image by CVE; the `_key` on hover, a link into
Sysdig where the object has one); or, for a scope's first publish, that it is the baseline and
the security state it starts from; counts per type before and after; the quality results; and a
picture of the graph's shape laid out by Graphviz in layers (account; identities and teams; what
they hold; scans and findings; the other integrations' entities JupiterOne maps to, apart), with
every entity drawn one by one when the graph is small. Inline CSS and SVG only: the page loads
nothing from the network. Long lists show their first LIST_SHOWN items, the rest behind a
disclosure; report/changes.json keeps everything.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from html import escape

from sysdig_j1.callouts import FINDING_CALL_OUTS, keys_of
from sysdig_j1.model import (
    ACCESS_KEY,
    ACCOUNT,
    CLUSTER,
    ENTITIES,
    FINDING,
    HOST,
    IMAGE_SCAN,
    IP_FILTER,
    MAPPED_TARGETS,
    RELATIONSHIPS,
    ROLE,
    SERVICE_ACCOUNT,
    SSO_SETTING,
    TEAM,
    USER,
    ZONE,
)

log = logging.getLogger(__name__)

SMALL_GRAPH = 150  # entities up to which the page also draws each entity
LIST_SHOWN = 10  # items of a list shown before its disclosure
LIST_MOST = 500  # items of a list on the page at all (the JSON keeps every one)
DOT_SECONDS = 30
# The picture's layers, top to bottom: who is in the account, what they hold, the workloads, their
# scans and findings. (The other integrations' entities sit apart, in a box of their own.)
LAYERS = ((ACCOUNT,), (USER, TEAM, SERVICE_ACCOUNT, SSO_SETTING, IP_FILTER), (ROLE, ACCESS_KEY, ZONE),
          (CLUSTER, HOST, IMAGE_SCAN), (FINDING,))
CALL_OUTS = {
    "users_added": "Users added", "users_removed": "Users removed", "users_disabled": "Users disabled",
    "users_enabled": "Users enabled again", "users_made_admin": "Users who became admins",
    "users_no_longer_admin": "Users who are no longer admins", "memberships_added": "Team memberships added",
    "memberships_removed": "Team memberships removed", "membership_roles_changed": "Team roles changed",
    "teams_added": "Teams added", "teams_removed": "Teams removed",
    "image_scans_failing_policy": "Image scans failing policy",
    "critical_findings_opened": "Open critical vulnerability findings, new or open again, by image",
    "high_findings_opened": "Open high vulnerability findings, new or open again, by image",
    "findings_risk_accepted": "Findings whose risk was accepted, by image",
}
STATE = {
    "admins": "Admins", "admin_service_accounts_never_expiring": "Admin service accounts that never expire",
    "users_in_no_team": "Users in no team", "images_failing_policy": "Image scans failing policy",
}
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #1d2433; max-width: 1100px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ccd; }
h3 { font-size: 1em; margin: 0 0 .3em; }
table { border-collapse: collapse; } td, th { padding: .25em .8em; border-bottom: 1px solid #e4e6ee; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #0a7d32; } .down { color: #b3261e; } .none { color: #777; }
.callout { background: #fff4e5; border-left: 4px solid #e8a33d; padding: .5em 1em; margin: .6em 0; }
.banner { background: #e8f0fe; border-left: 4px solid #3d5afe; padding: .5em 1em; }
.callout ul { margin: .2em 0; padding-left: 1.2em; } .detail { color: #4a5372; } .kev { color: #b3261e; font-weight: 600; }
.ok { color: #0a7d32; } .bad { color: #b3261e; font-weight: 600; } summary { cursor: pointer; color: #3d5afe; }
code { font-size: .9em; } svg { max-width: 100%; height: auto; }
"""


def render(run: dict, counts_before: dict[str, int] | None, counts_after: dict[str, int], changes: dict,
           quality: dict | None, entities: list[dict] | None = None, relationships: list[dict] | None = None) -> str:
    """The page. `run`: what identifies the run (scope, run folder, dry run). `changes`: the
    document of report/changes.json. `entities`/`relationships`: (`_key`, `_type`) of every
    object, given only when the graph is small enough to draw whole."""
    labels = changes.get("labels", {})
    state = _section("state", "Security state", STATE, changes.get("state", {}), labels, {}, every=True)
    if changes.get("baseline"):
        body = ["<p class='banner' id='baseline'>This is the <strong>baseline</strong>: the first publish of this "
                "scope. Nothing is listed as added; changes are listed from the next publish on.</p>", state]
    else:
        body = [_section("callouts", "Security-relevant changes", CALL_OUTS, changes.get("security", {}), labels,
                         changes.get("summaries", {})),
                f"<details id='state-now'><summary>Security state after this publish</summary>{state}</details>"]
    parts = [
        f"<h1>Sysdig → JupiterOne: {escape(run['scope'])}</h1>",
        "<p class='banner' id='dry-run'><strong>Dry run</strong>: nothing was published; this is what the "
        "publish would change.</p>" if run.get("dry run") else "",
        "<p>" + " · ".join(f"{escape(k)}: <code>{escape(str(v))}</code>" for k, v in run.items()) + "</p>",
        *body,
        _counts(counts_before or {}, counts_after, changes),
        _quality(quality),
        "<h2>Shape of the graph</h2>",
        type_graph(counts_after),
    ]
    if entities is not None and relationships is not None and len(entities) <= SMALL_GRAPH:
        parts += ["<h2>Every entity and relationship</h2>", _entity_graph(entities, relationships)]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Sysdig → JupiterOne: "
            f"{escape(run['scope'])}</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>")


# -- call-outs -------------------------------------------------------------------------------------
def _section(section_id: str, title: str, names: dict[str, str], lists: dict, labels: dict, summaries: dict,
             every: bool = False) -> str:
    """A call-out block per list that has items (`every`: per list named, an empty one as none)."""
    found = {name: lists.get(name, []) for name in names} if every else \
        {name: items for name, items in lists.items() if items}
    if not found:
        return f"<h2>{title}</h2><p class='none' id='{section_id}'>None.</p>"
    blocks = []
    for name, items in found.items():
        if name in FINDING_CALL_OUTS:
            rows = summaries.get(name, [])
            shown = [_image_row(row, labels) for row in rows[:LIST_MOST]]
            heading = f"{escape(names.get(name, name))} ({len(items):,} findings, {len(rows):,} images)"
            total = len(rows)
        else:  # by what a person reads (the name), not by key; only what the page holds is drawn
            ordered = sorted(items, key=lambda item: _sort_key(item, labels))
            shown = [_item(item, labels) for item in ordered[:LIST_MOST]]
            heading = f"{escape(names.get(name, name))} ({len(items):,})"
            total = len(items)
        body = _list(shown, total) if shown else "<p class='none'>None.</p>"
        blocks.append(f"<div class='callout' id='{name}'><h3>{heading}</h3>{body}</div>")
    return f"<h2>{title}</h2><div id='{section_id}'>{''.join(blocks)}</div>"


def _sort_key(item: str | dict, labels: dict) -> str:
    (key,) = keys_of([item])
    label = labels.get(key, {})
    if "from" in label:  # a membership: by member, then team
        return f"{_sort_key(label['to'], labels)} {_sort_key(label['from'], labels)}"
    return str(label.get("name") or key).lower()


def _list(items: list[str], total: int) -> str:
    """The first LIST_SHOWN of a list's `total` items, the next ones (`items`: up to LIST_MOST)
    behind a disclosure."""
    first, rest = items[:LIST_SHOWN], items[LIST_SHOWN:LIST_MOST]
    html = "<ul>" + "".join(f"<li>{i}</li>" for i in first) + "</ul>"
    if rest:
        html += (f"<details><summary>{total - LIST_SHOWN:,} more</summary><ul>"
                 + "".join(f"<li>{i}</li>" for i in rest) + "</ul>")
        if total > LIST_MOST:
            html += f"<p class='none'>… and {total - LIST_MOST:,} more in report/changes.json</p>"
        html += "</details>"
    return html


def _item(item: str | dict, labels: dict) -> str:
    """One called-out object by name; a team role change with its roles."""
    (key,) = keys_of([item])
    html = _named(key, labels)
    if isinstance(item, dict) and "role" in item:
        html += f" <span class='detail'>{escape(' → '.join(str(r) for r in item['role']))}</span>"
    return html


def _named(key: str, labels: dict, link: bool = True) -> str:
    """An entity as '<name> <details> <link>', its `_key` on hover; a relationship (a team
    membership) as its target in its source ('Jane Doe (email: jane@example.com) in team Ops')."""
    label = labels.get(key)
    if label and "from" in label:
        source = labels.get(label["from"], {}).get("type", label["from"].partition(":")[0])
        return (f"<span title='{escape(key)}'>{_named(label['to'], labels, link=False)} in "
                f"{escape(source.removeprefix('sysdig_'))} {_named(label['from'], labels, link=False)}</span>")
    if not label or not label.get("name"):  # not found in any snapshot: the type and id still say something
        type_, _, id_ = key.partition(":")
        return f"<span class='name' title='{escape(key)}'>{escape(type_.removeprefix('sysdig_'))} {escape(id_)}</span>"
    shown = [f"{escape(what)}: {escape(_text(value))}" for what, value in label["shown"].items()
             if _text(value) != label["name"]]
    html = f"<span class='name' title='{escape(key)}'>{escape(str(label['name']))}</span>"
    if shown:
        html += f" <span class='detail'>({' · '.join(shown)})</span>"
    if link and label.get("link"):
        html += f" <a href='{escape(label['link'])}' rel='noreferrer'>open in Sysdig</a>"
    return html


def _image_row(row: dict, labels: dict) -> str:
    counts = ", ".join(f"{row[what]:,} {what}" for what in ("critical", "high", "other") if row[what])
    kev = f" <span class='kev'>{row['kev']:,} in CISA KEV</span>" if row["kev"] else ""
    return f"{_named(row['image'], labels)}: {counts}{kev} — {escape(', '.join(row['cves']))}"


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


# -- counts and quality ----------------------------------------------------------------------------
def _counts(before: dict[str, int], after: dict[str, int], changes: dict) -> str:
    rows = []
    for kind, declared in (("entities", ENTITIES), ("relationships", RELATIONSHIPS)):
        for type_ in (t.type for t in declared):
            b, a = before.get(type_, 0), after.get(type_, 0)
            change = changes.get(kind, {}).get(type_, {})
            css = "up" if a > b else "down" if a < b else "none"
            rows.append(f"<tr data-type='{type_}'><td><code>{type_}</code></td><td class='n'>{b:,}</td>"
                        f"<td class='n'>{a:,}</td><td class='n {css}'>{a - b:+,}</td>"
                        + "".join(f"<td class='n'>{change.get('counts', {}).get(what, 0):,}</td>"
                                  for what in ("added", "removed", "changed")) + "</tr>")
    return ("<h2>Counts per type</h2><table id='counts'><tr><th>type</th><th>before</th><th>after</th><th>Δ</th>"
            "<th>added</th><th>removed</th><th>changed</th></tr>" + "".join(rows) + "</table>")


def _quality(quality: dict | None) -> str:
    if not quality:
        return "<h2>Quality</h2><p class='none'>No quality report.</p>"
    failed = [r for r in quality["results"] if not r["success"]]
    verdict = (f"<p class='ok'>All {quality['evaluated']} checks passed.</p>" if not failed else
               f"<p class='bad'>{len(failed)} of {quality['evaluated']} checks failed.</p>")
    rows = "".join(f"<tr><td>{escape(r['check'])}</td><td>{escape(', '.join(r.get('keys') or []))}</td></tr>"
                   for r in failed)
    return f"<h2>Quality</h2><div id='quality'>{verdict}" + (f"<table>{rows}</table>" if rows else "") + "</div>"


# -- pictures (Graphviz) ---------------------------------------------------------------------------
def type_graph(counts: dict[str, int]) -> str:
    """Entity types as boxes with their counts, relationship types as labelled arrows, in LAYERS."""
    nodes = {t.type: f"{t.type}\\n{counts.get(t.type, 0):,}" for t in ENTITIES}
    mapped = {t.type: f"{t.type}\\n{counts.get(t.type, 0):,}" for t in MAPPED_TARGETS}
    edges = [(r.source.type, r.target.type, f"{r.cls} · {counts.get(r.type, 0):,}") for r in RELATIONSHIPS]
    layers = [[t.type for t in layer] for layer in LAYERS]
    return _dot_svg("type-graph", nodes, edges, layers, mapped)


def _entity_graph(entities: list[dict], relationships: list[dict]) -> str:
    """Every entity, in its type's layer, and every relationship as an arrow."""
    nodes = {e["_key"]: e["_key"].split(":", 1)[1] for e in entities}
    layer_of = {t.type: n for n, layer in enumerate(LAYERS) for t in layer}
    layers: list[list[str]] = [[] for _ in LAYERS]
    for entity in entities:
        layers[layer_of.get(entity["_type"], len(LAYERS) - 1)].append(entity["_key"])
    edges = [(r["_fromEntityKey"], r["_toEntityKey"], "") for r in relationships
             if r["_fromEntityKey"] in nodes and r["_toEntityKey"] in nodes]
    return _dot_svg("entity-graph", nodes, edges, layers, {})


def _dot_svg(svg_id: str, nodes: dict[str, str], edges: list[tuple[str, str, str]], layers: list[list[str]],
             apart: dict[str, str]) -> str:
    """The graph laid out by Graphviz's `dot` as inline SVG: one rank per layer, `apart` in a box of
    its own below. Without Graphviz installed, a table of the same edges (and a warning)."""
    binary = shutil.which("dot")
    if binary is None:
        log.warning("Graphviz (dot) is not installed: the report has no graph picture")
        rows = "".join(f"<tr><td>{escape(a)}</td><td>{escape(label)}</td><td>{escape(b)}</td></tr>" for a, b, label in edges)
        return (f"<p class='none'>Graphviz is not installed, so there is no picture; the edges:</p>"
                f"<table id='{svg_id}'>{rows}</table>")
    lines = [f'digraph "{svg_id}" {{', 'rankdir=TB; nodesep=0.25; ranksep=0.6; newrank=true;',
             'node [shape=box, style="rounded,filled", fillcolor="#dfe7ff", color="#3d5afe", fontsize=11, '
             'fontname="sans-serif"];', 'edge [color="#8a93b2", fontsize=10, fontcolor="#4a5372", fontname="sans-serif"];']
    for name, label in nodes.items():
        lines.append(f'"{_dot(name)}" [id="node-{_dot(name)}", class="graph-node", label="{_dot(label)}"];')
    # Layers in order: an invisible node per layer, chained, pins each layer below the one before.
    anchors = [f"layer {n}" for n in range(len(layers) + bool(apart))]
    lines += [f'"{a}" [style=invis, shape=point, width=0, label=""];' for a in anchors]
    lines.append(" -> ".join(f'"{a}"' for a in anchors) + " [style=invis];")
    for anchor, layer in zip(anchors, layers):
        lines.append(f'{{rank=same; "{anchor}"; ' + " ".join(f'"{_dot(n)}";' for n in layer) + "}")
    if apart:
        lines.append('subgraph cluster_mapped { label="mapped to other integrations\' entities"; style=dashed; '
                     'color="#8a93b2"; fontsize=10; fontname="sans-serif"; rank=same;')
        lines += [f'"{_dot(n)}" [id="node-{_dot(n)}", class="graph-node mapped", label="{_dot(label)}", '
                  'fillcolor="#eef0f6"];' for n, label in apart.items()]
        lines.append("}")
        lines.append(f'{{rank=same; "{anchors[-1]}"; ' + " ".join(f'"{_dot(n)}";' for n in apart) + "}")
    for source, target, label in edges:
        lines.append(f'"{_dot(source)}" -> "{_dot(target)}" [class="graph-edge", label="{_dot(label)}"];')
    lines.append("}")
    svg = subprocess.run([binary, "-Tsvg"], input="\n".join(lines), capture_output=True, text=True,
                         timeout=DOT_SECONDS, check=True).stdout
    return f"<div id='{svg_id}'>{svg[svg.index('<svg'):]}</div>"  # without the XML prolog and doctype


def _dot(text: str) -> str:
    """Text inside a DOT string ('\\n' kept as Graphviz's line break)."""
    return text.replace("\\n", "\n").replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
